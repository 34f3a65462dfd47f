"""Test kit shipped in the package, shared by the tests and the benchmarks (never imports ``tests``).

Plain helpers only, no pytest fixtures and no side effects on import:

- :mod:`~mlops.testing.clock`: :class:`ManualClock`, a clock that moves only when told;
- :mod:`~mlops.testing.names`: :func:`unique` topic and group names, a :func:`free_port`;
- :mod:`~mlops.testing.waiting`: :func:`wait_until`, polling a condition with a deadline;
- :mod:`~mlops.testing.topics`: producing readings, :class:`CommittedReader` (read_committed output);
- :mod:`~mlops.testing.models`: :func:`register_model` in the real registry, a deterministic fleet;
- :mod:`~mlops.testing.postgres`: :class:`PostgresServer`, a throwaway PostgreSQL server.
"""

from mlops.testing.clock import ManualClock
from mlops.testing.models import SPEC, T0, fleet_readings, reading, register_model, scorer_settings, settings_env
from mlops.testing.names import free_port, unique
from mlops.testing.postgres import PostgresServer
from mlops.testing.topics import CommittedReader, produce, produce_readings, topic_overrides
from mlops.testing.waiting import wait_until

__all__ = ["SPEC", "T0", "CommittedReader", "ManualClock", "PostgresServer", "fleet_readings", "free_port", "produce",
           "produce_readings", "reading", "register_model", "scorer_settings", "settings_env", "topic_overrides",
           "unique", "wait_until"]

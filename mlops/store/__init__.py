"""The loop's own state in the project's database (SQLAlchemy 2; SQLite or PostgreSQL).

- :mod:`~mlops.store.base`: engines, the declarative base, :class:`DatabaseError` (the one error
  every module here raises for the database);
- :mod:`~mlops.store.audit`: ``loop_events``, the one audit trail, and named locks (``locks``);
- :mod:`~mlops.store.results`: ``window_results``, what each closed window said;
- :mod:`~mlops.store.lease`: ``leases``, the leader lease of singletons such as the scheduler.

Importing the package imports every table module, so :func:`create_schema` knows every table.
"""

from mlops.store import lease, results
from mlops.store.audit import (
    EVENT_KINDS,
    EventRecord,
    LoopEvent,
    count_events,
    list_events,
    locked,
    previous_champion,
    record_event,
)
from mlops.store.base import DatabaseError, DbTarget, create_schema, get_engine

__all__ = ["EVENT_KINDS", "DatabaseError", "DbTarget", "EventRecord", "LoopEvent", "count_events", "create_schema",
           "get_engine", "lease", "list_events", "locked", "previous_champion", "record_event", "results"]

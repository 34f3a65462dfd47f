"""Moved to :mod:`mlops.testing` (shared with bench/); import from there. Kept as a re-export for
test modules written against the old path."""

from mlops.testing import (  # noqa: F401
    SPEC,
    T0,
    CommittedReader,
    fleet_readings,
    produce,
    produce_readings,
    reading,
    register_model,
    scorer_settings,
    settings_env,
    topic_overrides,
)

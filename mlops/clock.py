"""Time in UTC: the one rule for the times the project stores, reads back and compares.

Every time is kept in UTC. SQLite and Parquet may hand back naive datetimes, which are UTC by that
rule; an aware datetime in another zone is converted.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["as_utc", "utc_now"]


def utc_now() -> datetime:
    """The current wall-clock time, aware, in UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime: a naive one is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

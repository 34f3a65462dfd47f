"""The loop's audit trail and named locks in the project's database (:mod:`mlops.store.base`).

    record_event(settings, "promotion", model_name="iot-failure", model_version="7",
                 previous_version="6", actor="alice", reason="better on last week")
    for event in list_events(settings, kinds=["promotion", "rollback"]):
        print(event.time, event.kind, event.model_version)

    with locked(settings, "promotion:iot-failure", holder="alice") as conn:
        ...  # read, decide, act; record_event(conn, ...) commits with the lock's transaction

``loop_events`` is the ONE audit table: every loop decision (window result, trigger, retraining,
evaluation, promotion, rejection, rollback, manual action) is a row with its time, model versions,
run id, who did it and why, plus free-form ``details`` (JSON).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, Index, Integer, String, Text, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Mapped, mapped_column

from mlops.clock import as_utc, utc_now
from mlops.config import Settings
from mlops.errors import ValidationError
from mlops.store.base import Base, DatabaseError, DbTarget, connection, describe, get_engine

__all__ = ["EVENT_KINDS", "EventRecord", "Lock", "LoopEvent", "count_events", "list_events", "locked",
           "previous_champion", "record_event"]

EVENT_KINDS = frozenset({
    "window_result", "trigger", "not_triggered", "retrain_started", "retrain_finished", "retrain_failed",
    "evaluation", "promotion", "rejection", "rollback", "manual_action",
})
class LoopEvent(Base):
    __tablename__ = "loop_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    model_name: Mapped[str | None] = mapped_column(String(256))
    model_version: Mapped[str | None] = mapped_column(String(64))
    previous_version: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[str | None] = mapped_column(String(64))
    actor: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)

    __table_args__ = (Index("ix_loop_events_model_kind", "model_name", "kind", "id"),)


class Lock(Base):
    """One row per named lock; the row is what ``SELECT ... FOR UPDATE`` holds on PostgreSQL."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(256))
    acquired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class EventRecord:
    """One audit row as plain data (safe to use after the session is gone)."""

    id: int
    time: datetime
    kind: str
    model_name: str | None
    model_version: str | None
    previous_version: str | None
    run_id: str | None
    actor: str | None
    reason: str | None
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["time"] = self.time.isoformat()
        return data


def record_event(
    target: DbTarget,
    kind: str,
    *,
    model_name: str | None = None,
    model_version: str | int | None = None,
    previous_version: str | int | None = None,
    run_id: str | None = None,
    actor: str | None = None,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
    time: datetime | None = None,
) -> int:
    """Append one row to the audit trail and return its id.

    With a connection (for instance from :func:`locked`) the row commits with that transaction;
    otherwise it is committed at once. ``kind`` must be one of :data:`EVENT_KINDS`.
    """
    if kind not in EVENT_KINDS:
        raise ValidationError(f"loop event kind {kind!r} is unknown (one of: {', '.join(sorted(EVENT_KINDS))})")
    row = {
        "time": as_utc(time) if time else utc_now(),
        "kind": kind,
        "model_name": model_name,
        "model_version": None if model_version is None else str(model_version),
        "previous_version": None if previous_version is None else str(previous_version),
        "run_id": run_id,
        "actor": actor,
        "reason": reason,
        "details": details or {},
    }
    with connection(target) as conn:
        result = conn.execute(insert(LoopEvent).values(**row).returning(LoopEvent.id))
        return int(result.scalar_one())


def list_events(
    target: DbTarget,
    *,
    kinds: Iterable[str] | None = None,
    model_name: str | None = None,
    model_version: str | None = None,
    since: datetime | None = None,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[EventRecord]:
    """Audit rows matching the filters, oldest first unless ``newest_first``."""
    query = select(LoopEvent)
    if kinds is not None:
        query = query.where(LoopEvent.kind.in_(list(kinds)))
    if model_name is not None:
        query = query.where(LoopEvent.model_name == model_name)
    if model_version is not None:
        query = query.where(LoopEvent.model_version == str(model_version))
    if since is not None:
        query = query.where(LoopEvent.time >= as_utc(since))
    query = query.order_by(LoopEvent.id.desc() if newest_first else LoopEvent.id.asc())
    if limit is not None:
        query = query.limit(limit)
    with connection(target) as conn:
        rows: Sequence[Any] = conn.execute(query).all()
    return [
        EventRecord(
            id=row.id, time=as_utc(row.time), kind=row.kind, model_name=row.model_name,
            model_version=row.model_version, previous_version=row.previous_version, run_id=row.run_id,
            actor=row.actor, reason=row.reason, details=dict(row.details or {}),
        )
        for row in rows
    ]


def count_events(target: DbTarget, *, model_name: str | None = None) -> dict[str, int]:
    """How many audit rows of each kind there are (for ``model_name`` when given): the loop's counters,
    which survive restarts because the rows do."""
    query = select(LoopEvent.kind, func.count()).group_by(LoopEvent.kind)
    if model_name is not None:
        query = query.where(LoopEvent.model_name == model_name)
    with connection(target) as conn:
        return {str(kind): int(n) for kind, n in conn.execute(query).all()}


def previous_champion(target: DbTarget, model_name: str, current_version: str) -> str | None:
    """The champion before ``current_version`` was last promoted, from the audit trail.

    Rollbacks follow promotions backwards: after v1 -> v2 -> v3, rolling back twice reaches v1
    (not v3 again), because each step looks up the *promotion* that made the current champion.
    """
    events = list_events(target, kinds=["promotion"], model_name=model_name, model_version=current_version,
                         newest_first=True)
    for record in events:
        if record.details.get("changed", True) and record.previous_version:
            return record.previous_version
    return None


@contextmanager
def locked(target: Settings | Engine | str, name: str, holder: str) -> Iterator[Connection]:
    """Hold the named database lock for the block; yield the connection whose transaction holds it.

    PostgreSQL: the lock's row is taken with ``SELECT ... FOR UPDATE``. SQLite: the transaction
    starts with ``BEGIN IMMEDIATE``, which takes the database's write lock. Either way a second
    holder, in this process or another, waits (up to the database's timeout) until the first
    commits, and a crashed holder releases the lock with its connection. Rows written through the
    yielded connection commit, or roll back on an exception, together with the lock.
    """
    engine = get_engine(target)
    sqlite = engine.dialect.name == "sqlite"
    try:
        if not sqlite:
            # The row must exist before it can be locked; inserting it is a separate, tiny transaction.
            with engine.begin() as conn:
                if conn.execute(select(Lock.name).where(Lock.name == name)).first() is None:
                    try:
                        with conn.begin_nested():
                            conn.execute(insert(Lock).values(name=name))
                    except SQLAlchemyError:
                        pass  # another process inserted it first: fine, it exists now
        options = {"sqlite_begin": "IMMEDIATE"} if sqlite else {}
        with engine.connect().execution_options(**options) as conn, conn.begin():
            if sqlite:
                exists = conn.execute(select(Lock.name).where(Lock.name == name)).first()
                if exists is None:
                    conn.execute(insert(Lock).values(name=name))
            else:
                conn.execute(select(Lock.name).where(Lock.name == name).with_for_update())
            conn.execute(update(Lock).where(Lock.name == name).values(holder=holder, acquired_at=utc_now()))
            yield conn
    except SQLAlchemyError as err:
        raise DatabaseError(f"database {describe(engine)}: lock {name!r}: {err}") from err

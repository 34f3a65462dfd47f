"""A leader lease in the project's database, so that only one instance of a singleton runs.

Two ``mlops scheduler`` processes on the same database would otherwise both fire every job
(APScheduler 3 does not coordinate schedulers sharing a job store). The holder renews the lease
well before it expires; a standby takes over only after it has expired. Works the same on SQLite
and PostgreSQL: acquisition is one conditional UPDATE (or INSERT) in a transaction.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

from sqlalchemy import DateTime, Engine, String, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from mlops.clock import as_utc, utc_now
from mlops.store.base import Base, create_schema, database_errors

__all__ = ["Lease", "LeaseRow"]


class LeaseRow(Base):
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Lease:
    """``Lease(engine, "scheduler", holder_id, ttl_s).try_acquire(now)`` -> True while we hold it.

    The database's errors leave as :class:`~mlops.store.base.DatabaseError`."""

    def __init__(self, engine: Engine, name: str, holder: str, ttl_s: float = 30.0) -> None:
        self.engine, self.name, self.holder, self.ttl = engine, name, holder, timedelta(seconds=ttl_s)
        with self._errors("create its table"):
            create_schema(engine)

    def _errors(self, action: str) -> AbstractContextManager[None]:
        return database_errors(self.engine, f"lease {self.name!r}: {action}")

    def try_acquire(self, now: datetime | None = None) -> bool:
        """Take or renew the lease; False if another holder's lease is still valid."""
        now = now or utc_now()
        expires = now + self.ttl
        with self._errors("acquire"):
            with self.engine.begin() as conn:
                taken = conn.execute(
                    update(LeaseRow)
                    .where(LeaseRow.name == self.name)
                    .where((LeaseRow.holder == self.holder) | (LeaseRow.expires_at < now))
                    .values(holder=self.holder, expires_at=expires)
                ).rowcount
                if taken:
                    return True
                exists = conn.execute(select(LeaseRow.name).where(LeaseRow.name == self.name)).first()
                if exists:
                    return False
            try:
                with self.engine.begin() as conn:
                    conn.execute(insert(LeaseRow).values(name=self.name, holder=self.holder, expires_at=expires))
                return True
            except IntegrityError:
                return False  # another instance inserted it first

    def holder_now(self) -> tuple[str, datetime] | None:
        """Who holds the lease and until when; None before anyone took it."""
        with self._errors("read"), self.engine.connect() as conn:
            row = conn.execute(select(LeaseRow.holder, LeaseRow.expires_at).where(LeaseRow.name == self.name)).first()
        return (row[0], as_utc(row[1])) if row else None

    def release(self) -> None:
        """Let the lease expire now, if we hold it."""
        with self._errors("release"), self.engine.begin() as conn:
            conn.execute(
                update(LeaseRow)
                .where(LeaseRow.name == self.name, LeaseRow.holder == self.holder)
                .values(expires_at=datetime(1970, 1, 1, tzinfo=UTC))
            )

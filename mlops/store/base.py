"""The project's state database: its engines, its declarative base and its one error type.

One URL (``settings.database_url``) selects the database: a SQLite file under the data directory by
default, PostgreSQL when it outgrows one machine. The same code runs on both.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase

from mlops.config import Settings
from mlops.errors import MlopsError

__all__ = ["SQLITE_BUSY_TIMEOUT_S", "Base", "DatabaseError", "DbTarget", "connection", "create_schema",
           "database_errors", "describe", "get_engine"]

SQLITE_BUSY_TIMEOUT_S = 60.0
"""How long a SQLite writer waits for another writer (e.g. a promotion holding the lock)."""


class DatabaseError(MlopsError):
    """The project's database could not be reached, read or written."""


class Base(DeclarativeBase):
    """Declarative base of every table in the project's database."""


DbTarget = Settings | Engine | Connection | str
"""Where to read or write: settings (their database_url), a URL, an engine, or an open connection."""

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def get_engine(target: Settings | Engine | str) -> Engine:
    """The process-wide engine for a database (created on first use, schema ensured)."""
    if isinstance(target, Engine):
        return target
    url = target.database_url if isinstance(target, Settings) else target
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _create_engine(url)
            create_schema(engine)
            _engines[url] = engine
        return engine


def _create_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})

    # sqlite3's legacy transaction control does not BEGIN before SELECT, so a read-decide-write
    # would not be isolated. Take over BEGIN (SQLAlchemy's documented recipe) so that a lock can
    # ask for BEGIN IMMEDIATE: the write lock is taken at the start, and other writers wait.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")  # readers do not wait for a writer
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "")
        conn.exec_driver_sql(f"BEGIN {mode}".strip())

    return engine


def create_schema(engine: Engine) -> None:
    """Create the project's tables where missing (idempotent; safe when two processes race).

    Every table module of this package registers its tables on :class:`Base`, and the package's
    ``__init__`` imports them all, which Python runs before any module of the package: by the time
    this runs, ``Base.metadata`` knows every table.
    """
    try:
        Base.metadata.create_all(engine)
    except OperationalError:
        # Another process created a table between our check and our CREATE: check again.
        Base.metadata.create_all(engine)


@contextmanager
def connection(target: DbTarget) -> Iterator[Connection]:
    """An open connection inside a transaction; an existing connection is used as it is.

    SQLAlchemy's errors leave as :class:`DatabaseError` naming the database."""
    if isinstance(target, Connection):
        yield target
        return
    try:
        with get_engine(target).begin() as conn:
            yield conn
    except SQLAlchemyError as err:
        raise DatabaseError(f"database {describe(target)}: {err}") from err


@contextmanager
def database_errors(target: DbTarget, action: str) -> Iterator[None]:
    """Turn SQLAlchemy's errors inside the block into :class:`DatabaseError` naming the database and ``action``."""
    try:
        yield
    except SQLAlchemyError as err:
        raise DatabaseError(f"database {describe(target)}: {action}: {err}") from err


def describe(target: DbTarget) -> str:
    """The database's URL without its password, for messages."""
    if isinstance(target, Settings):
        target = target.database_url
    if isinstance(target, str):
        return make_url(target).render_as_string(hide_password=True)
    if isinstance(target, Engine):
        return target.url.render_as_string(hide_password=True)
    return "connection"

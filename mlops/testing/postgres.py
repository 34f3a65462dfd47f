"""A throwaway PostgreSQL server from the distribution's own binaries (``initdb``, ``pg_ctl``).

Production runs PostgreSQL as a service (``docker/compose.yaml``). This module exists so that the
integration tests run the project's state database, the scheduler's job store and MLflow's backend
store on a real server without Docker:

    with PostgresServer(directory) as pg:
        url = pg.create_database("mlops")      # postgresql+psycopg2://mlops:<password>@127.0.0.1:<port>/mlops

The server listens on 127.0.0.1 only (no Unix socket), requires the generated password, and runs
with ``fsync`` off: it is for tests, and its data is thrown away with the directory.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

from mlops.errors import ServiceError
from mlops.log import get_logger
from mlops.services.process import require_free_port, tail
from mlops.testing.names import free_port

__all__ = ["DEBIAN_BIN_ROOT", "DRIVER", "SERVER_ACCOUNT", "PostgresServer", "find_bin_dir"]

log = get_logger(__name__)

DEBIAN_BIN_ROOT = Path("/usr/lib/postgresql")
# initdb and the server refuse to run as root; when we are root they run as the account that
# Debian's `postgresql` package creates.
SERVER_ACCOUNT = "postgres"
# Named explicitly: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, while the project's
# `postgres` extra installs psycopg2.
DRIVER = "postgresql+psycopg2"

_TEST_SETTINGS = """
# Written by mlops.testing.postgres: a throwaway server for tests.
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 50
"""


def find_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: Debian's newest version, else the PATH.

    Raises :class:`ServiceError` saying how to install them when there are none.
    """
    debian = [path.parent for path in DEBIAN_BIN_ROOT.glob("*/bin/initdb")]
    if debian:
        return max(debian, key=lambda path: _version_key(path.parent.name))
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    raise ServiceError(
        f"PostgreSQL server binaries not found (looked for {DEBIAN_BIN_ROOT}/*/bin/initdb and initdb on "
        "PATH). Install Debian's package: `apt-get install -y postgresql` (scripts/bootstrap.sh does it)."
    )


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)


class PostgresServer:
    """Initialise a cluster in ``directory`` and run it on ``port`` (a free one if None).

    ``directory`` must be new or empty. Use as a context manager, or call :meth:`start` and
    :meth:`stop`.
    """

    def __init__(self, directory: Path, port: int | None = None, user: str = "mlops",
                 password: str | None = None, bin_dir: Path | None = None,
                 ready_timeout_s: float = 60.0) -> None:
        self.directory = Path(directory).resolve()
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.user = user
        self.password = password or secrets.token_hex(12)
        self.bin_dir = bin_dir
        self.ready_timeout_s = ready_timeout_s
        self.data_dir = self.directory / "data"
        self.log_file = self.directory / "postgres.log"
        self._started = False

    def url(self, database: str, driver: str = DRIVER) -> str:
        """SQLAlchemy / MLflow URL of ``database`` on this server."""
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def start(self) -> None:
        """initdb, then ``pg_ctl start`` and wait until the server accepts connections."""
        bin_dir = self.bin_dir or find_bin_dir()
        self.bin_dir = bin_dir
        require_free_port("postgres", self.host, self.port)
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ServiceError(f"postgres: {self.data_dir} is not empty; give a new directory for a throwaway server")
        account = self._account()
        if account is not None:
            shutil.chown(self.directory, account.pw_uid, account.pw_gid)
            self._require_reachable(account)

        password_file = self.directory / "password"
        password_file.write_text(self.password + "\n")
        password_file.chmod(0o600)
        if account is not None:
            shutil.chown(password_file, account.pw_uid, account.pw_gid)
        try:
            self._run(bin_dir / "initdb", "-D", str(self.data_dir), "-U", self.user, f"--pwfile={password_file}",
                      "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync", what="initdb")
        finally:
            password_file.unlink(missing_ok=True)
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(_TEST_SETTINGS.format(port=self.port))

        # -w waits for the "ready" state recorded in postmaster.pid, so no socket polling is needed.
        self._run(bin_dir / "pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
                  "-t", str(int(self.ready_timeout_s)), what="pg_ctl start", log_tail=True)
        self._started = True
        log.info("postgres started", port=self.port, data_dir=self.data_dir)

    def stop(self) -> None:
        """Stop the server if this object started it (fast shutdown: rolls back open transactions)."""
        if not self._started or self.bin_dir is None:
            return
        self._run(self.bin_dir / "pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w",
                  what="pg_ctl stop", log_tail=True)
        self._started = False
        log.info("postgres stopped", port=self.port)

    def create_database(self, name: str, driver: str = DRIVER) -> str:
        """Create database ``name`` owned by the server's user; return its URL."""
        if not self._started or self.bin_dir is None:
            raise ServiceError("postgres: the server is not running; start it before creating databases")
        try:
            subprocess.run(
                [str(self.bin_dir / "createdb"), "-h", self.host, "-p", str(self.port), "-U", self.user, name],
                env={**os.environ, "PGPASSWORD": self.password}, capture_output=True, text=True, check=True,
                timeout=60,
            )
        except subprocess.CalledProcessError as err:
            raise ServiceError(f"postgres: createdb {name} failed: {err.stderr.strip()}") from err
        return self.url(name, driver)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _account(self) -> pwd.struct_passwd | None:
        """The unprivileged account the server runs as, or None when we are not root."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SERVER_ACCOUNT)
        except KeyError as err:
            raise ServiceError(
                f"postgres: running as root, and PostgreSQL refuses root; there is no '{SERVER_ACCOUNT}' "
                "account to run it as. Install Debian's `postgresql` package, which creates it."
            ) from err

    def _require_reachable(self, account: pwd.struct_passwd) -> None:
        probe = subprocess.run(["test", "-w", str(self.directory)], user=account.pw_uid, group=account.pw_gid,
                               extra_groups=[], cwd="/", check=False)
        if probe.returncode != 0:
            raise ServiceError(
                f"postgres: the server runs as '{account.pw_name}' (PostgreSQL refuses root), which cannot "
                f"write {self.directory}: a parent directory is private to root. Use a directory under /tmp "
                "(tempfile.mkdtemp())."
            )

    def _run(self, program: Path, *args: str, what: str, log_tail: bool = False) -> None:
        account = self._account()
        try:
            subprocess.run(
                [str(program), *args], capture_output=True, text=True, check=True, cwd=self.directory,
                timeout=self.ready_timeout_s + 30,
                user=account.pw_uid if account else None, group=account.pw_gid if account else None,
                extra_groups=[] if account else None,
            )
        except FileNotFoundError as err:
            raise ServiceError(f"postgres: {program} not found; install Debian's `postgresql` package") from err
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as err:
            output = err.stderr if isinstance(err.stderr, str) else ""
            detail = f"\n--- last lines of {self.log_file} ---\n{tail(self.log_file)}" if log_tail else ""
            raise ServiceError(f"postgres: {what} failed: {output.strip()}{detail}") from err

"""Background processes owned by ``mlops services``: start detached, record a pid file, stop exactly them.

A pid file records the pid, the process start time and the command line, so ``down`` never
signals a process that merely reuses a recorded pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from mlops.config import Settings
from mlops.errors import PortInUseError, ServiceError

__all__ = ["LocalService", "ManagedProcess", "port_is_free", "require_free_port", "stop_together", "tail", "wait_for"]


@dataclass(frozen=True)
class ManagedProcess:
    """A service process this package started, as recorded in its pid file."""

    name: str
    pid_file: Path

    def record(self) -> dict[str, object] | None:
        try:
            return dict(json.loads(self.pid_file.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def process(self) -> psutil.Process | None:
        """The live process recorded in the pid file, or None if it is gone or the pid was reused."""
        record = self.record()
        if record is None:
            return None
        try:
            proc = psutil.Process(int(str(record["pid"])))
            if abs(proc.create_time() - float(str(record["started"]))) > 1.0:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
            return None

    def is_running(self) -> bool:
        return self.process() is not None

    def start(self, command: list[str], log_file: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None) -> psutil.Process:
        """Start ``command`` in its own session (it outlives the CLI), logging to ``log_file``."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as log:
            popen = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
                cwd=cwd,
            )
        proc = psutil.Process(popen.pid)
        self.pid_file.write_text(
            json.dumps({"pid": popen.pid, "started": proc.create_time(), "command": command})
        )
        return proc

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the recorded process and its children: SIGTERM, then SIGKILL after ``timeout_s``.

        Returns True if something was stopped. The pid file is removed either way.
        """
        return bool(stop_together([self], timeout_s))


def stop_together(processes: list[ManagedProcess], timeout_s: float = 30.0) -> list[ManagedProcess]:
    """Stop several recorded processes at once (SIGTERM to all, then SIGKILL to those left after
    ``timeout_s``); return the ones that were running. Their pid files are removed either way.

    At once, because the nodes of a Kafka quorum each need a majority to shut down cleanly: one by
    one, the last would wait for peers that are gone.
    """
    running = [(managed, proc) for managed in processes if (proc := managed.process()) is not None]
    family = [member for _, proc in running for member in (proc, *proc.children(recursive=True))]
    for member in family:
        _signal(member, signal.SIGTERM)
    _, alive = psutil.wait_procs(family, timeout=timeout_s)
    for member in alive:
        _signal(member, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=10)
    for managed in processes:
        managed.pid_file.unlink(missing_ok=True)
    return [managed for managed, _ in running]


def _signal(proc: psutil.Process, sig: int) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.send_signal(sig)


def port_is_free(host: str, port: int) -> bool:
    """True if nothing listens on host:port (we try to bind it, which is what the service will do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def require_free_port(service: str, host: str, port: int) -> None:
    if not port_is_free(host, port):
        holder = _port_holder(port)
        raise PortInUseError(
            f"{service}: port {host}:{port} is already in use{holder}. Stop that process, or point "
            f"the configuration at another port."
        )


def _port_holder(port: int) -> str:
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                return f" by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        pass
    return ""


def wait_for(condition: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.2,
             check: Callable[[], None] | None = None) -> None:
    """Poll ``condition()`` until it is truthy or raise ServiceError after ``timeout_s``.

    ``check`` runs before every poll and may raise to stop waiting early (e.g. a process died).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check is not None:
            check()
        if condition():
            return
        time.sleep(interval_s)
    raise ServiceError(f"{what}: not ready after {timeout_s:.0f}s")


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


class LocalService:
    """A service that ``mlops services`` runs as one managed process writing one log file."""

    name: str

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process = ManagedProcess(self.name, settings.run_dir / f"{self.name}.pid")
        self.log_file = settings.log_dir / f"{self.name}.log"

    def is_running(self) -> bool:
        return self.process.is_running()

    def stop(self) -> bool:
        return self.process.stop()

    def launch(self, command: list[str], wait_until_ready: Callable[[], None],
               env: dict[str, str] | None = None) -> None:
        """Start the process and wait until it is ready; if it is not, stop it and show the log's last lines."""
        self.process.start(command, self.log_file, env=env)
        try:
            wait_until_ready()
        except ServiceError as err:
            self.process.stop()
            raise ServiceError(f"{err}\n--- last lines of {self.log_file} ---\n{tail(self.log_file)}") from err

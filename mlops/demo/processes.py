"""The ``mlops`` processes one loop run starts, and how they are stopped.

A run starts each role as its own ``mlops`` process, exactly as an operator would, so that the
demo and the end-to-end tests exercise the real commands; this module owns their start order,
their logs and their shutdown.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlops.config import Settings
from mlops.errors import ServiceError

__all__ = ["EARLY_ROLES", "LIVE_ROLES", "QUIET_ENV", "Processes", "exit_on_sigterm"]

EARLY_ROLES = ("lake-sink", "api", "scheduler")
"""The `mlops` commands a run starts first (one process each): they need no champion yet."""
LIVE_ROLES = ("score", "loop run", "features follow")
"""Started once the initial model is champion: the scorer serves it, the loop judges against it, and the
Feast online store follows its predictions (the API's device endpoint reads it)."""
QUIET_ENV = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
"""No "View run ... at" line from MLflow for every run a process ends."""


class Processes:
    """The ``mlops`` processes of one run; each logs to ``<data_dir>/logs/<role>.log``."""

    def __init__(self, settings: Settings, env: dict[str, str]) -> None:
        self.settings = settings
        self.env = env
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def log_path(self, role: str) -> Path:
        return self.settings.log_dir / f"{role.replace(' ', '-')}.log"

    def start(self, role: str, *args: str) -> None:
        log_path = self.log_path(role)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            self.running[role] = subprocess.Popen(
                [sys.executable, "-m", "mlops", *role.split(), *args], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)

    def check(self) -> None:
        """Raise if a process died: the run cannot go on without it."""
        for role, proc in self.running.items():
            if proc.poll() is not None:
                tail = self.log_path(role).read_text(errors="replace")[-3000:]
                raise ServiceError(f"`mlops {role}` exited with code {proc.returncode}:\n{tail}")

    def stop_all(self, timeout_s: float = 60.0) -> list[str]:
        """Stop every process; return the roles that had to be killed after ``timeout_s``.

        SIGTERM goes to each ``mlops`` process only, so that it stops its own children in order
        (the loop's Spark JVM must outlive the Python code that talks to it); whatever is left in
        its process group afterwards, or after the grace time, is killed.
        """
        for proc in self.running.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        killed = []
        for role, proc in self.running.items():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed.append(role)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        self.running.clear()
        return killed


def exit_on_sigterm(signum: int, _frame: object) -> None:
    """A SIGTERM handler that exits like Ctrl-C does, so that ``finally`` stops the processes a run started."""
    raise SystemExit(128 + signum)

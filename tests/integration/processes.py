"""Processes for the fault tests: an `mlops` role as a subprocess, a paced stream that rides out a
broker restart, the test session's broker SIGKILLed and restarted, the lake's row count."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from mlops import kafka
from mlops.config import Settings
from mlops.data import lake
from mlops.data.publish import Pacer
from mlops.services.kafka_broker import KafkaBroker
from mlops.testing import settings_env
from tests.conftest import REPO

RATE = 1500.0  # readings/s: long enough for faults to land mid-stream


def _start(role: list[str], settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings), "MLOPS_CONFIG_DIR": str(REPO / "configs"),
           "MLOPS_LAKE__GROUP_ID": settings.lake.group_id}
    with log.open("ab") as sink:
        return subprocess.Popen([sys.executable, "-m", "mlops", *role], env=env, stdout=sink,
                                stderr=subprocess.STDOUT, cwd=REPO)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _stream(settings: Settings, values: list[tuple[bytes, str]], hold_at: int, release: threading.Event,
            done: threading.Event, errors: list[str]) -> None:
    """Publish at RATE with one idempotent producer; it rides out the broker's restart by retrying.

    The last records wait for ``release`` (every fault injected), so the faults land mid-stream
    however slowly a loaded machine restarts the processes."""
    producer = kafka.producer(settings.kafka)
    pacer = Pacer(RATE)
    topic = settings.kafka.topics.readings
    for index, (value, key) in enumerate(values):
        if index == hold_at and not release.wait(600):
            errors.append("the faults were not all injected within 600 s")
            break
        pacer.wait()
        kafka.produce(producer, topic, value, key,
                      on_delivery=lambda err, _msg: errors.append(str(err)) if err else None)
    if producer.flush(120):
        errors.append("records left undelivered after 120 s")
    done.set()


def _kill_broker(services: Settings, down_s: float = 0.0) -> None:
    """SIGKILL the session's broker and start it again after ``down_s`` seconds of outage."""
    broker = KafkaBroker(services)
    process = broker.process.process()
    assert process is not None, "the test session's broker is not running"
    process.kill()
    psutil.wait_procs([process], timeout=30)
    time.sleep(down_s)  # the length of the outage itself, not a wait for anything
    assert broker.start(), "the broker did not start again"


def _lake_rows(settings: Settings) -> int:
    try:
        return sum(c.rows for c in lake.read_commits(settings, "readings"))
    except lake.LakeError:
        return 0


def _recovery_lines(log: Path, limit: int = 80) -> str:
    """The scorer's own log lines (starts, reopens, aborts, rewinds, checks), without dead letters or client noise."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if " mlops.serve." in line]
    return "\n".join(lines[-limit:])


from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from mlops.errors import PortInUseError
from mlops.services.process import ManagedProcess, port_is_free, require_free_port


def test_taken_port_is_reported_with_its_holder() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{port} is already in use"):
            require_free_port("kafka", "127.0.0.1", port)


def test_stop_ends_exactly_the_recorded_process(tmp_path: Path) -> None:
    managed = ManagedProcess("sleeper", tmp_path / "sleeper.pid")
    bystander = ManagedProcess("bystander", tmp_path / "bystander.pid")
    command = [sys.executable, "-c", "import time; time.sleep(600)"]
    proc = managed.start(command, tmp_path / "sleeper.log")
    other = bystander.start(command, tmp_path / "bystander.log")
    try:
        assert managed.is_running()
        assert managed.stop(timeout_s=10)
        assert not proc.is_running() or proc.status() == "zombie"
        assert not (tmp_path / "sleeper.pid").exists()
        assert bystander.is_running() and other.is_running()
        assert not managed.stop()  # a second stop finds nothing to stop
    finally:
        bystander.stop(timeout_s=10)


def test_reused_pid_is_not_mistaken_for_our_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "ghost.pid"
    # A pid file pointing at this very test process, but with another start time: not ours.
    import json
    import os

    pid_file.write_text(json.dumps({"pid": os.getpid(), "started": 1.0, "command": ["x"]}))
    ghost = ManagedProcess("ghost", pid_file)
    assert not ghost.is_running()
    assert not ghost.stop()


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mlops.errors import ServiceError
    from mlops.services.kafka_broker import check_java

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServiceError, match="Java 17"):
        check_java()

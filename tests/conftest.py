"""Shared fixtures. Integration fixtures start the real services once per test session."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
os.environ.setdefault("MLOPS_CONFIG_DIR", str(REPO / "configs"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def unique(prefix: str) -> str:
    """A unique topic or group name, so tests never see each other's data."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def service_settings(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Settings for the test session's own broker and MLflow server: free ports, a temporary data dir.

    For quick iteration a developer may set MLOPS_TEST_SERVICES=running to use the services that
    `mlops services up` already runs on the local profile (CI never does).
    """
    from mlops.config import load_settings

    if os.environ.get("MLOPS_TEST_SERVICES") == "running":
        return load_settings("local")
    data_dir = tmp_path_factory.mktemp("mlops-data")
    mlflow_port = free_port()
    return load_settings(
        "local",
        overrides={
            "paths": {"data_dir": str(data_dir)},
            "kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}", "controller_port": free_port(),
                      "heap": "768m"},
            "mlflow": {"tracking_uri": f"http://127.0.0.1:{mlflow_port}"},
        },
    )


@pytest.fixture(scope="session")
def services(service_settings):  # type: ignore[no-untyped-def]
    """The real Kafka broker and MLflow server, started through the code behind `mlops services up`."""
    from mlops.services import manager

    os.environ["MLFLOW_TRACKING_URI"] = service_settings.mlflow.tracking_uri
    if os.environ.get("MLOPS_TEST_SERVICES") == "running":
        manager.require_ready(service_settings)
        yield service_settings
        return
    manager.up(service_settings, report=lambda _line: None)
    try:
        yield service_settings
    finally:
        manager.down(service_settings, report=lambda _line: None)


@pytest.fixture()
def topic_name() -> Iterator[str]:
    yield unique("test-topic")

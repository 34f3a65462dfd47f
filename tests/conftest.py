"""Shared fixtures. Integration fixtures start the real services once per test session.

Plain helpers (names, waiting, models, readers) live in :mod:`mlops.testing`, shared with bench/.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops.testing import free_port, unique

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
os.environ.setdefault("MLOPS_CONFIG_DIR", str(REPO / "configs"))


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


API_KEY = "test-key"
API_MAX_BATCH = 5


@pytest.fixture(scope="module")
def api_settings(services, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A model of the module's own with two registered versions, the first the champion, and the
    topics the API uses; the API key is API_KEY and a batch holds at most API_MAX_BATCH readings."""
    from mlops import kafka
    from mlops.registry.promotion import promote
    from mlops.testing import register_model
    from tests.integration.test_promotion import registry_settings

    settings = registry_settings(services, tmp_path_factory.mktemp("api"), unique("api"), api_key=API_KEY,
                                 max_batch=API_MAX_BATCH)
    wanted = {settings.kafka.topics.model_events, settings.kafka.topics.readings, settings.kafka.topics.predictions,
              settings.kafka.topics.dlq}
    kafka.ensure_topics(settings.kafka, [t for t in kafka.design_topics(settings.kafka) if t.name in wanted])
    first = register_model(settings, seed=1, alias=None)
    second = register_model(settings, seed=2, alias=None)
    promote(settings, first, actor="test", reason="setup", force=True)
    return settings, [first, second]

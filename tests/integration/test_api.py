"""The REST API against a model in the real MLflow registry: validation, auth, parity, hot swap."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from fastapi.testclient import TestClient

from mlops import kafka
from mlops.config import Settings
from mlops.features.compute import features_frame
from mlops.registry.loader import load_version
from mlops.registry.promotion import promote, rollback
from mlops.serve.api import create_app
from tests.conftest import free_port, unique
from tests.helpers_models import CommittedReader, fleet_readings, produce_readings, reading, register_model
from tests.integration.test_promotion import registry_settings

pytestmark = pytest.mark.integration

KEY = "test-key"
MAX_BATCH = 5


def wait_until(condition: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s}s: {what}")


@pytest.fixture(scope="module")
def api_settings(services: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, list[str]]:
    settings = registry_settings(services, tmp_path_factory.mktemp("api"), unique("api"), api_key=KEY,
                                 max_batch=MAX_BATCH)
    wanted = {settings.kafka.topics.model_events, settings.kafka.topics.readings, settings.kafka.topics.predictions,
              settings.kafka.topics.dlq}
    kafka.ensure_topics(settings.kafka, [t for t in kafka.design_topics(settings.kafka) if t.name in wanted])
    first = register_model(settings, seed=1, alias=None)
    second = register_model(settings, seed=2, alias=None)
    promote(settings, first, actor="test", reason="setup", force=True)
    return settings, [first, second]


@pytest.fixture(scope="module")
def client(api_settings: tuple[Settings, list[str]]) -> Iterator[TestClient]:
    settings, _ = api_settings
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        wait_until(lambda: test_client.get("/readyz").status_code == 200, 120, "model loaded")
        yield test_client


def raw(client: TestClient, body: str | bytes, **headers: str) -> httpx.Response:
    return client.post("/v1/predict", content=body, headers={"content-type": "application/json", **headers})


def with_sensor(value: str) -> str:
    good = reading(1, 1)
    text = json.dumps(good)
    return text.replace(json.dumps(good["sensors"]["s_2"]), value, 1)


def test_single_reading_and_batch_are_scored(client: TestClient, api_settings: Any) -> None:
    _settings, versions = api_settings
    one = client.post("/v1/predict", json=reading(1, 1))
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model_version"] == versions[0] and len(body["predictions"]) == 1
    prediction = body["predictions"][0]
    assert 0 <= prediction["probability"] <= 1 and prediction["decision"] in (0, 1)
    assert prediction["device_id"] == "dev-001"


def test_batch_matches_the_batch_feature_path(client: TestClient, api_settings: Any) -> None:
    """Readings of two devices, sent out of time order: the API orders each device's history itself."""
    settings, versions = api_settings
    readings = [*fleet_readings(2, range(1, 3))[::-1], reading(0, 3)]  # 5 readings, newest first
    answer = client.post("/v1/predict", json=readings)
    assert answer.status_code == 200, answer.text
    got = pd.DataFrame(answer.json()["predictions"])
    assert list(got["device_id"]) == [r["device_id"] for r in readings]

    model = load_version(settings, versions[0])
    rows = pd.DataFrame([{**r["sensors"], "device_id": r["device_id"], "event_time": pd.Timestamp(r["event_time"])}
                         for r in readings])
    features = features_frame(rows, model.spec)
    expected = model.predict_proba(features[model.spec.feature_names()].to_numpy())
    merged = got.assign(event_time=pd.to_datetime(got["event_time"])).merge(
        features[["device_id", "event_time"]].assign(expected=expected), on=["device_id", "event_time"])
    assert len(merged) == len(readings)
    np.testing.assert_allclose(merged["probability"], merged["expected"], rtol=1e-9)


def test_predictions_match_the_streaming_scorer(client: TestClient, api_settings: Any) -> None:
    from mlops.serve.scorer import Scorer

    settings, _ = api_settings
    readings = fleet_readings(1, range(1, 6))  # one device's history: MAX_BATCH readings
    produce_readings(settings, readings)
    Scorer(settings, group_id=unique("g")).run(max_events=len(readings))
    reader = CommittedReader(settings, settings.kafka.topics.predictions)
    try:
        reader.wait_for(len(readings), 60)
        streamed = {(p["device_id"], p["cycle"]): p for p in reader.records}
    finally:
        reader.close()
    answer = client.post("/v1/predict", json=readings).json()
    for p in answer["predictions"]:
        s = streamed[(p["device_id"], p["cycle"])]
        assert abs(p["probability"] - s["probability"]) < 1e-12 and p["decision"] == s["decision"]
        assert s["model_version"] == answer["model_version"]


BAD_INPUTS: dict[str, tuple[str | bytes, str]] = {
    "NaN token": (with_sensor("NaN"), "sensors.s_2"),
    "Infinity token": (with_sensor("Infinity"), "sensors.s_2"),
    "-Infinity token": (with_sensor("-Infinity"), "sensors.s_2"),
    "huge number": (with_sensor("1e400"), "sensors.s_2"),
    "missing field": (json.dumps({k: v for k, v in reading(1, 1).items() if k != "device_id"}), "body.device_id"),
    "extra field": (json.dumps({**reading(1, 1), "colour": "red"}), "body.colour"),
    "wrong type cycle": (json.dumps({**reading(1, 1), "cycle": "ten"}), "body.cycle"),
    "wrong type sensors": (json.dumps({**reading(1, 1), "sensors": [1, 2]}), "body.sensors"),
    "sensor not a number": (with_sensor('"hot"'), "sensors.s_2"),
    "naive time": (json.dumps({**reading(1, 1), "event_time": "2026-01-01T00:00:00"}), "body.event_time"),
    "unknown schema version": (json.dumps({**reading(1, 1), "schema_version": 2}), "body.schema_version"),
    "missing model sensor": (json.dumps({**reading(1, 1), "sensors": {"s_2": 1.0}}), "sensors.s_3"),
    "empty batch": ("[]", "body"),
    "oversized batch": (json.dumps([reading(1, c) for c in range(MAX_BATCH + 1)]), "body"),
    "bad item in batch": (json.dumps([reading(1, 1), {**reading(1, 2), "cycle": -1}]), "body[1].cycle"),
    "not JSON": ("{not json", "body"),
    "empty body": ("", "body"),
    "a number": ("42", "body"),
    "null": ("null", "body"),
    "bytes": (b"\xff\xfe\x00", "body"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gets_a_4xx_naming_the_field(client: TestClient, case: str) -> None:
    body, field = BAD_INPUTS[case]
    answer = raw(client, body)
    assert 400 <= answer.status_code < 500, (case, answer.status_code, answer.text)
    problem = answer.json()
    assert problem["error"].startswith("invalid request")
    assert any(field in f"{d['field']}: {d['message']}" for d in problem["detail"]), (case, problem)


def test_oversized_body_is_refused_before_reading_it(client: TestClient) -> None:
    answer = raw(client, "x" * (MAX_BATCH * 64 * 1024 + 1))
    assert answer.status_code == 413 and "exceeds" in answer.json()["error"]


def test_mutating_endpoints_need_the_key(client: TestClient, api_settings: Any) -> None:
    _settings, versions = api_settings
    body = {"version": versions[1], "reason": "no key", "force": True}
    for path, payload in (("/v1/promote", body), ("/v1/rollback", {"reason": "no key"})):
        assert client.post(path, json=payload).status_code == 401
        assert client.post(path, json=payload, headers={"X-API-Key": "wrong"}).status_code == 403
    assert client.get("/v1/model").json()["version"] == versions[0]
    bad = client.post("/v1/promote", json={"version": "x", "reason": ""}, headers={"X-API-Key": KEY})
    assert bad.status_code == 422 and {d["field"] for d in bad.json()["detail"]} == {"body.version", "body.reason"}
    missing = client.post("/v1/promote", json={"version": "9999", "reason": "r", "force": True},
                          headers={"X-API-Key": KEY})
    assert missing.status_code == 404


def test_openapi_documents_every_endpoint_and_its_errors(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert {"/v1/predict", "/v1/model", "/healthz", "/readyz", "/metrics", "/v1/promote", "/v1/rollback"} <= set(paths)
    assert {"422", "413", "503"} <= set(paths["/v1/predict"]["post"]["responses"])
    assert {"401", "403", "404", "409", "422"} <= set(paths["/v1/promote"]["post"]["responses"])
    assert "503" in paths["/readyz"]["get"]["responses"]
    assert "ErrorResponse" in spec["components"]["schemas"]


def test_metrics_count_requests(client: TestClient) -> None:
    client.get("/healthz")
    text = client.get("/metrics").text
    assert 'mlops_api_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert "mlops_api_model_version" in text


def ready(http: httpx.Client) -> bool:
    try:
        return http.get("/readyz").status_code == 200
    except httpx.TransportError:  # the server thread is not listening yet
        return False


class Server:
    """uvicorn in a thread on a free loopback port (the real HTTP stack)."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *_exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def test_promote_and_rollback_swap_the_model_without_failing_requests(api_settings: Any) -> None:
    settings, (first, second) = api_settings
    with Server(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
        wait_until(lambda: ready(http), 120, "model loaded")
        statuses: list[int] = []
        versions: set[str] = set()
        stop = threading.Event()

        def hammer() -> None:
            with httpx.Client(base_url=url, timeout=10) as own:
                while not stop.is_set():
                    answer = own.post("/v1/predict", json=reading(1, 1))
                    statuses.append(answer.status_code)
                    if answer.status_code == 200:
                        versions.add(answer.json()["model_version"])

        load = threading.Thread(target=hammer)
        load.start()
        try:
            promoted = http.post("/v1/promote", json={"version": second, "reason": "api test", "force": True},
                                 headers={"X-API-Key": KEY})
            assert promoted.status_code == 200, promoted.text
            started = time.monotonic()
            wait_until(lambda: http.get("/v1/model").json()["version"] == second, 10, "promotion served")
            promote_s = time.monotonic() - started

            rollback(settings, actor="test", reason="out of band")  # the CLI's path: only the event tells the API
            started = time.monotonic()
            wait_until(lambda: http.get("/v1/model").json()["version"] == first, 10, "rollback served")
            rollback_s = time.monotonic() - started
        finally:
            stop.set()
            load.join(30)
    assert statuses and set(statuses) == {200}, f"requests failed during the swaps: {set(statuses)}"
    assert versions == {first, second}
    assert promote_s < 10 and rollback_s < 10

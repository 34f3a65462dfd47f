"""The REST API against a model in the real MLflow registry: validation, auth, parity, batching,
hot swap, and device scoring from a real Feast online store (local provider, SQLite)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from fastapi.testclient import TestClient

from mlops.config import Settings
from mlops.features import feast_repo
from mlops.features.compute import features_frame
from mlops.registry.loader import LoadedModel, load_version
from mlops.registry.promotion import rollback
from mlops.serve.api import create_app
from mlops.testing import (
    SPEC,
    CommittedReader,
    fleet_readings,
    free_port,
    produce_readings,
    reading,
    unique,
    wait_until,
)
from tests.conftest import API_KEY, API_MAX_BATCH

pytestmark = pytest.mark.integration

KEY = API_KEY
MAX_BATCH = API_MAX_BATCH


@pytest.fixture(scope="module")
def client(api_settings: tuple[Settings, list[str]]) -> Iterator[TestClient]:
    settings, _ = api_settings
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        wait_until(lambda: test_client.get("/readyz").status_code == 200, 120, "model loaded")
        yield test_client


def expected_probabilities(model: LoadedModel, readings: list[dict[str, Any]]) -> pd.DataFrame:
    """Probabilities of ``readings`` through the batch feature path and the model itself, keyed by device and time."""
    rows = pd.DataFrame([{**r["sensors"], "device_id": r["device_id"], "event_time": pd.Timestamp(r["event_time"])}
                         for r in readings])
    features = features_frame(rows, model.spec)
    return features[["device_id", "event_time"]].assign(
        expected=model.predict_proba(features[model.spec.feature_names()].to_numpy()))


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

    merged = got.assign(event_time=pd.to_datetime(got["event_time"])).merge(
        expected_probabilities(load_version(settings, versions[0]), readings), on=["device_id", "event_time"])
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
    "truncated JSON": (with_sensor("1.0")[:-5], "body"),
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


def test_oversized_chunked_body_is_refused_while_reading_it(client: TestClient) -> None:
    chunks = (b"x" * 65536 for _ in range(MAX_BATCH + 1))  # no Content-Length: sent chunked
    answer = client.post("/v1/predict", content=chunks, headers={"content-type": "application/json"})
    assert answer.status_code == 413 and "exceeds" in answer.json()["error"]


def test_a_body_not_declared_as_json_gets_415(client: TestClient) -> None:
    answer = client.post("/v1/predict", content=json.dumps(reading(1, 1)), headers={"content-type": "text/plain"})
    assert answer.status_code == 415 and "application/json" in answer.json()["error"]


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
    assert {"/v1/predict", "/v1/predict/device/{device_id}", "/v1/model", "/healthz", "/readyz", "/metrics",
            "/v1/promote", "/v1/rollback"} <= set(paths)
    predict = paths["/v1/predict"]["post"]
    assert {"422", "413", "415", "503"} <= set(predict["responses"])
    body = predict["requestBody"]["content"]["application/json"]["schema"]["oneOf"]
    assert body[0] == {"$ref": "#/components/schemas/Reading"} and body[1]["maxItems"] == MAX_BATCH
    assert {"404", "422", "503"} <= set(paths["/v1/predict/device/{device_id}"]["post"]["responses"])
    assert {"401", "403", "404", "409", "422"} <= set(paths["/v1/promote"]["post"]["responses"])
    assert "503" in paths["/readyz"]["get"]["responses"]
    assert {"ErrorResponse", "Reading", "DevicePredictResponse"} <= set(spec["components"]["schemas"])


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


def test_concurrent_requests_batched_together_get_their_own_answers(api_settings: Any) -> None:
    """Requests scored in shared model calls: each answer is exactly what scoring it alone gives."""
    settings, _ = api_settings
    bodies = [fleet_readings(1 + i % 2, range(1, 2 + i % 2)) for i in range(24)]  # 1 or 4 readings, 1 or 2 devices
    with Server(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        wait_until(lambda: ready(http), 120, "model loaded")
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda body: http.post("/v1/predict", json=body), bodies))
        calls = http.get("/metrics").text
    models: dict[str, LoadedModel] = {}
    for body, answer in zip(bodies, answers, strict=True):
        assert answer.status_code == 200, answer.text
        version = answer.json()["model_version"]
        if version not in models:
            models[version] = load_version(settings, version)
        model = models[version]
        got = pd.DataFrame(answer.json()["predictions"])
        merged = got.assign(event_time=pd.to_datetime(got["event_time"])).merge(
            expected_probabilities(model, body), on=["device_id", "event_time"])
        assert len(merged) == len(body)
        np.testing.assert_allclose(merged["probability"], merged["expected"], rtol=1e-9)
    rows = float(calls.split("mlops_api_model_call_rows_sum ")[1].split("\n")[0])
    assert rows == sum(len(body) for body in bodies)  # every row scored once, whatever the batching


# ------------------------------------------------------------------------------ device endpoint

def with_data_dir(settings: Settings, data_dir: Path) -> Settings:
    """The same model, topics and database, with a Feast repo and feature table of the test's own."""
    return settings.model_copy(update={"paths": settings.paths.model_copy(update={"data_dir": data_dir})})


@pytest.fixture(scope="module")
def feast_client(api_settings: tuple[Settings, list[str]], tmp_path_factory: pytest.TempPathFactory,
                 ) -> Iterator[tuple[TestClient, Settings]]:
    """An API whose Feast repo starts empty (nothing applied or materialised yet)."""
    settings = with_data_dir(api_settings[0], tmp_path_factory.mktemp("feast-api"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        wait_until(lambda: test_client.get("/readyz").status_code == 200, 120, "model loaded")
        yield test_client, settings


def latest_features(readings: list[dict[str, Any]]) -> pd.DataFrame:
    rows = pd.DataFrame([{**r["sensors"], "device_id": r["device_id"], "event_time": pd.Timestamp(r["event_time"])}
                         for r in readings])
    return features_frame(rows, SPEC)


def test_device_is_scored_from_its_online_features(feast_client: tuple[TestClient, Settings]) -> None:
    """Empty store: 503; materialised: the latest row scored, unknown devices 404; pushed: the new row."""
    client, settings = feast_client
    before = client.post("/v1/predict/device/dev-000")
    assert before.status_code == 503, before.text  # no feature view applied yet: a clear 503, not a 500
    assert "online features unavailable" in before.json()["error"]

    features = latest_features(fleet_readings(3, range(1, 8)))
    feast_repo.write_feature_table(settings, features, SPEC)
    feast_repo.apply(settings, SPEC)
    feast_repo.materialize(settings)

    answer = client.post("/v1/predict/device/dev-001")  # the reader reopens the store after the failure
    assert answer.status_code == 200, answer.text
    body = answer.json()
    latest = features[features["device_id"] == "dev-001"].sort_values("event_time").iloc[-1]
    model = load_version(settings, body["model_version"])
    expected = model.predict_proba(latest[SPEC.feature_names()].to_numpy(dtype=np.float64)[None, :])[0]
    assert body["device_id"] == "dev-001" and body["model_name"] == settings.mlflow.registered_model
    assert abs(body["probability"] - expected) < 1e-12
    assert body["decision"] == int(expected >= model.threshold)
    assert pd.Timestamp(body["features_time"]) == pd.Timestamp(latest["event_time"]).floor("s")

    unknown = client.post("/v1/predict/device/dev-999")
    assert unknown.status_code == 404, unknown.text
    assert "dev-999" in unknown.json()["error"] and "materialize" in unknown.json()["error"]

    # A push (the streaming path) replaces the device's online row; the next answer uses it.
    pushed = latest.to_frame().T.assign(event_time=pd.Timestamp(latest["event_time"]) + pd.Timedelta(minutes=5))
    pushed[SPEC.feature_names()] = 3.0
    feast_repo.push_online(feast_repo.open_store(settings), pushed, SPEC)
    after = client.post("/v1/predict/device/dev-001").json()
    pushed_expected = model.predict_proba(np.full((1, len(SPEC.feature_names())), 3.0))[0]
    assert abs(after["probability"] - pushed_expected) < 1e-12


def test_bad_device_ids_get_a_422_naming_the_path(feast_client: tuple[TestClient, Settings]) -> None:
    client, _settings = feast_client
    for bad in ("", "x" * 129):
        answer = client.post(f"/v1/predict/device/{bad}")
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"][0]["field"] == "path.device_id"


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

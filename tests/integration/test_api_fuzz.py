"""The REST API fuzzed against its own OpenAPI schema (schemathesis): positive and negative data,
with and without the API key, every schemathesis check. No answer is a 5xx, every answer is one
the schema declares, every 4xx says what is wrong, and promote/rollback answer in bounded time.

The API is a real `mlops api` process on a loopback port, serving a champion from the real MLflow
registry (its sensors are required by the schema), with a Feast online store that has the feature
view applied and a few devices materialized (so the device endpoint answers 200 or 404, not 503).
docs/api.md ("Fuzzing") lists the checks and the command line that runs the same fuzz.

schemathesis runs through its engine (what `st run` runs), not its pytest plugin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis

from mlops import store
from mlops.config import Settings
from mlops.features import feast_repo
from mlops.registry.catalog import VersionNotFoundError, aliases
from mlops.registry.promotion import MAX_REGISTRY_VERSION, promote, rollback
from mlops.testing import SPEC, fleet_readings, free_port, settings_env, wait_until
from tests.conftest import API_KEY
from tests.integration.test_api import latest_features, with_data_dir

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = 30
"""Fuzzing-phase cases per operation and generation mode; the examples and coverage phases add
their own boundary cases (about 550 requests per pass, two passes; see docs/api.md)."""
SEED = 20261202
REQUEST_TIMEOUT_S = 30
CHANGE_BOUND_S = 10.0
"""A promote or rollback takes well under a second here; one that takes longer is waiting on
something (a registry retrying a 500 took 245 s before versions were bounded)."""
OPERATIONS = {"GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/model", "POST /v1/predict",
              "POST /v1/predict/device/{device_id}", "POST /v1/promote", "POST /v1/rollback"}
CHANGES = {"POST /v1/promote", "POST /v1/rollback"}


@dataclass
class ApiProcess:
    url: str
    settings: Settings
    log: Path


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=url, timeout=5) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"mlops api exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if http.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:  # not listening yet
                pass
            time.sleep(0.2)
    raise AssertionError(f"mlops api not ready within {timeout_s}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def live_api(api_settings: tuple[Settings, list[str]], tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[ApiProcess]:
    """`mlops api` as its own process, its model loaded and its online store holding three devices."""
    settings = with_data_dir(api_settings[0], tmp_path_factory.mktemp("fuzz-feast"))
    feast_repo.write_feature_table(settings, latest_features(fleet_readings(3, range(1, 8))), SPEC)
    feast_repo.apply(settings, SPEC)
    feast_repo.materialize(settings)
    port = free_port()
    env = {**os.environ, **settings_env(settings), "MLOPS_DATABASE__URL": settings.database_url,
           "MLOPS_API__API_KEY": settings.api.api_key, "MLOPS_API__MAX_BATCH": str(settings.api.max_batch)}
    log = settings.data_dir / "api.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlops", "api", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log, 120)
        # The first device request opens the Feast store (seconds of imports on a busy machine):
        # done here, so no fuzzed request waits for it.
        answer = httpx.post(f"{url}/v1/predict/device/dev-001", timeout=120)
        assert answer.status_code == 200, answer.text
        yield ApiProcess(url, settings, log)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module", params=[True, False], ids=["with-key", "without-key"])
def with_key(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def live_schema(url: str, with_key: bool) -> Any:
    """The schema the live API serves, set up to fuzz it with every check, deterministically."""
    config: dict[str, Any] = {
        "seed": SEED,
        "request-timeout": REQUEST_TIMEOUT_S,
        "checks": {"enabled": True},
        "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True}},
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    }
    if with_key:
        config["auth"] = {"openapi": {"APIKeyHeader": {"api_key": API_KEY}}}
    return schemathesis.openapi.from_url(f"{url}/openapi.json", config=schemathesis.Config.from_dict(config))


@dataclass
class FuzzRun:
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    unclear: list[str] = field(default_factory=list)
    slowest: dict[str, float] = field(default_factory=dict)


def unclear_error(status: int, body: bytes) -> str | None:
    """Why a 4xx body does not say what is wrong, or None if it does.

    Every error is ``{"error": ..., "detail": [...]}``; a 422 names each field and why, and its
    summary names the first one."""
    try:
        answer = json.loads(body)
    except ValueError:
        return "not JSON"
    if not isinstance(answer, dict) or not isinstance(answer.get("error"), str) or not answer["error"].strip():
        return "no error message"
    if status == 422:
        detail = answer.get("detail")
        if not detail or not all(isinstance(d, dict) and d.get("field") and d.get("message") for d in detail):
            return "a 422 without the field and the reason"
        if detail[0]["field"] not in answer["error"]:
            return f"summary does not name field {detail[0]['field']!r}"
    return None


def fuzz(schema: Any) -> FuzzRun:
    """Run schemathesis' engine on ``schema`` and collect what each answer and check said."""
    from schemathesis.engine import Status, events, from_schema

    run = FuzzRun()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            for checks in recorder.checks.values():
                run.failures += [f"{recorder.label}: {c.name}: {c.failure_info}" for c in checks
                                 if c.status == Status.FAILURE]
            for interaction in recorder.interactions.values():
                response = interaction.response
                if response is None:
                    continue
                run.statuses[(recorder.label, response.status_code)] += 1
                run.slowest[recorder.label] = max(run.slowest.get(recorder.label, 0.0), response.elapsed)
                if 400 <= response.status_code < 500:
                    why = unclear_error(response.status_code, response.content)
                    if why:
                        request = interaction.request
                        run.unclear.append(f"{request.method} {request.uri} {request.body!r} -> "
                                           f"{response.status_code} {response.content[:200]!r}: {why}")
        elif isinstance(event, events.NonFatalError):
            run.errors.append(f"{event.label}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            run.errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            run.failures += [str(f) for f in event.failures]
    return run


def test_every_answer_is_declared_none_is_a_server_error_and_every_4xx_says_why(
        live_api: ApiProcess, with_key: bool) -> None:
    started = time.monotonic()
    run = fuzz(live_schema(live_api.url, with_key))
    total = sum(run.statuses.values())
    by_status: Counter[int] = Counter()
    for (_label, status), count in run.statuses.items():
        by_status[status] += count
    print(f"fuzzed API ({'with' if with_key else 'without'} key): {total} requests in "
          f"{time.monotonic() - started:.0f}s, {len(run.failures)} failed checks, {len(run.errors)} errors, "
          f"statuses {dict(sorted(by_status.items()))}, slowest "
          + ", ".join(f"{label} {s:.2f}s" for label, s in sorted(run.slowest.items())))
    assert not run.failures, "\n".join(run.failures)
    assert not run.errors, "\n".join(run.errors)  # a request that timed out is one
    assert not [key for key in run.statuses if key[1] >= 500]
    assert not run.unclear, "\n".join(run.unclear[:10])
    assert {label for label, _ in run.statuses} == OPERATIONS
    assert all(run.slowest[label] < CHANGE_BOUND_S for label in CHANGES), run.slowest
    changes = {s for (label, s) in run.statuses if label in CHANGES}
    if with_key:  # the key opened the mutating endpoints: not only 401s, and some went through
        assert 200 in changes and changes - {200, 401, 403}
    else:
        assert 200 not in changes
    assert total >= len(OPERATIONS) * MAX_EXAMPLES


# The registry stores versions as 64-bit integers; MLflow answers a larger one with a 500 that its
# client retries for about 4 minutes. Under the fuzz, promote and rollback of such a version hung.
BEYOND_REGISTRY = str(MAX_REGISTRY_VERSION + 1)


@pytest.mark.timeout(120)
def test_a_version_the_registry_cannot_hold_is_refused_at_once(live_api: ApiProcess) -> None:
    settings = live_api.settings
    champion_before = aliases(settings).get("champion")
    rows_before = len(store.list_events(settings, kinds=["promotion", "rollback"]))
    headers = {"X-API-Key": API_KEY}
    with httpx.Client(base_url=live_api.url, headers=headers, timeout=REQUEST_TIMEOUT_S) as http:
        for path, body, where in [
            ("/v1/promote", {"version": BEYOND_REGISTRY, "reason": "fuzz", "force": True}, "body.version"),
            ("/v1/rollback", {"to_version": "9" * 32, "reason": "fuzz"}, "body.to_version"),
        ]:
            began = time.monotonic()
            answer = http.post(path, json=body)
            assert time.monotonic() - began < CHANGE_BOUND_S
            assert answer.status_code == 422, answer.text
            assert where in answer.json()["error"]
        # The longest version the API accepts is one the registry answers for at once: 404.
        began = time.monotonic()
        answer = http.post("/v1/promote", json={"version": "9" * 18, "reason": "fuzz", "force": True})
        assert time.monotonic() - began < CHANGE_BOUND_S
        assert answer.status_code == 404 and "9" * 18 in answer.json()["error"], answer.text

    # The CLI's path (the same functions) refuses it before asking the registry.
    for change in (lambda: promote(settings, BEYOND_REGISTRY, actor="test", reason="fuzz", force=True),
                   lambda: rollback(settings, BEYOND_REGISTRY, actor="test", reason="fuzz")):
        began = time.monotonic()
        with pytest.raises(VersionNotFoundError, match=f"version {BEYOND_REGISTRY}: no such version"):
            change()
        assert time.monotonic() - began < CHANGE_BOUND_S
    # The largest version the registry can hold is looked up, and is not found, at once.
    began = time.monotonic()
    with pytest.raises(VersionNotFoundError, match="not in the registry"):
        promote(settings, str(MAX_REGISTRY_VERSION), actor="test", reason="fuzz", force=True)
    assert time.monotonic() - began < CHANGE_BOUND_S

    assert aliases(settings).get("champion") == champion_before
    assert len(store.list_events(settings, kinds=["promotion", "rollback"])) == rows_before


def test_concurrent_promotes_and_rollbacks_each_answer_in_bounded_time(
        live_api: ApiProcess, api_settings: tuple[Settings, list[str]]) -> None:
    """Requests that meet at the champion lock wait their turn, none hangs.

    Each change holds the lock for about half a second here (most of it publishing the model event),
    so the last in line waits for the others: bounded by the queue, well inside the client's timeout."""
    settings = live_api.settings
    first, second = api_settings[1]
    start_id = store.list_events(settings, newest_first=True, limit=1)[0].id
    requests: list[tuple[str, dict[str, Any]]] = [
        ("/v1/promote", {"version": second, "reason": f"race {i}", "force": True}) if i % 2 == 0 else
        ("/v1/rollback", {"to_version": first, "reason": f"race {i}"}) for i in range(6)]

    def send(path: str, body: dict[str, Any]) -> tuple[int, float, str]:
        began = time.monotonic()
        with httpx.Client(base_url=live_api.url, headers={"X-API-Key": API_KEY}, timeout=REQUEST_TIMEOUT_S) as http:
            answer = http.post(path, json=body)
        return answer.status_code, time.monotonic() - began, answer.text

    with ThreadPoolExecutor(len(requests)) as pool:
        answers = list(pool.map(lambda r: send(*r), requests))
    print("concurrent changes:", [(status, f"{s:.2f}s") for status, s, _ in answers])
    assert all(status == 200 for status, _, _ in answers), answers
    assert max(s for _, s, _ in answers) < len(requests) * CHANGE_BOUND_S / 2
    # Serialised: every action saw the one before it, and the alias is where the last one put it.
    rows = [r for r in store.list_events(settings, kinds=["promotion", "rollback"]) if r.id > start_id]
    assert sorted(r.reason or "" for r in rows) == sorted(str(body["reason"]) for _, body in requests)
    assert [r.previous_version for r in rows[1:]] == [r.model_version for r in rows[:-1]]
    assert aliases(settings).get("champion") == rows[-1].model_version
    with httpx.Client(base_url=live_api.url, timeout=REQUEST_TIMEOUT_S) as http:
        wait_until(lambda: http.get("/v1/model").json()["version"] == rows[-1].model_version, 30,
                   f"the API serves version {rows[-1].model_version}")

"""The REST API fuzzed against its own OpenAPI schema (schemathesis): positive and negative data,
with and without the API key, every schemathesis check. No answer is a 5xx and every answer is
one the schema declares, so `/openapi.json` says exactly what the API accepts and returns.

The API is the real one: uvicorn on a loopback port, a champion from the real MLflow registry
(its sensors are required by the schema) and a Feast online store with the feature view applied
and a few devices materialized (so the device endpoint answers 200 or 404, not 503).
docs/api.md ("Fuzzing") lists the checks and the command line that runs the same fuzz.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis

from mlops.config import Settings
from mlops.features import feast_repo
from tests.conftest import API_KEY
from tests.helpers_models import SPEC, fleet_readings
from tests.integration.test_api import Server, latest_features, ready, wait_until, with_data_dir

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 25
"""Fuzzing-phase cases per operation and generation mode; the coverage phase adds its own
boundary cases (all told about 300 cases per pass, two passes; see docs/api.md)."""
SEED = 20261202
OPERATIONS = {"GET /healthz", "GET /readyz", "GET /metrics", "GET /v1/model", "POST /v1/predict",
              "POST /v1/predict/device/{device_id}", "POST /v1/promote", "POST /v1/rollback"}

@pytest.fixture(scope="module")
def live_api(api_settings: tuple[Settings, list[str]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API over HTTP, its model loaded and its online store holding three devices' features."""
    settings = with_data_dir(api_settings[0], tmp_path_factory.mktemp("fuzz-feast"))
    feast_repo.write_feature_table(settings, latest_features(fleet_readings(3, range(1, 8))), SPEC)
    feast_repo.apply(settings, SPEC)
    feast_repo.materialize(settings)
    with Server(settings) as url, httpx.Client(base_url=url, timeout=120) as http:
        wait_until(lambda: ready(http), 120, "model loaded")
        # The first device request opens the Feast store (seconds of imports on a busy machine):
        # done here, so no fuzzed request waits for it.
        assert http.post("/v1/predict/device/dev-001").status_code == 200
        yield url


@pytest.fixture(scope="module", params=[True, False], ids=["with-key", "without-key"])
def with_key(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture(scope="module")
def live_schema(live_api: str, with_key: bool) -> Any:
    """The schema the live API serves, set up to fuzz it with every check, deterministically."""
    config: dict[str, Any] = {
        "seed": SEED,
        "request-timeout": 30,
        "checks": {"enabled": True},
        "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True}},
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    }
    if with_key:
        config["auth"] = {"openapi": {"APIKeyHeader": {"api_key": API_KEY}}}
    return schemathesis.openapi.from_url(f"{live_api}/openapi.json", config=schemathesis.Config.from_dict(config))


def fuzz(schema: Any) -> tuple[Counter[tuple[str, int]], list[str], list[str]]:
    """Run schemathesis' engine (what `st run` runs) on ``schema``: the answers by operation and
    status, the failed checks and the errors."""
    from schemathesis.engine import Status, events, from_schema

    statuses: Counter[tuple[str, int]] = Counter()
    failures: list[str] = []
    errors: list[str] = []
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            for case_id, checks in recorder.checks.items():
                failures += [f"{recorder.label}: {c.name}: {c.failure_info}" for c in checks
                             if c.status == Status.FAILURE]
                del case_id
            for interaction in recorder.interactions.values():
                if interaction.response is not None:
                    statuses[(recorder.label, interaction.response.status_code)] += 1
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.info.message}")
        elif isinstance(event, events.FatalError):
            errors.append(f"fatal: {event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            failures += [str(f) for f in event.failures]
    return statuses, failures, errors


def test_every_answer_is_declared_and_none_is_a_server_error(live_schema: Any, with_key: bool) -> None:
    statuses, failures, errors = fuzz(live_schema)
    total = sum(statuses.values())
    by_status: Counter[int] = Counter()
    for (_label, status), count in statuses.items():
        by_status[status] += count
    print(f"fuzzed API ({'with' if with_key else 'without'} key): {total} requests, "
          f"statuses {dict(sorted(by_status.items()))}")
    assert not failures, "\n".join(failures)
    assert not errors, "\n".join(errors)
    assert not [key for key in statuses if key[1] >= 500]
    assert {label for label, _ in statuses} == OPERATIONS
    if with_key:  # the key opened the mutating endpoints: not only 401s
        assert {s for (label, s) in statuses if label == "POST /v1/promote"} - {401, 403}
    assert total >= len(OPERATIONS) * MAX_EXAMPLES

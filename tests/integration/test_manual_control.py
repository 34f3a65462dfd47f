"""People take over from the loop: `mlops promote` and `mlops rollback`, run as real commands, reach
both the running REST API (`GET /v1/model`, the version on its answers) and the running streaming
scorer (the version on its predictions) within 10 seconds, with no failed request on the way."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from mlops import kafka
from mlops.config import Settings
from mlops.registry.promotion import promote
from mlops.serve.scorer import Scorer
from mlops.testing import (
    CommittedReader,
    fleet_readings,
    produce_readings,
    register_model,
    settings_env,
    unique,
    wait_until,
)
from tests.integration.test_api import Server, ready
from tests.integration.test_promotion import champion, registry_settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FOLLOW_S = 10.0


def mlops_command(settings: Settings, *args: str) -> float:
    """Run `mlops ARGS` as its own process; the time it exited (the alias has moved by then)."""
    env = {**os.environ, **settings_env(settings), "MLOPS_DATABASE__URL": settings.database_url}
    done = subprocess.run([sys.executable, "-m", "mlops", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=180, check=False)
    assert done.returncode == 0, f"mlops {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return time.monotonic()


def test_cli_promote_and_rollback_reach_the_api_and_the_scorer_within_10s(
        services: Settings, tmp_path: Path) -> None:
    # Registry polling is slow here: the model event published by the command must do it.
    settings = registry_settings(services, tmp_path, unique("manual"))
    settings = settings.model_copy(update={"scorer": settings.scorer.model_copy(
        update={"registry_poll_s": 600.0, "metrics_port": 0, "batch_size": 50})})
    kafka.ensure_topics(settings.kafka, kafka.design_topics(settings.kafka))
    first = register_model(settings, seed=1, alias=None)
    second = register_model(settings, seed=2, alias=None)
    promote(settings, first, actor="test", reason="setup", force=True)

    readings = fleet_readings(devices=4, cycles=range(1, 2001))
    produce_readings(settings, readings[:40])
    sent = 40
    scorer, stop = Scorer(settings, group_id=unique("g")), threading.Event()
    scoring = threading.Thread(target=scorer.run, kwargs={"stop": stop}, daemon=True)
    out = CommittedReader(settings, settings.kafka.topics.predictions, **{"fetch.wait.max.ms": 50})
    statuses: list[int] = []
    api_versions: set[str] = set()

    def follow(version: str, since: float, http: httpx.Client) -> tuple[float, float]:
        """Seconds after ``since`` until the API serves ``version`` and the scorer stamps it."""
        nonlocal sent
        api_at = stream_at = None
        seen = len(out.records)
        while api_at is None or stream_at is None:
            assert time.monotonic() - since < FOLLOW_S, (
                f"version {version} not followed within {FOLLOW_S}s: api {api_at}, scorer {stream_at}")
            produce_readings(settings, readings[sent:sent + 4])  # keep the stream flowing
            sent += 4
            out.poll(0.1)
            if stream_at is None and any(p["model_version"] == version for p in out.records[seen:]):
                stream_at = time.monotonic() - since
            answer = http.post("/v1/predict", json=readings[0])
            statuses.append(answer.status_code)
            if answer.status_code == 200:
                api_versions.add(answer.json()["model_version"])
            if api_at is None and http.get("/v1/model").json()["version"] == version:
                api_at = time.monotonic() - since
        return api_at, stream_at

    scoring.start()
    try:
        with Server(settings) as url, httpx.Client(base_url=url, timeout=10) as http:
            wait_until(lambda: ready(http), 120, "API model loaded")
            out.wait_for(40, timeout_s=120, alive=scoring.is_alive)
            assert {p["model_version"] for p in out.records} == {first}

            promoted_at = mlops_command(settings, "promote", second, "--force", "--reason", "manual test")
            assert champion(settings) == second
            promote_api_s, promote_stream_s = follow(second, promoted_at, http)

            rolled_at = mlops_command(settings, "rollback", "--reason", "manual test")
            assert champion(settings) == first
            rollback_api_s, rollback_stream_s = follow(first, rolled_at, http)
    finally:
        stop.set()
        scoring.join(60)
        out.close()
    print(f"promote: api {promote_api_s:.2f}s, scorer {promote_stream_s:.2f}s; "
          f"rollback: api {rollback_api_s:.2f}s, scorer {rollback_stream_s:.2f}s")
    assert max(promote_api_s, promote_stream_s, rollback_api_s, rollback_stream_s) < FOLLOW_S
    assert set(statuses) == {200}, f"requests failed during the swaps: {set(statuses)}"
    assert api_versions == {first, second}
    assert not scorer.summary.aborted

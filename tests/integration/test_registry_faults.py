"""A lost registry: the MLflow server stops while a promotion is announced, while the scorer loads the new
champion, and before a promotion or rollback. The champion keeps serving, the failure is recorded, the
alias poll completes the swap once the server is back, and a command that cannot reach the registry
fails naming it, with nothing changed.

These tests stop and start an MLflow server of their own (own port, SQLite backend and artifacts),
through the code behind `mlops services up`, so the session's server stays up for the other tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops import kafka, store
from mlops.config import Settings, load_settings
from mlops.mlflow import RegistryUnavailableError, tracking_client
from mlops.registry.catalog import aliases
from mlops.registry.loader import LoadedModel, load_version
from mlops.registry.promotion import promote, rollback
from mlops.registry.watcher import ModelWatcher
from mlops.serve.scorer import Scorer
from mlops.services.mlflow_server import MlflowServer, is_ready
from mlops.testing import (
    CommittedReader,
    fleet_readings,
    free_port,
    produce_readings,
    register_model,
    settings_env,
    unique,
    wait_until,
)
from mlops.testing import topic_overrides as topics_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


class Registry:
    """An MLflow server these tests may stop: the product's MlflowServer on a port and data dir of its own."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server = MlflowServer(settings)

    def start(self) -> None:
        self.server.start()  # returns once /health answers

    def stop(self) -> None:
        assert self.server.stop(), "the test's MLflow server was not running"
        assert not is_ready(self.settings.mlflow, timeout_s=1.0)

    def ensure_up(self) -> None:
        if not self.server.is_running():
            self.start()


@pytest.fixture(scope="module")
def registry(services: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    data_dir = tmp_path_factory.mktemp("registry-faults")
    settings = load_settings("local", overrides={
        "paths": {"data_dir": str(data_dir)},
        "kafka": {"bootstrap_servers": services.kafka.bootstrap_servers},
        "mlflow": {"tracking_uri": f"http://127.0.0.1:{free_port()}", "experiment": "registry-faults"},
    })
    own = Registry(settings)
    own.start()
    try:
        yield own
    finally:
        own.server.stop()


def fault_settings(registry: Registry, tmp_path: Path, tag: str, **scorer: Any) -> Settings:
    """Settings on the test's own MLflow server, the session's broker, topics/model/database of the test."""
    base = registry.settings
    return load_settings("local", overrides={
        "paths": {"data_dir": str(base.data_dir)},
        "kafka": {"bootstrap_servers": base.kafka.bootstrap_servers, "topics": topics_for(tag)},
        "mlflow": {"tracking_uri": base.mlflow.tracking_uri, "registered_model": f"model-{tag}",
                   "experiment": "registry-faults"},
        "database": {"url": f"sqlite:///{tmp_path / 'mlops.db'}"},
        "scorer": {"metrics_port": 0, "session_timeout_ms": 6000, "batch_size": 50, **scorer},
    })


def audit_rows(settings: Settings) -> list[store.EventRecord]:
    return store.list_events(settings, model_name=settings.mlflow.registered_model, kinds=["promotion", "rollback"])


def test_scorer_keeps_serving_while_the_registry_is_down_and_swaps_when_it_returns(
        registry: Registry, tmp_path: Path) -> None:
    """Announced during the outage: the promotion goes through the registry's backend store (as another
    server of the same store would), its event reaches the scorer, whose registry is stopped."""
    registry.ensure_up()
    settings = fault_settings(registry, tmp_path, unique("outage"), registry_poll_s=1.0)
    kafka.ensure_topics(settings.kafka, kafka.design_topics(settings.kafka))
    old = register_model(settings, seed=1)
    new = register_model(settings, seed=2, alias=None)
    readings = fleet_readings(devices=6, cycles=range(1, 201))
    produce_readings(settings, readings[:120])
    sent = 120
    scorer, stop = Scorer(settings, group_id=unique("g")), threading.Event()
    thread = threading.Thread(target=scorer.run, kwargs={"stop": stop}, daemon=True)
    out = CommittedReader(settings, settings.kafka.topics.predictions)
    thread.start()
    try:
        out.wait_for(120, timeout_s=120, alive=thread.is_alive)
        assert {p["model_version"] for p in out.records} == {old}

        registry.stop()
        same_store = settings.model_copy(update={"mlflow": settings.mlflow.model_copy(
            update={"tracking_uri": settings.mlflow_backend_store_uri})})
        announced = promote(same_store, new, actor="ops", reason="promoted during the outage", force=True)
        assert announced.changed and announced.event_published
        # The failure is recorded: the scorer counts the announced version it could not load.
        wait_until(lambda: scorer.metrics.value("mlops_scorer_model_load_failures_total") >= 1, 60,
                   "the scorer records the unreachable registry", step=lambda: out.poll(0.2))
        # The champion keeps serving: readings sent during the outage are scored by the old version.
        produce_readings(settings, readings[sent:sent + 120])
        sent += 120
        out.wait_for(sent, timeout_s=60, alive=thread.is_alive)
        assert {p["model_version"] for p in out.records} == {old}
        assert scorer.metrics.value("mlops_scorer_model_version") == float(old)

        restarted_at = time.monotonic()
        registry.start()
        back_at = time.monotonic()

        def keep_streaming() -> None:
            nonlocal sent
            if sent < len(readings):
                produce_readings(settings, readings[sent:sent + 6])
                sent += 6
            out.poll(0.2)

        wait_until(lambda: any(p["model_version"] == new for p in out.records), 60,
                   "a prediction by the new version after the registry returned", step=keep_streaming)
        swapped_s = time.monotonic() - back_at
        produce_readings(settings, readings[sent:])
        out.wait_for(len(readings), timeout_s=60, alive=thread.is_alive)
    finally:
        stop.set()
        thread.join(60)
        out.close()
        registry.ensure_up()
    print(f"registry restart {back_at - restarted_at:.1f}s; swap {swapped_s:.1f}s after it answered "
          f"(poll every {settings.scorer.registry_poll_s}s)")
    # Within a poll or two of the server's return (plus the model's load), never a reading twice or lost.
    assert swapped_s < 15
    assert len(out.records) == len(readings)
    assert len({(p["source"]["partition"], p["source"]["offset"]) for p in out.records}) == len(readings)
    by_partition: dict[int, list[str]] = defaultdict(list)
    for p in sorted(out.records, key=lambda p: (p["source"]["partition"], p["source"]["offset"])):
        by_partition[p["source"]["partition"]].append(p["model_version"])
    for seq in by_partition.values():
        assert seq == sorted(seq, key=lambda v: v == new), "a partition went back to the old version"
    assert scorer.metrics.value("mlops_scorer_model_version") == float(new)
    assert not scorer.summary.aborted
    assert [(r.kind, r.model_version, r.previous_version) for r in audit_rows(settings)] == [
        ("promotion", new, old)]


def test_registry_lost_while_loading_the_new_champion_is_retried_at_the_next_poll(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server stops after the watcher saw the new alias, just as it starts loading that version."""
    registry.ensure_up()
    # No client retries: the load fails the moment the server is gone (with MLflow's default budget a
    # short outage is absorbed inside the load instead), so the poll is what completes the swap.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    settings = fault_settings(registry, tmp_path, unique("midload"))
    old = register_model(settings, seed=1)
    new = register_model(settings, seed=2, alias=None)
    loads: list[str] = []
    failures: list[tuple[str, str]] = []

    def stop_then_load(s: Settings, version: str) -> LoadedModel:
        loads.append(version)
        if len(loads) == 1:
            registry.stop()
        return load_version(s, version)  # the real loader, against the real (stopped) server

    watcher = ModelWatcher(settings, current_version=old, poll_s=0.5, loader=stop_then_load,
                           on_failure=lambda version, error: failures.append((version, error)))
    with watcher:
        tracking_client(settings).set_registered_model_alias(
            settings.mlflow.registered_model, "champion", new)
        try:
            wait_until(lambda: failures, 60, "the failed load is reported")
            # Later polls find the server down, are counted, and never hand over a model.
            seen = watcher.registry_failures
            wait_until(lambda: watcher.registry_failures >= seen + 2, 30, "polls during the outage")
            assert watcher.take() is None
            assert watcher.failures == 0, "an unreachable registry must not mark the version broken"
            assert failures == [(new, failures[0][1])] and settings.mlflow.tracking_uri in failures[0][1]
            assert watcher.last_error is not None and "is not reachable" in watcher.last_error
        finally:
            registry.ensure_up()
        back_at = time.monotonic()
        swapped = wait_until(watcher.take, 60, "the new version handed over after the server returned")
        swapped_s = time.monotonic() - back_at
    print(f"loads attempted: {loads}; failed checks during the outage: {watcher.registry_failures}; "
          f"handed over {swapped_s:.1f}s after the server answered")
    assert swapped.version == new and loads == [new, new]
    assert len(failures) == 1, "one report per outage, not one per poll"


def run_mlops(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **settings_env(settings), "MLOPS_DATABASE__URL": settings.database_url}
    return subprocess.run([sys.executable, "-m", "mlops", *args], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)


def test_promote_and_rollback_without_the_registry_fail_naming_it_and_change_nothing(
        registry: Registry, tmp_path: Path) -> None:
    registry.ensure_up()
    settings = fault_settings(registry, tmp_path, unique("down"))
    first = register_model(settings, seed=1, alias=None)
    second = register_model(settings, seed=2, alias=None)
    promote(settings, first, actor="t", reason="setup", force=True)
    before = audit_rows(settings)

    registry.stop()
    try:
        started = time.monotonic()
        attempts = [run_mlops(settings, "promote", second, "--force", "--reason", "during outage"),
                    run_mlops(settings, "rollback", "--to", first, "--reason", "during outage"),
                    run_mlops(settings, "rollback", "--reason", "during outage")]
        took_s = time.monotonic() - started
        with pytest.raises(RegistryUnavailableError, match="nothing was changed"):
            rollback(settings, actor="t", reason="in process")
    finally:
        registry.ensure_up()
    for done in attempts:
        print(done.args[3:], "->", done.returncode, done.stderr.strip().splitlines()[-1])
        assert done.returncode == 1
        message = done.stderr.strip().splitlines()[-1]
        assert message.startswith("error: MLflow registry at " + settings.mlflow.tracking_uri + " is not reachable")
        assert "nothing was changed" in message and "mlops services up" in message
        assert "Traceback" not in done.stderr
    # Fails at once (a health probe), not after MLflow's minutes of client retries.
    assert took_s < 60, f"three commands took {took_s:.0f}s"
    assert aliases(settings).get("champion") == first
    assert audit_rows(settings) == before

    # Back up: the same command goes through, and alias and audit row agree.
    done = run_mlops(settings, "promote", second, "--force", "--reason", "after outage")
    assert done.returncode == 0, done.stderr
    assert aliases(settings).get("champion") == second
    assert [(r.kind, r.model_version, r.previous_version) for r in audit_rows(settings)[len(before):]] == [
        ("promotion", second, first)]


def test_a_failure_after_the_alias_moved_moves_it_back_and_records_nothing(
        registry: Registry, tmp_path: Path) -> None:
    """The audit row commits with the alias move or not at all: break the database under a promotion."""
    registry.ensure_up()
    settings = fault_settings(registry, tmp_path, unique("undo"))
    first = register_model(settings, seed=1, alias=None)
    second = register_model(settings, seed=2, alias=None)
    promote(settings, first, actor="t", reason="setup", force=True)
    before = audit_rows(settings)
    seen_during: list[str | None] = []
    engine = store.get_engine(settings)

    from sqlalchemy import event

    def refuse_the_commit(conn: Any) -> None:
        # Fired by the promotion's commit: by then the alias has moved, as the registry shows.
        seen_during.append(aliases(settings).get("champion"))
        raise RuntimeError("disk full (simulated at commit)")

    event.listen(engine, "commit", refuse_the_commit)
    try:
        with pytest.raises(store.DatabaseError, match="moved back to version " + first):
            promote(settings, second, actor="t", reason="commit fails", force=True)
    finally:
        event.remove(engine, "commit", refuse_the_commit)
    assert seen_during == [second]
    assert aliases(settings).get("champion") == first
    assert audit_rows(settings) == before

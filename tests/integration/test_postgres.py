"""The same code on PostgreSQL: MLflow's backend store, the scheduler's job store and lease, and the
loop's own state database, each on a real PostgreSQL server (Debian's binaries, started here by
mlops.testing.postgres), not only on SQLite.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from mlops.config import Settings, load_settings
from mlops.errors import ServiceError
from mlops.mlflow import tracking_client
from mlops.testing import free_port, unique
from mlops.testing.postgres import PostgresServer

pytestmark = pytest.mark.integration

JOB_FUNC = "tests.integration.test_postgres:scheduled_job"


def scheduled_job(tag: str = "") -> None:
    """The stored job's function (APScheduler keeps jobs by import path; never run here)."""


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    # Under /tmp, not pytest's tmp dir: as root the server runs as `postgres`, which cannot
    # enter pytest's root-only directories.
    directory = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
    try:
        with PostgresServer(directory) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return load_settings("local", overrides={"paths": {"data_dir": str(tmp_path)}, **overrides})


def _rows(url: str, query: str, **params: object) -> list[tuple[object, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(query), params)]
    finally:
        engine.dispose()


def test_mlflow_tracking_and_registry_on_postgres(postgres: PostgresServer, tmp_path: Path) -> None:

    from mlops.services.mlflow_server import MlflowServer

    backend = postgres.create_database("mlflow")
    settings = _settings(tmp_path, mlflow={"tracking_uri": f"http://127.0.0.1:{free_port()}",
                                           "backend_store_uri": backend})
    server = MlflowServer(settings)
    assert server.start(), "the MLflow server was not started by this test"
    try:
        client = tracking_client(settings)
        experiment_id = client.create_experiment(unique("pg-experiment"))
        run = client.create_run(experiment_id, tags={"trigger": "drift"})
        client.log_param(run.info.run_id, "max_depth", "5")
        client.log_metric(run.info.run_id, "val_f1", 0.83)
        model_dir = tmp_path / "model"
        model_dir.mkdir()
        (model_dir / "MLmodel").write_text("flavors: {}\n")
        client.log_artifacts(run.info.run_id, str(model_dir), artifact_path="model")
        client.set_terminated(run.info.run_id)

        name = unique("pg-model")
        client.create_registered_model(name)
        version = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        client.set_registered_model_alias(name, "champion", version.version)

        read = client.get_run(run.info.run_id)
        assert read.data.params == {"max_depth": "5"}
        assert read.data.metrics == {"val_f1": 0.83}
        assert read.data.tags["trigger"] == "drift"
        assert [item.path for item in client.list_artifacts(run.info.run_id, "model")] == ["model/MLmodel"]
        champion = client.get_model_version_by_alias(name, "champion")
        assert (champion.version, champion.run_id) == (version.version, run.info.run_id)
        # The rows are in PostgreSQL, so the server really ran on it.
        assert _rows(backend, "SELECT status FROM runs WHERE run_uuid = :id", id=run.info.run_id) == [("FINISHED",)]
        assert _rows(backend, "SELECT version FROM model_versions WHERE name = :name", name=name) == [(1,)]
    finally:
        server.stop()
    assert not server.is_running()


def test_scheduler_jobs_survive_a_restart_on_postgres(postgres: PostgresServer, tmp_path: Path) -> None:
    from apscheduler.triggers.cron import CronTrigger

    from mlops.monitor.scheduler import build_scheduler, ensure_job

    url = postgres.create_database("scheduler")
    settings = _settings(tmp_path, database={"url": url})
    trigger = CronTrigger.from_crontab("15 3 * * *", timezone="UTC")

    first = build_scheduler(settings)
    first.start(paused=True)
    try:
        assert ensure_job(first, "pg-retrain", JOB_FUNC, trigger, {"tag": "nightly"}) == "added"
        stored = first.get_job("pg-retrain")
        assert stored is not None
        next_run = stored.next_run_time
    finally:
        first.shutdown(wait=False)

    second = build_scheduler(settings)  # a new process's scheduler: the job comes from PostgreSQL
    second.start(paused=True)
    try:
        job = second.get_job("pg-retrain")
        assert job is not None
        assert (job.next_run_time, str(job.trigger), job.kwargs) == (next_run, str(trigger), {"tag": "nightly"})
        assert ensure_job(second, "pg-retrain", JOB_FUNC, trigger, {"tag": "nightly"}) == "kept"
    finally:
        second.shutdown(wait=False)
    assert _rows(url, "SELECT id FROM apscheduler_jobs") == [("pg-retrain",)]


def test_scheduler_lease_has_one_holder_on_postgres(postgres: PostgresServer) -> None:
    from mlops.store.lease import Lease

    engine = sa.create_engine(postgres.create_database("lease"))
    try:
        now = datetime.now(UTC)
        leader, standby = (Lease(engine, "scheduler", holder, ttl_s=30) for holder in ("a", "b"))
        assert leader.try_acquire(now)
        assert not standby.try_acquire(now + timedelta(seconds=10))
        assert leader.try_acquire(now + timedelta(seconds=20))  # renewed until now + 50 s
        assert not standby.try_acquire(now + timedelta(seconds=40))
        assert standby.try_acquire(now + timedelta(seconds=51))  # the leader stopped renewing
        holder = standby.holder_now()
        assert holder is not None and holder[0] == "b"
        assert not leader.try_acquire(now + timedelta(seconds=52))
    finally:
        engine.dispose()


def test_loop_state_on_postgres(postgres: PostgresServer) -> None:
    from mlops import store

    url = postgres.create_database("mlops")
    model = unique("pg-model")
    first = store.record_event(url, "promotion", model_name=model, model_version=1, actor="test", reason="first")
    second = store.record_event(url, "promotion", model_name=model, model_version=2, previous_version=1,
                             actor="test", reason="better f1", details={"changed": True, "f1": [0.7, 0.8]})
    assert second > first

    events = store.list_events(url, kinds=["promotion"], model_name=model)
    assert [(e.id, e.model_version, e.previous_version) for e in events] == [(first, "1", None), (second, "2", "1")]
    assert events[1].details == {"changed": True, "f1": [0.7, 0.8]}
    assert events[1].time.tzinfo is not None
    assert store.previous_champion(url, model, "2") == "1"

    # Rows written under the lock commit with it, or roll back with it.
    with store.locked(url, f"promotion:{model}", holder="test") as conn:
        store.record_event(conn, "rollback", model_name=model, model_version=1, previous_version=2, reason="kept")
    with pytest.raises(RuntimeError), store.locked(url, f"promotion:{model}", holder="test") as conn:
        store.record_event(conn, "rollback", model_name=model, model_version=2, reason="rolled back")
        raise RuntimeError("the action failed")
    rollbacks = store.list_events(url, kinds=["rollback"], model_name=model)
    assert [e.reason for e in rollbacks] == ["kept"]
    assert _rows(url, "SELECT holder FROM locks WHERE name = :name", name=f"promotion:{model}") == [("test",)]
    store.get_engine(url).dispose()


def test_missing_server_binaries_fail_with_the_install_hint() -> None:
    directory = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
    try:
        with pytest.raises(ServiceError, match="postgresql"), PostgresServer(directory, bin_dir=directory / "bin"):
            pass
    finally:
        shutil.rmtree(directory, ignore_errors=True)

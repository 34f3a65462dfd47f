"""Training end to end: a simulated lake -> Spark local[2] -> MLflow runs and a registered version."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlops.mlflow import tracking_client
from mlops.testing import unique

pytestmark = [pytest.mark.integration, pytest.mark.spark]

DEVICES = 20
READINGS = 6000  # 300 ticks of 20 devices: ~35 failures, enough positives for a time split
CANDIDATES = 4
SEARCH_SPACE = {
    "hist_gradient_boosting": {"learning_rate": [0.1, 0.2], "max_iter": [30], "max_depth": [3, None]},
    "logistic_regression": {"C": [0.1, 1.0]},
    "random_forest": {"n_estimators": [20], "max_depth": [6, None]},
}


def fill_lake(settings: Any, devices: int = DEVICES, readings: int = READINGS, seed: int = 7,
              relabel: Callable[[str], str] | None = None) -> tuple[datetime, datetime]:
    """The stationary scenario's events, written to the lake as the sink would (offsets per partition).

    ``relabel`` corrupts the ground truth: each label is filed under the device it names.
    """
    from mlops.data.lake import write_commit
    from mlops.data.scenarios import load_scenario
    from mlops.data.schemas import Reading
    from mlops.data.simulator import Simulator

    simulator = Simulator(load_scenario("stationary"), devices=devices, seed=seed,
                          cycle_seconds=settings.features.cycle_seconds)
    topics = settings.kafka.topics
    batches: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    times = []
    for event in simulator.events(max_readings=readings):
        table, topic, partitions = (("readings", topics.readings, 2) if isinstance(event, Reading)
                                    else ("labels", topics.labels, 1))
        partition = int(event.device_id.rsplit("-", 1)[1]) % partitions
        rows = batches.setdefault((table, topic, partition), [])
        row = event.to_row()
        if relabel is not None and table == "labels":
            row["device_id"] = relabel(row["device_id"])
        rows.append({**row, "_topic": topic, "_partition": partition, "_offset": len(rows)})
        times.append(event.event_time)
    for (table, topic, partition), rows in sorted(batches.items()):
        write_commit(settings, table, topic, partition, 0, len(rows) - 1, rows, dead_letters=0)
    return min(times), max(times) + timedelta(seconds=1)


@pytest.fixture(scope="module")
def train_settings(services: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from mlops.config import load_settings

    return with_search_space(load_settings("local", overrides={
        "paths": {"data_dir": str(tmp_path_factory.mktemp("train-data"))},
        "mlflow": {"tracking_uri": services.mlflow.tracking_uri, "registered_model": unique("iot-failure-test"),
                   "experiment": unique("train-test")},
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"},
        "train": {"candidates": CANDIDATES, "seed": 11, "min_rows": 500, "reference_rows": 300},
    }))


def with_search_space(settings: Any) -> Any:
    # Overrides merge into the profile's search space; the test wants exactly its own small one.
    return settings.model_copy(update={"train": settings.train.model_copy(update={"search_space": SEARCH_SPACE})})


@pytest.fixture(scope="module")
def window(train_settings: Any) -> tuple[datetime, datetime]:
    return fill_lake(train_settings)


@pytest.fixture(scope="module")
def spark(train_settings: Any) -> Any:
    from mlops.spark import spark_session

    session = spark_session(train_settings, app_name="test-train")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def first(train_settings: Any, window: tuple[datetime, datetime], spark: Any) -> Any:
    from mlops.train.job import TrainRequest, run_training

    request = TrainRequest(since=window[0], until=window[1], trigger="drift", reason="drift-result-17")
    return run_training(train_settings, request, spark=spark)


def _client(settings: Any) -> Any:

    return tracking_client(settings)


def test_training_registers_a_version_with_runs_datasets_and_lineage(train_settings: Any, first: Any) -> None:
    client = _client(train_settings)
    name = train_settings.mlflow.registered_model
    parent = client.get_run(first.run_id)
    assert parent.info.status == "FINISHED"
    assert {"val_f1", "val_roc_auc", "val_pr_auc", "val_precision", "val_recall", "val_accuracy"} <= set(
        parent.data.metrics)
    assert parent.data.metrics["val_roc_auc"] > 0.7  # wear is visible in the sensors: far better than chance
    assert json.loads(parent.data.params["search_space"]) == SEARCH_SPACE

    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{first.run_id}'")
    assert len(children) == CANDIDATES
    assert all(c.info.status == "FINISHED" and "val_f1" in c.data.metrics and "duration_s" in c.data.metrics
               for c in children)
    assert {c.data.params["family"] for c in children} == set(SEARCH_SPACE)

    inputs = {d.dataset.name: d for d in parent.inputs.dataset_inputs}
    assert set(inputs) == {"lake.readings", "lake.labels", "training-set.training", "training-set.validation"}
    readings = inputs["lake.readings"]
    readings_tags = {t.key: t.value for t in readings.tags}
    assert readings_tags["digest"].startswith("sha256:" + readings.dataset.digest)
    offsets = json.loads({t.key: t.value for t in readings.tags}["offsets"])
    topic = train_settings.kafka.topics.readings
    from mlops.data.lake import partition_ranges

    held = {str(r.partition): [r.first_offset, r.last_offset] for r in partition_ranges(train_settings, "readings")}
    assert offsets[topic] == held and sum(last + 1 for _, last in held.values()) == READINGS

    artifacts = {a.path for a in client.list_artifacts(first.run_id, "plots")}
    assert {"plots/pr_curve.png", "plots/confusion_matrix.png", "plots/feature_importance.png"} <= artifacts
    reference = Path(client.download_artifacts(first.run_id, "reference/reference.parquet"))
    import pandas as pd

    from mlops.features.compute import FeatureSpec

    frame = pd.read_parquet(reference)
    spec = FeatureSpec.from_dict(json.loads(parent.data.tags["feature_spec"]))
    assert list(frame.columns[: len(spec.feature_names())]) == spec.feature_names() and len(frame) == 300

    # The version's tags, read through the MLflow REST API as any other tool would.
    response = httpx.get(f"{train_settings.mlflow.tracking_uri}/api/2.0/mlflow/model-versions/get",
                         params={"name": name, "version": first.version}, timeout=30)
    response.raise_for_status()
    tags = {t["key"]: t["value"] for t in response.json()["model_version"]["tags"]}
    assert tags["trigger"] == "drift" and tags["reason"] == "drift-result-17"
    assert tags["compared_with"] == "none"
    assert 0 < float(tags["decision_threshold"]) < 1
    assert json.loads(tags["feature_spec"]) == spec.to_dict()
    assert tags["git_commit"] != "" and tags["lineage.readings.digest"] == readings_tags["digest"]
    assert json.loads(tags["lineage.readings.offsets"]) == offsets
    assert int(tags["lineage.rows"]) >= 500
    assert tags["lineage.hyperparameters"] == json.dumps(first.params, sort_keys=True)
    assert tags["lineage.feature_views"] == "device_features"

    import mlflow.sklearn

    model = mlflow.sklearn.load_model(f"models:/{name}/{first.version}")
    probability = model.predict_proba(frame[spec.feature_names()].head(10))[:, 1]
    assert ((probability >= 0) & (probability <= 1)).all()


def test_describe_version_reads_the_lineage_back(train_settings: Any, first: Any) -> None:
    from typer.testing import CliRunner

    from mlops.cli import app
    from mlops.registry.catalog import describe_version

    info = describe_version(train_settings, first.version)
    assert info["run_id"] == first.run_id and info["trigger"] == "drift" and info["candidates"] == CANDIDATES
    assert info["lineage"]["readings.offsets"][train_settings.kafka.topics.readings]["0"][0] == 0
    assert {d["context"] for d in info["datasets"]} == {"source", "training", "validation"}
    assert info["metrics"]["val_f1"] == pytest.approx(first.metrics["f1"])

    result = CliRunner().invoke(app, ["train", "describe", first.version, "--json"],
                                env={"MLOPS_MLFLOW__TRACKING_URI": train_settings.mlflow.tracking_uri,
                                     "MLOPS_MLFLOW__REGISTERED_MODEL": train_settings.mlflow.registered_model})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["lineage"]["rows"] == info["lineage"]["rows"]


def test_a_drift_retraining_searches_every_training_window_on_the_drifts_rows(train_settings: Any, window: Any,
                                                                             spark: Any, first: Any) -> None:
    from mlops.train.job import TRAINING_ROWS_TAG, TrainRequest, run_training
    from mlops.train.regimes import TRAINING_ROWS

    drift = window[0] + (window[1] - window[0]) * 0.5
    result = run_training(train_settings, TrainRequest(since=window[0], until=window[1], trigger="drift",
                                                       reason="drift-window-3", reference_since=drift), spark=spark)
    client = _client(train_settings)
    parent = client.get_run(result.run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
    # Every parameter set on every window: the search picks the window, as it picks the parameters.
    assert len(children) == CANDIDATES * len(TRAINING_ROWS)
    assert {c.data.params["training_rows"] for c in children} == set(TRAINING_ROWS)
    chosen = parent.data.params["training_rows"]
    assert chosen in TRAINING_ROWS and result.tags[TRAINING_ROWS_TAG] == chosen
    assert result.tags["lineage.training_rows_searched"] == ",".join(TRAINING_ROWS)
    best = max((c for c in children), key=lambda c: (c.data.metrics["val_f1"], c.data.metrics["val_roc_auc"]))
    assert best.data.params["training_rows"] == chosen
    # Every candidate was validated on the newest rows since the drift, not the window's newest quarter.
    validation = {t.key: t.value for d in parent.inputs.dataset_inputs if d.dataset.name == "training-set.validation"
                  for t in d.tags}
    import pandas as pd

    assert pd.Timestamp(validation["event_time_min"]) >= pd.Timestamp(drift)
    assert pd.Timestamp(result.tags["lineage.split.cut"]) > pd.Timestamp(first.tags["lineage.split.cut"])


def test_same_data_config_and_seed_give_the_same_model(train_settings: Any, window: Any, spark: Any,
                                                       first: Any) -> None:
    from mlops.train.job import TrainRequest, run_training

    again = run_training(train_settings, TrainRequest(since=window[0], until=window[1]), spark=spark)
    assert again.version != first.version
    assert (again.family, again.params, again.threshold) == (first.family, first.params, first.threshold)
    assert again.metrics == first.metrics
    assert again.tags["lineage.digest"] == first.tags["lineage.digest"]


def test_too_small_window_or_broken_spark_job_fails_safely(train_settings: Any, window: Any, spark: Any,
                                                           first: Any, tmp_path: Path) -> None:
    from mlops.errors import TrainingError
    from mlops.train.job import TrainRequest, run_training

    client = _client(train_settings)
    name = train_settings.mlflow.registered_model
    client.set_registered_model_alias(name, "champion", first.version)
    versions_before = {v.version for v in client.search_model_versions(f"name = '{name}'")}

    tiny = TrainRequest(since=window[0], until=window[0] + timedelta(minutes=20))
    with pytest.raises(TrainingError, match=r"train\.min_rows"):
        run_training(train_settings, tiny, spark=spark)

    # A lake file that is not Parquet any more: the Spark job itself fails.
    # Copied settings, not re-read: the same MLflow experiment and model, another lake.
    broken = train_settings.model_copy(update={"paths": train_settings.paths.model_copy(update={"data_dir": tmp_path})})
    shutil.copytree(train_settings.lake_dir, broken.lake_dir)
    victim = sorted((broken.lake_dir / "readings").rglob("*.parquet"))[0]
    victim.write_bytes(b"not parquet at all")
    with pytest.raises(TrainingError, match="failed, nothing registered"):
        run_training(broken, TrainRequest(since=window[0], until=window[1]), spark=spark)

    experiment = client.get_experiment_by_name(train_settings.mlflow.experiment)
    failed = client.search_runs([experiment.experiment_id], "attributes.status = 'FAILED'")
    reasons = [r.data.tags.get("failure_reason", "") for r in failed]
    assert any("train.min_rows" in r for r in reasons) and any("parquet" in r.lower() for r in reasons), reasons
    assert {v.version for v in client.search_model_versions(f"name = '{name}'")} == versions_before
    assert client.get_model_version_by_alias(name, "champion").version == first.version



def test_train_json_prints_one_document_and_samples_past_max_rows(train_settings: Any, window: Any) -> None:
    """`mlops train --json` in its own process: stdout is exactly the JSON document (Spark, MLflow and
    the progress lines go to stderr); a training set above train.max_rows is sampled and says so."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    env = {
        **os.environ, "MLOPS_CONFIG_DIR": str(repo / "configs"),
        "MLOPS_PATHS__DATA_DIR": str(train_settings.data_dir),
        "MLOPS_MLFLOW__TRACKING_URI": train_settings.mlflow.tracking_uri,
        "MLOPS_MLFLOW__REGISTERED_MODEL": train_settings.mlflow.registered_model,
        "MLOPS_MLFLOW__EXPERIMENT": train_settings.mlflow.experiment,
        "MLOPS_SPARK__MASTER": "local[2]", "MLOPS_SPARK__SHUFFLE_PARTITIONS": "2", "MLOPS_SPARK__DRIVER_MEMORY": "1g",
        "MLOPS_TRAIN__CANDIDATES": "2", "MLOPS_TRAIN__SEED": "11", "MLOPS_TRAIN__MIN_ROWS": "500",
        "MLOPS_TRAIN__REFERENCE_ROWS": "300", "MLOPS_TRAIN__MAX_ROWS": "2000",
        "MLOPS_TRAIN__SEARCH_SPACE": json.dumps({"logistic_regression": {"C": [0.1, 1.0]}}),
    }
    done = subprocess.run([sys.executable, "-m", "mlops", "train", "--since", window[0].isoformat(),
                           "--until", window[1].isoformat(), "--json"], env=env, capture_output=True, text=True,
                          timeout=300, cwd=repo, check=False)
    assert done.returncode == 0, done.stderr[-5000:]
    trained = json.loads(done.stdout)  # the whole of stdout, nothing before or after the document
    assert "View run" in done.stderr  # MLflow's link went to stderr, not away

    run = _client(train_settings).get_run(trained["run_id"])
    params, tags = run.data.params, run.data.tags
    full, sampled = int(params["training_set.rows"]), int(params["training_set.sampled_rows"])
    assert full > 2000 and abs(sampled - 2000) <= 1 and sampled == int(tags["lineage.rows"])
    assert params["training_set.sample_seed"] == "11"
    assert float(params["training_set.sample_fraction"]) == pytest.approx(2000 / full)
    full_rate = int(params["training_set.positives"]) / full
    assert int(tags["lineage.positives"]) / sampled == pytest.approx(full_rate, abs=1 / sampled + 1e-9)
    assert tags["lineage.sample.full_rows"] == str(full) and tags["lineage.digest"].startswith("sha256:")

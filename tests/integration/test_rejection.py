"""A challenger trained on corrupted labels loses at the gate: a recorded rejection, the champion unchanged.

Everything is real: the lake, Spark local training, the MLflow registry, the loop controller's
retrain-evaluate-promote path and the project's database. Only the challenger's ground truth is
wrong: every failure label is filed under another device.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from mlops.testing import unique
from tests.integration.test_train import DEVICES, fill_lake, with_search_space

pytestmark = [pytest.mark.integration, pytest.mark.spark]


def _settings(services: Any, data_dir: Path, tag: str, database: Path) -> Any:
    from mlops.config import load_settings

    return with_search_space(load_settings("local", overrides={
        "paths": {"data_dir": str(data_dir)},
        "mlflow": {"tracking_uri": services.mlflow.tracking_uri, "registered_model": f"model-{tag}",
                   "experiment": f"reject-{tag}"},
        "database": {"url": f"sqlite:///{database}"},
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"},
        "train": {"candidates": 2, "seed": 11, "min_rows": 500, "reference_rows": 300},
        "policy": {"evaluation_timeout_s": 60},
    }))


def _another_device(device_id: str) -> str:
    prefix, number = device_id.rsplit("-", 1)
    return f"{prefix}-{(int(number) + DEVICES // 2) % DEVICES:0{len(number)}d}"


def test_a_challenger_trained_on_corrupted_labels_is_rejected(services: Any, tmp_path: Path) -> None:
    from mlops import store
    from mlops.monitor.controller import LoopController
    from mlops.registry.catalog import aliases
    from mlops.registry.promotion import promote
    from mlops.spark import spark_session
    from mlops.train.job import TrainRequest, run_training

    tag = unique("reject")
    honest = _settings(services, tmp_path / "honest", tag, tmp_path / "mlops.db")
    corrupted = _settings(services, tmp_path / "corrupted", tag, tmp_path / "mlops.db")
    start, end = fill_lake(honest)
    fill_lake(corrupted, relabel=_another_device)
    cut: datetime = start + (end - start) * 0.6  # train before, judge after: data neither model saw
    spark = spark_session(honest, app_name="test-rejection")
    try:
        champion = run_training(honest, TrainRequest(since=start, until=cut, trigger="manual"), spark=spark)
        promote(honest, champion.version, actor="test", reason="initial model", force=True)

        controller = LoopController(
            honest, train=lambda _settings, request: run_training(corrupted, request, spark=spark))
        controller.event_clock = cut
        assert controller.retrain_and_evaluate("drift share 0.40", "window-7", drift_started=None) is None
    finally:
        spark.stop()

    assert aliases(honest).get("champion") == champion.version
    events = store.list_events(honest, model_name=honest.mlflow.registered_model, newest_first=True)
    kinds = [e.kind for e in events]
    assert kinds[:3] == ["rejection", "retrain_finished", "retrain_started"], kinds
    rejection, finished = events[0], events[1]
    assert rejection.model_version == finished.model_version != champion.version
    assert rejection.previous_version == champion.version
    gate = rejection.details["gate"]
    assert gate["challenger_metrics"]["f1"] < gate["champion_metrics"]["f1"], gate

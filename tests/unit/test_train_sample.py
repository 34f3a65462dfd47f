"""The search's sample of a large training set (mlops/train/sample.py), drawn by Spark in local mode."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.train.sample import stratified_sample

pytestmark = pytest.mark.spark

DEVICES = 40
TICKS = 1500  # 60,000 rows, one a minute per device


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from mlops.config import load_settings
    from mlops.spark import spark_session

    settings = load_settings("local", overrides={
        "paths": {"data_dir": str(tmp_path_factory.mktemp("sample-data"))},
        "spark": {"master": "local[2]", "shuffle_partitions": 4, "driver_memory": "1g"},
    })
    session = spark_session(settings, app_name="test-train-sample")
    yield session
    session.stop()


def labelled_rows(seed: int = 5) -> pd.DataFrame:
    """One row a minute per device; about 4 % positive, in runs before each device's failures."""
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-01", tz="UTC")
    frames = []
    for d in range(DEVICES):
        failing = np.zeros(TICKS, dtype=np.int64)
        for failure in rng.choice(TICKS, size=2, replace=False):
            failing[max(0, failure - 30):failure] = 1
        frames.append(pd.DataFrame({
            "device_id": f"dev-{d:03d}", "event_time": start + pd.to_timedelta(np.arange(TICKS), unit="min"),
            "cycle": np.arange(TICKS), "label": failing}))
    return pd.concat(frames, ignore_index=True)


def keys(frame: pd.DataFrame) -> list[tuple[str, pd.Timestamp]]:
    return sorted(zip(frame["device_id"], pd.to_datetime(frame["event_time"], utc=True), strict=True))


def test_sample_keeps_the_positive_rate_and_spans_the_devices_and_time(spark: Any) -> None:
    rows = labelled_rows()
    frame = spark.createDataFrame(rows).repartition(3)
    sampled, sample = stratified_sample(frame, max_rows=6000, seed=11)
    got = sampled.toPandas()

    assert sample.sampled and sample.full_rows == len(rows) and sample.full_positives == int(rows["label"].sum())
    assert sample.fraction == pytest.approx(6000 / len(rows))
    assert len(got) == sum(sample.target.values()) and abs(len(got) - 6000) <= 1
    assert list(got.columns) == list(rows.columns)
    full_rate = rows["label"].mean()
    assert got["label"].mean() == pytest.approx(full_rate, rel=0.01)  # per label to one row: ~0.4 % of the rate
    assert int(got["label"].sum()) == round(sample.full_positives * sample.fraction)
    # Every device and every stretch of time is thinned alike: the time split still cuts the same time.
    assert got["device_id"].nunique() == DEVICES
    per_device = got.groupby("device_id").size()
    assert per_device.min() > 0.6 * per_device.mean()
    times = pd.to_datetime(got["event_time"], utc=True)
    full_times = pd.to_datetime(rows["event_time"], utc=True)
    assert abs((times.quantile(0.75) - full_times.quantile(0.75)).total_seconds()) < 30 * 60
    assert set(keys(got)) <= set(keys(rows))


def test_sample_is_deterministic_for_a_seed_whatever_the_partitioning(spark: Any) -> None:
    rows = labelled_rows()
    first, _ = stratified_sample(spark.createDataFrame(rows).repartition(3), max_rows=5000, seed=11)
    again, _ = stratified_sample(spark.createDataFrame(rows.sample(frac=1.0, random_state=1)).repartition(7),
                                 max_rows=5000, seed=11)
    other, _ = stratified_sample(spark.createDataFrame(rows).repartition(3), max_rows=5000, seed=12)
    first_keys = keys(first.toPandas())
    assert first_keys == keys(again.toPandas())
    other_keys = keys(other.toPandas())
    assert len(other_keys) == len(first_keys) and other_keys != first_keys


def test_a_set_within_max_rows_is_not_sampled(spark: Any) -> None:
    rows = labelled_rows().head(3000)
    frame = spark.createDataFrame(rows)
    sampled, sample = stratified_sample(frame, max_rows=3000, seed=11)
    assert sampled is frame and not sample.sampled and sample.fraction == 1.0
    assert sample.params(3000)["training_set.sampled_rows"] == "3000"
    assert sample.tags()["lineage.sample.method"].startswith("none")

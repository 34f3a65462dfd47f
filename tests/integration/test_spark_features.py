"""Spark (local[2], applyInPandas) computes the same features as the pandas path and the stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.config import load_settings
from mlops.features.compute import features_frame
from mlops.features.labels import label_readings
from mlops.features.spark import point_in_time, spark_features, spark_labels
from mlops.spark import spark_session
from tests.unit.test_feature_parity import SPEC, assert_same_features, random_readings, stream_features

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    settings = load_settings("local", overrides={
        "paths": {"data_dir": str(tmp_path_factory.mktemp("spark-data"))},
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"},
    })
    session = spark_session(settings, app_name="test-spark-features")
    yield session
    session.stop()


def test_spark_equals_pandas_and_stream(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    readings = pd.concat([random_readings(21), random_readings(22, {"dev-x": 70, "dev-y": 2})], ignore_index=True)
    readings = readings.sort_values("event_time", ignore_index=True)
    frame = spark.createDataFrame(readings)  # type: ignore[attr-defined]
    result = spark_features(frame.repartition(3), SPEC)

    assert result.columns == ["device_id", "device_type", "event_time", "cycle", *SPEC.feature_names()]
    from_spark = result.toPandas()
    assert len(from_spark) == len(readings)
    assert_same_features(from_spark, features_frame(readings, SPEC))
    assert_same_features(from_spark, stream_features(readings, [1] * len(readings)))
    assert_same_features(from_spark, stream_features(readings, [7] * len(readings)))


def test_spark_features_reject_missing_sensor(spark) -> None:  # type: ignore[no-untyped-def]
    from mlops.errors import ValidationError

    frame = spark.createDataFrame(random_readings(23).drop(columns=["vibration"]))  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="vibration"):
        spark_features(frame, SPEC)


def test_point_in_time_takes_the_newest_feature_row_at_or_before_each_entity(spark) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    t0 = pd.Timestamp("2026-01-01")
    features = pd.DataFrame({
        "device_id": rng.choice(["a", "b", "c"], 300),
        "event_time": t0 + pd.to_timedelta(rng.integers(0, 10_000, 300), unit="s"),
        "f1": rng.normal(size=300), "f2": rng.normal(size=300),
    })
    entities = pd.DataFrame({
        "device_id": rng.choice(["a", "b", "c", "d"], 200),  # d has no feature row at all
        "event_time": t0 + pd.to_timedelta(rng.integers(-500, 10_500, 200), unit="s"),
        "label": rng.integers(0, 2, 200),
    })
    entities = pd.concat([entities, features.iloc[:20][["device_id", "event_time"]].assign(label=1)],
                         ignore_index=True)  # rows at exactly a feature row's time get that row
    features = features.drop_duplicates(["device_id", "event_time"])  # one feature row per time: a defined answer

    joined = point_in_time(spark.createDataFrame(entities).repartition(3),  # type: ignore[attr-defined]
                           spark.createDataFrame(features).repartition(2), ["f1", "f2"])  # type: ignore[attr-defined]

    assert joined.columns == ["device_id", "event_time", "label", "f1", "f2"]
    got = joined.toPandas().sort_values(["device_id", "event_time", "label"], ignore_index=True)
    expected = pd.merge_asof(entities.sort_values("event_time"), features.sort_values("event_time"),
                             on="event_time", by="device_id", direction="backward", allow_exact_matches=True)
    expected = expected.sort_values(["device_id", "event_time", "label"], ignore_index=True)
    assert len(got) == len(entities)
    pd.testing.assert_frame_equal(got, expected[got.columns], check_dtype=False)
    assert got["f1"].isna().sum() == expected["f1"].isna().sum() > 0  # before a device's first row, and d


def test_spark_labels_equal_the_label_rule_per_device(spark) -> None:  # type: ignore[no-untyped-def]
    readings = random_readings(5)[["device_id", "event_time", "cycle"]]
    devices = sorted(readings["device_id"].unique())
    failure_at = readings.groupby("device_id")["event_time"].max()
    labels = pd.DataFrame({  # the first device fails at its last reading; the second reports an RUL
        "device_id": [devices[0], devices[1], "no-readings"],
        "event_time": [failure_at[devices[0]], failure_at[devices[1]], failure_at.max()],
        "kind": ["failure", "rul", "failure"], "rul": [None, 3.0, None],
    })
    result = spark_labels(spark.createDataFrame(readings), spark.createDataFrame(labels), 5, 10.0)  # type: ignore[attr-defined]

    got = result.toPandas().sort_values(["device_id", "event_time"], ignore_index=True)
    got["event_time"] = pd.to_datetime(got["event_time"], utc=True)  # Spark hands back UTC without its zone
    expected = label_readings(readings, labels, 5, 10.0).sort_values(["device_id", "event_time"], ignore_index=True)
    assert got["label"].sum() > 0 and len(got) < len(readings)  # positives found, censored rows dropped
    pd.testing.assert_frame_equal(got, expected[got.columns], check_dtype=False)

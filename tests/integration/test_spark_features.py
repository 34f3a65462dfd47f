"""Spark (local[2], applyInPandas) computes the same features as the pandas path and the stream."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from mlops.config import load_settings
from mlops.features.compute import features_frame
from mlops.features.spark import spark_features
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

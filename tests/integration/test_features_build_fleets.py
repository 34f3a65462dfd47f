"""`mlops features build` on a lake of two fleets: the feature table holds the configured fleet's readings and the
models' features, as training selects them; unset on such a lake, it names the device types."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mlops.config import load_settings
from mlops.errors import TrainingError
from tests.integration.test_train import fill_lake
from tests.integration.test_train_device_types import _turbofans

pytestmark = [pytest.mark.integration, pytest.mark.spark]


def test_the_feature_table_of_a_mixed_lake_is_the_configured_fleets(tmp_path: Path) -> None:
    from mlops.features import feast_repo
    from mlops.features.spark import build_feature_table
    from mlops.spark import spark_session

    settings = load_settings("local", overrides={"paths": {"data_dir": str(tmp_path)},
                                                  "spark": {"master": "local[1]", "shuffle_partitions": 1}})
    since, _until = fill_lake(settings, devices=8, readings=800)
    _turbofans(settings, since)
    pumps = settings.model_copy(update={"features": settings.features.model_copy(
        update={"device_types": ["pump-a", "pump-b"]})})
    spark = spark_session(settings, app_name="test-features-build-fleets")
    try:
        with pytest.raises(TrainingError, match=r"turbofan \[s_1, s_2, s_3\].*features\.device_types"):
            build_feature_table(settings, spark)
        spec, rows = build_feature_table(pumps, spark)
    finally:
        spark.stop()

    assert spec.sensors == ("current", "pressure", "rpm", "temperature", "vibration")
    assert rows == 800
    table = pd.read_parquet(feast_repo.feature_table_dir(pumps))
    assert not table[feast_repo.JOIN_KEY].str.startswith("engine-").any()
    assert not table[spec.feature_names()].isna().any().any()

"""A lake of two fleets with different sensors: training names the device types, or reads the configured ones."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from mlops.config import load_settings
from mlops.errors import TrainingError
from tests.integration.test_train import fill_lake

pytestmark = [pytest.mark.integration, pytest.mark.spark]


def _turbofans(settings: Any, start: Any, engines: int = 3, cycles: int = 40) -> None:
    """Readings of another fleet (C-MAPSS-like sensors s_1..s_3) in the same window, as the sink writes them."""
    from mlops.data.lake import write_commit

    rows = [{"device_id": f"engine-{e}", "device_type": "turbofan", "event_time": start + timedelta(minutes=c),
             "cycle": c, "s_1": 518.67, "s_2": 641.0 + 0.01 * c, "s_3": 1590.0 + e, "_topic": "cmapss",
             "_partition": 0, "_offset": i} for i, (e, c) in enumerate((e, c) for e in range(engines)
                                                                      for c in range(cycles))]
    write_commit(settings, "readings", "cmapss", 0, 0, len(rows) - 1, rows, dead_letters=0)


def test_a_mixed_lake_names_the_device_types_or_reads_the_configured_ones(tmp_path: Path) -> None:
    from mlops.features.spark import select_device_types
    from mlops.spark import spark_session
    from mlops.train.dataset import lake_end

    settings = load_settings("local", overrides={"paths": {"data_dir": str(tmp_path)},
                                                  "spark": {"master": "local[1]", "shuffle_partitions": 1}})
    since, until = fill_lake(settings, devices=8, readings=800)
    _turbofans(settings, since)
    assert lake_end(settings) == until  # one second past the newest event
    spark = spark_session(settings, app_name="test-device-types")
    try:
        readings = spark.read.option("mergeSchema", "true").parquet(str(settings.lake_dir / "readings"))
        with pytest.raises(TrainingError) as failed:
            select_device_types(settings, readings)
        message = str(failed.value)
        assert "pump-a [current, pressure, rpm, temperature, vibration]" in message, message
        assert "turbofan [s_1, s_2, s_3]" in message and "features.device_types" in message, message

        pumps = settings.model_copy(update={"features": settings.features.model_copy(
            update={"device_types": ["pump-a", "pump-b"]})})
        chosen = select_device_types(pumps, readings)
        assert {r["device_type"] for r in chosen.select("device_type").distinct().collect()} <= {"pump-a", "pump-b"}
        assert chosen.count() == 800

        wrong = settings.model_copy(update={"features": settings.features.model_copy(
            update={"device_types": ["pump-c"]})})
        with pytest.raises(TrainingError, match=r"names \['pump-c'\].*it has \['pump-a', 'pump-b', 'turbofan'\]"):
            select_device_types(wrong, readings)
    finally:
        spark.stop()

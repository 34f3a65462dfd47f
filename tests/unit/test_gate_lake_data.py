"""The gate's fresh data from a lake of two fleets: only the readings that carry the models' sensors, as the
scorer scores only those (it dead-letters the others)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from mlops.config import Settings, load_settings
from mlops.data import lake
from mlops.errors import PolicyError
from mlops.evaluation.data import lake_evaluation_data
from mlops.features.compute import FeatureSpec

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PUMP_SENSORS = ("temperature", "vibration")
MODEL: Any = SimpleNamespace(version="1", spec=FeatureSpec(PUMP_SENSORS, 10))


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return load_settings("local", overrides={"paths": {"data_dir": str(tmp_path)}})


def _fleet(settings: Settings, partition: int, device: str, device_type: str, sensors: tuple[str, ...]) -> None:
    """60 readings, one a minute from T0, then the device fails (a label at 60 min)."""
    readings = [{"device_id": device, "device_type": device_type, "event_time": T0 + timedelta(minutes=i),
                 "cycle": i, **{s: 10.0 + i + n for n, s in enumerate(sensors)},
                 "_topic": "r", "_partition": partition, "_offset": i} for i in range(60)]
    lake.write_commit(settings, "readings", "r", partition, 0, 59, readings, dead_letters=0)
    label = {"device_id": device, "event_time": T0 + timedelta(minutes=60), "kind": "failure", "rul": None,
             "_topic": "l", "_partition": partition, "_offset": 0}
    lake.write_commit(settings, "labels", "l", partition, 0, 0, [label], dead_letters=0)


def test_another_fleets_readings_are_left_out(settings: Settings) -> None:
    _fleet(settings, 0, "pump-1", "pump-a", PUMP_SENSORS)
    _fleet(settings, 1, "engine-1", "turbofan", ("s_2", "s_3"))

    fresh = lake_evaluation_data(settings, [MODEL], since=T0 + timedelta(minutes=20))

    assert set(fresh["device_id"]) == {"pump-1"}
    assert len(fresh) == 39  # minutes 21 .. 59, each labelled by the failure at 60
    assert not fresh[MODEL.spec.feature_names()].isna().any().any()
    assert fresh["label"].sum() == 30  # within 30 cycles of the failure at 60: minutes 30 .. 59


def test_no_reading_with_the_models_sensors_is_a_clear_error(settings: Settings) -> None:
    _fleet(settings, 0, "pump-1", "pump-a", ("temperature", "pressure"))
    _fleet(settings, 1, "engine-1", "turbofan", ("vibration", "s_3"))

    with pytest.raises(PolicyError, match=r"has the models' sensors \['temperature', 'vibration'\]"):
        lake_evaluation_data(settings, [MODEL], since=T0 + timedelta(minutes=20))

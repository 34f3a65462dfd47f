"""Feast repo from code: apply, point-in-time training sets without leakage, push and materialise.

Feast runs locally (file offline store, SQLite online store); it needs neither Kafka nor MLflow.
The Spark offline store is checked at the configuration level only: a full join through it took
minutes on the shared 2-core machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops.config import Settings, load_settings
from mlops.errors import ValidationError
from mlops.features import feast_repo
from mlops.features.compute import FeatureSpec, features_frame
from mlops.features.labels import label_readings
from mlops.features.training_set import historical_features
from tests.unit.test_feature_parity import SPEC, random_readings

pytestmark = pytest.mark.integration

PLANT = 1.0e6  # no real feature comes near this


def settings_in(tmp_path: Path, **feast: str) -> Settings:
    return load_settings("local", overrides={
        "paths": {"data_dir": str(tmp_path)},
        "features": {"horizon_cycles": 3, "cycle_seconds": 60},
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"},
        "feast": feast,
    })


def failure_labels(readings: pd.DataFrame) -> pd.DataFrame:
    """Every device fails 30 s after its last reading."""
    last = readings.groupby("device_id")["event_time"].max()
    return pd.DataFrame({"device_id": last.index, "event_time": last.to_numpy() + pd.Timedelta(seconds=30),
                         "kind": "failure", "rul": None})


def test_training_set_holds_the_features_of_each_row_time(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    readings = random_readings(11)
    labels = failure_labels(readings)
    feast_repo.write_feature_table(settings, features_frame(readings, SPEC), SPEC)
    feast_repo.apply(settings, SPEC)
    labelled = label_readings(readings, labels, 3, 60.0)
    rows = pd.DataFrame({"device_id": labelled["device_id"], "event_timestamp": labelled["event_time"],
                         "label": labelled["label"]})
    training = historical_features(settings, rows, SPEC)

    expected = label_readings(readings, labels, 3, 60.0).merge(features_frame(readings, SPEC),
                                                               on=["device_id", "event_time"])
    expected = expected.sort_values(["device_id", "event_time"], ignore_index=True)
    assert len(training) == len(expected) > 0
    assert training["label"].tolist() == expected["label"].tolist()
    assert training["label"].sum() > 0 and (training["label"] == 0).sum() > 0
    np.testing.assert_array_equal(training[SPEC.feature_names()].to_numpy(), expected[SPEC.feature_names()].to_numpy())
    config = yaml.safe_load((settings.feast_repo_dir / "feature_store.yaml").read_text())
    assert config["offline_store"]["type"] == "file" and config["online_store"]["type"] == "sqlite"


def planted_table(readings: pd.DataFrame) -> pd.DataFrame:
    """True features, plus for every reading a distinctive row 1 µs after it (before the next reading)."""
    true = features_frame(readings, SPEC)
    planted = true.copy()
    planted_at = pd.to_datetime(planted["event_time"], utc=True).dt.floor("us")
    planted["event_time"] = planted_at + pd.Timedelta(microseconds=1)
    planted[SPEC.feature_names()] = PLANT + np.arange(len(planted))[:, None] + np.zeros((1, len(SPEC.feature_names())))
    return pd.concat([true, planted], ignore_index=True)


def test_no_value_from_after_the_row_time_leaks(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    readings = random_readings(12)
    feast_repo.write_feature_table(settings, planted_table(readings), SPEC)
    feast_repo.apply(settings, SPEC)
    rows = pd.DataFrame({"device_id": readings["device_id"], "event_timestamp": readings["event_time"]})

    at_row_time = historical_features(settings, rows, SPEC)
    values = at_row_time[SPEC.feature_names()].to_numpy()
    assert len(at_row_time) == len(readings)
    assert not np.isnan(values).any()
    assert (values < PLANT).all(), "a feature value from after the row's time leaked into the row"
    true = features_frame(readings, SPEC).sort_values(["device_id", "event_time"], ignore_index=True)
    np.testing.assert_array_equal(values, true[SPEC.feature_names()].to_numpy())

    # The planted values are reachable: one microsecond later every row sees them.
    later = rows.assign(event_timestamp=pd.to_datetime(rows["event_timestamp"], utc=True).dt.floor("us")
                        + pd.Timedelta(microseconds=1))
    assert (historical_features(settings, later, SPEC)[SPEC.feature_names()].to_numpy() >= PLANT).all()


def test_materialize_and_push_reach_the_online_store(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    readings = random_readings(13)
    features = features_frame(readings, SPEC)
    feast_repo.write_feature_table(settings, features, SPEC)
    store = feast_repo.apply(settings, SPEC)
    feast_repo.materialize(settings)

    devices = sorted(readings["device_id"].unique())
    online = feast_repo.online_features(store, SPEC, devices).sort_values("device_id", ignore_index=True)
    latest = features.sort_values("event_time").groupby("device_id").tail(1).sort_values("device_id", ignore_index=True)
    np.testing.assert_array_equal(online[SPEC.feature_names()].to_numpy(), latest[SPEC.feature_names()].to_numpy())

    # A streaming update, newer than anything materialised, replaces the device's online row.
    pushed = latest.iloc[[0]].copy()
    pushed["event_time"] = pd.to_datetime(pushed["event_time"], utc=True) + pd.Timedelta(minutes=5)
    pushed[SPEC.feature_names()] = 42.0
    feast_repo.push_online(store, pushed, SPEC)
    after = feast_repo.online_features(store, SPEC, [devices[0]])
    assert (after[SPEC.feature_names()].to_numpy() == 42.0).all()


def test_device_features_read_one_device_or_say_why_not(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    readings = random_readings(14)
    features = features_frame(readings, SPEC)
    feast_repo.write_feature_table(settings, features, SPEC)
    feast_repo.apply(settings, SPEC)
    feast_repo.materialize(settings)
    reader = feast_repo.OnlineReader(settings)

    device = str(readings["device_id"].iloc[0])
    found = reader.read(SPEC, device)
    latest = features[features["device_id"] == device].sort_values("event_time").iloc[-1]
    assert found is not None and found.device_id == device
    np.testing.assert_array_equal(found.values, latest[SPEC.feature_names()].to_numpy(dtype=np.float64)[None, :])
    assert found.event_time == pd.Timestamp(latest["event_time"]).floor("s").to_pydatetime()
    assert reader.read(SPEC, "no-such-device") is None

    other = FeatureSpec(sensors=("not_in_the_table",), window=SPEC.window)  # a model trained on other sensors
    with pytest.raises(ValidationError, match="not_in_the_table__mean"):
        reader.read(other, device)
    assert reader.read(SPEC, device) is not None  # the reader recovers (it reopens the store)


def test_spark_offline_store_config(tmp_path: Path) -> None:
    """The Spark option yields a SparkSource and a valid Spark offline store config (Feast parses it)."""
    settings = settings_in(tmp_path, offline_store="spark")
    store = feast_repo.open_store(settings)
    assert store.config.offline_store.type == "spark"
    assert store.config.offline_store.spark_conf["spark.master"] == "local[2]"
    assert store.config.offline_store.spark_conf["spark.sql.session.timeZone"] == "UTC"
    source = feast_repo.repo_objects(settings, SPEC)[1]
    assert type(source).__name__ == "SparkSource" and source.path == str(feast_repo.feature_table_dir(settings))


def test_redis_online_store_config(tmp_path: Path) -> None:
    settings = settings_in(tmp_path, online_store="redis", redis_connection_string="redis.example:6380")
    store = feast_repo.open_store(settings)  # validates the generated yaml without connecting
    assert store.config.online_store.type == "redis"
    assert store.config.online_store.connection_string == "redis.example:6380"

"""The Feast feature repository, generated from code under ``settings.feast_repo_dir``.

    <lake_dir>/features/            the feature table (Parquet: device_id, event_timestamp, features)
    <feast_repo_dir>/feature_store.yaml   written from settings.feast
    <feast_repo_dir>/data/          registry and (SQLite) online store

Objects: entity ``device`` (join key ``device_id``); the feature table as a batch source (a
``FileSource`` with the ``file`` offline store, a ``SparkSource`` with ``spark``); a push source
``device_features_push`` over it, through which the stream writes features to the online store;
the feature view ``device_features`` with the columns of a :class:`FeatureSpec`.

Objects are applied with ``FeatureStore.apply`` (the Python API behind ``feast apply``), so the
spec decides the schema; the repo directory holds no definitions for the ``feast`` CLI to apply.

The online store holds each device's latest feature row. ``mlops features materialize``
(:func:`materialize`) fills it from the feature table that ``mlops features build`` writes, so it
is as fresh as the last build; :func:`push_online` writes rows newer than that. The REST API reads
it through :class:`OnlineReader` (``POST /v1/predict/device/{device_id}``).
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from mlops.errors import ServiceError, ValidationError
from mlops.features.compute import FeatureSpec
from mlops.log import get_logger
from mlops.spark import BASE_CONF

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

    from mlops.config import Settings

__all__ = [
    "ENTITY",
    "FEATURE_VIEW",
    "JOIN_KEY",
    "PUSH_SOURCE",
    "SPEC_FILE",
    "TIMESTAMP",
    "TIMESTAMP_SUFFIX",
    "DeviceFeatures",
    "OnlineReader",
    "apply",
    "device_features",
    "feature_refs",
    "feature_table_dir",
    "materialize",
    "online_features",
    "open_store",
    "push_online",
    "registered_view",
    "replace_feature_table",
    "repo_objects",
    "store_config",
    "table_spec",
    "write_feature_table",
    "write_repo",
]

log = get_logger(__name__)

ENTITY = "device"
JOIN_KEY = "device_id"
TIMESTAMP = "event_timestamp"
TIMESTAMP_SUFFIX = "__ts"  # Feast's key for a feature's event time in OnlineResponse.to_dict
FEATURE_VIEW = "device_features"
PUSH_SOURCE = "device_features_push"
SPEC_FILE = "_feature_spec.json"  # leading underscore: Parquet readers skip it


def feature_table_dir(settings: Settings) -> Path:
    """Directory of the feature table's Parquet files."""
    return settings.lake_dir / "features"


def write_feature_table(settings: Settings, features: pd.DataFrame, spec: FeatureSpec) -> Path:
    """Replace the feature table with ``features`` (device_id, event_time, spec.feature_names()).

    The new table is written next to the old one and swapped in, so readers never see half of it.
    """
    missing = [c for c in (JOIN_KEY, "event_time", *spec.feature_names()) if c not in features.columns]
    if missing:
        raise ValidationError(f"features: missing column(s) {missing}")
    table = pd.DataFrame({
        JOIN_KEY: features[JOIN_KEY].astype(str).to_numpy(),
        TIMESTAMP: pd.to_datetime(features["event_time"], utc=True).dt.floor("us").dt.as_unit("us"),
        **{name: features[name].astype("float64").to_numpy() for name in spec.feature_names()},
    })
    target = replace_feature_table(settings, spec, lambda staging: table.to_parquet(staging / "part-0.parquet",
                                                                                     index=False))
    log.info("feature table written", path=str(target), rows=len(table), features=len(spec.feature_names()))
    return target


def replace_feature_table(settings: Settings, spec: FeatureSpec, write: Callable[[Path], object]) -> Path:
    """``write(staging)`` fills a new directory with the table's Parquet files; it then replaces the
    feature table whole, with ``spec`` beside it, so readers never see half of it."""
    target = feature_table_dir(settings)
    staging = target.with_name(f".{target.name}-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    write(staging)
    (staging / SPEC_FILE).write_text(json.dumps(spec.to_dict()))
    _swap_in(staging, target)
    return target


def _swap_in(staging: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}-old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def table_spec(settings: Settings) -> FeatureSpec:
    """The spec of the feature table on disk; a clear error if no table has been written yet."""
    path = feature_table_dir(settings) / SPEC_FILE
    if not path.exists():
        raise ValidationError(f"no feature table at {path.parent}: run `mlops features build` first")
    return FeatureSpec.from_dict(json.loads(path.read_text()))


def store_config(settings: Settings) -> dict[str, Any]:
    """The content of feature_store.yaml for ``settings.feast``."""
    repo = settings.feast_repo_dir
    cfg = settings.feast
    online: dict[str, Any]
    if cfg.online_store == "redis":
        online = {"type": "redis", "connection_string": cfg.redis_connection_string}
    else:
        online = {"type": "sqlite", "path": str(repo / "data" / "online_store.db")}
    offline: dict[str, Any] = {"type": "file"}
    if cfg.offline_store == "spark":
        offline = {"type": "spark", "spark_conf": {
            "spark.master": settings.spark.master,
            "spark.driver.memory": settings.spark.driver_memory,
            "spark.sql.shuffle.partitions": str(settings.spark.shuffle_partitions),
            **BASE_CONF, **settings.spark.conf,
        }}
    return {
        "project": cfg.project,
        "provider": "local",
        "registry": str(repo / "data" / "registry.db"),
        "online_store": online,
        "offline_store": offline,
        "entity_key_serialization_version": 3,
    }


def write_repo(settings: Settings) -> Path:
    """Write ``feature_store.yaml`` under ``settings.feast_repo_dir``; return the repo directory."""
    repo = settings.feast_repo_dir
    (repo / "data").mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "# Generated by mlops.features.feast_repo from the settings; edits are overwritten.\n"
        + yaml.safe_dump(store_config(settings), sort_keys=False)
    )
    return repo


def open_store(settings: Settings) -> FeatureStore:
    """A FeatureStore over the generated repo (written first, so it always matches the settings)."""
    from feast import FeatureStore

    return FeatureStore(repo_path=str(write_repo(settings)))


def repo_objects(settings: Settings, spec: FeatureSpec) -> list[Any]:
    """Entity, batch source, push source and feature view for ``spec``."""
    from feast import Entity, FeatureView, Field, FileSource, PushSource, ValueType
    from feast.types import Float64

    device = Entity(name=ENTITY, join_keys=[JOIN_KEY], value_type=ValueType.STRING,
                    description="One machine of the fleet")
    path = str(feature_table_dir(settings))
    batch: Any
    if settings.feast.offline_store == "spark":
        from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

        batch = SparkSource(name="device_features_table", path=path, file_format="parquet", timestamp_field=TIMESTAMP)
    else:
        batch = FileSource(name="device_features_table", path=path, timestamp_field=TIMESTAMP)
    push = PushSource(name=PUSH_SOURCE, batch_source=batch)
    view = FeatureView(
        name=FEATURE_VIEW,
        entities=[device],
        # No TTL: training rows join features at the reading's own time, so staleness never arises.
        ttl=timedelta(0),
        schema=[Field(name=name, dtype=Float64) for name in spec.feature_names()],
        source=push,
        online=True,
        tags={"feature_spec": json.dumps(spec.to_dict())},
    )
    return [device, batch, push, view]


def apply(settings: Settings, spec: FeatureSpec) -> FeatureStore:
    """``feast apply`` through the Python API: register the objects for ``spec``; return the store."""
    store = open_store(settings)
    store.apply(repo_objects(settings, spec))
    log.info("feast repo applied", repo=str(settings.feast_repo_dir), view=FEATURE_VIEW,
             features=len(spec.feature_names()), offline=settings.feast.offline_store,
             online=settings.feast.online_store)
    return store


def feature_refs(spec: FeatureSpec) -> list[str]:
    """``view:feature`` references of every feature of the spec."""
    return [f"{FEATURE_VIEW}:{name}" for name in spec.feature_names()]


def registered_view(store: FeatureStore) -> FeatureView:
    """The applied feature view; a clear error if ``apply`` has not run."""
    try:
        return store.get_feature_view(FEATURE_VIEW)
    except Exception as err:  # FeatureViewNotFoundException and registry-missing errors
        raise ValidationError(f"feature view {FEATURE_VIEW!r} is not registered: run `mlops features apply`") from err


def materialize(
    settings: Settings, start: datetime | None = None, end: datetime | None = None
) -> tuple[datetime, datetime]:
    """Load features with event time in [start, end] from the offline into the online store."""
    store = open_store(settings)
    registered_view(store)
    end = end or datetime.now(UTC)
    start = start or datetime(1970, 1, 1, tzinfo=UTC)
    store.materialize(start_date=start, end_date=end, feature_views=[FEATURE_VIEW])
    log.info("features materialized", start=start.isoformat(), end=end.isoformat())
    return start, end


def push_online(store: FeatureStore, features: pd.DataFrame, spec: FeatureSpec) -> None:
    """Write streaming features (device_id, event_time, features) to the online store via the push source."""
    from feast.data_source import PushMode

    frame = pd.DataFrame({
        JOIN_KEY: features[JOIN_KEY].astype(str).to_numpy(),
        TIMESTAMP: pd.to_datetime(features["event_time"], utc=True),
        **{name: features[name].astype("float64").to_numpy() for name in spec.feature_names()},
    })
    store.push(PUSH_SOURCE, frame, to=PushMode.ONLINE)


def online_features(store: FeatureStore, spec: FeatureSpec, device_ids: list[str]) -> pd.DataFrame:
    """Latest online features of the given devices."""
    rows = [{JOIN_KEY: device} for device in device_ids]
    return store.get_online_features(features=feature_refs(spec), entity_rows=rows).to_df()


@dataclass(frozen=True)
class DeviceFeatures:
    """One device's online feature row."""

    device_id: str
    values: np.ndarray
    """Shape (1, n): the spec's features in :meth:`FeatureSpec.feature_names` order."""
    event_time: datetime
    """Event time of the reading the features belong to (whole seconds: Feast's online precision)."""


def device_features(store: FeatureStore, spec: FeatureSpec, device_id: str) -> DeviceFeatures | None:
    """The device's online features for ``spec``; None if the online store holds none for it.

    ValidationError if the registered feature view lacks a feature of ``spec`` (the model was
    trained on other sensors than the feature table holds); ServiceError if the store fails.
    """
    from feast.errors import FeastObjectNotFoundException

    names = spec.feature_names()
    try:
        response = store.get_online_features(features=feature_refs(spec), entity_rows=[{JOIN_KEY: device_id}])
        row = response.to_dict(include_event_timestamps=True)
    except (KeyError, FeastObjectNotFoundException) as err:
        raise ValidationError(f"feature view {FEATURE_VIEW!r} cannot serve features {names}: {err} "
                              f"(build, apply and materialize the feature table for this model's sensors)") from err
    except Exception as err:  # connection and storage errors of whichever online store is configured
        raise ServiceError(f"Feast online store: reading device {device_id!r} failed: {err}") from err
    values = [row[name][0] for name in names]
    if all(value is None for value in values):
        return None
    if any(value is None for value in values):
        missing = [name for name, value in zip(names, values, strict=True) if value is None]
        raise ValidationError(f"online features of device {device_id!r} are incomplete: no {missing}")
    seconds = max(row[name + TIMESTAMP_SUFFIX][0] for name in names)
    return DeviceFeatures(device_id=device_id, values=np.asarray([values], dtype=np.float64),
                          event_time=datetime.fromtimestamp(seconds, UTC))


class OnlineReader:
    """Reads device features for a long-running process: opens the store on first use, one read at a time.

    The SQLite online store shares one connection between threads, hence the lock. After a failed
    read the store is opened afresh, so a feature view applied after the first read is found.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: FeatureStore | None = None
        self._lock = threading.Lock()

    def read(self, spec: FeatureSpec, device_id: str) -> DeviceFeatures | None:
        """:func:`device_features` on this process's store."""
        with self._lock:
            if self._store is None:
                self._store = open_store(self.settings)
            try:
                return device_features(self._store, spec, device_id)
            except Exception:
                self._store = None
                raise

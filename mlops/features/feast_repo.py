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
"""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from mlops.errors import ValidationError
from mlops.features.compute import FeatureSpec
from mlops.log import get_logger

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

    from mlops.config import Settings

log = get_logger(__name__)

ENTITY = "device"
JOIN_KEY = "device_id"
TIMESTAMP = "event_timestamp"
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
    target = feature_table_dir(settings)
    staging = target.with_name(f".{target.name}-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    table.to_parquet(staging / "part-0.parquet", index=False)
    (staging / SPEC_FILE).write_text(json.dumps(spec.to_dict()))
    _swap_in(staging, target)
    log.info("feature table written", path=str(target), rows=len(table), features=len(spec.feature_names()))
    return target


def _swap_in(staging: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}-old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def write_spec(settings: Settings, spec: FeatureSpec) -> None:
    """Record the spec next to the feature table (the Spark writer calls this after its write)."""
    (feature_table_dir(settings) / SPEC_FILE).write_text(json.dumps(spec.to_dict()))


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
        from mlops.spark import BASE_CONF

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

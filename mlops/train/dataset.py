"""The training set of one window: lake -> Spark features (the shared kernel) -> labels -> one frame.

Steps, all in event time ``since <= t < until``:

1. the manifest names the committed lake files of both tables in the window (lineage: files,
   partitions, Kafka offset ranges, rows, digests);
2. Spark reads exactly those readings files and computes every reading's features with
   :func:`mlops.features.spark.spark_features` (the kernel the stream uses too);
3. the label rule (:func:`mlops.features.labels.label_readings`) labels them from the window's
   ground truth; censored rows are dropped;
4. the features go into Feast's offline store and the labelled readings get them back through
   Feast's point-in-time join (:func:`mlops.features.training_set.historical_features`), the
   same path any other consumer of the feature view uses.

Sensors come from ``features.sensors`` or, when unset, every sensor column of the window that has
no gaps and is not constant (C-MAPSS has several constant sensors). Readings are those of the
device types in ``features.device_types``; unset, every type of the window, which must then share
their sensors.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops.config import Settings
from mlops.data.lake import LakeFile, lake_files, read_table
from mlops.errors import TrainingError
from mlops.features import feast_repo
from mlops.features.compute import FeatureSpec, infer_sensors
from mlops.features.labels import label_readings
from mlops.features.spark import select_device_types, spark_features
from mlops.features.training_set import historical_features
from mlops.train.split import LABEL

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["JOIN_ROWS_PER_CALL", "KEY_COLUMNS", "TableLineage", "TrainingSet", "build_training_set", "lake_end",
           "window_end"]

KEY_COLUMNS = ("device_id", "event_time", "cycle")


@dataclass(frozen=True)
class TableLineage:
    """Which lake data of one table went in: files, partitions, offsets, rows, one content digest."""

    table: str
    root: str
    files: tuple[LakeFile, ...]
    rows: int
    """Rows of the window read from the files (a file may straddle the window's edges)."""

    @property
    def digest(self) -> str:
        """SHA-256 over the sorted file digests: the same files give the same digest wherever the lake lives."""
        joined = "\n".join(sorted(f.digest for f in self.files))
        return "sha256:" + hashlib.sha256(joined.encode()).hexdigest()

    @property
    def partitions(self) -> list[str]:
        return sorted({f.path.parent.name for f in self.files})

    def offsets(self) -> dict[str, dict[str, list[int]]]:
        """``{topic: {partition: [first, last]}}`` over the files (the Kafka records they hold)."""
        ranges: dict[str, dict[str, list[int]]] = {}
        for f in self.files:
            current = ranges.setdefault(f.topic, {}).setdefault(str(f.partition), [f.first_offset, f.last_offset])
            current[0], current[1] = min(current[0], f.first_offset), max(current[1], f.last_offset)
        return {t: dict(sorted(p.items(), key=lambda kv: int(kv[0]))) for t, p in sorted(ranges.items())}

    def tags(self) -> dict[str, str]:
        prefix = f"lineage.{self.table}"
        return {
            f"{prefix}.rows": str(self.rows),
            f"{prefix}.files": str(len(self.files)),
            f"{prefix}.partitions": ",".join(self.partitions),
            f"{prefix}.offsets": json.dumps(self.offsets(), separators=(",", ":")),
            f"{prefix}.digest": self.digest,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "root": self.root, "rows": self.rows, "digest": self.digest,
                "partitions": self.partitions, "offsets": self.offsets(),
                "files": [{**f.to_dict(), "path": str(f.path)} for f in self.files]}


@dataclass(frozen=True)
class TrainingSet:
    """Labelled feature rows of one window (sorted by event time, device) and where they came from."""

    frame: pd.DataFrame
    spec: FeatureSpec
    since: datetime
    until: datetime
    readings: TableLineage
    labels: TableLineage
    feature_views: tuple[str, ...] = field(default_factory=tuple)

    @property
    def digest(self) -> str:
        """Content digest of the labelled feature rows themselves."""
        hashed = pd.util.hash_pandas_object(self.frame, index=False).to_numpy()
        return "sha256:" + hashlib.sha256(hashed.tobytes()).hexdigest()

    def tags(self) -> dict[str, str]:
        return {
            "lineage.since": self.since.isoformat(),
            "lineage.until": self.until.isoformat(),
            "lineage.rows": str(len(self.frame)),
            "lineage.positives": str(int(self.frame[LABEL].sum())),
            "lineage.digest": self.digest,
            "lineage.event_time_min": pd.Timestamp(self.frame["event_time"].min()).isoformat(),
            "lineage.event_time_max": pd.Timestamp(self.frame["event_time"].max()).isoformat(),
            "lineage.features": ",".join(self.spec.feature_names()),
            "lineage.feature_views": ",".join(self.feature_views) or "none",
            **self.readings.tags(),
            **self.labels.tags(),
        }


def _sensors(settings: Settings, readings: DataFrame) -> tuple[str, ...]:
    from pyspark.sql import functions as F

    configured = settings.features.sensors
    candidates = tuple(configured) if configured else infer_sensors(
        [c for c in readings.columns if c != "date"])
    missing = [s for s in candidates if s not in readings.columns]
    if missing:
        raise TrainingError(f"features.sensors names {missing}, which the lake's readings do not have")
    if configured:
        return candidates
    # One pass over the window: a sensor with gaps (null) or no variation carries no signal.
    stats = readings.agg(*(F.count(F.col(s)).alias(f"n_{s}") for s in candidates),
                         *(F.stddev_pop(F.col(s)).alias(f"sd_{s}") for s in candidates),
                         F.count(F.lit(1)).alias("rows")).first()
    assert stats is not None
    usable = tuple(s for s in candidates if stats[f"n_{s}"] == stats["rows"] and (stats[f"sd_{s}"] or 0.0) > 1e-12)
    if not usable:
        raise TrainingError(f"no usable sensor in the window: every one of {list(candidates)} is constant or has gaps")
    return usable


def lake_end(settings: Settings) -> datetime | None:
    """One second after the newest event time in the lake (readings or labels); None for an empty lake.

    A window given as a duration ends here when the lake's data is older than now (a replayed
    recording, a simulated history on its own clock), so ``--window 7d`` means the lake's last 7 days.
    """
    newest = [f.max_event_time for table in ("readings", "labels") for f in lake_files(settings, table)]
    return max(newest) + timedelta(seconds=1) if newest else None


def window_end(settings: Settings, now: datetime) -> datetime:
    """Where a window given as a duration ends: the lake's newest event when that is before ``now``
    (a replayed recording or a simulated history carries its own clock), else ``now`` (a live fleet).

    `mlops train` and the scheduled retraining both use it, so both train on the same window.
    """
    end = lake_end(settings)
    return end if end is not None and end < now else now


def build_training_set(settings: Settings, spark: SparkSession, since: datetime, until: datetime) -> TrainingSet:
    """Read the window from the lake, compute features on Spark, label them; TrainingError if the window is empty."""
    from pyspark.sql import functions as F

    reading_files = tuple(lake_files(settings, "readings", since, until))
    label_files = tuple(lake_files(settings, "labels", since, until))
    if not reading_files:
        raise TrainingError(f"the lake {settings.lake_dir} holds no readings between {since.isoformat()} and "
                            f"{until.isoformat()}: nothing to train on (is the lake sink running?)")
    readings = (
        spark.read.option("mergeSchema", "true").parquet(*(str(f.path) for f in reading_files))
        .where((F.col("event_time") >= F.lit(since)) & (F.col("event_time") < F.lit(until)))
    )
    readings = select_device_types(settings, readings)
    spec = FeatureSpec(_sensors(settings, readings), settings.features.window)
    features: pd.DataFrame = spark_features(readings, spec).toPandas()
    features["event_time"] = pd.to_datetime(features["event_time"], utc=True)
    labels = read_table(settings, "labels", since, until)
    labelled = label_readings(features[["device_id", "event_time", "cycle"]], labels,
                              settings.features.horizon_cycles, settings.features.cycle_seconds)
    frame = _point_in_time(settings, features, labelled, spec)
    root = str(settings.lake_dir)
    return TrainingSet(
        frame=frame, spec=spec, since=since, until=until,
        readings=TableLineage("readings", root, reading_files, len(features)),
        labels=TableLineage("labels", root, label_files, len(labels)),
        feature_views=(feast_repo.FEATURE_VIEW,),
    )


JOIN_ROWS_PER_CALL = 2_000_000
"""Most intermediate rows one point-in-time join call may build (a few hundred bytes each).

Feast's file offline store (Dask) first merges every entity row with every feature row of the
same device and only then keeps the newest one at or before the row's time: a call costs
(entity rows x feature rows) per device, quadratic in the window. 1,200 rows per device of a
20-device fleet peaked at 13 GB in one call; a 7-day window of one reading per minute (10k rows
per device) would need about 900 GB (extrapolated). The entity rows are therefore joined in
chunks of consecutive event time, each bounded to this many merged rows (about 1 GB); the joined
rows are the same, only fewer are held at once. The join's time stays quadratic.
"""


def _join_chunks(entity_rows: pd.DataFrame, feature_devices: pd.Series) -> list[np.ndarray]:
    """Positions of ``entity_rows`` per point-in-time join call, in event-time order, each call merging
    at most :data:`JOIN_ROWS_PER_CALL` rows (an entity row costs its device's feature rows). Rows of
    one event time stay in one call."""
    per_device = feature_devices.astype(str).value_counts()
    devices = entity_rows[feast_repo.JOIN_KEY].astype(str)
    cost = devices.map(per_device).fillna(0).to_numpy(dtype=np.int64)
    if cost.sum() <= JOIN_ROWS_PER_CALL:
        return [np.arange(len(entity_rows))]
    times = pd.to_datetime(entity_rows[feast_repo.TIMESTAMP], utc=True).to_numpy()
    order = np.argsort(times, kind="stable")
    chunks: list[np.ndarray] = []
    start, total = 0, 0
    for i, position in enumerate(order):
        # Cut before a row that would overflow the call, unless it shares its time with the previous one.
        if total + cost[position] > JOIN_ROWS_PER_CALL and i > start and times[position] != times[order[i - 1]]:
            chunks.append(order[start:i])
            start, total = i, 0
        total += cost[position]
    chunks.append(order[start:])
    return chunks


def _point_in_time(settings: Settings, features: pd.DataFrame, labelled: pd.DataFrame,
                   spec: FeatureSpec) -> pd.DataFrame:
    """Join the labelled readings with the Spark-computed features through Feast, point in time.

    The features go into Feast's offline table; each labelled reading becomes an entity row and
    gets the newest feature row of its device at or before its time: never a later one.
    """
    feast_repo.write_feature_table(settings, features, spec)
    feast_repo.apply(settings, spec)
    entity_rows = pd.DataFrame({
        feast_repo.JOIN_KEY: labelled["device_id"].to_numpy(),
        feast_repo.TIMESTAMP: labelled["event_time"].to_numpy(),
        "cycle": labelled["cycle"].to_numpy(),
        LABEL: labelled[LABEL].to_numpy(),
    })
    chunks = [historical_features(settings, entity_rows.iloc[rows], spec)
              for rows in _join_chunks(entity_rows, features["device_id"])]
    joined = (chunks[0] if len(chunks) == 1 else pd.concat(chunks, ignore_index=True)).rename(
        columns={feast_repo.TIMESTAMP: "event_time"})
    unmatched = int(joined[spec.feature_names()].isna().any(axis=1).sum())
    if unmatched:
        raise TrainingError(f"{unmatched} labelled reading(s) found no feature row at or before their time in Feast")
    joined["event_time"] = pd.to_datetime(joined["event_time"], utc=True)
    columns = [*KEY_COLUMNS, *spec.feature_names(), LABEL]
    # Spark and Feast return rows in no fixed order: sort, so the same data always gives the same frame.
    return joined[columns].sort_values(["event_time", "device_id"], kind="stable").reset_index(drop=True)

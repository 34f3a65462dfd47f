"""The training set of one window: lake -> Spark features (the shared kernel) -> labels -> one frame.

Steps, all in event time ``since <= t < until``:

1. the manifest names the committed lake files of both tables in the window (lineage: files,
   partitions, Kafka offset ranges, rows, digests);
2. Spark reads exactly those readings files and computes every reading's features with
   :func:`mlops.features.spark.spark_features` (the kernel the stream uses too);
3. the label rule (:func:`mlops.features.labels.label_readings`) labels them from the window's
   ground truth, per device in Spark (:func:`mlops.features.spark.spark_labels`); censored rows
   are dropped;
4. the labelled readings get their features back through a point-in-time join in Spark
   (:func:`mlops.features.spark.point_in_time`: an as-of join, linear in the rows); the features
   are also written as Feast's feature table, which the feature view, ``mlops features
   materialize`` and the online store read.

Only the finished training rows are collected to the driver; more than ``train.max_rows`` of them
are first sampled in Spark, per label and deterministically from ``train.seed``
(:func:`mlops.train.sample.stratified_sample`), and only the sampled rows are joined and collected.

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

import pandas as pd

from mlops.config import Settings
from mlops.data.lake import LakeFile, lake_files
from mlops.errors import TrainingError
from mlops.features import feast_repo
from mlops.features.compute import FeatureSpec, infer_sensors
from mlops.features.spark import point_in_time, select_device_types, spark_features, spark_labels, write_feature_table
from mlops.train.sample import Sample, stratified_sample
from mlops.train.split import LABEL

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["KEY_COLUMNS", "TableLineage", "TrainingSet", "build_training_set", "lake_end",
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
    """Labelled feature rows of one window (sorted by event time, device) and where they came from.

    ``frame`` holds the rows the search gets: the whole training set, or its sample when the set has more
    than ``train.max_rows`` rows (``sample`` says how it was drawn and how large the whole set was).
    """

    frame: pd.DataFrame
    spec: FeatureSpec
    since: datetime
    until: datetime
    readings: TableLineage
    labels: TableLineage
    feature_views: tuple[str, ...] = field(default_factory=tuple)
    sample: Sample | None = None

    @property
    def digest(self) -> str:
        """Content digest of the labelled feature rows themselves (the sample's, when sampled: the rows
        the model learnt from; the lake digests, window, config and sample parameters identify the whole set)."""
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
            **(self.sample.tags() if self.sample is not None else {}),
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
    """The window's labelled feature rows, built in Spark end to end; TrainingError if the window is empty.

    Spark computes the features per device, labels each reading from the late ground truth per device
    (:func:`~mlops.features.spark.spark_labels`) and joins the labelled readings with the features point
    in time (:func:`~mlops.features.spark.point_in_time`). The features are also written as Feast's
    feature table (the registry and online store read it); only the finished rows reach the driver,
    sampled in Spark beforehand when there are more than ``train.max_rows`` of them
    (:func:`~mlops.train.sample.stratified_sample`).
    """
    from pyspark.sql import functions as F  # heavy

    reading_files = tuple(lake_files(settings, "readings", since, until))
    label_files = tuple(lake_files(settings, "labels", since, until))
    if not reading_files:
        raise TrainingError(f"the lake {settings.lake_dir} holds no readings between {since.isoformat()} and "
                            f"{until.isoformat()}: nothing to train on (is the lake sink running?)")
    in_window = (F.col("event_time") >= F.lit(since)) & (F.col("event_time") < F.lit(until))
    readings = spark.read.option("mergeSchema", "true").parquet(*(str(f.path) for f in reading_files)).where(in_window)
    readings = select_device_types(settings, readings)
    spec = FeatureSpec(_sensors(settings, readings), settings.features.window)
    features = spark_features(readings, spec).persist()  # read three times: labels, the join, Feast's table
    try:
        labels = _labels(spark, label_files).where(in_window)
        labelled = spark_labels(features.select(*KEY_COLUMNS), labels, settings.features.horizon_cycles,
                                settings.features.cycle_seconds).persist()  # counted per label, then sampled
        try:
            entities, sample = stratified_sample(labelled, settings.train.max_rows, settings.train.seed)
            joined = point_in_time(entities, features, spec.feature_names())
            frame: pd.DataFrame = joined.toPandas()
        finally:
            labelled.unpersist()
        write_feature_table(settings, features, spec)
        feast_repo.apply(settings, spec)
        counts = (features.count(), labels.count())
    finally:
        features.unpersist()
    unmatched = int(frame[spec.feature_names()].isna().any(axis=1).sum())
    if unmatched:
        raise TrainingError(f"{unmatched} labelled reading(s) found no feature row at or before their time")
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    # Spark returns rows in no fixed order: sort, so the same data always gives the same frame.
    frame = frame[[*KEY_COLUMNS, *spec.feature_names(), LABEL]].sort_values(
        ["event_time", "device_id"], kind="stable").reset_index(drop=True)
    root = str(settings.lake_dir)
    return TrainingSet(
        frame=frame, spec=spec, since=since, until=until,
        readings=TableLineage("readings", root, reading_files, counts[0]),
        labels=TableLineage("labels", root, label_files, counts[1]),
        feature_views=(feast_repo.FEATURE_VIEW,), sample=sample,
    )


def _labels(spark: SparkSession, files: tuple[LakeFile, ...]) -> DataFrame:
    """The window's label files as one Spark frame (an empty one with the label columns when there are none)."""
    if files:
        return spark.read.option("mergeSchema", "true").parquet(*(str(f.path) for f in files))
    return spark.createDataFrame([], "device_id string, event_time timestamp, kind string, rul double")

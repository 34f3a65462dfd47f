"""Batch features on Spark: the feature kernel per device through ``groupBy().applyInPandas``.

Spark only distributes; the numbers come from :func:`mlops.features.compute.history_features`,
the same code the pandas path and the stream use.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pandas as pd

from mlops.errors import TrainingError, ValidationError
from mlops.features import feast_repo
from mlops.features.compute import FeatureSpec, history_features, infer_sensors
from mlops.features.labels import LABEL_COLUMNS, label_readings
from mlops.log import get_logger

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from mlops.config import Settings

__all__ = ["KEY_COLUMNS", "build_feature_table", "feature_schema", "lake_spec", "point_in_time", "select_device_types",
           "spark_features", "spark_labels", "write_feature_table"]

log = get_logger(__name__)

KEY_COLUMNS = ("device_id", "device_type", "event_time", "cycle")
"""Identifying columns carried through to the features, where the input has them."""


def feature_schema(input_schema: StructType, spec: FeatureSpec) -> StructType:
    """Output schema: the input's key columns (same types) followed by one double per feature."""
    from pyspark.sql.types import DoubleType, StructField, StructType

    keys = [field for name in KEY_COLUMNS for field in input_schema.fields if field.name == name]
    return StructType([*keys, *(StructField(name, DoubleType(), False) for name in spec.feature_names())])


def spark_features(readings: DataFrame, spec: FeatureSpec) -> DataFrame:
    """Features of every reading, one row per reading: key columns plus ``spec.feature_names()``.

    ``readings`` needs ``device_id``, ``event_time`` and the spec's sensors (numeric, no nulls).
    Each device's whole history goes to one Python worker, which is what a rolling window needs.
    """
    missing = [c for c in ("device_id", "event_time", *spec.sensors) if c not in readings.columns]
    if missing:
        raise ValidationError(f"readings lack column(s) {missing} needed by the feature spec")
    keys = [c for c in KEY_COLUMNS if c in readings.columns]
    selected = readings.select(*keys, *spec.sensors)
    schema = feature_schema(selected.schema, spec)

    def per_device(history: pd.DataFrame) -> pd.DataFrame:
        return history_features(history, spec)[schema.fieldNames()]

    return selected.groupBy("device_id").applyInPandas(per_device, schema=schema)


def lake_spec(readings: DataFrame, window: int, sensors: list[str] | None = None) -> FeatureSpec:
    """The spec for a lake table: the configured sensors, or every sensor column that varies."""
    from pyspark.sql import functions as F

    if sensors is None:
        candidates = infer_sensors(readings.columns)
        if not candidates:
            raise ValidationError("readings hold no sensor columns")
        spread = readings.agg(*(F.countDistinct(c).alias(c) for c in candidates)).first()
        assert spread is not None
        sensors = [c for c in candidates if spread[c] > 1]  # constant sensors carry no signal
    return FeatureSpec(tuple(sensors), window)


def build_feature_table(settings: Settings, spark: SparkSession) -> tuple[FeatureSpec, int]:
    """Features of every reading in the lake, written as the Feast feature table; returns (spec, rows)."""

    source = settings.lake_dir / "readings"
    if not source.exists():
        raise ValidationError(f"no readings in the lake at {source}: run the lake sink first")
    # The union of every file's columns (fleets' sensors differ), then the configured fleet's readings only:
    # the same selection training makes, so the table has the models' features.
    readings = select_device_types(settings, spark.read.option("mergeSchema", "true").parquet(str(source)))
    spec = lake_spec(readings, settings.features.window, settings.features.sensors)
    write_feature_table(settings, spark_features(readings, spec), spec)
    rows = spark.read.parquet(str(feast_repo.feature_table_dir(settings))).count()
    log.info("feature table built", rows=rows, sensors=len(spec.sensors), window=spec.window)
    return spec, rows


def select_device_types(settings: Settings, readings: DataFrame) -> DataFrame:
    """The readings of ``features.device_types``; unset, the window's types must share their sensors.

    Two fleets in one lake (a simulated pump fleet and replayed turbofans) have disjoint sensors: no
    model can use both, so training says which types it found and what to configure.
    """
    from pyspark.sql import functions as F

    candidates = infer_sensors([c for c in readings.columns if c != "date"])
    # Per device type: its rows and the sensors it reports on every row.
    stats = readings.groupBy("device_type").agg(F.count(F.lit(1)).alias("_rows"),
                                                *(F.count(F.col(s)).alias(s) for s in candidates)).collect()
    sensors_of = {row["device_type"]: tuple(s for s in candidates if row[s] == row["_rows"]) for row in stats}
    configured = settings.features.device_types
    if configured:
        absent = sorted(set(configured) - set(sensors_of))
        if absent:
            raise TrainingError(f"features.device_types names {absent}, which the window's readings do not have "
                                f"(it has {sorted(sensors_of)})")
        return readings.where(F.col("device_type").isin(list(configured)))
    if len(set(sensors_of.values())) > 1:
        found = "; ".join(f"{t} [{', '.join(s) or 'no complete sensor'}]" for t, s in sorted(sensors_of.items()))
        raise TrainingError(
            f"the window holds device types with different sensors: {found}. A model is for one set of "
            f"sensors: set features.device_types to the types it is for, e.g. "
            f"MLOPS_FEATURES__DEVICE_TYPES='{json.dumps(sorted(sensors_of)[:1])}' or `mlops train --device-type "
            f"{sorted(sensors_of)[0]}`")
    return readings


def write_feature_table(settings: Settings, features: DataFrame, spec: FeatureSpec) -> None:
    """Replace Feast's feature table with Spark-computed ``features`` (device_id, event_time, the spec's
    features), written by the executors and swapped in whole (:func:`feast_repo.replace_feature_table`)."""
    table = features.withColumnRenamed("event_time", feast_repo.TIMESTAMP).select(
        feast_repo.JOIN_KEY, feast_repo.TIMESTAMP, *spec.feature_names())
    feast_repo.replace_feature_table(settings, spec,
                                     lambda staging: table.write.mode("overwrite").parquet(str(staging)))


def spark_labels(readings: DataFrame, labels: DataFrame, horizon_cycles: int, cycle_seconds: float) -> DataFrame:
    """``readings`` (device_id, event_time, any key columns) with the int column ``label``, censored rows
    dropped: :func:`~mlops.features.labels.label_readings`, run per device where the device's readings
    and labels meet in one Python worker (a cogroup), so no table is collected to the driver."""
    from pyspark.sql.types import LongType, StructField, StructType

    schema = StructType([*readings.schema.fields, StructField("label", LongType(), False)])

    def per_device(device_readings: pd.DataFrame, device_labels: pd.DataFrame) -> pd.DataFrame:
        if device_readings.empty:  # a device with labels but no reading in the window
            return pd.DataFrame({name: pd.Series(dtype=object) for name in schema.fieldNames()})
        return label_readings(device_readings, device_labels, horizon_cycles, cycle_seconds)[schema.fieldNames()]

    ground_truth = labels.select(*LABEL_COLUMNS)
    return readings.groupBy("device_id").cogroup(ground_truth.groupBy("device_id")).applyInPandas(per_device, schema)


def point_in_time(entities: DataFrame, features: DataFrame, names: list[str]) -> DataFrame:
    """An as-of join in Spark: each entity row (device_id, event_time, any columns) gets ``names`` from the
    newest feature row of its device at or before its time, never a later one; null where none exists.

    One sort per device of the entity and feature rows together, then a forward fill: linear in the
    rows, where a join that pairs every entity row with every feature row of its device is quadratic.
    At equal times the feature row sorts first, so a reading gets the features computed at its own time.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    marked = features.select("device_id", "event_time", F.struct(*names).alias("_features"),
                             F.lit(0).alias("_entity"))
    rows = entities.withColumn("_entity", F.lit(1)).unionByName(marked, allowMissingColumns=True)
    history = (Window.partitionBy("device_id").orderBy("event_time", "_entity")
               .rowsBetween(Window.unboundedPreceding, Window.currentRow))
    filled = rows.withColumn("_features", F.last("_features", ignorenulls=True).over(history))
    return filled.where(F.col("_entity") == 1).select(
        *entities.columns, *(F.col("_features").getField(name).alias(name) for name in names))


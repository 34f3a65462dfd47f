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
from mlops.log import get_logger

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

    from mlops.config import Settings

__all__ = ["KEY_COLUMNS", "build_feature_table", "feature_schema", "lake_spec", "select_device_types", "spark_features"]

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
    features = spark_features(readings, spec).withColumnRenamed("event_time", feast_repo.TIMESTAMP)
    table = features.select(feast_repo.JOIN_KEY, feast_repo.TIMESTAMP, *spec.feature_names())
    table.write.mode("overwrite").parquet(str(feast_repo.feature_table_dir(settings)))
    feast_repo.write_spec(settings, spec)
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

"""Training sets with point-in-time correct joins through Feast.

Every labelled reading becomes one entity row ``(device_id, event_timestamp = reading time)``;
Feast joins each row with the newest feature row of that device at or before that time, so a
training row holds the features as they were when the reading was scored, never later ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from mlops.errors import ValidationError
from mlops.features import feast_repo
from mlops.features.compute import FeatureSpec, features_frame
from mlops.features.labels import label_readings
from mlops.log import get_logger

if TYPE_CHECKING:
    from mlops.config import Settings

__all__ = ["build_training_set", "historical_features"]

log = get_logger(__name__)


def historical_features(settings: Settings, entity_rows: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Point-in-time join: ``entity_rows`` (device_id, event_timestamp, any extra columns) plus features.

    Rows come back sorted by (device_id, event_timestamp); extra columns (e.g. ``label``) ride along.
    """
    missing = [c for c in (feast_repo.JOIN_KEY, feast_repo.TIMESTAMP) if c not in entity_rows.columns]
    if missing:
        raise ValidationError(f"entity rows: missing column(s) {missing}")
    store = feast_repo.open_store(settings)
    feast_repo.registered_view(store)
    entity_df = entity_rows.assign(**{
        feast_repo.JOIN_KEY: entity_rows[feast_repo.JOIN_KEY].astype(str),
        # The feature table holds microseconds (Parquet, Spark); compare like with like.
        feast_repo.TIMESTAMP: pd.to_datetime(entity_rows[feast_repo.TIMESTAMP], utc=True).dt.floor("us"),
    })
    joined = store.get_historical_features(entity_df=entity_df, features=feast_repo.feature_refs(spec)).to_df()
    return joined.sort_values([feast_repo.JOIN_KEY, feast_repo.TIMESTAMP], ignore_index=True)


def build_training_set(
    settings: Settings, readings: pd.DataFrame, labels: pd.DataFrame, spec: FeatureSpec
) -> pd.DataFrame:
    """Labelled training rows: device_id, event_timestamp, label and ``spec.feature_names()``.

    Writes the readings' features to the feature table, applies the Feast repo for ``spec``, labels
    the readings ("fails within H", censored rows dropped) and joins features point-in-time.
    """
    features = features_frame(readings, spec)
    feast_repo.write_feature_table(settings, features, spec)
    feast_repo.apply(settings, spec)
    labelled = label_readings(readings, labels, settings.features.horizon_cycles, settings.features.cycle_seconds)
    entity_rows = pd.DataFrame({
        feast_repo.JOIN_KEY: labelled["device_id"].to_numpy(),
        feast_repo.TIMESTAMP: labelled["event_time"].to_numpy(),
        "label": labelled["label"].to_numpy(),
    })
    training = historical_features(settings, entity_rows, spec)
    unmatched = int(training[spec.feature_names()].isna().any(axis=1).sum())
    if unmatched:
        raise ValidationError(f"{unmatched} labelled reading(s) found no feature row at or before their time")
    log.info("training set built", rows=len(training), positives=int(training["label"].sum()),
             censored=len(readings) - len(labelled))
    return training[[feast_repo.JOIN_KEY, feast_repo.TIMESTAMP, "label", *spec.feature_names()]]

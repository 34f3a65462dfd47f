"""Feast's point-in-time join over the feature table that training writes, for Feast's own clients.

Training builds its sets in Spark (:func:`mlops.features.spark.point_in_time`); this is the same
join as Feast serves it, so a notebook or another service that asks Feast for historical features
of ``(device_id, event_timestamp)`` rows gets the values the model was trained on: the newest
feature row of the device at or before each row's time, never a later one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from mlops.errors import ValidationError
from mlops.features import feast_repo
from mlops.features.compute import FeatureSpec

if TYPE_CHECKING:
    from mlops.config import Settings

__all__ = ["historical_features"]


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

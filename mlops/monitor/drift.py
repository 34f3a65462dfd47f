"""What a window says, computed with Evidently 0.7: data drift, prediction drift, realised performance.

    reference = load_reference(settings, "iot-failure", "3")       # MLflow artifact of the version's run
    outcome = data_drift(window_frame, reference, features, drift_share=0.5)
    outcome.snapshot.save_html("window.html")
    perf = performance(labels, probabilities, decisions)

API used (``evidently`` 0.7): ``Report([...], include_tests=True).run(current, reference)`` on
``Dataset.from_pandas(frame, data_definition=DataDefinition(...))`` returns a ``Snapshot``;
``snapshot.dict()`` lists ``metrics`` (``id``, ``config``, ``value``) and ``tests`` (``status``,
``bound_test.metric_fingerprint`` = the metric's ``id``).

- Data drift: ``presets.DataDriftPreset(columns=features, drift_share=...)`` yields one
  ``DriftedColumnsCount`` (count and share of drifted features) and one ``ValueDrift`` per feature;
  a feature drifted when its ``ValueDrift`` test FAILed. Evidently picks the statistical test per
  column from the data (K-S for small numerical samples, normed Wasserstein for larger ones).
- Prediction drift: ``metrics.ValueDrift(column="probability", method="wasserstein")`` in the same
  report. The method is fixed so that the score (normed Wasserstein distance, drift at ≥ 0.1)
  means the same thing in every window, whatever the sizes.
- Performance: ``metrics.F1Score / Precision / Recall / Accuracy / RocAuc`` over a
  ``BinaryClassification(target, prediction_labels, prediction_probas)`` definition.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.config import Settings
from mlops.errors import RegistryError, ValidationError

REFERENCE_ARTIFACT = "reference/reference.parquet"
PREDICTION_DRIFT_METHOD = "wasserstein"
PREDICTION_DRIFT_THRESHOLD = 0.1


@dataclass
class DriftOutcome:
    """Data and prediction drift of one window against a reference."""

    drift_share: float
    drifted_features: list[str]
    dataset_drift: bool
    prediction_drift: float | None
    """Normed Wasserstein distance of the probability distribution; None without a reference for it."""
    snapshot: Any
    """The Evidently ``Snapshot`` (``save_html``, ``json``, ``dict``)."""


def load_reference(settings: Settings, model_name: str, version: str) -> pd.DataFrame:
    """The reference sample the training job logged with a model version (``reference/reference.parquet``)."""
    import mlflow
    from mlflow import MlflowClient

    where = f"model {model_name!r} version {version}"
    client = MlflowClient(tracking_uri=settings.mlflow.tracking_uri, registry_uri=settings.mlflow.tracking_uri)
    try:
        run_id = client.get_model_version(model_name, version).run_id
    except Exception as err:  # MlflowException and connection errors alike
        raise RegistryError(f"{where}: not found in the registry at {settings.mlflow.tracking_uri}: {err}") from err
    if not run_id:
        raise RegistryError(f"{where}: has no training run, so no reference data for drift")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=REFERENCE_ARTIFACT,
                                                       dst_path=tmp, tracking_uri=settings.mlflow.tracking_uri)
        except Exception as err:
            raise RegistryError(f"{where}: run {run_id} has no artifact {REFERENCE_ARTIFACT} "
                                f"(the drift monitor's reference data; retrain with `mlops train`): {err}") from err
        return pd.read_parquet(Path(path))


def _dataset(frame: pd.DataFrame, columns: list[str]) -> Any:
    from evidently import DataDefinition, Dataset

    return Dataset.from_pandas(frame[columns].astype("float64"),
                               data_definition=DataDefinition(numerical_columns=columns))


FEATURE_DRIFT_METHOD = "wasserstein"
"""One test for every feature, so that a drift share means the same in every window. Evidently's
automatic choice (normed Wasserstein at 0.1 for large samples) flags half of the features of a
stationary fleet, whose 500-reading windows cover only a few dozen device histories."""


def data_drift(window: pd.DataFrame, reference: pd.DataFrame, features: list[str], drift_share: float,
               prediction_reference: pd.Series | None = None, feature_threshold: float = 0.3) -> DriftOutcome:
    """Drift of ``features`` in ``window`` against ``reference``, and of ``probability`` against
    ``prediction_reference`` (probabilities) when given.
    """
    from evidently import Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    missing = [f for f in features if f not in reference.columns]
    if missing:
        raise ValidationError(f"reference data lacks feature column(s) {missing}: it belongs to another feature spec")
    absent = [f for f in features if f not in window.columns]
    if absent:
        raise ValidationError(f"window lacks feature column(s) {absent}")
    items: list[Any] = [DataDriftPreset(columns=features, drift_share=drift_share, num_method=FEATURE_DRIFT_METHOD,
                                        num_threshold=feature_threshold)]
    columns = list(features)
    current, ref = window[features].copy(), reference[features].copy()
    if prediction_reference is not None and len(prediction_reference) > 1:
        items.append(ValueDrift(column="probability", method=PREDICTION_DRIFT_METHOD,
                                threshold=PREDICTION_DRIFT_THRESHOLD))
        columns.append("probability")
        current["probability"] = window["probability"].to_numpy()
        # Reference rows and prediction-reference rows need not match in number: pad with NaN,
        # which Evidently drops per column.
        rows = range(max(len(ref), len(prediction_reference)))
        ref = ref.reset_index(drop=True).reindex(rows)
        ref["probability"] = pd.Series(prediction_reference.to_numpy(dtype=float)).reindex(rows).to_numpy()
    with warnings.catch_warnings():
        # scipy and Evidently warn on constant columns (e.g. n_readings); the test result still stands.
        warnings.simplefilter("ignore")
        snapshot = Report(items, include_tests=True).run(_dataset(current, columns), _dataset(ref, columns))
    return _read_drift(snapshot.dict(), features, snapshot)


def _read_drift(result: dict[str, Any], features: list[str], snapshot: Any) -> DriftOutcome:
    by_id = {m["id"]: m for m in result["metrics"]}
    share, prediction_drift = None, None
    column_of: dict[str, str] = {}
    for metric in result["metrics"]:
        kind = metric["config"].get("type", "")
        if kind.endswith(":DriftedColumnsCount"):
            share = float(metric["value"]["share"])
        elif kind.endswith(":ValueDrift"):
            column_of[metric["id"]] = metric["config"]["column"]
            if metric["config"]["column"] == "probability":
                prediction_drift = float(metric["value"])
    drifted, dataset_drift = [], False
    for test in result["tests"]:
        fingerprint = test.get("bound_test", {}).get("metric_fingerprint")
        failed = str(getattr(test["status"], "value", test["status"])) == "FAIL"
        column = column_of.get(fingerprint or "")
        if column is not None and column != "probability" and failed:
            drifted.append(column)
        elif fingerprint in by_id and by_id[fingerprint]["config"]["type"].endswith(":DriftedColumnsCount"):
            dataset_drift = failed  # the preset's test "share of drifted columns < drift_share"
    if share is None:
        raise ValidationError("Evidently report has no DriftedColumnsCount result")
    if prediction_drift is not None and not math.isfinite(prediction_drift):
        prediction_drift = None
    return DriftOutcome(share, sorted(drifted, key=features.index), dataset_drift, prediction_drift, snapshot)


def performance(labels: list[int], probabilities: list[float], decisions: list[int]) -> tuple[dict[str, float], Any]:
    """Realised f1, precision, recall, accuracy, roc_auc (both classes present), positive rates."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.metrics import Accuracy, F1Score, Precision, Recall, RocAuc

    frame = pd.DataFrame({"target": np.asarray(labels, dtype=int), "decision": np.asarray(decisions, dtype=int),
                          "probability": np.asarray(probabilities, dtype=float)})
    both = frame["target"].nunique() == 2
    definition = DataDefinition(classification=[BinaryClassification(
        target="target", prediction_labels="decision", prediction_probas="probability" if both else None,
        pos_label=1)])
    names = {"F1Score": "f1", "Precision": "precision", "Recall": "recall", "Accuracy": "accuracy", "RocAuc": "roc_auc"}
    items: list[Any] = [F1Score(), Precision(), Recall(), Accuracy()] + ([RocAuc()] if both else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined precision on a window without predicted positives
        snapshot = Report(items).run(Dataset.from_pandas(frame, data_definition=definition), None)
    metrics: dict[str, float] = {}
    for metric in snapshot.dict()["metrics"]:
        name = names[metric["config"]["type"].rsplit(":", 1)[-1]]
        value = float(metric["value"])
        if math.isfinite(value):
            metrics[name] = value
    metrics["positive_rate"] = float(frame["target"].mean())
    metrics["predicted_positive_rate"] = float(frame["decision"].mean())
    metrics["n_labelled"] = float(len(frame))
    return metrics, snapshot

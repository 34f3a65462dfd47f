"""What a window says, computed with Evidently 0.7: data drift, prediction drift, realised performance.

    reference = load_reference(settings, "iot-failure", "3")       # MLflow artifact of the version's run
    outcome = data_drift(window_frame, reference, features, drift_share=0.15, feature_threshold=0.75)
    outcome.drift_share, outcome.drifted_features                   # the verdict, at once
    outcome.report().save_html("window.html")                       # the full Evidently report, when wanted
    perf = performance(labels, probabilities, decisions)

- Data drift: every feature is tested with Evidently's normed Wasserstein stat test (the function
  its ``ValueDrift`` metric calls; drift when the distance, in reference standard deviations,
  reaches ``feature_threshold``). The drift share is the share of features that drifted; the
  window drifted as a whole when that share reaches ``drift_share``.
- Prediction drift: the same test on ``probability``, with a fixed threshold, so that the score
  means the same thing in every window, whatever the sizes.
- The report: :meth:`DriftOutcome.report` runs an Evidently ``Report`` with the same tests
  (``DriftedColumnsCount`` and one ``ValueDrift`` per column, with ``include_tests``) and returns
  its ``Snapshot`` (``save_html``, ``json``, ``dict``). Evidently renders the report's plots while it
  runs (about 1.5 s of CPU per window); the verdict does not wait for that: the monitor builds the
  report on its report thread (:mod:`mlops.monitor.reports`).
- Performance: ``metrics.F1Score / Precision / Recall / Accuracy / RocAuc`` over a
  ``BinaryClassification(target, prediction_labels, prediction_probas)`` definition.

Why one test for every feature, and why these thresholds (``policy.feature_drift_threshold``,
``policy.drift_threshold``): a fleet's operating point wanders (loads drift per device, ambient
temperature follows the day), and a window of a few dozen devices' readings is a snapshot of a
few dozen operating points, while the reference is a few hours of them. On a stationary fleet the
level features (``<sensor>__mean``, ``__last``) of load- and temperature-driven sensors move by up
to 0.5-0.9 reference standard deviations within a day, without any change in how devices fail.
docs/loop-results.md has the measurements behind the defaults.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.config import Settings
from mlops.errors import RegistryError, ValidationError
from mlops.mlflow import tracking_client
from mlops.monitor.calibration import CALIBRATION_ARTIFACT, DriftCalibration
from mlops.monitor.statistic import DRIFT_METHOD, drift_score

__all__ = [
    "PREDICTION_DRIFT_THRESHOLD",
    "REFERENCE_ARTIFACT",
    "DriftOutcome",
    "data_drift",
    "load_calibration",
    "load_reference",
    "performance",
]

REFERENCE_ARTIFACT = "reference/reference.parquet"
PREDICTION_DRIFT_THRESHOLD = 0.1


@dataclass
class DriftOutcome:
    """Data and prediction drift of one window against a reference."""

    drift_share: float
    drifted_features: list[str]
    dataset_drift: bool
    prediction_drift: float | None
    """Normed Wasserstein distance of the probability distribution; None without a reference for it."""
    scores: dict[str, float] = field(default_factory=dict)
    """Normed Wasserstein distance per feature."""
    current: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    reference: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    drift_share_threshold: float = 0.0
    feature_threshold: float = 0.0
    score: float | None = None
    """The calibrated window statistic (:mod:`mlops.monitor.calibration`); None without a calibration."""
    threshold: float | None = None
    """The calibrated threshold ``score`` was judged against."""
    drifted: bool | None = None
    """The calibrated verdict, ``score >= threshold``; None without a calibration."""

    def report(self) -> Any:
        """The Evidently ``Snapshot`` of the same tests, with its plots (seconds of CPU: call off the hot path)."""
        from evidently import Report
        from evidently.metrics import DriftedColumnsCount, ValueDrift

        features = list(self.scores)
        items: list[Any] = [DriftedColumnsCount(columns=features, drift_share=self.drift_share_threshold,
                                                num_method=DRIFT_METHOD, num_threshold=self.feature_threshold)]
        items += [ValueDrift(column=f, method=DRIFT_METHOD, threshold=self.feature_threshold) for f in features]
        if "probability" in self.current.columns:
            items.append(ValueDrift(column="probability", method=DRIFT_METHOD, threshold=PREDICTION_DRIFT_THRESHOLD))
        columns = list(self.current.columns)
        with warnings.catch_warnings():
            # scipy and Evidently warn on constant columns (e.g. n_readings); the test result still stands.
            warnings.simplefilter("ignore")
            return Report(items, include_tests=True).run(_dataset(self.current, columns),
                                                         _dataset(self.reference, columns))


def _run_id(settings: Settings, model_name: str, version: str) -> str:
    where = f"model {model_name!r} version {version}"
    client = tracking_client(settings)
    try:
        run_id = client.get_model_version(model_name, version).run_id
    except Exception as err:  # MlflowException and connection errors alike
        raise RegistryError(f"{where}: not found in the registry at {settings.mlflow.tracking_uri}: {err}") from err
    if not run_id:
        raise RegistryError(f"{where}: has no training run, so no reference data for drift")
    return str(run_id)


def load_reference(settings: Settings, model_name: str, version: str) -> pd.DataFrame:
    """The reference sample the training job logged with a model version (``reference/reference.parquet``)."""
    import mlflow

    run_id = _run_id(settings, model_name, version)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=REFERENCE_ARTIFACT,
                                                       dst_path=tmp, tracking_uri=settings.mlflow.tracking_uri)
        except Exception as err:
            raise RegistryError(f"model {model_name!r} version {version}: run {run_id} has no artifact "
                                f"{REFERENCE_ARTIFACT} (the drift monitor's reference data; retrain with "
                                f"`mlops train`): {err}") from err
        return pd.read_parquet(Path(path))


def load_calibration(settings: Settings, model_name: str, version: str) -> DriftCalibration | None:
    """The drift calibration logged with a model version; None for a version registered before calibrations."""
    import mlflow

    run_id = _run_id(settings, model_name, version)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CALIBRATION_ARTIFACT,
                                                       dst_path=tmp, tracking_uri=settings.mlflow.tracking_uri)
        except Exception:  # MLflow raises on a missing artifact; an old version simply has none
            return None
        return DriftCalibration.from_json(Path(path).read_text())


def _dataset(frame: pd.DataFrame, columns: list[str]) -> Any:
    from evidently import DataDefinition, Dataset

    return Dataset.from_pandas(frame[columns].astype("float64"),
                               data_definition=DataDefinition(numerical_columns=columns))


def data_drift(window: pd.DataFrame, reference: pd.DataFrame, features: list[str], drift_share: float,
               prediction_reference: pd.Series | None = None, feature_threshold: float = 0.75,
               calibration: DriftCalibration | None = None) -> DriftOutcome:
    """Drift of ``features`` in ``window`` against ``reference``, and of ``probability`` against
    ``prediction_reference`` (probabilities) when given. Milliseconds: no report is built here.

    With ``calibration`` (the model version's, fitted on its training rows) the outcome also carries
    the calibrated statistic, its threshold and the verdict (``drifted``); the drift share stays
    the share of features past ``feature_threshold``, for display.
    """
    missing = [f for f in features if f not in reference.columns]
    if missing:
        raise ValidationError(f"reference data lacks feature column(s) {missing}: it belongs to another feature spec")
    absent = [f for f in features if f not in window.columns]
    if absent:
        raise ValidationError(f"window lacks feature column(s) {absent}")
    current = window[features].astype("float64").reset_index(drop=True)
    ref = reference[features].astype("float64").reset_index(drop=True)
    scores = {f: drift_score(ref[f], current[f]) for f in features}
    prediction_drift = None
    if prediction_reference is not None and len(prediction_reference) > 1:
        current["probability"] = window["probability"].to_numpy(dtype=float)
        # Reference rows and prediction-reference rows need not match in number: pad with NaN,
        # which Evidently drops per column.
        rows = range(max(len(ref), len(prediction_reference)))
        ref = ref.reindex(rows)
        ref["probability"] = pd.Series(prediction_reference.to_numpy(dtype=float)).reindex(rows).to_numpy()
        prediction_drift = drift_score(ref["probability"], current["probability"])
        if not math.isfinite(prediction_drift):
            prediction_drift = None
    drifted = [f for f in features if scores[f] >= feature_threshold]
    share = len(drifted) / len(features) if features else 0.0
    outcome = DriftOutcome(share, drifted, share >= drift_share, prediction_drift, scores, current, ref,
                           drift_share, feature_threshold)
    if calibration is not None:
        unknown = [f for f in calibration.features if f not in scores]
        if unknown:
            raise ValidationError(f"drift calibration covers feature(s) {unknown} the window lacks")
        score = calibration.score(scores)
        outcome = replace(outcome, score=score, threshold=calibration.threshold,
                          drifted=score >= calibration.threshold)
    return outcome


def performance(labels: list[int], probabilities: list[float], decisions: list[int],
                min_positives: int = 1) -> tuple[dict[str, float], Any]:
    """Realised performance of the served ``decisions`` (the model's own threshold) against ``labels``.

    f1, precision, recall and accuracy come from the decisions, roc_auc from the probabilities
    (both classes present): one Evidently report over two classification definitions, so no
    library threshold stands in for the model's. With fewer than ``min_positives`` positive labels
    the window cannot say how well failures are caught: f1, precision, recall and roc_auc are
    omitted and ``judged`` is 0.0 (1.0 otherwise). Always: accuracy, positive_rate,
    predicted_positive_rate, n_labelled, n_positive.
    """
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.metrics import Accuracy, F1Score, Precision, Recall, RocAuc

    if not (len(labels) == len(probabilities) == len(decisions)) or not labels:
        raise ValidationError(f"performance window: {len(labels)} labels, {len(probabilities)} probabilities and "
                              f"{len(decisions)} decisions: need the same, non-zero number of each")
    frame = pd.DataFrame({"target": np.asarray(labels, dtype=int), "decision": np.asarray(decisions, dtype=int),
                          "probability": np.asarray(probabilities, dtype=float)})
    n_positive = int(frame["target"].sum())
    judged = n_positive >= min_positives
    both = frame["target"].nunique() == 2
    definition = DataDefinition(classification=[
        BinaryClassification(name="decisions", target="target", prediction_labels="decision", pos_label=1),
        BinaryClassification(name="probabilities", target="target", prediction_probas="probability", pos_label=1)])
    names = {"F1Score": "f1", "Precision": "precision", "Recall": "recall", "Accuracy": "accuracy", "RocAuc": "roc_auc"}
    items: list[Any] = [Accuracy(classification_name="decisions")]
    if judged:
        items += [F1Score(classification_name="decisions"), Precision(classification_name="decisions"),
                  Recall(classification_name="decisions")]
        if both:
            items.append(RocAuc(classification_name="probabilities"))
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
    metrics["n_positive"] = float(n_positive)
    metrics["judged"] = 1.0 if judged else 0.0
    return metrics, snapshot

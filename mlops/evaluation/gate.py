"""The evaluation gate: does a challenger beat the champion on fresh labelled data?

Shared by the loop controller and ``mlops promote``. Both models score the same rows, recent
labelled data neither was trained on; each decides with its own threshold. The challenger passes
only if

- it wins on ``policy.primary_metric`` by at least ``policy.promotion_margin``, and
- on every one of ``policy.guard_metrics`` it is not worse than the champion by more than
  ``policy.guard_tolerance`` or, when more, by more than the noise of that difference on these rows
  (:func:`guard_noise`: 1.96 standard errors of a paired bootstrap over devices). A window of
  1,000 fresh rows holds the failures of a few dozen devices; there a ROC AUC moves by a few
  hundredths from one sample to the next, and a fixed 0.03 rejected a challenger with f1 0.60
  against the champion's 0.35 on a 0.04 AUC difference that the rows could not tell from chance.

The caller supplies the data (a DataFrame with every feature column both models use and a 0/1
``label`` column), so the loop can evaluate on the window it judged.
:func:`mlops.evaluation.data.lake_evaluation_data` builds such a frame from the lake for ``mlops promote``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from mlops.config import PolicySettings
from mlops.errors import PolicyError
from mlops.evaluation.metrics import METRIC_NAMES, evaluate
from mlops.evaluation.metrics import metric as model_metric
from mlops.features.compute import FeatureSpec

__all__ = ["GUARD_RESAMPLES", "GUARD_Z", "LABEL", "GateDecision", "Scorable", "evaluate_gate", "guard_noise",
           "probabilities", "score"]

LABEL = "label"


class Scorable(Protocol):
    """What the gate needs of a model: a registered version's loaded form (``mlops.registry.loader.LoadedModel``)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def spec(self) -> FeatureSpec: ...
    @property
    def threshold(self) -> float: ...
    def predict_proba(self, features: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict with every number it was based on."""

    promote: bool
    challenger_version: str
    champion_version: str | None
    primary_metric: str
    margin: float
    guard_metrics: list[str]
    guard_tolerance: float
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float]
    rows: int
    positives: int
    reasons: list[str] = field(default_factory=list)
    guard_noise: dict[str, float] = field(default_factory=dict)
    """Per guard metric: the noise of the difference on these rows (:func:`guard_noise`)."""

    def summary(self) -> str:
        """One line for logs, the audit trail and the CLI."""
        verdict = "promote" if self.promote else "reject"
        return f"{verdict}: " + "; ".join(self.reasons)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN metrics become None)."""
        data = asdict(self)
        for key in ("challenger_metrics", "champion_metrics"):
            data[key] = {k: (None if math.isnan(v) else v) for k, v in data[key].items()}
        return data


def _check_metric(name: str, key: str) -> None:
    if name not in METRIC_NAMES:
        raise PolicyError(f"policy.{key}: unknown metric {name!r} (known: {', '.join(METRIC_NAMES)})")


def _labels(data: pd.DataFrame) -> np.ndarray:
    if LABEL not in data.columns:
        raise PolicyError(f"evaluation data has no {LABEL!r} column (columns: {list(data.columns)[:10]}...)")
    if data.empty:
        raise PolicyError("evaluation data is empty: no labelled readings to compare the models on")
    labels = data[LABEL]
    if labels.isna().any() or not labels.isin([0, 1]).all():
        raise PolicyError(f"evaluation data column {LABEL!r} must hold only 0 and 1")
    y = labels.to_numpy(dtype=np.int64)
    if len(np.unique(y)) < 2:
        raise PolicyError(f"evaluation data has {len(y)} rows of one class only ({int(y[0])}); the gate needs "
                          "failures and non-failures to compare the models")
    return y


def probabilities(model: Scorable, data: pd.DataFrame) -> np.ndarray:
    """One model's failure probability for every evaluation row."""
    names = model.spec.feature_names()
    missing = [n for n in names if n not in data.columns]
    if missing:
        raise PolicyError(f"evaluation data lacks feature column(s) {missing[:5]} that model "
                          f"{model.name!r} version {model.version} needs")
    return model.predict_proba(data[names].to_numpy(dtype=np.float64))


def score(model: Scorable, data: pd.DataFrame, y: np.ndarray) -> dict[str, float]:
    """Metrics of one model on the evaluation data, deciding with the model's own threshold."""
    return evaluate(y, probabilities(model, data), model.threshold)


GUARD_Z = 1.96
GUARD_RESAMPLES = 200


def guard_noise(y: np.ndarray, new: tuple[np.ndarray, float], old: tuple[np.ndarray, float], metric: str,
                groups: np.ndarray | None, seed: int = 0) -> float:
    """``GUARD_Z`` standard errors of (challenger - champion) on ``metric``: a paired bootstrap that
    resamples whole devices (``groups``; rows when None), as a device's readings fail together.

    ``new`` and ``old``: each model's (probabilities, threshold). Resamples with one class only are skipped.
    """
    rng = np.random.default_rng(seed)
    keys = groups if groups is not None else np.arange(len(y))
    unique, inverse = np.unique(keys, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(unique))]
    differences = []
    for _ in range(GUARD_RESAMPLES):
        rows = np.concatenate([members[g] for g in rng.integers(0, len(unique), len(unique))])
        if len(np.unique(y[rows])) < 2:
            continue
        a = model_metric(metric, y[rows], new[0][rows], new[1])
        b = model_metric(metric, y[rows], old[0][rows], old[1])
        if not (math.isnan(a) or math.isnan(b)):
            differences.append(a - b)
    return GUARD_Z * float(np.std(differences, ddof=1)) if len(differences) > 10 else 0.0


def evaluate_gate(policy: PolicySettings, challenger: Scorable, champion: Scorable | None,
                  data: pd.DataFrame) -> GateDecision:
    """Compare ``challenger`` with ``champion`` on ``data`` (features + ``label``) under ``policy``."""
    primary = policy.primary_metric
    _check_metric(primary, "primary_metric")
    for guard in policy.guard_metrics:
        _check_metric(guard, "guard_metrics")
    y = _labels(data)
    p_new = probabilities(challenger, data)
    challenger_metrics = evaluate(y, p_new, challenger.threshold)
    p_old = probabilities(champion, data) if champion is not None else None
    champion_metrics = evaluate(y, p_old, champion.threshold) if champion is not None and p_old is not None else {}
    groups = data["device_id"].to_numpy() if "device_id" in data.columns else None
    noise: dict[str, float] = {}
    reasons: list[str] = []
    passed = True
    if champion is None:
        reasons.append(f"no champion to beat; challenger {primary}={challenger_metrics[primary]:.4f}")
    else:
        new, old = challenger_metrics[primary], champion_metrics[primary]
        wins = new >= old + policy.promotion_margin
        passed &= wins
        reasons.append(f"{primary} {new:.4f} vs champion {old:.4f} "
                       f"({'wins' if wins else 'does not win'} by margin {policy.promotion_margin:g})")
        for guard in policy.guard_metrics:
            new, old = challenger_metrics[guard], champion_metrics[guard]
            assert champion is not None and p_old is not None
            noise[guard] = guard_noise(y, (p_new, challenger.threshold), (p_old, champion.threshold), guard, groups)
            tolerance = max(policy.guard_tolerance, noise[guard])
            # NaN (undefined on these rows) never passes a guard: no evidence is not good evidence.
            ok = not math.isnan(new) and (math.isnan(old) or new >= old - tolerance)
            passed &= ok
            reasons.append(f"guard {guard} {new:.4f} vs champion {old:.4f} "
                           f"({'within' if ok else 'worse than'} tolerance {tolerance:.3f}: the larger of "
                           f"{policy.guard_tolerance:g} and the difference's noise {noise[guard]:.3f})")
    return GateDecision(
        promote=bool(passed), challenger_version=challenger.version,
        champion_version=champion.version if champion else None, primary_metric=primary,
        margin=policy.promotion_margin, guard_metrics=list(policy.guard_metrics),
        guard_tolerance=policy.guard_tolerance, challenger_metrics=challenger_metrics,
        champion_metrics=champion_metrics, rows=len(y), positives=int(y.sum()), reasons=reasons,
        guard_noise=noise,
    )

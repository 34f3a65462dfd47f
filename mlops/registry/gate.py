"""The evaluation gate: does a challenger beat the champion on fresh labelled data?

Shared by the loop controller and ``mlops promote``. Both models score the same rows, recent
labelled data neither was trained on; each decides with its own threshold. The challenger passes
only if

- it wins on ``policy.primary_metric`` by at least ``policy.promotion_margin``, and
- on every one of ``policy.guard_metrics`` it is not worse than the champion by more than
  ``policy.guard_tolerance``.

The caller supplies the data (a DataFrame with every feature column both models use and a 0/1
``label`` column), so the loop can evaluate on the window it judged. :func:`lake_evaluation_data`
builds such a frame from the lake for ``mlops promote``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from mlops.config import PolicySettings, Settings
from mlops.errors import PolicyError
from mlops.features.compute import FeatureSpec
from mlops.registry.loader import LoadedModel
from mlops.train.model import METRIC_NAMES, evaluate

LABEL = "label"
TRAINED_UNTIL_TAGS = ("lineage.event_time_max", "lineage.until")
"""Version tags that say up to which event time a model's training data reaches (first found wins)."""


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


def score(model: LoadedModel, data: pd.DataFrame, y: np.ndarray) -> dict[str, float]:
    """Metrics of one model on the evaluation data, deciding with the model's own threshold."""
    names = model.spec.feature_names()
    missing = [n for n in names if n not in data.columns]
    if missing:
        raise PolicyError(f"evaluation data lacks feature column(s) {missing[:5]} that model "
                          f"{model.name!r} version {model.version} needs")
    probability = model.predict_proba(data[names].to_numpy(dtype=np.float64))
    return evaluate(y, probability, model.threshold)


def evaluate_gate(policy: PolicySettings, challenger: LoadedModel, champion: LoadedModel | None,
                  data: pd.DataFrame) -> GateDecision:
    """Compare ``challenger`` with ``champion`` on ``data`` (features + ``label``) under ``policy``."""
    primary = policy.primary_metric
    _check_metric(primary, "primary_metric")
    for guard in policy.guard_metrics:
        _check_metric(guard, "guard_metrics")
    y = _labels(data)
    challenger_metrics = score(challenger, data, y)
    champion_metrics = score(champion, data, y) if champion is not None else {}
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
            # NaN (undefined on these rows) never passes a guard: no evidence is not good evidence.
            ok = not math.isnan(new) and (math.isnan(old) or new >= old - policy.guard_tolerance)
            passed &= ok
            reasons.append(f"guard {guard} {new:.4f} vs champion {old:.4f} "
                           f"({'within' if ok else 'worse than'} tolerance {policy.guard_tolerance:g})")
    return GateDecision(
        promote=bool(passed), challenger_version=challenger.version,
        champion_version=champion.version if champion else None, primary_metric=primary,
        margin=policy.promotion_margin, guard_metrics=list(policy.guard_metrics),
        guard_tolerance=policy.guard_tolerance, challenger_metrics=challenger_metrics,
        champion_metrics=champion_metrics, rows=len(y), positives=int(y.sum()), reasons=reasons,
    )


def trained_until(tags: dict[str, str], where: str) -> datetime:
    """Up to which event time a version's training data reaches, from its lineage tags."""
    for key in TRAINED_UNTIL_TAGS:
        if tags.get(key):
            try:
                moment = pd.Timestamp(tags[key])
            except ValueError as err:
                raise PolicyError(f"{where}: tag {key}={tags[key]!r} is not a timestamp") from err
            return (moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")).to_pydatetime()
    raise PolicyError(f"{where}: no lineage tag ({' / '.join(TRAINED_UNTIL_TAGS)}) says how recent its training "
                      "data is, so no evaluation data can be chosen that it was not trained on; "
                      "use --force to promote without the gate")


def lake_evaluation_data(settings: Settings, models: Sequence[LoadedModel], since: datetime) -> pd.DataFrame:
    """Labelled features from the lake for readings after ``since``, for every model's features.

    Readings from one window before ``since`` are read too, so the first evaluated readings have
    full windows, exactly as they had when they were scored.
    """
    from mlops.data.lake import read_table
    from mlops.features.compute import features_frame
    from mlops.features.labels import label_readings

    windows = {m.spec.window for m in models}
    if len(windows) != 1:
        raise PolicyError(f"the models use different feature windows {sorted(windows)}; evaluate them on "
                          "data you supply (the loop does) or use --force")
    window = windows.pop()
    sensors = tuple(sorted({s for m in models for s in m.spec.sensors}))
    start = since - timedelta(seconds=window * settings.features.cycle_seconds)
    readings = read_table(settings, "readings", since=start)
    if readings.empty:
        raise PolicyError(f"no evaluation data: the lake holds no readings since {since.isoformat()} "
                          "(newer than the models' training data)")
    missing = [s for s in sensors if s not in readings.columns]
    if missing:
        raise PolicyError(f"no evaluation data: lake readings lack sensor column(s) {missing}")
    labels = read_table(settings, "labels", since=start)
    features = features_frame(readings, FeatureSpec(sensors, window))
    labelled = label_readings(features, labels, settings.features.horizon_cycles, settings.features.cycle_seconds)
    fresh = labelled[pd.to_datetime(labelled["event_time"], utc=True) > pd.Timestamp(since)]
    if fresh.empty:
        raise PolicyError(f"no evaluation data: no labelled readings since {since.isoformat()} yet "
                          "(labels arrive late; wait or use --force)")
    return fresh.reset_index(drop=True)

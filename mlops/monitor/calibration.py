"""Drift detection that calibrates itself: a window statistic and its threshold from the reference's own null.

    calibration = calibrate(regime_rows, reference, features, window_size=1000, false_alarm_rate=1 / 30)
    score = calibration.score(scores)            # scores: normed Wasserstein distance per feature
    drifted = score >= calibration.threshold

**The statistic.** Every feature's distance from the reference (Evidently's normed Wasserstein
distance, :func:`mlops.monitor.statistic.drift_score`) is divided by that feature's own *null scale*:
the root mean square of its distance over windows of the training period that the reference did
not see. The window's score is the largest of these ratios. Features differ a lot in how much they
move on a stationary stream: a fleet's level features (``<sensor>__mean``, ``__last``) follow its
wandering operating point, its ``__std`` and ``__slope`` features barely move. A single cut on the
raw distance must sit above the level features' wander, so it misses a drift that shows first in
the quiet features (a new wear regime tilts the slopes an hour before it moves the levels). A null
scale is never taken below :func:`sampling_floor`, the distance two samples of the same
distribution have by chance, so a feature that was constant in training does not turn every
change of one reading into an alarm.

**The null windows.** Windows are drawn as the monitor sees them: ``window_size`` consecutive
readings of the fleet in event time (not rows drawn at random: the fleet's slow wander is what
makes a stationary stream look drifted), every ``hop`` readings. The training rows are cut into
contiguous blocks; each block's windows are scored against a reference drawn (like the model's)
from the *other* blocks, so a window is judged against data from other hours, as live windows are.

**The threshold.** A false trigger rate of ``false_alarm_rate`` per day is at most that rate of
windows over the threshold (a trigger needs at least one), so a window may exceed it with
probability ``p = false_alarm_rate / windows_per_day`` (windows per day from the training rows'
own reading rate and the hop). A few dozen null windows cannot show a quantile that far out, so
the threshold is the ``1 - p`` quantile of a log-normal fitted to the null scores, with the
spread taken at its one-sided 95 % upper confidence bound for that many windows (chi-square): few
windows widen the threshold instead of trusting a lucky short sample.

The calibration is stored with the model version (``reference/drift_calibration.json`` next to
``reference/reference.parquet``) and read by the monitor with the reference. docs/loop-results.md
("Calibration") has the measurements on the simulator and on C-MAPSS.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from mlops.config import PolicySettings
from mlops.errors import ValidationError
from mlops.monitor.statistic import drift_score

__all__ = [
    "CALIBRATION_ARTIFACT",
    "CALIBRATION_TAG",
    "HOP_FRACTION",
    "MIN_NULL_WINDOWS",
    "NULL_BLOCKS",
    "SPREAD_CONFIDENCE",
    "STATISTIC",
    "DriftCalibration",
    "calibrate",
    "calibrate_for_policy",
    "lognormal_quantile",
    "null_windows",
    "sampling_floor",
    "summary",
    "windows_per_day",
]

CALIBRATION_ARTIFACT = "reference/drift_calibration.json"
CALIBRATION_TAG = "lineage.drift_calibration"
"""Model version tag: ``"<statistic> threshold=<t> windows=<n>"``, so the registry shows it at a glance."""
STATISTIC = "max_scaled_wasserstein"
HOP_FRACTION = 0.5
"""The monitor closes a drift window every half window (sliding windows): detection within about half a window."""
MIN_NULL_WINDOWS = 4
"""Fewest null windows a calibration is fitted on; fewer training rows make no calibration."""
SPREAD_CONFIDENCE = 0.95
NULL_BLOCKS = 2
"""Contiguous blocks of the training rows; each block's windows are judged against a reference from the other.
Two blocks put up to the whole training span between a window and its reference (measured: four blocks of
one day of history gave 4 stationary windows of 170 over the threshold, two blocks 2)."""


@dataclass(frozen=True)
class DriftCalibration:
    """What the monitor needs to judge a window of one model version."""

    features: list[str]
    scales: dict[str, float]
    """Null scale per feature (normed Wasserstein distance)."""
    threshold: float
    """A window drifted when :meth:`score` reaches this."""
    window_size: int
    hop: int
    windows_per_day: float
    false_alarm_rate: float
    """False triggers per day of a stationary stream the threshold allows."""
    window_probability: float
    """Probability that a null window exceeds the threshold."""
    null_scores: list[float] = field(default_factory=list)
    statistic: str = STATISTIC

    def score(self, distances: Mapping[str, float]) -> float:
        """The window statistic: the largest distance in units of its feature's null scale."""
        return max((distances[f] / self.scales[f] for f in self.features if f in distances), default=0.0)

    def over(self, distances: Mapping[str, float]) -> list[str]:
        """Features whose scaled distance reaches the threshold (what drifted, for display)."""
        return [f for f in self.features if f in distances and distances[f] / self.scales[f] >= self.threshold]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DriftCalibration:
        try:
            data = json.loads(text)
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as err:
            raise ValidationError(f"drift calibration: not a {cls.__name__} document: {err}") from err

    def tag(self) -> str:
        return f"{self.statistic} threshold={self.threshold:.3f} windows={len(self.null_scores)}"


def sampling_floor(window_size: int, reference_rows: int) -> float:
    """The normed Wasserstein distance two independent samples of one normal distribution have on
    average: sqrt(2/pi) * sqrt(1/n + 1/m), the mean absolute difference of the two sample means'
    error, a lower bound of the expected distance. A null scale below it is an accident of the data."""
    return math.sqrt(2 / math.pi) * math.sqrt(1 / window_size + 1 / reference_rows)


def windows_per_day(event_times: pd.Series, hop: int) -> float:
    """Drift windows the monitor closes per day at the rows' own reading rate."""
    times = pd.to_datetime(event_times, utc=True)
    span_s = (times.max() - times.min()).total_seconds()
    if span_s <= 0:
        raise ValidationError("drift calibration: the training rows span no event time")
    return len(times) / span_s * 86_400 / hop


def null_windows(rows: pd.DataFrame, features: Sequence[str], window_size: int, hop: int, reference_rows: int,
                 seed: int, distance: Callable[[pd.Series, pd.Series], float]) -> pd.DataFrame:
    """Distance per feature (columns) of every held-out window (rows) of ``rows`` (in event-time order)."""
    blocks = min(NULL_BLOCKS, len(rows) // (window_size + hop))  # a block holds two windows at least
    if blocks < 2:
        raise ValidationError(f"drift calibration: {len(rows)} rows make fewer than two blocks of two "
                              f"{window_size}-reading windows {hop} apart")
    edges = np.linspace(0, len(rows), blocks + 1).astype(int)
    rng = np.random.default_rng(seed)
    out: list[dict[str, float]] = []
    for b in range(blocks):
        inside = np.arange(edges[b], edges[b + 1])
        outside = np.setdiff1d(np.arange(len(rows)), inside)
        reference = rows.iloc[np.sort(rng.choice(outside, min(reference_rows, len(outside)), replace=False))]
        for start in range(edges[b], edges[b + 1] - window_size + 1, hop):
            window = rows.iloc[start:start + window_size]
            out.append({f: distance(reference[f], window[f]) for f in features})
    return pd.DataFrame(out, columns=list(features))


def calibrate(rows: pd.DataFrame, features: Sequence[str], *, window_size: int, false_alarm_rate: float,
              reference_rows: int, seed: int = 0, hop: int | None = None,
              distance: Callable[[pd.Series, pd.Series], float] | None = None,
              sample_fraction: float = 1.0) -> DriftCalibration:
    """Calibrate the drift statistic on ``rows`` (features and ``event_time``, in event-time order).

    ``reference_rows``: the size of the model's reference sample (each null window is judged against
    a sample of that size). ``sample_fraction``: the share of the stream's readings ``rows`` holds (a
    training set sampled by ``train.max_rows``); the windows per day are counted at the stream's rate.
    Raises ValidationError when the rows are too few for ``MIN_NULL_WINDOWS``.
    """

    if false_alarm_rate <= 0:
        raise ValidationError(f"drift calibration: false_alarm_rate {false_alarm_rate} must be positive")
    hop = hop or max(1, int(window_size * HOP_FRACTION))
    rows = rows.sort_values("event_time", kind="stable").reset_index(drop=True)
    if not 0 < sample_fraction <= 1:
        raise ValidationError(f"drift calibration: sample_fraction {sample_fraction} must be in (0, 1]")
    per_day = windows_per_day(rows["event_time"], hop) / sample_fraction
    nulls = null_windows(rows, features, window_size, hop, reference_rows, seed, distance or drift_score)
    if len(nulls) < MIN_NULL_WINDOWS:
        raise ValidationError(f"drift calibration: {len(rows)} rows give {len(nulls)} null windows of "
                              f"{window_size}, fewer than {MIN_NULL_WINDOWS}")
    floor = sampling_floor(window_size, reference_rows)
    scales = {f: max(float(np.sqrt(np.mean(np.square(nulls[f].to_numpy())))), floor) for f in features}
    scaled = (nulls / pd.Series(scales)).max(axis=1).to_numpy(dtype=float)
    p = min(0.5, false_alarm_rate / per_day)
    threshold = lognormal_quantile(scaled, 1 - p)
    return DriftCalibration(list(features), scales, threshold, window_size, hop, per_day, false_alarm_rate, p,
                            [round(float(s), 4) for s in scaled])


def calibrate_for_policy(rows: pd.DataFrame, features: Sequence[str], policy: PolicySettings, *,
                         reference_rows: int, seed: int = 0, sample_fraction: float = 1.0) -> DriftCalibration:
    """The calibration a model trained on ``rows`` gets: windows as ``policy`` makes them, at its false-alarm rate.

    In ``time`` mode the window size is the readings a ``window_seconds`` window holds at the stream's rate:
    the rows' own rate, divided by ``sample_fraction`` when they are a sample of the stream's readings.
    """
    window = policy.window_size
    if policy.window_mode == "time":
        times = pd.to_datetime(rows["event_time"], utc=True)
        span_s = (times.max() - times.min()).total_seconds()
        window = max(10, round(len(rows) / sample_fraction / max(span_s, 1.0) * policy.window_seconds))
    return calibrate(rows, features, window_size=window, false_alarm_rate=policy.false_alarm_rate,
                     reference_rows=reference_rows, seed=seed, sample_fraction=sample_fraction)


def lognormal_quantile(values: np.ndarray, q: float) -> float:
    """The ``q`` quantile of a log-normal fitted to ``values``, its spread at the upper confidence bound."""
    logs = np.log(np.maximum(values, 1e-9))
    n = len(logs)
    sd = float(np.std(logs, ddof=1))
    # One-sided upper bound of sigma: s * sqrt((n-1) / chi2_{1-confidence}(n-1)).
    sd_upper = sd * math.sqrt((n - 1) / stats.chi2.ppf(1 - SPREAD_CONFIDENCE, n - 1))
    return float(np.exp(np.mean(logs) + stats.norm.ppf(q) * sd_upper))


def summary(calibration: DriftCalibration) -> dict[str, Any]:
    """Key figures for logs and MLflow metrics."""
    return {"drift_threshold": calibration.threshold, "drift_null_windows": len(calibration.null_scores),
            "drift_windows_per_day": calibration.windows_per_day,
            "drift_null_max": max(calibration.null_scores, default=0.0)}

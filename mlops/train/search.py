"""Hyperparameter search: K candidates drawn deterministically from the configured grid, each trained
and scored in its own Spark task.

The training and validation parts are broadcast once; ``sc.parallelize(candidates, K)`` puts one
candidate in each partition, so Spark runs K tasks over its executor cores and returns every
candidate's metrics and parameters to the driver. :func:`sequential_search` runs the very same task
function in one process (the benchmark's baseline).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlops.errors import TrainingError
from mlops.train.model import fit_and_score
from mlops.train.regimes import ALL_ROWS

if TYPE_CHECKING:
    from pyspark import Broadcast
    from pyspark.sql import SparkSession

__all__ = [
    "TIE_BREAKER",
    "Candidate",
    "CandidateResult",
    "SearchData",
    "choose_best",
    "distributed_search",
    "on_windows",
    "sample_candidates",
    "sequential_search",
    "train_and_score",
]

TIE_BREAKER = "roc_auc"


@dataclass(frozen=True)
class Candidate:
    """One parameter set of one model family, trained on one training window (:mod:`mlops.train.regimes`)."""

    index: int
    family: str
    params: dict[str, Any]
    rows: str = ALL_ROWS
    """The training window: a key of :attr:`SearchData.weights`."""

    def as_params(self) -> dict[str, str]:
        """MLflow params: ``family``, ``training_rows`` and ``<family>.<name>``, the same keys for every run
        of a family."""
        return {"family": self.family, "training_rows": self.rows,
                **{f"{self.family}.{k}": json.dumps(v) for k, v in self.params.items()}}


@dataclass(frozen=True)
class SearchData:
    """What every task needs: both parts of the split and the fitting settings."""

    x_train: pd.DataFrame
    y_train: np.ndarray
    x_val: pd.DataFrame
    y_val: np.ndarray
    seed: int
    calibration: str
    folds: int
    weights: dict[str, np.ndarray | None] = field(default_factory=lambda: {ALL_ROWS: None})
    """Per training window, each training row's weight (None: all rows, weight 1)."""


@dataclass(frozen=True)
class CandidateResult:
    """What a task sends back: the candidate, its validation metrics and threshold, timing, or its error."""

    candidate: Candidate
    metrics: dict[str, float] = field(default_factory=dict)
    threshold: float = 0.5
    started_at: float = 0.0
    duration_s: float = 0.0
    error: str | None = None

    def score(self, primary: str) -> tuple[float, float, int]:
        """Sort key: primary metric, then the tie-breaker, then the earlier candidate; NaN ranks last."""
        def value(name: str) -> float:
            number = self.metrics.get(name, float("nan"))
            return -math.inf if math.isnan(number) else number
        return (value(primary), value(TIE_BREAKER), -self.candidate.index)


def sample_candidates(space: dict[str, dict[str, list[Any]]], k: int, seed: int) -> list[Candidate]:
    """K distinct candidates, the families taking turns, parameters drawn from each family's grid.

    Deterministic: the same space, K and seed always give the same list. K larger than the whole
    grid gives the whole grid.
    """
    if not space:
        raise TrainingError("train.search_space is empty: configure at least one model family")
    rng = np.random.default_rng(seed)
    queues: list[tuple[str, list[dict[str, Any]]]] = []
    for family in sorted(space):
        names = sorted(space[family])
        grid = [dict(zip(names, values, strict=True))
                for values in itertools.product(*(space[family][n] for n in names))]
        order = rng.permutation(len(grid))
        queues.append((family, [grid[i] for i in order]))
    candidates: list[Candidate] = []
    for turn in itertools.count():
        if len(candidates) >= k or all(not grid for _, grid in queues):
            break
        family, grid = queues[turn % len(queues)]
        if grid:
            candidates.append(Candidate(len(candidates), family, grid.pop(0)))
    return candidates


def on_windows(candidates: list[Candidate], windows: list[str]) -> list[Candidate]:
    """Every candidate on every training window, renumbered (parameter set by parameter set)."""
    return [Candidate(i * len(windows) + j, c.family, c.params, rows)
            for i, c in enumerate(candidates) for j, rows in enumerate(windows)]


def train_and_score(candidate: Candidate, data: SearchData) -> CandidateResult:
    """The task: fit one candidate and score it; an exception becomes the result's ``error``."""
    started = time.time()
    clock = time.perf_counter()
    try:
        fitted = fit_and_score(candidate.family, candidate.params, data.x_train, data.y_train, data.x_val,
                               data.y_val, seed=data.seed, calibration=data.calibration, folds=data.folds,
                               sample_weight=data.weights[candidate.rows])
    except Exception as err:  # one bad parameter set must not sink the other candidates
        return CandidateResult(candidate, started_at=started, duration_s=time.perf_counter() - clock,
                               error=f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=3)}")
    return CandidateResult(candidate, fitted.metrics, fitted.threshold, started, time.perf_counter() - clock)


def _task(broadcast: Broadcast[SearchData], candidate: Candidate) -> CandidateResult:
    return train_and_score(candidate, broadcast.value)


def distributed_search(spark: SparkSession, candidates: list[Candidate], data: SearchData) -> list[CandidateResult]:
    """Train and score every candidate in its own Spark task; results in candidate order."""
    context = spark.sparkContext
    broadcast = context.broadcast(data)
    try:
        rdd = context.parallelize(candidates, len(candidates))
        results = rdd.map(functools.partial(_task, broadcast)).collect()
    finally:
        broadcast.unpersist()
    return sorted(results, key=lambda r: r.candidate.index)


def sequential_search(candidates: list[Candidate], data: SearchData) -> list[CandidateResult]:
    """The same search, one candidate after the other in this process."""
    return [train_and_score(candidate, data) for candidate in candidates]


def choose_best(results: list[CandidateResult], primary_metric: str) -> CandidateResult:
    """The best successful candidate by the primary metric (``f1`` or ``val_f1``), roc_auc breaking ties."""
    primary = primary_metric.removeprefix("val_")
    succeeded = [r for r in results if r.error is None]
    if not succeeded:
        reasons = "; ".join(f"candidate {r.candidate.index}: {(r.error or '').splitlines()[0]}" for r in results)
        raise TrainingError(f"every candidate failed to train: {reasons}")
    return max(succeeded, key=lambda r: r.score(primary))

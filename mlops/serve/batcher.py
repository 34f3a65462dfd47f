"""Score the feature rows of concurrent API requests together: one model call per batch.

A scikit-learn pipeline spends most of a one-row ``predict_proba`` on per-call work (input
validation, per-estimator bookkeeping, one Python call per boosted tree), not on the row: a call
for 16 rows costs little more than a call for one. :class:`BatchScorer` therefore queues the rows
of every request that arrives while a model call runs and scores them all in the next call, on one
scoring thread, so the event loop keeps parsing requests meanwhile.

Clients that wait for an answer before they send again (most do) would otherwise split into two
groups taking turns, each scored while the other waits. So before a call the scorer waits, at most
``linger_s``, until as many requests are queued as were in flight around the previous call: the
clients it just answered usually send their next request within a fraction of a millisecond.
A lone request never waits, and a client that went away costs one linger once.

Every row is scored by the model its request read, so a hot swap never mixes models in a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from mlops.registry.loader import LoadedModel

__all__ = ["LINGER_S", "BatchScorer"]

LINGER_S = 0.002
"""Longest wait for the clients of the previous model call to send again (see the module docstring)."""


@dataclass(frozen=True)
class _Job:
    model: LoadedModel
    features: np.ndarray
    future: asyncio.Future[np.ndarray]


class BatchScorer:
    """Queue of feature rows waiting for a model call; used from one event loop."""

    def __init__(self, on_call: Callable[[int], None] = lambda rows: None, linger_s: float = LINGER_S) -> None:
        self._on_call = on_call  # told the row count of every model call (a metric)
        self._linger_s = linger_s
        self._pending: list[_Job] = []
        self._drainer: asyncio.Task[None] | None = None
        self._target = 0  # requests to wait for before the next call
        self._enough: asyncio.Future[None] | None = None  # set once _target requests are queued
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-scoring")

    async def predict_proba(self, model: LoadedModel, features: np.ndarray) -> np.ndarray:
        """``model.predict_proba(features)``, computed in a model call shared with concurrent requests."""
        loop = asyncio.get_running_loop()
        job = _Job(model, features, loop.create_future())
        self._pending.append(job)
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        elif self._enough is not None and len(self._pending) >= self._target and not self._enough.done():
            self._enough.set_result(None)
        return await job.future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._linger()
                if not self._pending:
                    return
                jobs, self._pending = self._pending, []
                outcomes = await loop.run_in_executor(self._thread, self._score, jobs)
                self._target = len(jobs) + len(self._pending)  # in flight around this call
                for job, outcome in zip(jobs, outcomes, strict=True):
                    if job.future.done():  # the client went away
                        continue
                    if isinstance(outcome, Exception):
                        job.future.set_exception(outcome)
                    else:
                        job.future.set_result(outcome)
        finally:
            self._drainer = None
            self._target = 0

    async def _linger(self) -> None:
        """Wait until ``_target`` requests are queued, or ``linger_s`` has passed."""
        if len(self._pending) >= self._target:
            return
        self._enough = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait([self._enough], timeout=self._linger_s)
        finally:
            self._enough = None

    def _score(self, jobs: list[_Job]) -> list[np.ndarray | Exception]:
        """One model call per distinct model among ``jobs`` (two only across a hot swap)."""
        outcomes: list[np.ndarray | Exception] = [np.empty(0)] * len(jobs)
        by_model: dict[int, list[int]] = {}
        for index, job in enumerate(jobs):
            by_model.setdefault(id(job.model), []).append(index)
        for indices in by_model.values():
            rows = np.concatenate([jobs[i].features for i in indices])
            self._on_call(len(rows))
            try:
                probabilities = jobs[indices[0]].model.predict_proba(rows)
            except Exception as err:  # the request's error handler reports it; other models' rows are unaffected
                for i in indices:
                    outcomes[i] = err
                continue
            bounds = np.cumsum([len(jobs[i].features) for i in indices])[:-1]
            for i, part in zip(indices, np.split(probabilities, bounds), strict=True):
                outcomes[i] = part
        return outcomes

    def close(self) -> None:
        """Stop the scoring thread once the call in progress (if any) returns."""
        self._thread.shutdown(wait=False, cancel_futures=True)

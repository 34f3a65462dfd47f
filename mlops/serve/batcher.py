"""Score concurrent API requests together: one feature computation and one model call per batch.

A scikit-learn pipeline spends most of a one-row ``predict_proba`` on per-call work (input
validation, per-estimator bookkeeping, one Python call per boosted tree), not on the row: a call
for 16 rows costs little more than a call for one. The feature kernel is the same (a few dozen
vectorised numpy steps, whatever the row count). :class:`BatchScorer` therefore queues the
requests that arrive while a model call runs and serves them all in the next call, on one scoring
thread, so the event loop keeps parsing requests meanwhile: the readings of every queued request
go through one :class:`~mlops.features.state.DeviceWindows`, each request's devices keyed apart (a
request's readings are its own history, never another's), and their rows, with the feature rows
of requests that bring them (from the online store), through one ``predict_proba``.

Clients that wait for an answer before they send again (most do) would otherwise split into two
groups taking turns, each scored while the other waits. So before a call the scorer waits, at most
``linger_s``, until as many requests are queued as were in flight around the previous call: the
clients it just answered usually send their next request within a fraction of a millisecond.
A lone request never waits, and a client that went away costs one linger once.

Every row is scored by the model its request read, so a hot swap never mixes models in a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from mlops.data.schemas import Reading
from mlops.features.state import DeviceWindows
from mlops.registry.loader import LoadedModel

__all__ = ["LINGER_S", "BatchScorer"]

LINGER_S = 0.002
"""Longest wait for the clients of the previous model call to send again (see the module docstring)."""


@dataclass(frozen=True)
class _Job:
    model: LoadedModel
    rows: np.ndarray | Sequence[Reading]
    """Feature rows, or readings (each device's in event-time order) whose features the call computes."""
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

    async def predict_proba(self, model: LoadedModel, rows: np.ndarray | Sequence[Reading]) -> np.ndarray:
        """``model.predict_proba`` of feature ``rows``, or of the features of readings (every device's in
        event-time order, the request's readings its only history), one row per input row, computed in
        a call shared with concurrent requests.

        The readings must carry the model's sensors (the caller says which are missing, as a 422)."""
        loop = asyncio.get_running_loop()
        job = _Job(model, rows, loop.create_future())
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
            model = jobs[indices[0]].model
            try:
                parts = _feature_rows(model, [jobs[i].rows for i in indices])
                rows = np.concatenate(parts)
                self._on_call(len(rows))
                probabilities = model.predict_proba(rows)
            except Exception as err:  # the request's error handler reports it; other models' rows are unaffected
                for i in indices:
                    outcomes[i] = err
                continue
            bounds = np.cumsum([len(part) for part in parts])[:-1]
            for i, part in zip(indices, np.split(probabilities, bounds), strict=True):
                outcomes[i] = part
        return outcomes

    def close(self) -> None:
        """Stop the scoring thread once the call in progress (if any) returns."""
        self._thread.shutdown(wait=False, cancel_futures=True)


def _feature_rows(model: LoadedModel, inputs: list[np.ndarray | Sequence[Reading]]) -> list[np.ndarray]:
    """The feature rows of every input, in order: computed in one pass for all the readings."""
    histories = [((n, r.device_id), r.sensors) for n, rows in enumerate(inputs) if not isinstance(rows, np.ndarray)
                 for r in rows]
    computed = DeviceWindows(model.spec).update_and_compute(histories)  # keys (input, device): no shared history
    parts, start = [], 0
    for rows in inputs:
        if isinstance(rows, np.ndarray):
            parts.append(rows)
        else:
            parts.append(computed[start:start + len(rows)])
            start += len(rows)
    return parts

"""Windows over the prediction stream and the join of late labels to the predictions they judge.

Pure logic, no Kafka or MLflow: the monitor service feeds parsed events in and gets closed windows
and judged predictions out, so every rule here is tested on synthetic data with an explicit clock.

**Drift windows** (:class:`WindowBuilder`) hold the predictions of one model version and slide:
a window closes every half window (``hop``), each holding a whole window, so a drift is judged on a
full window of it within half a window:

- ``count`` mode closes a window of the newest ``window_size`` predictions every
  ``window_size / 2`` predictions (the first once ``window_size`` are in);
- ``time`` mode puts predictions by event time into ``window_seconds`` windows starting every
  ``window_seconds / 2``, which close once the newest prediction is ``grace_s`` past their end; a
  prediction for windows that all closed already is counted as late and left out of drift (it
  still joins its label).

Windows never mix model versions: drift is judged against the reference of the model that made the
predictions. When the champion changes, the old version's open window is closed early once the
stream has moved on (``window_size`` predictions of other versions, or the bucket's end in time
mode); a window with fewer than ``min_window`` predictions no earlier window judged is too small
to judge and is dropped.

**The label join** (:class:`LabelJoin`) applies the label "fails within H" of docs/contracts.md to a
prediction of device d at event time t, with span = H · cycle_seconds:

- positive when a failure of d at f with t < f ≤ t + span is known (and no maintenance before it);
- censored (dropped) when the first end of life in (t, t + span] is a maintenance;
- positive / negative from a ``rul`` label of d at u ≥ t (before any end of life): the failure it
  implies at u + rul · cycle_seconds falls inside / outside the span;
- negative once the monitor's event-time clock (the newest prediction's event time) passes
  t + span + ``lateness_s`` with none of the above: a failure label that late is not waited for.

Labels may arrive before or after the predictions they judge. A positive is final when decided: a
maintenance label that arrives later but happened before the failure does not undo it.
A prediction that arrives after its deadline (another partition ran ahead, a replay) is judged at
once against the labels kept. Pending predictions per device are bounded (the oldest are dropped,
counted as ``evicted``); of a device's labels, ``rul`` labels are kept for 2 · (span + lateness) of
event time and the last ``MAX_LABELS_PER_DEVICE`` failures and maintenances for good.

**Performance windows** (:class:`PerformanceWindows`) close every ``window_size`` judged predictions
of one model version.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import pandas as pd

from mlops.data.schemas import Label, Prediction
from mlops.errors import ValidationError

__all__ = [
    "HOP_FRACTION",
    "MAX_LABELS_PER_DEVICE",
    "ClosedWindow",
    "Judged",
    "LabelJoin",
    "PartitionMerge",
    "PerformanceWindows",
    "WindowBuilder",
    "judge",
    "predictions_frame",
    "source_offsets",
]


def predictions_frame(predictions: list[Prediction]) -> pd.DataFrame:
    """One row per prediction: its features, ``probability`` and ``decision``."""
    frame = pd.DataFrame.from_records([p.features for p in predictions])
    frame["probability"] = [p.probability for p in predictions]
    frame["decision"] = [p.decision for p in predictions]
    return frame


def source_offsets(predictions: list[Prediction]) -> dict[str, list[int]]:
    """First and last offset of the scored readings per ``topic:partition``: the window's lake slice."""
    spans: dict[str, list[int]] = {}
    for p in predictions:
        if p.source is None:
            continue
        key = f"{p.source.topic}:{p.source.partition}"
        span = spans.setdefault(key, [p.source.offset, p.source.offset])
        span[0], span[1] = min(span[0], p.source.offset), max(span[1], p.source.offset)
    return spans


@dataclass
class ClosedWindow:
    """Predictions of one model version that a drift or performance window judges together."""

    kind: Literal["drift", "performance"]
    model_name: str
    model_version: str
    predictions: list[Prediction]
    start_time: datetime
    end_time: datetime
    labels: list[int] | None = None
    """Realised outcome per prediction (performance windows only)."""


@dataclass
class _Open:
    predictions: list[Prediction] = field(default_factory=list)
    last_seq: int = 0
    fresh: int = 0
    """Predictions not yet in any closed window (count mode)."""
    closed_once: bool = False


class PartitionMerge:
    """Releases predictions of several partitions in event-time order, so that a window holds the fleet.

    Readings are keyed by device, so each partition holds some of the devices. A consumer catching
    up a backlog reads partitions at different paces (one is assigned later, one fetch returns more
    of another); cut in arrival order, a window then holds some devices only, and their offsets
    from the fleet look like drift: a stationary stream's first windows scored up to 4.16 against a
    threshold of 4.21 with two of four partitions in them. A prediction is released only when every
    tracked partition has one waiting (the oldest head goes first), or when a partition has had none
    for ``wait_s`` of wall-clock time (it is idle or caught up: it stops holding the others back).
    """

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        self._queues: dict[tuple[str, int], deque[Prediction]] = {}
        self._empty_since: dict[tuple[str, int], float] = {}

    def track(self, partitions: list[tuple[str, int]], now: float) -> None:
        """The partitions the consumer is assigned (a partition not assigned any more is dropped once empty)."""
        for key in partitions:
            if key not in self._queues:
                self._queues[key] = deque()
                self._empty_since[key] = now
        for key in [k for k, q in self._queues.items() if k not in partitions and not q]:
            del self._queues[key]
            self._empty_since.pop(key, None)

    def add(self, prediction: Prediction, now: float) -> None:
        key = (prediction.position.topic, prediction.position.partition) if prediction.position else ("", 0)
        self._queues.setdefault(key, deque()).append(prediction)
        self._empty_since.pop(key, None)

    def release(self, now: float) -> list[Prediction]:
        """Predictions that can go to the windows now, oldest event time first."""
        out: list[Prediction] = []
        while True:
            waiting = [k for k, q in self._queues.items()
                       if not q and now - self._empty_since.get(k, now) < self.wait_s]
            ready = [k for k, q in self._queues.items() if q]
            if waiting or not ready:
                return out
            key = min(ready, key=lambda k: self._queues[k][0].event_time)
            out.append(self._queues[key].popleft())
            if not self._queues[key]:
                self._empty_since[key] = now

    def held(self) -> list[Prediction]:
        return [p for q in self._queues.values() for p in q]


HOP_FRACTION = 0.5
"""Drift windows slide: one closes every half window, each holding a whole window. A drift is
judged on a full window within half a window of reaching it (mlops/monitor/calibration.py
calibrates the threshold for windows at this hop)."""


class WindowBuilder:
    """Cuts the prediction stream into sliding drift windows per model version (count or event-time mode).

    ``hop``: the fraction of a window between the closes of two windows (1.0: tumbling windows).
    """

    def __init__(self, mode: Literal["count", "time"], window_size: int, window_seconds: float,
                 grace_s: float = 0.0, min_window: int = 2, hop: float = HOP_FRACTION) -> None:
        if not 0 < hop <= 1:
            raise ValidationError(f"drift window hop {hop}: must be a fraction of a window in (0, 1]")
        self.mode = mode
        self.window_size = window_size
        self.window_s = window_seconds
        self.hop_count = max(1, round(window_size * hop))
        self.hop_s = window_seconds * hop
        self.grace_s = grace_s
        self.min_window = min_window
        self._open: dict[tuple[str, str, int], _Open] = {}  # (model, version, window index or 0) -> window
        self._closed_buckets: dict[tuple[str, str], int] = {}  # newest window index closed per model version
        self._seq = 0
        self.watermark: datetime | None = None
        self.counts: Counter[str] = Counter()

    def add(self, prediction: Prediction) -> list[ClosedWindow]:
        """Add one prediction; return the windows it closed (oldest first)."""
        self._seq += 1
        if self.watermark is None or prediction.event_time > self.watermark:
            self.watermark = prediction.event_time
        version = (prediction.model_name, prediction.model_version)
        closed: list[ClosedWindow] = []
        if self.mode == "count":
            key = (*version, 0)
            window = self._open.setdefault(key, _Open())
            window.predictions.append(prediction)
            window.last_seq = self._seq
            window.fresh += 1
            if len(window.predictions) >= self.window_size and (not window.closed_once
                                                                or window.fresh >= self.hop_count):
                closed.append(self._emit(key))
            # A version that stopped predicting (champion changed) is closed once the stream moved on.
            stale = [k for k, w in self._open.items() if self._seq - w.last_seq >= self.window_size]
        else:
            # Window w covers [w * hop_s, w * hop_s + window_s): a prediction belongs to each that covers it.
            t = prediction.event_time.timestamp()
            newest = math.floor(t / self.hop_s)
            indices = [w for w in range(newest - math.ceil(self.window_s / self.hop_s) + 1, newest + 1)
                       if w * self.hop_s + self.window_s > t]
            done = self._closed_buckets.get(version, -(10**12))
            open_indices = [w for w in indices if w > done]
            if not open_indices:
                self.counts["late"] += 1
            for w in open_indices:
                window = self._open.setdefault((*version, w), _Open())
                window.predictions.append(prediction)
                window.last_seq = self._seq
            limit = self.watermark.timestamp() - self.grace_s
            stale = [k for k in self._open if k[2] * self.hop_s + self.window_s <= limit]
        for key in sorted(stale, key=lambda k: (self._open[k].last_seq, k[2])):
            window_or_none = self._close_if_big_enough(key)
            if window_or_none is not None:
                closed.append(window_or_none)
        return closed

    def _close_if_big_enough(self, key: tuple[str, str, int]) -> ClosedWindow | None:
        window = self._open[key]
        # Count mode: only predictions no closed window judged yet make a window worth closing.
        new = window.fresh if self.mode == "count" else len(window.predictions)
        if new >= self.min_window and len(window.predictions) >= self.min_window:
            return self._close(key)
        self.counts["too_small"] += new
        self._open.pop(key)
        self._mark_closed(key)
        return None

    def _mark_closed(self, key: tuple[str, str, int]) -> None:
        if self.mode == "time":
            version = (key[0], key[1])
            self._closed_buckets[version] = max(self._closed_buckets.get(version, key[2]), key[2])

    def _emit(self, key: tuple[str, str, int]) -> ClosedWindow:
        """Count mode: close the newest ``window_size`` predictions and keep the overlap for the next window."""
        window = self._open[key]
        predictions = window.predictions[-self.window_size:]
        window.predictions = predictions[self.hop_count:] if self.hop_count < self.window_size else []
        window.fresh, window.closed_once = 0, True
        return self._window(key, predictions)

    def _close(self, key: tuple[str, str, int]) -> ClosedWindow:
        window = self._open.pop(key)
        self._mark_closed(key)
        return self._window(key, window.predictions)

    def _window(self, key: tuple[str, str, int], predictions: list[Prediction]) -> ClosedWindow:
        times = [p.event_time for p in predictions]
        if self.mode == "time":
            start = datetime.fromtimestamp(key[2] * self.hop_s, tz=UTC)
            end = start + timedelta(seconds=self.window_s)
        else:
            start, end = min(times), max(times)
        self.counts["windows"] += 1
        return ClosedWindow("drift", key[0], key[1], predictions, start, end)

    def held(self) -> list[Prediction]:
        """Predictions in open windows (a restart must re-read them)."""
        return [p for w in self._open.values() for p in w.predictions]


@dataclass(frozen=True)
class Judged:
    """A prediction whose outcome is known: ``label`` 1 (failed within H) or 0."""

    prediction: Prediction
    label: int


@dataclass
class _Pending:
    prediction: Prediction
    seq: int
    done: bool = False


_END_OF_LIFE = ("failure", "maintenance")
MAX_LABELS_PER_DEVICE = 256


def judge(t: datetime, labels: list[Label], span: timedelta, cycle_seconds: float) -> Literal[0, 1, "censored"] | None:
    """The outcome of a prediction at ``t`` given the device's known labels; None: not known yet.

    Only the labels decide here; the clock rule (negative after span + lateness) is the caller's.
    """
    ends = sorted((lab for lab in labels if lab.kind in _END_OF_LIFE and t < lab.event_time),
                  key=lambda lab: lab.event_time)
    first_end = ends[0] if ends else None
    if first_end is not None and first_end.event_time <= t + span:
        return 1 if first_end.kind == "failure" else "censored"
    for lab in labels:
        # A rul label in the same life (at or after t, before its end) says when the device will fail.
        if lab.kind == "rul" and lab.rul is not None and lab.event_time >= t and (
                first_end is None or lab.event_time < first_end.event_time):
            due = lab.event_time + timedelta(seconds=lab.rul * cycle_seconds)
            return 1 if due <= t + span else 0
    if first_end is not None:  # the device was alive past t + span, and did not fail before
        return 0
    return None


class LabelJoin:
    """Joins late labels to pending predictions per device; returns predictions as they are judged."""

    def __init__(self, horizon_cycles: int, cycle_seconds: float, lateness_s: float,
                 max_pending_per_device: int) -> None:
        self.span = timedelta(seconds=horizon_cycles * cycle_seconds)
        self.cycle_seconds = cycle_seconds
        self.lateness = timedelta(seconds=lateness_s)
        self.retention = 2 * (self.span + self.lateness)
        self.max_pending = max_pending_per_device
        self.clock: datetime | None = None
        self._pending: dict[str, dict[int, _Pending]] = {}
        self._deadlines: list[tuple[datetime, int, str]] = []  # (t + span + lateness, seq, device)
        self._labels: dict[str, list[Label]] = {}
        self._seq = itertools.count()
        self.counts: Counter[str] = Counter()

    @property
    def pending(self) -> int:
        return sum(len(p) for p in self._pending.values())

    def held(self) -> list[Prediction]:
        """Predictions waiting for their label (a restart must re-read them)."""
        return [e.prediction for queue in self._pending.values() for e in queue.values()]

    def add_prediction(self, prediction: Prediction) -> list[Judged]:
        """Add a prediction; it may be judged at once (labels known) or wait. Advances the clock."""
        device = prediction.device_id
        judged: list[Judged] = []
        entry = _Pending(prediction, next(self._seq))
        overdue = self.clock is not None and prediction.event_time + self.span + self.lateness <= self.clock
        if not self._decide(entry, self._labels.get(device, []), judged, final=overdue):
            queue = self._pending.setdefault(device, {})
            queue[entry.seq] = entry
            heapq.heappush(self._deadlines, (prediction.event_time + self.span + self.lateness, entry.seq, device))
            if len(queue) > self.max_pending:
                queue.pop(next(iter(queue))).done = True
                self.counts["evicted"] += 1
        if self.clock is None or prediction.event_time > self.clock:
            self.clock = prediction.event_time
            judged.extend(self._expire())
        return judged

    def add_label(self, label: Label) -> list[Judged]:
        """Add a label of a device; return the pending predictions of that device it decides."""
        labels = self._labels.setdefault(label.device_id, [])
        labels.append(label)
        # rul labels can come every cycle: keep those a prediction still waiting or arriving can need.
        if self.clock is not None:
            labels[:] = [lab for lab in labels if lab.kind != "rul" or lab.event_time >= self.clock - self.retention]
        del labels[:-MAX_LABELS_PER_DEVICE]
        judged: list[Judged] = []
        queue = self._pending.get(label.device_id, {})
        for seq, entry in list(queue.items()):
            if self._decide(entry, labels, judged, final=False):
                del queue[seq]
        return judged

    def _decide(self, entry: _Pending, labels: list[Label], out: list[Judged], final: bool) -> bool:
        outcome = judge(entry.prediction.event_time, labels, self.span, self.cycle_seconds)
        if outcome is None and final:
            outcome = 0
        if outcome is None:
            return False
        entry.done = True
        if outcome == "censored":
            self.counts["censored"] += 1
        else:
            self.counts["positive" if outcome == 1 else "negative"] += 1
            out.append(Judged(entry.prediction, outcome))
        return True

    def _expire(self) -> list[Judged]:
        assert self.clock is not None
        judged: list[Judged] = []
        while self._deadlines and self._deadlines[0][0] <= self.clock:
            _deadline, seq, device = heapq.heappop(self._deadlines)
            entry = self._pending.get(device, {}).pop(seq, None)
            if entry is not None and not entry.done:
                self._decide(entry, self._labels.get(device, []), judged, final=True)
        return judged


class PerformanceWindows:
    """Collects judged predictions per model version; a window every ``window_size`` of them."""

    def __init__(self, window_size: int) -> None:
        self.window_size = window_size
        self._open: dict[tuple[str, str], list[Judged]] = {}

    def held(self) -> list[Prediction]:
        """Judged predictions of windows not closed yet (a restart must re-read them)."""
        return [j.prediction for items in self._open.values() for j in items]

    def add(self, judged: Judged) -> ClosedWindow | None:
        """Add a judged prediction; return the performance window it completes, if any."""
        p = judged.prediction
        key = (p.model_name, p.model_version)
        items = self._open.setdefault(key, [])
        items.append(judged)
        if len(items) < self.window_size:
            return None
        del self._open[key]
        times = [j.prediction.event_time for j in items]
        return ClosedWindow("performance", key[0], key[1], [j.prediction for j in items], min(times), max(times),
                            labels=[j.label for j in items])

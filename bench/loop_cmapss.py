"""The loop benchmark on real data: C-MAPSS FD001 run-to-failure engines as a fleet, with an injected drift.

FD001 has one operating condition and one fault mode, so it holds no drift of its own. The replay
(:func:`mlops.data.replay.replay_events` with ``configs/replay/cmapss_fd001.yaml``) starts every
engine at the same event time; here the engines are re-timed into a fleet of ``slots`` engines
running at once, each slot taking the next engine (in unit order) one cycle after its engine
failed, and each slot's first engine joining part-way through its life so that failures do not
come in one wave (the simulator staggers its fleet the same way). From ``onset_fraction`` of the
run's event time on, the temperature sensors read higher: an injected sensor recalibration
(``RECALIBRATION``, about half of each sensor's healthy-to-failing shift), the same kind of input
drift as the simulator's ``recalibration`` scenario. Labels are the replay's: a failure at each
engine's last reading, published with it.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

from loop_stream import Stream, build_stream

from mlops.config import Settings, config_dir
from mlops.data.replay import load_mapping, replay_events
from mlops.data.schemas import Label, Reading

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cmapss" / "train_FD001.txt"
"""FD001 in the shared data folder beside the repository."""
RECALIBRATION = {"s_2": 0.6, "s_3": 7.0, "s_4": 12.0}
"""Offsets from the onset on: about half of the mean shift between a healthy engine (RUL > 100)
and a failing one (RUL < 10) in FD001's training data."""


def cmapss_stream(settings: Settings, hours_after_onset: float, slots: int = 20, history_fraction: float = 0.3,
                  onset_fraction: float = 0.4, path: Path = DATA) -> Stream:
    """FD001's training engines as a fleet of ``slots``; the history is the first ``history_fraction`` of
    the readings, the drift starts at ``onset_fraction`` of the run's event time."""
    mapping = load_mapping(config_dir() / "replay" / "cmapss_fd001.yaml")
    timed = fleet(replay_events(path, mapping, settings.features.cycle_seconds), slots,
                  timedelta(seconds=settings.features.cycle_seconds))
    start, end = timed[0][0], timed[-1][0]
    cycle = timedelta(seconds=settings.features.cycle_seconds)
    onset = start + cycle * round((end - start) * onset_fraction / cycle)
    stop = onset + timedelta(hours=hours_after_onset)
    events: list[Reading | Label] = []
    for when, _order, event in timed:
        if when >= stop:
            break
        update: dict[str, object] = {"event_time": when}
        if isinstance(event, Reading) and when >= onset:
            update["sensors"] = {k: v + RECALIBRATION.get(k, 0.0) for k, v in event.sensors.items()}
        events.append(event.model_copy(update=update))
    readings = sum(isinstance(e, Reading) for e in events)
    return build_stream("cmapss_fd001", events, int(readings * history_fraction), "recalibration (injected)",
                        onset, settings)


def fleet(replayed: Iterable[Reading | Label], slots: int, cycle: timedelta
          ) -> list[tuple[datetime, int, Reading | Label]]:
    """(new event time, order, event) of every replayed event, engines re-timed into ``slots``, sorted."""
    engines: dict[str, list[Reading | Label]] = {}
    for event in replayed:
        engines.setdefault(event.device_id, []).append(event)
    start = min(events[0].event_time for events in engines.values())
    free_at = [(0, slot) for slot in range(slots)]  # (cycles after the start at which the slot is free, slot)
    timed: list[tuple[datetime, int, Reading | Label]] = []
    for index, events in enumerate(engines.values()):
        offset, slot = heapq.heappop(free_at)
        if index < slots:  # the first engine of each slot joins part-way through its life
            events = events[int(len(events) * 0.8 * index / slots):]
        first = events[0].event_time
        for event in events:
            # A label sorts after the reading it ends (same event time): the replay's publish order.
            timed.append((start + (event.event_time - first) + offset * cycle, len(timed), event))
        lived = sum(isinstance(e, Reading) for e in events)
        heapq.heappush(free_at, (offset + lived + 1, slot))  # one cycle to swap the engine
    timed.sort(key=lambda item: (item[0], isinstance(item[2], Label), item[1]))
    return timed

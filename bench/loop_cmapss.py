"""The loop benchmark on real data: C-MAPSS run-to-failure engines as a fleet, with an injected or a real drift.

FD001 has one operating condition and one fault mode, so it holds no drift of its own. The replay
(:func:`mlops.data.replay.replay_events` with ``configs/replay/cmapss_fd001.yaml``) starts every
engine at the same event time; here the engines are re-timed into a fleet of ``slots`` engines
running at once, each slot taking the next engine one cycle after its engine failed, and each
slot's first engine joining part-way through its life so that failures do not come in one wave
(the simulator staggers its fleet the same way). The next engine is the next in unit order, or,
with a ``seed``, in a seeded shuffle of each file's engines (:func:`engine_order`): the
benchmark's seeds give fleets of the same engines in a different order, as its seeds give other
simulated fleets. Labels are the replay's: a
failure at each engine's last reading, published with it. Two drifts (:data:`STREAMS`):

* ``cmapss`` (:func:`cmapss_stream`): from ``onset_fraction`` of the run's event time on, every
  sensor reads half of its healthy-to-failing shift higher (:func:`degradation_shift`): an injected
  sensor recalibration, the same kind of input drift as the simulator's ``recalibration``
  scenario, which makes healthy engines look worn;
* ``cmapss_fd002`` (:func:`fd002_stream`): a real regime shift. FD002's engines
  (``configs/replay/cmapss_fd002.yaml``) follow FD001's in the same fleet, each slot taking an
  FD002 engine once the FD001 engines are used up. FD002 has FD001's fault mode but six operating
  conditions (the three settings change from cycle to cycle, and every sensor's level with them,
  the sensors constant in FD001 included), so a model trained on FD001 meets readings it has never
  seen. The onset is the first FD002 reading; the fleet is all FD002 once the last FD001 engine
  has failed (about one engine life later).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

from loop_stream import Stream, build_stream

from mlops.config import Settings, config_dir
from mlops.data.replay import Mapping, load_mapping, read_table, replay_events
from mlops.data.schemas import Label, Reading

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cmapss"
"""The shared data folder beside the repository."""
DATA = DATA_DIR / "train_FD001.txt"
FD002 = DATA_DIR / "train_FD002.txt"
RECALIBRATION_SHARE = 0.5
"""From the onset on, every sensor reads this share of its degradation shift higher (see
:func:`degradation_shift`): every engine looks part-way to failure."""
HEALTHY_RUL, FAILING_RUL = 100, 10
"""Readings with more remaining cycles than HEALTHY_RUL are healthy, with fewer than FAILING_RUL failing."""


def degradation_shift(path: Path, mapping: Mapping) -> dict[str, float]:
    """Per sensor, the mean of failing readings minus the mean of healthy ones in a run-to-failure file.

    Only a few sensors moved (the temperatures s_2, s_3, s_4) in an earlier version of the injected
    drift; the static model's f1 fell by 12-15 % only, as a model reads degradation off the other
    sensors too (FD001 shows it in 14 of them)."""
    frame = read_table(path, mapping)
    rul = frame.groupby(mapping.device_id)[mapping.cycle].transform("max") - frame[mapping.cycle]
    failing, healthy = frame[rul < FAILING_RUL], frame[rul > HEALTHY_RUL]
    # Rounded to the file's precision: a constant sensor stays exactly constant.
    return {s: round(float(failing[s].mean() - healthy[s].mean()), 4) for s in mapping.sensors}


def cmapss_stream(settings: Settings, hours_after_onset: float, slots: int = 20, history_fraction: float = 0.3,
                  onset_fraction: float = 0.4, path: Path = DATA, seed: int | None = None) -> Stream:
    """FD001's training engines as a fleet of ``slots``; the history is the first ``history_fraction`` of
    the readings, the drift starts at ``onset_fraction`` of the run's event time."""
    mapping = load_mapping(config_dir() / "replay" / "cmapss_fd001.yaml")
    recalibration = {s: RECALIBRATION_SHARE * shift for s, shift in degradation_shift(path, mapping).items()}
    timed = fleet(engine_order(replay_events(path, mapping, settings.features.cycle_seconds), seed), slots,
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
            update["sensors"] = {k: v + recalibration[k] for k, v in event.sensors.items()}
        events.append(event.model_copy(update=update))
    readings = sum(isinstance(e, Reading) for e in events)
    return build_stream("cmapss_fd001", events, int(readings * history_fraction), "recalibration (injected)",
                        onset, settings)


def fd002_stream(settings: Settings, hours_after_onset: float, slots: int = 20, history_fraction: float = 0.3,
                 fd001: Path = DATA, fd002: Path = FD002, seed: int | None = None) -> Stream:
    """FD001's training engines, then FD002's, as one fleet of ``slots``; the history is the first
    ``history_fraction`` of the readings (FD001 only), the onset the first FD002 reading."""
    cycle = timedelta(seconds=settings.features.cycle_seconds)
    # Shuffled within each file: every FD001 engine still runs before the FD002 ones.
    replayed = [event for path, name in ((fd001, "cmapss_fd001"), (fd002, "cmapss_fd002"))
                for event in engine_order(replay_events(path, load_mapping(config_dir() / "replay" / f"{name}.yaml"),
                                                        settings.features.cycle_seconds), seed)]
    timed = fleet(replayed, slots, cycle)
    onset = min(when for when, _order, event in timed if event.device_id.startswith(f"cmapss-{fd002.stem}-"))
    stop = onset + timedelta(hours=hours_after_onset)
    events = [event.model_copy(update={"event_time": when}) for when, _order, event in timed if when < stop]
    readings = [e for e in events if isinstance(e, Reading)]
    history = int(len(readings) * history_fraction)
    if readings[history].event_time >= onset:
        raise ValueError(f"history_fraction {history_fraction} reaches past the onset {onset.isoformat()}")
    return build_stream("cmapss_fd001_fd002", events, history, "regime shift (FD001 -> FD002)", onset, settings)


STREAMS = {"cmapss": cmapss_stream, "cmapss_fd002": fd002_stream}
"""Benchmark scenario name -> stream: FD001 with the injected recalibration, FD001 followed by FD002."""


def engine_order(replayed: Iterable[Reading | Label], seed: int | None) -> list[Reading | Label]:
    """The replayed events grouped by engine, engines in order of first appearance (unit order), or
    shuffled by ``seed``; each engine's events keep their order."""
    engines: dict[str, list[Reading | Label]] = {}
    for event in replayed:
        engines.setdefault(event.device_id, []).append(event)
    order = list(engines)
    if seed is not None:
        random.Random(seed).shuffle(order)
    return [event for engine in order for event in engines[engine]]


def fleet(replayed: Iterable[Reading | Label], slots: int, cycle: timedelta
          ) -> list[tuple[datetime, int, Reading | Label]]:
    """(new event time, order, event) of every replayed event, engines re-timed into ``slots`` in order of
    first appearance, sorted."""
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

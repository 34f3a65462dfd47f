"""A fleet of wearing machines as a pure, seeded generator of :class:`Reading` and :class:`Label` events.

No Kafka, no wall clock: :meth:`Simulator.events` yields events in the order they would be
published, and :mod:`mlops.data.publish` puts them on the topics. The physics is described in
:mod:`mlops.data.scenarios`.

Time is an accelerated event-time clock: tick ``k`` is ``start_time + k·cycle_seconds`` and every
device that is up emits one reading per tick. After a device's reading the simulator draws whether
it fails (or gets maintenance) during the next cycle; the label's event time is that next tick,
and it is *published* ``labels.delay_cycles`` later in event time: labels are late, as in reality.
When a bounded run ends, labels still in flight are published at once (the run's clock jumps ahead
to their publish time), so every failure that happened is known.

Determinism: every tick draws the same amount of randomness for every device from one
``numpy.random.Generator`` seeded with ``seed``, whatever is emitted, so the same arguments give
byte-identical events.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from mlops.data.scenarios import Scenario
from mlops.data.schemas import SCHEMA_VERSION, Label, Reading

__all__ = ["DAY_S", "LOAD_RANGE", "LOAD_REVERSION_TICKS", "NEVER", "Onset", "Simulator"]

LOAD_RANGE = (0.4, 1.0)
LOAD_REVERSION_TICKS = 120
"""Each device's load wanders around its own set point and reverts to it with this time constant (in
cycles): a mean-reverting walk, as duty cycles do. A free walk between the range's bounds took days
to mix, so a "stationary" fleet kept reaching operating points no day of history had seen."""
DAY_S = 86_400.0
NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Onset:
    """The true drift onset of a run: the ground truth a drift monitor is measured against."""

    kind: str
    cycle: int
    """Ticks of event time after the start."""
    event_time: datetime
    ramp_end_time: datetime
    """Every affected device has switched by this event time (= event_time for a sudden drift)."""
    affected_devices: int


class Simulator:
    """Seeded fleet simulator. Build one per run; :meth:`events` may be iterated once."""

    def __init__(self, scenario: Scenario, devices: int, seed: int, cycle_seconds: float,
                 start_time: datetime | None = None, label_delay_cycles: float | None = None) -> None:
        if devices < 1:
            raise ValueError(f"devices must be at least 1, got {devices}")
        self.scenario = scenario
        self.devices = devices
        self.seed = seed
        self.cycle_seconds = cycle_seconds
        self.start_time = start_time or scenario.start_time
        delay = scenario.labels.delay_cycles if label_delay_cycles is None else label_delay_cycles
        self.label_delay = timedelta(seconds=delay * cycle_seconds)
        self.readings_emitted = 0
        self.labels_emitted = 0

        rng = np.random.default_rng(seed)
        self._rng = rng
        self._sensors = list(scenario.sensors)
        models = [scenario.sensors[s] for s in self._sensors]
        self._base = np.array([m.base for m in models])
        self._noise = np.array([m.noise for m in models])
        self._load_coef = np.array([m.load for m in models])
        self._ambient_coef = np.array([m.ambient for m in models])

        type_names = list(scenario.device_types)
        shares = np.array([scenario.device_types[t].share for t in type_names])
        type_index = rng.choice(len(type_names), size=devices, p=shares / shares.sum())
        offsets = np.array([[scenario.device_types[t].offsets.get(s, 0.0) for s in self._sensors]
                            for t in type_names])
        self._device_ids = [f"dev-{i:04d}" for i in range(devices)]
        self._device_types = [type_names[i] for i in type_index]
        self._type_offset = offsets[type_index]
        self._ambient_offset = rng.normal(0.0, 2.0, devices)
        self._load = rng.uniform(*LOAD_RANGE, devices)
        self._load_set_point = self._load.copy()

        drift = scenario.drift
        self._signatures = np.array([[scenario.signature.get(s, 0.0) for s in self._sensors],
                                     [(drift.signature or scenario.signature).get(s, 0.0) if drift else 0.0
                                      for s in self._sensors]])
        self._rate_factor = np.array([1.0, drift.wear_rate_factor if drift else 1.0])
        recal = drift.recalibration if drift else {}
        self._recal_scale = np.array([recal[s].scale if s in recal else 1.0 for s in self._sensors])
        self._recal_offset = np.array([recal[s].offset if s in recal else 0.0 for s in self._sensors])
        # Which devices switch and when (in ticks): drawn up front so they do not depend on run length.
        affected = rng.uniform(size=devices) < (drift.share if drift else 0.0)
        spread = rng.uniform(size=devices) * (drift.ramp_cycles if drift else 0)
        onset_tick = (drift.onset_cycle if drift else 0) + np.floor(spread).astype(np.int64)
        self._switch_tick = np.where(affected, onset_tick, NEVER)
        self._regime = np.zeros(devices, dtype=np.int64)
        self._regime_since = np.full(devices, NEVER, dtype=np.int64)
        """Tick at which each device entered the new regime (its recalibration ramp starts there)."""

        self._wear = np.zeros(devices)
        self._cycle = np.zeros(devices, dtype=np.int64)
        self._life_factor = np.exp(rng.normal(0.0, scenario.wear.rate_spread, devices))
        # Stagger the fleet: devices start part-way through a life so failures do not come in one wave.
        self._stagger = rng.integers(0, max(1, int(0.8 / scenario.wear.rate)), devices)
        self._down_until = np.zeros(devices, dtype=np.int64)
        self._pending: list[tuple[datetime, int, Label]] = []
        self._label_seq = 0

    @property
    def onset(self) -> Onset | None:
        """The scenario's drift onset in this run's event time; None for a stationary fleet."""
        drift = self.scenario.drift
        if drift is None:
            return None
        affected = self._switch_tick != NEVER
        return Onset(kind=drift.kind, cycle=drift.onset_cycle, event_time=self.tick_time(drift.onset_cycle),
                     ramp_end_time=self.tick_time(drift.onset_cycle + drift.ramp_cycles),
                     affected_devices=int(affected.sum()))

    def tick_time(self, tick: int) -> datetime:
        return self.start_time + timedelta(seconds=tick * self.cycle_seconds)

    def events(self, max_readings: int | None = None,
               should_stop: Callable[[], bool] | None = None) -> Iterator[Reading | Label]:
        """Readings and labels in publish order, until ``max_readings`` or ``should_stop()``.

        ``should_stop`` is asked before every reading (e.g. a wall-clock deadline); when the run
        ends, labels still waiting for their publish time follow.
        """
        self._warm_up()
        tick = 0
        while True:
            now = self.tick_time(tick)
            yield from self._due_labels(now)
            for reading in self._tick(tick, now):
                if (max_readings is not None and self.readings_emitted >= max_readings) or (
                        should_stop is not None and should_stop()):
                    yield from self._drain_labels()
                    return
                self.readings_emitted += 1
                yield reading
            tick += 1

    def _warm_up(self) -> None:
        # Wear as if each device had already run `stagger` cycles of its current life.
        w = self.scenario.wear
        self._wear = w.rate * self._life_factor * self._stagger
        self._cycle = self._stagger.astype(np.int64)

    def _tick(self, tick: int, now: datetime) -> Iterator[Reading]:
        sc, w, n = self.scenario, self.scenario.wear, self.devices
        rng = self._rng
        # Fixed amount of randomness per tick: determinism does not depend on who is up or on stopping.
        noise = rng.standard_normal((n, len(self._sensors)))
        load_step = rng.normal(0.0, 0.01, n)
        u_fail, u_maint = rng.uniform(size=n), rng.uniform(size=n)
        new_life_factor = np.exp(rng.normal(0.0, w.rate_spread, n))

        switching = self._switch_tick <= tick
        if sc.drift is not None and sc.drift.takes_effect == "immediately":
            self._enter_new_regime(switching, tick)
        self._load = np.clip(self._load + (self._load_set_point - self._load) / LOAD_REVERSION_TICKS + load_step,
                             *LOAD_RANGE)
        seconds = (now - self.start_time).total_seconds()
        ambient = 20.0 + 5.0 * np.sin(2 * np.pi * seconds / DAY_S) + self._ambient_offset
        values = (self._base + self._type_offset + np.outer(self._load, self._load_coef)
                  + np.outer(ambient - 20.0, self._ambient_coef)
                  + self._signatures[self._regime] * (self._wear ** 2)[:, None] + noise * self._noise)
        recalibrated = self._regime[:, None] == 1
        values = np.where(recalibrated, self._recalibrate(values, tick), values)

        values = np.round(values, 4).tolist()
        loads, ambients = np.round(self._load, 4).tolist(), np.round(ambient, 3).tolist()
        up = self._down_until <= tick
        cycles = self._cycle.tolist()
        ended = self._advance(tick, up, u_fail, u_maint)
        next_time = self.tick_time(tick + 1)
        for d in np.flatnonzero(up).tolist():
            device_type = self._device_types[d]
            if self._regime[d] == 1 and sc.drift is not None and sc.drift.device_type:
                device_type = sc.drift.device_type
            yield Reading(
                schema_version=SCHEMA_VERSION, device_id=self._device_ids[d], device_type=device_type,
                event_time=now, cycle=cycles[d],
                sensors=dict(zip(self._sensors, values[d], strict=True)),
                settings={"load": loads[d], "ambient": ambients[d]},
            )
            if ended[d]:
                self._schedule_label(Label(schema_version=SCHEMA_VERSION, device_id=self._device_ids[d],
                                           event_time=next_time, kind=ended[d]))  # type: ignore[arg-type]
        self._start_new_lives(tick, up, ended, new_life_factor, switching)

    def _enter_new_regime(self, entering: np.ndarray, tick: int) -> None:
        self._regime_since = np.where(entering & (self._regime == 0), tick, self._regime_since)
        self._regime = np.where(entering, 1, self._regime)

    def _recalibrate(self, values: np.ndarray, tick: int) -> np.ndarray:
        """What the sensors of the new regime read: the recalibration, in part while it still ramps up."""
        ramp = self.scenario.drift.recalibration_ramp_cycles if self.scenario.drift else 0
        if ramp == 0:
            return values * self._recal_scale + self._recal_offset
        progress = np.clip((tick - self._regime_since + 1) / ramp, 0.0, 1.0)[:, None]
        return values * (1.0 + (self._recal_scale - 1.0) * progress) + self._recal_offset * progress

    def _advance(self, tick: int, up: np.ndarray, u_fail: np.ndarray, u_maint: np.ndarray) -> list[str]:
        """Wear every device that is up by one cycle; return per device how its life ends ('' = it goes on)."""
        w = self.scenario.wear
        load_effect = np.maximum(0.0, 1.0 + w.load_factor * (self._load - 0.7))
        step = w.rate * self._life_factor * load_effect * self._rate_factor[self._regime]
        self._wear = np.where(up, self._wear + step, self._wear)
        self._cycle = np.where(up, self._cycle + 1, self._cycle)
        hazard = np.minimum(1.0, w.hazard.base + w.hazard.scale * self._wear ** w.hazard.power)
        failed = up & (u_fail < hazard)
        maintained = up & ~failed & (self._wear > w.maintenance.threshold) & (u_maint < w.maintenance.probability)
        return np.where(failed, "failure", np.where(maintained, "maintenance", "")).tolist()

    def _start_new_lives(self, tick: int, up: np.ndarray, ended: list[str], new_life_factor: np.ndarray,
                         switching: np.ndarray) -> None:
        """Devices whose life ended are down for the repair, then start at wear 0, cycle 0."""
        done = np.array([bool(kind) for kind in ended])
        if not done.any():
            return
        self._down_until = np.where(done, tick + 1 + self.scenario.wear.repair_cycles, self._down_until)
        self._wear = np.where(done, 0.0, self._wear)
        self._cycle = np.where(done, 0, self._cycle)
        self._life_factor = np.where(done, new_life_factor, self._life_factor)
        if self.scenario.drift is not None and self.scenario.drift.takes_effect == "next_life":
            self._enter_new_regime(done & switching, tick + 1 + self.scenario.wear.repair_cycles)

    def _schedule_label(self, label: Label) -> None:
        heapq.heappush(self._pending, (label.event_time + self.label_delay, self._label_seq, label))
        self._label_seq += 1

    def _due_labels(self, now: datetime) -> Iterator[Label]:
        while self._pending and self._pending[0][0] <= now:
            self.labels_emitted += 1
            yield heapq.heappop(self._pending)[2]

    def _drain_labels(self) -> Iterator[Label]:
        while self._pending:
            self.labels_emitted += 1
            yield heapq.heappop(self._pending)[2]

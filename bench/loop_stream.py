"""The loop benchmark's stream: one seeded run of events, its features, its ground truth and its lake.

Every policy sees the same :class:`Stream`: the events in publish order (labels late, as the
simulator or the replay publishes them), every reading's features computed once with the product's
kernel (:func:`mlops.features.compute.features_frame`, the numbers the scorer computes per device
window) and every reading's true label from the complete ground truth
(:func:`mlops.features.labels.label_readings`, -1 where the outcome is censored). The true labels
only score the policies afterwards; the policies themselves learn labels as they are published.

:class:`LakeFeed` writes the events into the lake the way the lake sink does (commits with Kafka
offsets), so the real training job reads only what had been published by the time it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.config import Settings
from mlops.data.schemas import Label, Reading, lake_row
from mlops.features.compute import FeatureSpec, features_frame, infer_sensors
from mlops.features.labels import label_readings

FEATURE_KEYS = ["device_id", "event_time"]


@dataclass(frozen=True)
class Onset:
    """When the drift begins, in event time and as the index of the first reading at or after it."""

    kind: str
    event_time: datetime
    reading: int


@dataclass
class Stream:
    """One run of events with everything the benchmark needs per reading."""

    name: str
    events: list[Reading | Label]
    """Publish order."""
    reading_of_event: np.ndarray
    """Per event: the index of the reading it is (-1 for a label)."""
    readings: pd.DataFrame
    """One row per reading, in publish order: device_id, event_time, cycle, sensors, settings."""
    features: pd.DataFrame
    """Every feature of every sensor, row-aligned with ``readings``."""
    truth: np.ndarray
    """Per reading: 1 fails within the horizon, 0 does not, -1 censored (not scored)."""
    history_readings: int
    """Readings [0, history_readings) are the history the initial model trains on."""
    onset: Onset | None
    cycle_seconds: float

    @property
    def time_ns(self) -> np.ndarray:
        """Event time of every reading as int nanoseconds (UTC)."""
        return self.readings["event_time"].dt.as_unit("ns").astype("int64").to_numpy()

    def time_of(self, reading: int) -> datetime:
        return pd.Timestamp(self.readings["event_time"].iat[min(reading, len(self.readings) - 1)]).to_pydatetime()

    def blocks(self, block: timedelta) -> Iterator[tuple[range, range]]:
        """Consecutive (event range, reading range) pairs of the live stream, each ``block`` of event time."""
        event_of_reading = np.flatnonzero(self.reading_of_event >= 0)
        first_event = int(event_of_reading[self.history_readings])
        times = self.time_ns
        start_event, start_reading = first_event, self.history_readings
        while start_reading < len(self.readings):
            end_time = times[start_reading] + int(block.total_seconds() * 1e9)
            end_reading = int(np.searchsorted(times, end_time, side="left"))
            end_reading = max(end_reading, start_reading + 1)
            # The tail of late labels (published when the run ends) goes with the last block.
            last = end_reading >= len(self.readings)
            end_event = len(self.events) if last else int(event_of_reading[end_reading])
            yield range(start_event, end_event), range(start_reading, end_reading)
            start_event, start_reading = end_event, end_reading


def build_stream(name: str, events: list[Reading | Label], history_readings: int, onset_kind: str | None,
                 onset_time: datetime | None, settings: Settings) -> Stream:
    """Features and ground truth for a list of events in publish order."""
    reading_of_event = np.full(len(events), -1, dtype=np.int64)
    rows: list[dict[str, Any]] = []
    label_rows: list[dict[str, Any]] = []
    for i, event in enumerate(events):
        if isinstance(event, Reading):
            reading_of_event[i] = len(rows)
            rows.append(event.to_row())
        else:
            label_rows.append(event.to_row())
    readings = pd.DataFrame(rows)
    readings["event_time"] = pd.to_datetime(readings["event_time"], utc=True)
    labels = pd.DataFrame(label_rows, columns=["device_id", "event_time", "kind", "rul"])
    labels["event_time"] = pd.to_datetime(labels["event_time"], utc=True)
    sensors = infer_sensors(list(readings.columns))
    spec = FeatureSpec(sensors, settings.features.window)
    computed = features_frame(readings, spec)
    computed["event_time"] = pd.to_datetime(computed["event_time"], utc=True)
    aligned = readings[FEATURE_KEYS].merge(computed[[*FEATURE_KEYS, *spec.feature_names()]], on=FEATURE_KEYS,
                                           how="left", validate="one_to_one")
    features = aligned[spec.feature_names()].reset_index(drop=True)
    labelled = label_readings(readings[FEATURE_KEYS], labels, settings.features.horizon_cycles,
                              settings.features.cycle_seconds)
    truth = np.full(len(readings), -1, dtype=np.int64)
    truth[labelled.index.to_numpy()] = labelled["label"].to_numpy()
    onset = None
    if onset_kind is not None and onset_time is not None:
        times = readings["event_time"].dt.as_unit("ns").astype("int64").to_numpy()
        first = int(np.searchsorted(times, pd.Timestamp(onset_time).value, "left"))
        onset = Onset(onset_kind, onset_time, first)
    return Stream(name, events, reading_of_event, readings, features, truth, history_readings, onset,
                  settings.features.cycle_seconds)


def simulated_stream(settings: Settings, scenario_name: str, devices: int, seed: int, history_readings: int,
                     hours_after_onset: float) -> Stream:
    """The scenario's fleet from its start until ``hours_after_onset`` past the drift onset."""
    from mlops.data.scenarios import load_scenario
    from mlops.data.simulator import Simulator

    scenario = load_scenario(scenario_name)
    sim = Simulator(scenario, devices=devices, seed=seed, cycle_seconds=settings.features.cycle_seconds)
    onset = sim.onset
    anchor = onset.event_time if onset is not None else sim.tick_time(history_readings // devices)
    end = anchor + timedelta(hours=hours_after_onset)
    newest = [sim.start_time]

    def past_end() -> bool:
        return newest[0] >= end

    events: list[Reading | Label] = []
    for event in sim.events(should_stop=past_end):
        events.append(event)
        if isinstance(event, Reading):
            newest[0] = event.event_time
    return build_stream(scenario.name, events, history_readings, onset.kind if onset else None,
                        onset.event_time if onset else None, settings)


class LakeFeed:
    """Writes events to the lake in publish order, one partition per table, as the lake sink commits them.

    Nothing is written until :meth:`flush` (called before the lake is read), so the lake holds
    few, large files, as the sink's micro-batches would.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        topics = settings.kafka.topics
        self._topic = {"readings": topics.readings, "labels": topics.labels}
        self._pending: dict[str, list[dict[str, Any]]] = {"readings": [], "labels": []}
        self._next_offset = {"readings": 0, "labels": 0}

    def add(self, event: Reading | Label) -> None:
        table = "readings" if isinstance(event, Reading) else "labels"
        offset = self._next_offset[table] + len(self._pending[table])
        self._pending[table].append(lake_row(event, self._topic[table], 0, offset))

    def flush(self) -> None:
        from mlops.data.lake import write_commit

        for table, rows in self._pending.items():
            if not rows:
                continue
            first = self._next_offset[table]
            write_commit(self.settings, table, self._topic[table], 0, first, first + len(rows) - 1, rows,
                         dead_letters=0)
            self._next_offset[table] = first + len(rows)
            rows.clear()

    @property
    def root(self) -> Path:
        return self.settings.lake_dir

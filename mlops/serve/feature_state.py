"""Per-device window state of the scorer, rebuilt from the readings topic.

Mechanism (docs/scorer.md): the state is never stored. When the scorer gets a partition (start,
restart, rebalance) or rewinds after an aborted transaction, it seeks to
``committed - lookback`` and *replays* the records up to the committed offset: they go into the
device windows but are not scored again. Readings are keyed by device id, so a device's whole
history is in one partition, and a replay of at least ``(window - 1) * devices per partition``
records rebuilds exactly the windows a scorer that never stopped would hold.

A replayed record can also be marked for *rescoring*: committed, but its output was lost
(:mod:`mlops.serve.output_check`). The scorer scores it in its place in the replay, so its features
are the ones it had the first time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from mlops.features.compute import FeatureSpec
from mlops.features.state import DeviceWindows, StreamReading

__all__ = ["Partition", "PartitionReading", "PartitionedWindows"]

Partition = tuple[str, int]
PartitionReading = tuple[Partition, str, Mapping[str, float], int | None]


class PartitionedWindows:
    """:class:`DeviceWindows` plus which partition each device lives in and where replays end."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.windows = DeviceWindows(spec)
        self._devices: dict[Partition, set[str]] = {}
        self._replay_until: dict[Partition, int] = {}
        self._rescore: dict[Partition, set[int]] = {}

    @property
    def spec(self) -> FeatureSpec:
        return self.windows.spec

    def begin_replay(self, partition: Partition, committed: int, rescore: Iterable[int] = ()) -> None:
        """Forget the partition's devices; records before ``committed`` will only be replayed,
        except those at the offsets in ``rescore``, which are scored again."""
        self.drop([partition])
        self._replay_until[partition] = committed
        if rescore:
            self._rescore[partition] = set(rescore)

    def replay_end(self, partition: Partition) -> int:
        """The committed offset the partition's replay runs up to (-1 if it is not replaying)."""
        return self._replay_until.get(partition, -1)

    def is_rescore(self, partition: Partition, offset: int) -> bool:
        """True for a replayed record whose output was lost: it must be scored, in order, without moving the offset."""
        return offset in self._rescore.get(partition, ())

    def rescored(self, partition: Partition, offsets: Iterable[int]) -> None:
        """These records' outputs are committed now."""
        pending = self._rescore.get(partition, set())
        pending.difference_update(offsets)
        if not pending:
            self._rescore.pop(partition, None)

    def is_replay(self, partition: Partition, offset: int) -> bool:
        """True for a record that was scored before and only rebuilds state."""
        return offset < self._replay_until.get(partition, -1)

    def replaying(self) -> bool:
        return bool(self._replay_until)

    def replay_done(self, partition: Partition, next_offset: int) -> None:
        """The consumer reached ``next_offset``: stop treating the partition as replaying."""
        if next_offset >= self._replay_until.get(partition, -1):
            self._replay_until.pop(partition, None)

    def replay(self, partition_readings: Iterable[PartitionReading]) -> None:
        """Add replayed (partition, device_id, sensors, cycle) readings to the windows without computing features."""
        self.windows.update(self._track(partition_readings))

    def update_and_compute(self, partition_readings: Iterable[PartitionReading]) -> np.ndarray:
        """Push every (partition, device_id, sensors, cycle) in order; return one feature row per reading.

        The cycle lets the kernel start a new window when a device begins a new life.
        """
        return self.windows.update_and_compute(self._track(partition_readings))

    def _track(self, partition_readings: Iterable[PartitionReading]) -> list[StreamReading]:
        """Remember which partition each device lives in; return the readings for the windows."""
        readings: list[StreamReading] = []
        for partition, device_id, sensors, cycle in partition_readings:
            self._devices.setdefault(partition, set()).add(device_id)
            readings.append((device_id, sensors) if cycle is None else (device_id, sensors, cycle))
        return readings

    def drop(self, partitions: Iterable[Partition]) -> None:
        """Forget the devices of partitions this scorer no longer owns (or is about to rebuild)."""
        for partition in partitions:
            for device_id in self._devices.pop(partition, set()):
                self.windows.reset(device_id)
            self._replay_until.pop(partition, None)
            self._rescore.pop(partition, None)

    def clear(self) -> None:
        self.drop(list(self._devices) + list(self._replay_until))

    def device_count(self) -> int:
        return len(self.windows)

    def snapshot(self) -> dict[str, Any]:
        """The windows as plain lists (tests compare a restarted scorer's state with this)."""
        return self.windows.snapshot()

"""Replay rebuilds exactly the windows a scorer that never stopped holds."""

from __future__ import annotations

import numpy as np

from mlops.features.compute import FeatureSpec
from mlops.serve.feature_state import PartitionedWindows

SPEC = FeatureSpec(("a", "b"), window=4)
P0, P1 = ("t", 0), ("t", 1)


def _stream(n: int) -> list[tuple[tuple[str, int], str, dict[str, float], int]]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        device = f"d{i % 3}"
        out.append((P0 if device != "d2" else P1, device, {"a": float(rng.normal()), "b": float(i)}, i))
    return out


def test_replay_then_continue_equals_never_stopped() -> None:
    records = _stream(30)
    never = PartitionedWindows(SPEC)
    expected = never.update_and_compute(records)

    restarted = PartitionedWindows(SPEC)
    restarted.update_and_compute(records[:5])  # state from before the crash, then lost
    restarted.clear()
    committed = 20
    restarted.begin_replay(P0, committed)
    restarted.begin_replay(P1, committed)
    for offset, (partition, _device, _sensors, _cycle) in enumerate(records[:committed]):
        assert restarted.is_replay(partition, offset)
    restarted.replay(records[:7])  # replayed in batches, as the scorer reads them
    restarted.replay(records[7:committed])
    assert not restarted.is_replay(P0, committed)
    got = restarted.update_and_compute(records[committed:])
    np.testing.assert_allclose(got, expected[committed:])


def test_drop_forgets_only_that_partitions_devices() -> None:
    state = PartitionedWindows(SPEC)
    state.update_and_compute(_stream(9))
    assert state.device_count() == 3
    state.drop([P1])
    assert set(state.snapshot()["windows"]) == {"d0", "d1"}
    state.begin_replay(P0, 5)
    assert state.device_count() == 0 and state.replaying()
    state.replay_done(P0, 5)
    assert not state.replaying()

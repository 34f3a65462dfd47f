"""The online pusher's bookkeeping: each device's latest row is kept, and rows that cannot be written wait.

No Feast here (nothing is written): tests/integration/test_online_push.py writes to a real store.
"""

from __future__ import annotations

from datetime import timedelta

from mlops.config import load_settings
from mlops.errors import RegistryError
from mlops.features.compute import FeatureSpec
from mlops.features.online_push import OnlinePusher, OnlineRow, SpecOf
from mlops.testing import SPEC, T0

MODEL = ("model", "1")


def features(device: int, cycle: int, spec: FeatureSpec = SPEC) -> dict[str, float]:
    """A feature row that says which reading it belongs to: device * 1000 + cycle in every column."""
    return dict.fromkeys(spec.feature_names(), float(device * 1000 + cycle))


def add(pusher: OnlinePusher, pairs: list[tuple[int, int]], model: tuple[str, str] = MODEL) -> None:
    for device, cycle in pairs:
        pusher.add(f"dev-{device:03d}", T0 + timedelta(minutes=cycle), *model, features(device, cycle))


def unreachable_registry(name: str, version: str) -> FeatureSpec:
    raise RegistryError(f"model {name!r} version {version}: registry unreachable")


def pusher(spec_of: SpecOf = unreachable_registry) -> OnlinePusher:
    return OnlinePusher(load_settings("local"), spec_of)


def test_only_each_devices_last_row_is_kept_across_adds() -> None:
    p = pusher()
    add(p, [(1, 1), (2, 1), (1, 2), (2, 2), (1, 3)])
    add(p, [(2, 3), (3, 1)])
    assert p._pending == {
        "dev-001": OnlineRow(T0 + timedelta(minutes=3), MODEL, features(1, 3)),
        "dev-002": OnlineRow(T0 + timedelta(minutes=3), MODEL, features(2, 3)),
        "dev-003": OnlineRow(T0 + timedelta(minutes=1), MODEL, features(3, 1)),
    }


def test_rows_whose_spec_is_unknown_wait_for_the_next_flush() -> None:
    p = pusher()
    add(p, [(1, 1), (2, 1)])
    assert not p.flush()  # nothing may be committed
    assert p.pending_count() == 2 and p.counts.failures == 1 and p.counts.pushed == 0
    add(p, [(1, 2)])  # a newer row still replaces the waiting one
    assert p._pending["dev-001"].features == features(1, 2)
    assert not p.flush() and p.counts.failures == 2


def test_frame_has_the_specs_columns_and_drops_rows_of_other_features() -> None:
    p = pusher()
    add(p, [(1, 1), (2, 5)])
    add(p, [(3, 1)], model=("model", "2"))
    p._pending["dev-003"] = OnlineRow(T0, MODEL, features(3, 1, FeatureSpec(sensors=("s_9",), window=5)))

    frame = p._frame(p._pending, SPEC, MODEL)
    assert list(frame.columns) == ["device_id", "event_time", *SPEC.feature_names()]
    assert frame["device_id"].tolist() == ["dev-001", "dev-002"]
    assert frame[SPEC.feature_names()[0]].tolist() == [1001.0, 2005.0]
    assert frame["event_time"].tolist() == [T0 + timedelta(minutes=1), T0 + timedelta(minutes=5)]
    assert p.counts.dropped == 1


def test_clear_forgets_pending_rows() -> None:
    p = pusher()
    add(p, [(1, 1)])
    p.clear()
    assert p.pending_count() == 0
    assert p.flush()  # nothing pending: nothing to wait for


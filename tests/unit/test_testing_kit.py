"""The test kit's clock and wait (mlops.testing), which tests and benchmarks both rely on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mlops.testing import ManualClock, unique, wait_until

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_manual_clock_moves_only_when_told() -> None:
    clock = ManualClock(T0)
    assert clock() == T0 and clock() == T0
    assert clock.advance(1.5) == T0 + timedelta(seconds=1.5)
    clock.sleep(0.5)
    assert clock() == T0 + timedelta(seconds=2)
    assert clock.monotonic() == (T0 + timedelta(seconds=2)).timestamp()
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(timedelta(seconds=-1))
    with pytest.raises(ValueError, match="timezone"):
        ManualClock(datetime(2026, 1, 1))


def test_wait_until_returns_the_value_and_names_what_it_waited_for() -> None:
    calls: list[int] = []
    assert wait_until(lambda: len(calls) >= 3 and "ready", 5, "three steps", step=lambda: calls.append(1)) == "ready"
    assert len(calls) == 3
    with pytest.raises(AssertionError, match=r"not within 0\.01s: never"):
        wait_until(lambda: False, 0.01, "never", interval_s=0.001)


def test_unique_names_differ() -> None:
    assert unique("t") != unique("t") and unique("t").startswith("t-")

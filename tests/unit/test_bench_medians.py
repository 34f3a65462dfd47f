"""The benchmark's medians: a time that never came is the latest, not a missing figure."""

from __future__ import annotations

import sys

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
try:
    from loop_report import Row, medians
finally:
    sys.path.remove(str(REPO / "bench"))


def _row(to_oracle: float | None, f1: float) -> Row:
    return Row(policy="loop", f1_before=0.6, f1_after=f1, f1_of_oracle=None, accuracy_after=0.8,
               accuracy_of_oracle=None, onset_to_better_h=1.0, onset_to_oracle_h=to_oracle, retrainings=2,
               promotions=2, train_cpu_s=10.0, train_wall_s=8.0, monitor_cpu_s=1.0)


def test_a_seed_that_never_reached_the_oracle_counts_as_the_latest() -> None:
    # Two seeds, one never within 90 % of the oracle: the median is "never", not the other seed's 3.6 h.
    (two,) = medians([[_row(None, 0.55)], [_row(3.6, 0.54)]])
    assert two.onset_to_oracle_h is None and two.f1_after == 0.545
    (three,) = medians([[_row(None, 0.5)], [_row(3.6, 0.5)], [_row(4.0, 0.5)]])
    assert three.onset_to_oracle_h == 4.0  # the middle of 3.6, 4.0 and never
    assert three.f1_of_oracle is None  # a figure no run has stays missing

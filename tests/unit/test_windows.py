"""Monitor windows and the label join on synthetic events with an explicit event-time clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from mlops.data.schemas import Label, Position, Prediction, parse_prediction
from mlops.errors import ValidationError
from mlops.monitor.windows import (
    LabelJoin,
    PartitionMerge,
    PerformanceWindows,
    WindowBuilder,
    source_offsets,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CS = 60.0  # cycle_seconds
H = 3  # horizon in cycles: span = 180 s
LATE = 120.0  # label lateness in seconds


def at(cycle: float) -> datetime:
    return T0 + timedelta(seconds=cycle * CS)


def pred(device: str, cycle: float, version: str = "1", offset: int = 0, probability: float = 0.5) -> Prediction:
    return Prediction(device, at(cycle), probability, int(probability >= 0.5), "m", version, {"x": float(cycle)},
                      source=Position("iot.readings", offset % 2, offset),
                      position=Position("iot.predictions", 0, offset))


def label(device: str, cycle: float, kind: str = "failure", rul: float | None = None) -> Label:
    return Label(schema_version=1, device_id=device, event_time=at(cycle), kind=kind, rul=rul)  # type: ignore[arg-type]


def new_join(max_pending: int = 100) -> LabelJoin:
    return LabelJoin(H, CS, LATE, max_pending)


def outcomes(judged: list) -> dict[tuple[str, float], int]:  # type: ignore[type-arg]
    return {(j.prediction.device_id, (j.prediction.event_time - T0).total_seconds() / CS): j.label for j in judged}


# --- count and time windows -------------------------------------------------------------------

def test_count_windows_close_every_window_size_predictions() -> None:
    builder = WindowBuilder("count", window_size=10, window_seconds=3600, min_window=2, hop=1.0)
    closed = [w for i in range(25) for w in builder.add(pred("d", i, offset=i))]
    assert [len(w.predictions) for w in closed] == [10, 10]
    assert closed[0].start_time == at(0) and closed[0].end_time == at(9)
    assert closed[1].predictions[0].position == Position("iot.predictions", 0, 10)
    assert len(builder.held()) == 5


def test_windows_never_mix_versions_and_a_replaced_version_is_closed_when_the_stream_moves_on() -> None:
    builder = WindowBuilder("count", window_size=10, window_seconds=3600, min_window=5, hop=1.0)
    closed = [w for i in range(7) for w in builder.add(pred("d", i, version="1"))]
    closed += [w for i in range(7, 27) for w in builder.add(pred("d", i, version="2"))]
    # v1's 7 predictions form a short window once 10 predictions of v2 went by; v2 has two full ones.
    assert [(w.model_version, len(w.predictions)) for w in closed] == [("2", 10), ("1", 7), ("2", 10)]
    # A replaced version with too few predictions to judge is dropped and counted.
    builder = WindowBuilder("count", window_size=10, window_seconds=3600, min_window=5, hop=1.0)
    closed = [w for i in range(3) for w in builder.add(pred("d", i, version="1"))]
    closed += [w for i in range(3, 13) for w in builder.add(pred("d", i, version="2"))]
    assert [(w.model_version, len(w.predictions)) for w in closed] == [("2", 10)]
    assert builder.counts["too_small"] == 3


def test_time_windows_close_after_grace_and_late_predictions_are_counted() -> None:
    builder = WindowBuilder("time", window_size=10, window_seconds=600, grace_s=60, min_window=2, hop=1.0)
    closed = [w for c in (0, 1, 2, 9, 10, 10.5) for w in builder.add(pred("d", c))]  # bucket 0: cycles 0..9
    assert closed == []  # 10.5 cycles = 630 s: not yet 60 s past the bucket's end at 600 s
    closed = builder.add(pred("d", 5))  # out of order but bucket 0 is still open: it joins
    assert closed == []
    closed = builder.add(pred("d", 11))  # 660 s: bucket 0 closes
    assert len(closed) == 1
    window = closed[0]
    assert (window.start_time, window.end_time) == (T0, T0 + timedelta(seconds=600))
    assert sorted(p.event_time for p in window.predictions) == [at(c) for c in (0, 1, 2, 5, 9)]
    assert builder.add(pred("d", 3)) == [] and builder.counts["late"] == 1


def test_count_windows_slide_by_half_a_window() -> None:
    builder = WindowBuilder("count", window_size=10, window_seconds=3600, min_window=2)
    closed = [w for i in range(26) for w in builder.add(pred("d", i, offset=i))]
    # Whole windows of 10, one every 5 predictions once the first 10 are in.
    assert [(w.predictions[0].position.offset, len(w.predictions)) for w in closed  # type: ignore[union-attr]
            ] == [(0, 10), (5, 10), (10, 10), (15, 10)]
    assert closed[1].start_time == at(5) and closed[1].end_time == at(14)
    assert [p.position.offset for p in builder.held()] == list(range(20, 26))  # type: ignore[union-attr]
    # A replaced version closes its last window if enough of it is new: here 1 of 6 is, too few.
    closed = [w for i in range(26, 36) for w in builder.add(pred("d", i, version="2"))]
    assert [(w.model_version, len(w.predictions)) for w in closed] == [("2", 10)]
    assert builder.counts["too_small"] == 1
    closed = [w for i in range(36, 40) for w in builder.add(pred("d", i, version="3"))]
    closed += [w for i in range(40, 50) for w in builder.add(pred("d", i, version="4"))]
    assert [(w.model_version, len(w.predictions)) for w in closed] == [("4", 10), ("3", 4)]


def test_time_windows_slide_by_half_a_window_and_a_prediction_joins_both() -> None:
    builder = WindowBuilder("time", window_size=10, window_seconds=600, grace_s=0, min_window=1)
    closed = [w for c in (1, 6, 11, 16, 21) for w in builder.add(pred("d", c))]
    spans = [((w.start_time - T0).total_seconds(), [(p.event_time - T0).total_seconds() / CS for p in w.predictions])
             for w in closed]
    # Windows [-300, 300), [0, 600), [300, 900), [600, 1200) close as the clock passes their end.
    assert spans == [(-300, [1]), (0, [1, 6]), (300, [6, 11]), (600, [11, 16])]
    assert builder.add(pred("d", 4)) == [] and builder.counts["late"] == 1  # both its windows closed


def test_source_offsets_span_each_reading_partition() -> None:
    spans = source_offsets([pred("d", i, offset=o) for i, o in enumerate([4, 7, 2, 9, 5])])
    assert spans == {"iot.readings:0": [2, 4], "iot.readings:1": [5, 9]}


# --- the label join ---------------------------------------------------------------------------

def test_failure_within_horizon_makes_positives_at_once_and_exact_boundaries() -> None:
    join = new_join()
    for c in range(5, 10):  # clock 9: no deadline (t + 5 cycles) has passed yet
        assert join.add_prediction(pred("d", c)) == []
    judged = join.add_label(label("d", 9))
    # f = 9: positive for 6 <= t < 9 (f <= t + H inclusive, t < f strict); t = 5 is a known negative
    # (its first failure is beyond its span); t = 9 waits (a failure at 9 is not after 9).
    assert outcomes(judged) == {("d", 5.0): 0, ("d", 6.0): 1, ("d", 7.0): 1, ("d", 8.0): 1}
    assert join.pending == 1


def test_negative_only_after_horizon_plus_lateness_on_the_event_clock() -> None:
    join = new_join()
    join.add_prediction(pred("d", 0))
    # Negative needs clock >= 0 + 3 cycles + 120 s = 5 cycles; other devices' predictions move the clock.
    assert join.add_prediction(pred("other", 4.9)) == []
    assert outcomes(join.add_prediction(pred("other", 5))) == {("d", 0.0): 0}
    assert join.counts["negative"] == 1 and join.pending == 2  # both "other" predictions still wait


def test_late_failure_label_within_lateness_still_counts_after_the_clock_passed_the_horizon() -> None:
    join = new_join()
    join.add_prediction(pred("d", 0))
    join.add_prediction(pred("other", 4))  # past t + span (3), within lateness (5)
    assert outcomes(join.add_label(label("d", 2))) == {("d", 0.0): 1}


def test_label_later_than_the_lateness_does_not_change_a_judged_prediction() -> None:
    join = new_join()
    join.add_prediction(pred("d", 0))
    assert outcomes(join.add_prediction(pred("other", 6))) == {("d", 0.0): 0}
    assert join.add_label(label("d", 2)) == []
    assert join.counts == {"negative": 1}


def test_maintenance_within_the_span_censors_and_beyond_it_proves_alive() -> None:
    join = new_join()
    join.add_prediction(pred("d", 0))
    join.add_prediction(pred("d", 1))
    assert join.add_label(label("d", 2, "maintenance")) == []  # censored: dropped
    assert join.counts["censored"] == 2 and join.pending == 0
    join.add_prediction(pred("e", 0))
    assert outcomes(join.add_label(label("e", 4, "maintenance"))) == {("e", 0.0): 0}


def test_first_end_of_life_decides_maintenance_before_failure() -> None:
    join = new_join()
    join.add_label(label("d", 1, "maintenance"))
    join.add_label(label("d", 2))
    assert join.add_prediction(pred("d", 0)) == []  # maintenance at 1 comes first: censored
    assert join.counts["censored"] == 1
    assert outcomes(join.add_prediction(pred("d", 1.5))) == {("d", 1.5): 1}  # new life: fails at 2


def test_labels_before_predictions_and_out_of_order_predictions() -> None:
    join = new_join()
    join.add_label(label("d", 10))
    judged = [j for c in (9, 5, 8, 6, 7) for j in join.add_prediction(pred("d", c))]
    # t = 5, 6: the first failure after them (10) is beyond the span, so they are known negatives.
    assert outcomes(judged) == {("d", 9.0): 1, ("d", 8.0): 1, ("d", 7.0): 1, ("d", 6.0): 0, ("d", 5.0): 0}


def test_rul_label_decides_within_its_life() -> None:
    join = new_join()
    join.add_prediction(pred("d", 0))
    join.add_prediction(pred("e", 0))
    assert outcomes(join.add_label(label("d", 1, "rul", rul=1))) == {("d", 0.0): 1}  # fails at 2 <= 3
    assert outcomes(join.add_label(label("e", 1, "rul", rul=10))) == {("e", 0.0): 0}  # fails at 11 > 3


def test_pending_predictions_per_device_are_bounded() -> None:
    join = new_join(max_pending=3)
    for i in range(5):
        join.add_prediction(pred("d", i * 0.01))
    assert join.pending == 3 and join.counts["evicted"] == 2


def test_prediction_arriving_after_its_deadline_is_judged_at_once_with_the_labels_kept() -> None:
    join = new_join()
    join.add_label(label("d", 2))
    join.add_prediction(pred("other", 100))  # another partition ran far ahead
    assert outcomes(join.add_prediction(pred("d", 0))) == {("d", 0.0): 1}
    assert outcomes(join.add_prediction(pred("e", 0))) == {("e", 0.0): 0}
    assert join.pending == 1  # only "other"


def test_performance_windows_per_version() -> None:
    windows = PerformanceWindows(window_size=3)
    join = new_join()
    for c in range(1, 6):
        join.add_prediction(pred("d", c, version="1" if c < 4 else "2"))
    # Failure at 7: t = 4, 5 (v2) are positive; t = 1..3 (v1) fail later than t + H: negative.
    closed = [w for j in join.add_label(label("d", 7)) for w in [windows.add(j)] if w is not None]
    assert [(w.model_version, w.labels) for w in closed] == [("1", [0, 0, 0])]
    assert [p.model_version for p in windows.held()] == ["2", "2"]


# --- parsing ----------------------------------------------------------------------------------

def _record(**changes: object) -> bytes:
    data = {"schema_version": 1, "device_id": "d", "event_time": "2026-01-01T00:00:00+00:00", "cycle": 3,
            "probability": 0.7, "decision": 1, "model_name": "m", "model_version": "4",
            "features": {"a": 1.0, "n_readings": 3}, "source": {"topic": "iot.readings", "partition": 1, "offset": 9},
            "scored_at": "2026-01-01T00:00:01+00:00"}
    data.update(changes)
    return json.dumps(data).encode()


def test_parse_prediction_reads_the_contract_fields() -> None:
    p = parse_prediction(_record(), Position("iot.predictions", 2, 11))
    assert (p.device_id, p.model_version, p.probability, p.decision) == ("d", "4", 0.7, 1)
    assert p.features == {"a": 1.0, "n_readings": 3.0}
    assert p.source == Position("iot.readings", 1, 9) and p.position == Position("iot.predictions", 2, 11)


@pytest.mark.parametrize(("raw", "reason"), [
    (b"", "empty message"),
    (b"{nope", "not valid JSON"),
    (_record(schema_version=2), "unknown schema version"),
    (_record(probability=1.5), "field 'probability'"),
    (_record(features={"a": "x"}), "field 'features.a'"),
    (_record(event_time="2026-01-01T00:00:00"), "timezone"),
])
def test_parse_prediction_rejects_bad_records_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        parse_prediction(raw)


def _on(partition: int, device: str, cycle: float, offset: int) -> Prediction:
    return Prediction(device, at(cycle), 0.5, 1, "m", "1", {"x": float(cycle)},
                      position=Position("iot.predictions", partition, offset))


def test_partitions_read_at_different_paces_are_merged_in_event_time_order() -> None:
    merge = PartitionMerge(wait_s=5.0)
    merge.track([("iot.predictions", 0), ("iot.predictions", 1)], now=0.0)
    # A backlog: partition 0 arrives first, whole; partition 1 has delivered nothing yet.
    for cycle in range(4):
        merge.add(_on(0, "a", cycle, cycle), now=0.0)
    assert merge.release(now=1.0) == [] and len(merge.held()) == 4  # held back for partition 1
    for cycle in range(4):
        merge.add(_on(1, "b", cycle, cycle), now=1.0)
    released = merge.release(now=1.0)
    assert [(p.device_id, p.event_time) for p in released[:4]] == [("a", at(0)), ("b", at(0)), ("a", at(1)),
                                                                    ("b", at(1))]
    assert len(released) == 7 and len(merge.held()) == 1  # the last one waits for partition 0's next


def test_an_idle_partition_stops_holding_the_others_back_after_the_wait() -> None:
    merge = PartitionMerge(wait_s=5.0)
    merge.track([("iot.predictions", 0), ("iot.predictions", 1)], now=0.0)
    merge.add(_on(0, "a", 0, 0), now=0.0)
    assert merge.release(now=4.9) == []
    assert [p.device_id for p in merge.release(now=5.0)] == ["a"] and merge.held() == []


def test_a_window_of_part_of_the_fleet_over_hours_is_not_a_fleet_sample() -> None:
    from mlops.monitor.calibration import DriftCalibration
    from mlops.monitor.judge import fleet_sample
    from mlops.monitor.windows import ClosedWindow

    # The training rows' rate: 20 readings a minute (57.6 windows of 1000 a day at a hop of 500).
    calibration = DriftCalibration(["x"], {"x": 1.0}, 4.0, 1000, 500, 57.6, 1 / 30, 1e-4)
    fleet = [pred(f"d{i % 20}", i / 20) for i in range(1000)]  # 50 minutes of the whole fleet
    part = [pred(f"d{i % 5}", i / 5) for i in range(1000)]  # 5 devices over 200 minutes
    assert fleet_sample(ClosedWindow("drift", "m", "1", fleet, at(0), at(50)), calibration)
    assert not fleet_sample(ClosedWindow("drift", "m", "1", part, at(0), at(200)), calibration)
    # Catching up partitions unevenly: 8 of 20 devices over 125 minutes (2.5 times the expected 50).
    uneven = [pred(f"d{i % 8}", i / 8) for i in range(1000)]
    assert not fleet_sample(ClosedWindow("drift", "m", "1", uneven, at(0), at(125)), calibration)
    # A fleet reporting a third slower than in training is still a sample of it.
    slower = [pred(f"d{i % 14}", i / 14) for i in range(1000)]
    assert fleet_sample(ClosedWindow("drift", "m", "1", slower, at(0), at(72)), calibration)

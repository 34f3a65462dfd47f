"""The label "fails within H" follows docs/contracts.md case by case, on toy and C-MAPSS data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops.errors import ValidationError
from mlops.features.labels import label_readings
from tests.conftest import SHARED_DATA

T0 = pd.Timestamp("2026-01-01", tz="UTC")
CS = 60.0  # cycle_seconds
H = 3


def at(cycle: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(seconds=cycle * CS)


def readings(device: str, cycles: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"device_id": device, "event_time": [at(c) for c in cycles], "cycle": cycles})


def labels(*rows: tuple[str, float, str, float | None]) -> pd.DataFrame:
    return pd.DataFrame([{"device_id": d, "event_time": at(c), "kind": k, "rul": r} for d, c, k, r in rows],
                        columns=["device_id", "event_time", "kind", "rul"])


def by_cycle(labelled: pd.DataFrame) -> dict[int, int]:
    return dict(zip(labelled["cycle"], labelled["label"], strict=True))


def test_failure_within_horizon_is_positive_and_boundaries_are_exact() -> None:
    out = by_cycle(label_readings(readings("d", list(range(10))), labels(("d", 9, "failure", None)), H, CS))
    # f = 9: positive for 9-3 <= t < 9 (f <= t + H is inclusive, t < f strict); t = 9 is censored.
    assert out == {0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 1, 7: 1, 8: 1}


def test_unknown_outcome_is_censored_without_labels() -> None:
    out = by_cycle(label_readings(readings("d", list(range(6))), labels(), H, CS))
    # Seen alive at t + 3 only for t <= 2; the last three readings are not known yet.
    assert out == {0: 0, 1: 0, 2: 0}


def test_maintenance_is_not_a_failure() -> None:
    frame = readings("d", list(range(8)))
    out = by_cycle(label_readings(frame, labels(("d", 5.5, "maintenance", None)), H, CS))
    # Readings at 3..5 see the maintenance within H but it is no failure; alive again later: 0 where known.
    assert out == {0: 0, 1: 0, 2: 0, 3: 0, 4: 0}
    # Without anything after the maintenance, the maintenance itself is the last sighting.
    out = by_cycle(label_readings(readings("d", [0, 1, 2, 3]), labels(("d", 5, "maintenance", None)), H, CS))
    assert out == {0: 0, 1: 0, 2: 0}


def test_failure_after_maintenance_still_counts_by_the_failure_rule() -> None:
    out = by_cycle(label_readings(readings("d", [0, 1, 2]), labels(("d", 2.5, "maintenance", None),
                                                                  ("d", 4, "failure", None)), H, CS))
    assert out == {0: 0, 1: 1, 2: 1}


def test_rul_label_positive_negative_and_censored() -> None:
    # A test engine: readings 0..10, then rul = 2 cycles reported at cycle 10 (fails at 12).
    out = by_cycle(label_readings(readings("d", list(range(11))), labels(("d", 10, "rul", 2.0)), H, CS))
    # rul_at_t = 2 + (10 - t) <= 3 for t >= 9; seen alive (the rul label) at >= t + 3 for t <= 7; t = 8 censored.
    assert out == {0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 0, 9: 1, 10: 1}


def test_rul_label_of_another_life_does_not_count() -> None:
    frame = readings("d", [0, 1, 2, 3, 4])
    out = by_cycle(label_readings(frame, labels(("d", 2.5, "maintenance", None), ("d", 3, "rul", 0.0)), H, CS))
    # The rul label (due at 3) belongs to the life after the maintenance: it makes reading 3
    # positive but not reading 2, which it would if lives were ignored. Reading 4 is last seen;
    # 0 and 1 are negatives (seen alive at 4 >= t + 3); 2 is censored.
    assert out[3] == 1
    assert out[0] == 0 and out[1] == 0
    assert 2 not in out


def test_devices_are_independent() -> None:
    frame = pd.concat([readings("a", list(range(6))), readings("b", list(range(6)))], ignore_index=True)
    out = label_readings(frame, labels(("a", 5, "failure", None)), H, CS)
    assert out[out.device_id == "a"]["label"].tolist() == [0, 0, 1, 1, 1]
    assert out[out.device_id == "b"]["label"].tolist() == [0, 0, 0]
    assert out["label"].dtype == np.int64


def test_bad_input_is_rejected_with_the_reason() -> None:
    with pytest.raises(ValidationError, match="missing column"):
        label_readings(readings("d", [0]), pd.DataFrame({"device_id": ["d"]}), H, CS)
    with pytest.raises(ValidationError, match="unknown kind"):
        label_readings(readings("d", [0]), labels(("d", 1, "explosion", None)), H, CS)
    with pytest.raises(ValidationError, match="no rul value"):
        label_readings(readings("d", [0]), labels(("d", 1, "rul", None)), H, CS)


def _cmapss(name: str) -> pd.DataFrame:
    columns = ["unit", "cycle", "setting_1", "setting_2", "setting_3", *(f"s_{i}" for i in range(1, 22))]
    frame = pd.read_csv(SHARED_DATA / "cmapss" / name, sep=r"\s+", header=None, names=columns)
    frame["device_id"] = "fd001-" + frame["unit"].astype(str)
    frame["event_time"] = [at(c) for c in frame["cycle"]]
    return frame


def test_cmapss_train_every_unit_ends_in_failure() -> None:
    train = _cmapss("train_FD001.txt")
    last = train.groupby("device_id")["cycle"].transform("max")
    failures = train[train["cycle"] == last]
    lab = pd.DataFrame({"device_id": failures["device_id"], "event_time": failures["event_time"],
                        "kind": "failure", "rul": None})
    out = label_readings(train, lab, 30, CS)
    rul = last.loc[out.index] - out["cycle"]
    assert len(out) == len(train) - 100  # each unit's failure reading itself is censored (f = t)
    assert ((rul <= 30) == (out["label"] == 1)).all()
    assert int(out["label"].sum()) == 100 * 30


def test_cmapss_test_units_with_rul_labels() -> None:
    test = _cmapss("test_FD001.txt")
    true_rul = np.loadtxt(SHARED_DATA / "cmapss" / "RUL_FD001.txt")
    last = test.groupby("device_id")["cycle"].max()
    units = [f"fd001-{u}" for u in range(1, 101)]
    lab = pd.DataFrame({"device_id": units, "event_time": [at(last[u]) for u in units], "kind": "rul",
                        "rul": true_rul})
    out = label_readings(test, lab, 30, CS)
    remaining = (out["device_id"].map(dict(zip(units, true_rul, strict=True))) + out["device_id"].map(last)
                 - out["cycle"])
    since_label = out["device_id"].map(last) - out["cycle"]
    assert ((remaining <= 30) == (out["label"] == 1)).all()
    # Kept: known positives and rows seen alive 30+ cycles later; the rest is censored.
    expected_rows = ((test["device_id"].map(dict(zip(units, true_rul, strict=True))) + test["device_id"].map(last)
                      - test["cycle"] <= 30) | (test["device_id"].map(last) - test["cycle"] >= 30)).sum()
    assert len(out) == expected_rows
    assert (since_label[out["label"] == 0] >= 30).all()

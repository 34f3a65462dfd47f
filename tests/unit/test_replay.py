"""Replay mappings: label sources (per-row flag, failure time, RUL column, last reading), lives from a
counter that resets, and bad mappings failing at load time with the key named."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from mlops.data.replay import load_mapping, replay_events
from mlops.data.schemas import Label, Reading
from mlops.errors import ConfigError, ValidationError
from mlops.features.labels import label_readings
from tests.conftest import REPO
from tests.helpers_replay import write_ai4i

CYCLE_S = 60.0
AI4I = REPO / "configs" / "replay" / "ai4i2020.yaml"
START = datetime(2026, 1, 1, tzinfo=UTC)


def split(events: list[Reading | Label]) -> tuple[list[Reading], list[Label]]:
    return [e for e in events if isinstance(e, Reading)], [e for e in events if isinstance(e, Label)]


def test_ai4i_flags_failures_and_tool_changes(tmp_path: Path) -> None:
    # Three tool lives of 10 products: the first ends in a tool-wear failure, the second with a tool
    # change (no failure), the third has a heat-dissipation failure mid-life and is still running.
    path = tmp_path / "ai4i2020.csv"
    write_ai4i(path, lives=[10, 10, 10], failures={9: "TWF", 24: "HDF"})
    readings, labels = split(list(replay_events(path, load_mapping(AI4I), CYCLE_S)))
    assert len(readings) == 30 and {r.device_id for r in readings} == {"ai4i-ai4i2020"}
    assert [(lab.kind, lab.event_time) for lab in labels] == [
        ("failure", START + timedelta(minutes=10)),   # UDI 10: row 9
        ("maintenance", START + timedelta(minutes=20)),  # UDI 20: the tool changed after it
        ("failure", START + timedelta(minutes=25)),   # UDI 25: row 24
    ]
    assert [r.cycle for r in readings] == list(range(10)) * 3  # numbered within each tool life
    assert [r.event_time for r in readings] == [START + timedelta(minutes=u) for u in range(1, 31)]
    first = readings[0]
    assert set(first.sensors) == {"air_temperature", "process_temperature", "rotational_speed", "torque",
                                  "tool_wear"}
    assert first.sensors["tool_wear"] == 0 and first.device_type == "ai4i-mill"
    # Each label follows the reading it belongs to in the stream.
    events = list(replay_events(path, load_mapping(AI4I), CYCLE_S))
    at = [i for i, e in enumerate(events) if isinstance(e, Label)]
    assert [events[i - 1].event_time for i in at] == [lab.event_time for lab in labels]


def test_ai4i_labels_make_the_right_readings_positive(tmp_path: Path) -> None:
    path = tmp_path / "ai4i2020.csv"
    write_ai4i(path, lives=[10, 10, 10], failures={9: "TWF", 24: "HDF"})
    readings, labels = split(list(replay_events(path, load_mapping(AI4I), CYCLE_S)))
    frame = pd.DataFrame([{"device_id": r.device_id, "event_time": r.event_time, "cycle": r.cycle} for r in readings])
    truth = pd.DataFrame([lab.to_row() for lab in labels])
    labelled = label_readings(frame, truth, horizon_cycles=3, cycle_seconds=CYCLE_S)
    positives = sorted(int((t - START) / timedelta(minutes=1)) for t in labelled.loc[labelled.label == 1, "event_time"])
    # Within 3 cycles before a failure (strictly before it): UDI 7-9 and 22-24.
    assert positives == [7, 8, 9, 22, 23, 24]
    # The tool change ends life 2: its last readings are not positives of the next life's failure.
    assert not labelled[(labelled.event_time > START + timedelta(minutes=17))
                        & (labelled.event_time <= START + timedelta(minutes=20))].label.any()


def _mapping(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    return path


BASE = """format: csv
device_id: unit
cycle: cycle
sensors: [a, b]
device_type: machine
"""


def _fleet(tmp_path: Path) -> Path:
    """Two devices of 5 cycles each; unit 2 fails at minute 3.5 (between readings); RUL column counts down."""
    rows = [{"unit": u, "cycle": c, "a": float(c), "b": float(u), "rul": float(4 - c + (u == 1) * 10),
             "failed_at": "2026-01-01T00:03:30Z" if u == 2 else None} for u in (1, 2) for c in range(5)]
    path = tmp_path / "fleet.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_failure_time_column(tmp_path: Path) -> None:
    rules = "labels: {default: failure_time, failure_time: {column: failed_at}}\n"
    mapping = load_mapping(_mapping(tmp_path, BASE + rules))
    events = list(replay_events(_fleet(tmp_path), mapping, CYCLE_S))
    labels = [e for e in events if isinstance(e, Label)]
    assert [(lab.device_id, lab.kind, lab.event_time) for lab in labels] == [
        ("2", "failure", START + timedelta(minutes=3, seconds=30))]
    # It follows unit 2's last reading before the failure (cycle 3), before any later reading.
    before = events[events.index(labels[0]) - 1]
    assert isinstance(before, Reading) and (before.device_id, before.cycle) == ("2", 3)


def test_rul_column_labels_each_life_end(tmp_path: Path) -> None:
    mapping = load_mapping(_mapping(tmp_path, BASE + "labels: {default: rul_column, rul_column: {column: rul}}\n"))
    labels = [e for e in replay_events(_fleet(tmp_path), mapping, CYCLE_S) if isinstance(e, Label)]
    assert sorted((lab.device_id, lab.kind, lab.rul) for lab in labels) == [("1", "rul", 10.0), ("2", "rul", 0.0)]
    assert all(lab.event_time == START + timedelta(minutes=4) for lab in labels)


def test_failure_at_each_life_end_and_labels_from_override(tmp_path: Path) -> None:
    path = tmp_path / "runs.csv"
    # One device, a counter that resets twice: three lives, each run to failure.
    pd.DataFrame({"n": range(9), "hours": [0, 1, 2, 0, 1, 0, 1, 2, 3], "a": range(9)}).to_csv(path, index=False)
    text = ("format: csv\ndevice_id_template: pump-7\nsensors: [a]\ndevice_type: pump\n"
            "event_time: {steps: n}\nlives: {counter: hours}\n")
    mapping = load_mapping(_mapping(tmp_path, text))
    readings, labels = split(list(replay_events(path, mapping, CYCLE_S)))
    assert [r.cycle for r in readings] == [0, 1, 2, 0, 1, 0, 1, 2, 3]
    assert [(lab.kind, lab.event_time) for lab in labels] == [
        ("failure", START + timedelta(minutes=m)) for m in (2, 4, 8)]
    # The same file without labels, from the command line's choice.
    assert not split(list(replay_events(path, mapping, CYCLE_S, "none")))[1]
    with pytest.raises(ConfigError, match=r"labels\.flag\.column"):
        list(replay_events(path, mapping, CYCLE_S, "flag"))


def test_bad_flag_values_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "ai4i2020.csv"
    frame = write_ai4i(path, lives=[5], failures={})
    frame["Machine failure"] = frame["Machine failure"].astype(object)
    frame.loc[3, "Machine failure"] = "yes"
    frame.to_csv(path, index=False)
    with pytest.raises(ValidationError, match="'Machine failure' holds 'yes'"):
        list(replay_events(path, load_mapping(AI4I), CYCLE_S))


@pytest.mark.parametrize(("change", "message"), [
    ({"labels": "labels: {default: flag}\n"}, r"key 'labels': 'default' is 'flag' but 'flag.column' is not set"),
    ({"labels": "labels: {default: flag, flag: {columns: x}}\n"}, r"key 'labels.flag.columns': unknown key"),
    ({"labels": "labels: {default: rul_colum}\n"}, r"key 'labels.default': Input should be"),
    ({"lives": "lives: {counter: wear, end: replaced}\n"}, r"key 'lives.end'"),
    ({"lives": "lives: {count: wear}\n"}, r"key 'lives.count': unknown key"),
    ({"device_id": "device_id_template: \"m-{value}\"\n"}, r"'device_id_template' uses \{value\} but no 'device_id'"),
    ({"type": "device_type_column: Type\n"}, r"exactly one of 'device_type' and 'device_type_column'"),
    ({"time": "event_time: {column: t, steps: n}\n"}, r"key 'event_time': .*not both"),
    ({"sensors": "settings: {a: Torque}\n"}, r"name \['a'\] more than once"),
    ({"sensors": "sensors: []\n"}, r"key 'sensors'"),
])
def test_bad_mappings_fail_at_load_naming_the_key(tmp_path: Path, change: dict[str, str], message: str) -> None:
    text = "format: csv\nsensors: [a, b]\ndevice_type: machine\n"
    if "device_id" not in change:
        text += "device_id: unit\n"
    if "sensors" in change and change["sensors"].startswith("sensors"):
        text = text.replace("sensors: [a, b]\n", "")
    text += "".join(change.values())
    with pytest.raises(ConfigError, match=message):
        load_mapping(_mapping(tmp_path, text))


def test_shipped_mappings_load() -> None:
    for path in sorted((REPO / "configs" / "replay").glob("*.yaml")):
        mapping = load_mapping(path)
        assert mapping.sensor_columns(), path
    assert load_mapping(AI4I).labels.default == "flag"


def test_ai4i_label_counts_by_kind(tmp_path: Path) -> None:
    path = tmp_path / "ai4i2020.csv"
    frame = write_ai4i(path, lives=[40, 25, 60, 30], failures={39: "TWF", 70: "PWF", 71: "OSF", 120: "HDF"})
    _, labels = split(list(replay_events(path, load_mapping(AI4I), CYCLE_S)))
    assert Counter(lab.kind for lab in labels) == {"failure": int(frame["Machine failure"].sum()), "maintenance": 2}

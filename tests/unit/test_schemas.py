"""Every reason schema validation rejects an event for, and that valid events round-trip."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mlops.data.schemas import MAX_EVENT_BYTES, encode, parse_label, parse_reading
from mlops.errors import ValidationError


def reading(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"schema_version": 1, "device_id": "dev-0001", "device_type": "pump-a",
                             "event_time": "2026-01-01T00:00:00Z", "cycle": 4,
                             "sensors": {"temperature": 71.2, "vibration": 0.31}, "settings": {"load": 0.8}}
    event.update(changes)
    return event


def label(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"schema_version": 1, "device_id": "dev-0001", "event_time": "2026-01-01T00:00:00Z",
                             "kind": "failure"}
    event.update(changes)
    return event


def rejected(raw: bytes | str | None, parse: Any = parse_reading) -> str:
    with pytest.raises(ValidationError) as info:
        parse(raw)
    return info.value.reason


def test_valid_reading_round_trips() -> None:
    parsed = parse_reading(json.dumps(reading()))
    assert parse_reading(encode(parsed)) == parsed
    assert parsed.to_row()["setting_load"] == 0.8


def test_valid_rul_label_round_trips() -> None:
    parsed = parse_label(json.dumps(label(kind="rul", rul=112)))
    assert parsed.rul == 112.0
    assert parse_label(encode(parsed)) == parsed


@pytest.mark.parametrize("missing", ["schema_version", "device_id", "device_type", "event_time", "cycle", "sensors"])
def test_missing_field(missing: str) -> None:
    event = reading()
    del event[missing]
    assert rejected(json.dumps(event)) == f"field '{missing}': missing"


def test_unknown_field() -> None:
    assert rejected(json.dumps(reading(colour="red"))) == "field 'colour': unknown field"


@pytest.mark.parametrize(("field", "value", "where"), [
    ("cycle", "4", "cycle"), ("cycle", True, "cycle"), ("cycle", 4.5, "cycle"),
    ("sensors", {"temperature": "hot"}, "sensors.temperature"),
    ("sensors", {"temperature": True}, "sensors.temperature"),
    ("settings", {"load": [1]}, "settings.load"), ("device_id", 7, "device_id"),
    ("event_time", "yesterday", "event_time"), ("event_time", True, "event_time"),
])
def test_wrong_type(field: str, value: Any, where: str) -> None:
    assert rejected(json.dumps(reading(**{field: value}))).startswith(f"field '{where}'")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_rejected(constant: str) -> None:
    raw = json.dumps(reading()).replace("71.2", constant)
    assert rejected(raw) == "field 'sensors.temperature': Input should be a finite number"


def test_huge_number_is_out_of_range() -> None:
    reason = rejected(json.dumps(reading(sensors={"temperature": 1e12})))
    assert reason == "field 'sensors.temperature': Input should be less than or equal to 1000000000"


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("cycle", -1, "greater than or equal to 0"),
    ("event_time", "1900-01-01T00:00:00Z", "outside the range"),
    ("event_time", "2026-01-01T00:00:00", "timezone"),
    ("device_id", "", "at least 1 character"),
    ("sensors", {}, "at least 1 item"),
])
def test_out_of_range(field: str, value: Any, fragment: str) -> None:
    reason = rejected(json.dumps(reading(**{field: value})))
    assert reason.startswith(f"field '{field}'") and fragment in reason


def test_negative_rul_is_out_of_range() -> None:
    assert "rul" in rejected(json.dumps(label(kind="rul", rul=-1)), parse_label)


def test_label_rules() -> None:
    assert "needs field 'rul'" in rejected(json.dumps(label(kind="rul")), parse_label)
    assert "only allowed with kind 'rul'" in rejected(json.dumps(label(rul=3)), parse_label)
    assert rejected(json.dumps(label(kind="explosion")), parse_label).startswith("field 'kind'")


@pytest.mark.parametrize("version", [0, 2, 99])
def test_unknown_schema_version(version: int) -> None:
    assert f"unknown schema version {version}" in rejected(json.dumps(reading(schema_version=version)))


def test_oversize_message() -> None:
    raw = json.dumps(reading(device_type="x" * MAX_EVENT_BYTES))
    assert "larger than the" in rejected(raw)


@pytest.mark.parametrize(("raw", "fragment"), [
    (b"{not json", "not valid JSON"), (b"\xff\xfe", "not valid JSON"), (b"[1, 2]", "expected a JSON object"),
    (None, "empty message"),
])
def test_invalid_json(raw: bytes | None, fragment: str) -> None:
    assert fragment in rejected(raw)
    assert fragment in rejected(raw, parse_label)

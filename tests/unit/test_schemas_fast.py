"""The readings' fast decoder (msgspec) and the pydantic model agree on every input.

The pydantic model is the contract (mlops/data/schemas.py, module docstring): the fast path may
only accept what it accepts, must build the very same Reading, and leaves everything else to it,
so that every dead letter carries pydantic's reason.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import to_json

from mlops.data.schemas import (
    MAX_SENSORS,
    PREDICTION_SCHEMA_VERSION,
    Reading,
    _describe,
    _fast_reading,
    encode_predictions,
    fast_readings,
    parse_reading,
)
from mlops.errors import ValidationError
from mlops.features.compute import FeatureSpec
from mlops.registry.loader import LoadedModel
from mlops.serve.api.models import predict_request


def reading(**changes: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"schema_version": 1, "device_id": "dev-0001", "device_type": "pump-a",
                             "event_time": "2026-01-01T00:00:00+00:00", "cycle": 4,
                             "sensors": {"temperature": 71.2, "vibration": 0.31}, "settings": {"load": 0.8}}
    event.update(changes)
    return event


def without(name: str) -> dict[str, Any]:
    event = reading()
    del event[name]
    return event


def pydantic_outcome(raw: bytes) -> Reading | str:
    """What the contract says of ``raw``: the Reading, or the reason."""
    try:
        return Reading.model_validate_json(raw)
    except PydanticValidationError as err:
        return _describe(err)
    except ValueError as err:
        return str(err)


def same_reading(fast: Reading, slow: Reading) -> None:
    assert fast == slow
    assert list(fast.__dict__) == list(slow.__dict__)
    assert [type(v) for v in fast.__dict__.values()] == [type(v) for v in slow.__dict__.values()]
    assert {k: type(v) for k, v in fast.sensors.items()} == {k: type(v) for k, v in slow.sensors.items()}
    assert {k: type(v) for k, v in fast.settings.items()} == {k: type(v) for k, v in slow.settings.items()}
    assert list(fast.sensors) == list(slow.sensors)
    assert fast.event_time.tzinfo is UTC and slow.event_time.tzinfo is UTC
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.model_dump_json() == slow.model_dump_json()
    assert fast.to_row() == slow.to_row()


# Valid readings in the forms producers send: the fast path must take these itself.
FAST_VALID = [
    reading(),
    reading(event_time="2026-01-01T00:00:00Z"),
    reading(event_time="2026-01-01T00:00:00.123456Z"),
    reading(event_time="2026-01-01T02:30:00+02:30"),
    reading(event_time="2026-01-01T00:00:00-05:00"),
    reading(event_time="1970-01-01T00:00:00Z"),
    reading(event_time="2199-12-31T23:59:59.999999Z"),
    reading(sensors={"temperature": 71, "vibration": -3}),  # integers are numbers
    reading(sensors={"t": 1e9, "u": -1e9, "v": 0.0, "w": -0.0, "x": 5e-324}),
    reading(sensors={"température": 1.0, "": 2.0}),
    reading(settings={}),
    without("settings"),
    reading(cycle=0),
    reading(cycle=2**62),
    reading(device_id="d" * 128, device_type="t" * 64),
    reading(device_id="é" * 128),  # characters, not bytes
    reading(sensors={f"s{i}": float(i) for i in range(MAX_SENSORS)}),
]

# Readings the fast path may leave to pydantic, valid or not.
OTHER = [
    reading(event_time=1_767_225_600), reading(event_time=1_767_225_600.5), reading(event_time="1767225600"),
    reading(event_time="2026-01-01 00:00:00Z"), reading(event_time="2026-01-01T00:00Z"),
    reading(event_time="2026-01-01T00:00:00.1234567Z"), reading(event_time="2026-01-01T00:00:00"),
    reading(event_time="2026-01-01"), reading(event_time="2026-01-01t00:00:00z"),
    reading(event_time="1969-12-31T23:59:59Z"), reading(event_time="2200-01-01T00:00:00Z"),
    reading(event_time="2026-01-01T00:00:60Z"), reading(event_time="2026-02-30T00:00:00Z"),
    reading(event_time="1970-01-01T00:30:00+01:00"), reading(event_time="2199-12-31T23:30:00-01:00"),
    reading(event_time="yesterday"), reading(event_time=True), reading(event_time=None), reading(event_time=1e20),
    reading(cycle=12.0), reading(cycle=1e2), reading(cycle=12.5), reading(cycle="12"), reading(cycle=True),
    reading(cycle=-1), reading(cycle=2**64), reading(cycle=None),
    reading(schema_version=1.0), reading(schema_version=True), reading(schema_version=2), reading(schema_version="1"),
    reading(device_id=""), reading(device_id="d" * 129), reading(device_id=7), reading(device_type="t" * 65),
    reading(sensors={}), reading(sensors={"t": "hot"}), reading(sensors={"t": True}), reading(sensors={"t": None}),
    reading(sensors={"t": 1e12}), reading(sensors={"t": -1.0000001e9}), reading(sensors={"t": [1]}),
    reading(sensors=[1.0]), reading(sensors=None), reading(settings=None), reading(settings={"load": "x"}),
    reading(sensors={f"s{i}": 1.0 for i in range(MAX_SENSORS + 1)}),
    reading(settings={f"s{i}": 1.0 for i in range(MAX_SENSORS + 1)}),
    reading(colour="red"), reading(colour="red", cycle="x", sensors={}),
    *(without(name) for name in ("schema_version", "device_id", "device_type", "event_time", "cycle", "sensors")),
]

RAW_OTHER = [
    b"{not json", b"\xff\xfe", b"[1, 2]", b"1", b"null", b'"x"', b"", b"{}",
    json.dumps(reading()).replace("71.2", "NaN").encode(),
    json.dumps(reading()).replace("71.2", "Infinity").encode(),
    json.dumps(reading()).replace("71.2", "1e999").encode(),
    json.dumps(reading()).replace("71.2", "-1e999").encode(),
    json.dumps(reading()).replace('"dev-0001"', '"dev-\\ud800"').encode(),
    json.dumps(reading()).replace('"dev-0001"', '"dev-\xff"').encode("latin-1"),
    json.dumps(reading()).encode() + b" x",
    json.dumps(reading()).encode().replace(b'"cycle": 4', b'"cycle": 4, "cycle": 5'),
    json.dumps(reading()).encode().replace(b'"temperature": 71.2', b'"temperature": 71.2, "temperature": 1'),
    json.dumps(reading()).encode().replace(b'"temperature": 71.2', b'"temperature": 71.2, "vibration": 7'),
    json.dumps(reading()).encode().replace(b'"settings": {"load": 0.8}', b'"settings": {"load": 0.8}, "settings": {}'),
    b"  " + json.dumps(reading()).encode() + b"\n",
]


def encoded(events: list[dict[str, Any]]) -> list[bytes]:
    return [json.dumps(event).encode() for event in events]


@pytest.mark.parametrize("raw", encoded(FAST_VALID))
def test_the_fast_path_takes_the_usual_readings_and_builds_pydantics_reading(raw: bytes) -> None:
    fast = _fast_reading(raw)
    slow = pydantic_outcome(raw)
    assert fast is not None, f"left to pydantic: {slow}"
    assert isinstance(slow, Reading), slow
    same_reading(fast, slow)
    same_reading(parse_reading(raw), slow)
    from_text = _fast_reading(raw.decode())  # a str value takes the fast path too
    assert from_text is not None
    same_reading(from_text, slow)


@pytest.mark.parametrize("raw", encoded(OTHER) + RAW_OTHER)
def test_on_anything_else_both_decoders_agree(raw: bytes) -> None:
    slow = pydantic_outcome(raw)
    fast = _fast_reading(raw)
    if fast is not None:  # the fast path may take a valid reading only, and must build the same one
        assert isinstance(slow, Reading), f"fast path accepted what pydantic refuses: {slow}"
        same_reading(fast, slow)
    if isinstance(slow, Reading):
        same_reading(parse_reading(raw), slow)
    else:
        with pytest.raises(ValidationError) as info:
            parse_reading(raw)
        assert info.value.reason == (slow if raw else "not valid JSON: EOF while parsing a value at line 1 column 0")


def test_the_fast_path_refuses_what_it_cannot_vouch_for() -> None:
    # Each of these is valid to pydantic but read differently by msgspec, or not at all.
    for event in (reading(event_time=1_767_225_600), reading(cycle=12.0), reading(event_time="2026-01-01 00:00:00Z")):
        raw = json.dumps(event).encode()
        assert _fast_reading(raw) is None
        assert isinstance(parse_reading(raw), Reading)


def test_a_dead_letter_reason_names_every_bad_field_as_before() -> None:
    with pytest.raises(ValidationError) as info:
        parse_reading(json.dumps(reading(cycle="x", sensors={"t": True})))
    assert info.value.reason == ("field 'cycle': Input should be a valid integer; "
                                 "field 'sensors.t': Input should be a valid number")


# ------------------------------------------------------------------------- REST predict bodies

MAX_BATCH = 20
BODY, _, _ = predict_request(MAX_BATCH)


def body_outcome(raw: bytes) -> list[Reading] | None:
    """What the API's pydantic body model makes of ``raw``: its readings, or None if it refuses."""
    try:
        body = BODY.validate_json(raw)
    except PydanticValidationError:
        return None
    return [body] if isinstance(body, Reading) else body


@pytest.mark.parametrize("events", [FAST_VALID[0], FAST_VALID[:1], FAST_VALID, FAST_VALID[:MAX_BATCH] * 1],
                         ids=["reading", "batch-of-1", "batch", "full-batch"])
def test_the_body_fast_path_takes_usual_bodies_and_builds_pydantics_readings(events: Any) -> None:
    raw = json.dumps(events).encode()
    fast, slow = fast_readings(raw, MAX_BATCH), body_outcome(raw)
    assert fast is not None and slow is not None
    assert len(fast) == len(slow) == (1 if isinstance(events, dict) else len(events))
    for one, other in zip(fast, slow, strict=True):
        same_reading(one, other)


@pytest.mark.parametrize("raw", [json.dumps([reading(), event]).encode() for event in OTHER]
                         + [json.dumps([reading()] * (MAX_BATCH + 1)).encode(), b"[]", b"[[]]", b"{}", b"[{}]",
                            b"[" + json.dumps(reading()).encode() + b",]", *RAW_OTHER])
def test_on_any_other_body_the_fast_path_takes_only_what_pydantic_takes(raw: bytes) -> None:
    fast, slow = fast_readings(raw, MAX_BATCH), body_outcome(raw)
    if fast is not None:
        assert slow is not None, "the fast path accepted a body the API's schema refuses"
        for one, other in zip(fast, slow, strict=True):
            same_reading(one, other)


def test_a_body_past_the_batch_limit_is_left_to_pydantic_which_refuses_it() -> None:
    raw = json.dumps([reading()] * (MAX_BATCH + 1)).encode()
    assert fast_readings(raw, MAX_BATCH) is None and body_outcome(raw) is None
    assert fast_readings(raw, MAX_BATCH + 1) is not None


# ---------------------------------------------------------------------------------- predictions

def old_prediction(reading: Reading, source: tuple[str, int, int], row: list[float], probability: float,
                   model: LoadedModel, scored_at: datetime) -> bytes:
    """The encoder the scorer used before msgspec (pydantic-core's to_json of a dict)."""
    topic, partition, offset = source
    return to_json({
        "schema_version": PREDICTION_SCHEMA_VERSION, "device_id": reading.device_id,
        "event_time": reading.event_time.isoformat(), "cycle": reading.cycle, "probability": probability,
        "decision": int(probability >= model.threshold), "model_name": model.name, "model_version": model.version,
        "features": dict(zip(model.spec.feature_names(), row, strict=True)),
        "source": {"topic": topic, "partition": partition, "offset": offset}, "scored_at": scored_at.isoformat(),
    })


def test_predictions_carry_the_same_keys_in_the_same_order_and_the_same_values() -> None:
    spec = FeatureSpec(("s-2", "s 3", "class"), window=5)  # names that are not Python identifiers
    model = LoadedModel("iot-failure", "7", "run", object(), spec, threshold=0.6)
    parsed = [parse_reading(json.dumps(reading(sensors={"s-2": 1.0, "s 3": 2.0, "class": 3.0}, cycle=c)))
              for c in range(4)]
    rng = np.random.default_rng(3)
    features = rng.normal(size=(4, len(spec.feature_names()))) * np.array([1e-9, 1.0, 1e12, 0.1] * 3 + [1.0])
    probabilities = np.array([0.0, 0.59999999, 0.6, 1.0])
    sources = [("iot.readings", 1, 10 + i) for i in range(4)]
    scored_at = datetime(2026, 1, 1, 0, 0, 1, 250, tzinfo=UTC)
    new = encode_predictions(parsed, sources, features, probabilities, model, scored_at)
    for i, raw in enumerate(new):
        old = old_prediction(parsed[i], sources[i], features[i].tolist(), float(probabilities[i]), model, scored_at)
        assert list(json.loads(raw)) == list(json.loads(old))
        assert list(json.loads(raw)["features"]) == spec.feature_names()
        assert json.loads(raw) == json.loads(old)
    assert [json.loads(raw)["decision"] for raw in new] == [0, 0, 1, 1]


def test_both_decoders_agree_on_seeded_mutations_of_valid_readings() -> None:
    """Random edits of valid readings (characters JSON cares about, digits, deletions): wherever the
    fast path takes the result, pydantic takes it too and builds the same Reading."""
    rng = np.random.default_rng(15)
    alphabet = [*b'0123456789.eE+-:TZ "{}[],tfnul\\', 0xC3, 0xFF]
    bases = encoded(FAST_VALID[:10])
    taken = refused = 0
    for _ in range(3000):
        raw = bytearray(bases[int(rng.integers(len(bases)))])
        for _edit in range(int(rng.integers(1, 4))):
            at = int(rng.integers(len(raw)))
            kind = int(rng.integers(3))
            if kind == 0:
                raw[at] = alphabet[int(rng.integers(len(alphabet)))]
            elif kind == 1:
                del raw[at]
            else:
                raw.insert(at, alphabet[int(rng.integers(len(alphabet)))])
        fast, slow = _fast_reading(bytes(raw)), pydantic_outcome(bytes(raw))
        if fast is not None:
            assert isinstance(slow, Reading), (bytes(raw), slow)
            same_reading(fast, slow)
            taken += 1
        elif not isinstance(slow, Reading):
            refused += 1
    assert taken > 200 and refused > 1000  # the mutations exercise both sides

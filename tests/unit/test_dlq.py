"""Dead-letter records: any input becomes a well-formed record; reasons map to stable kinds."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime

import pytest

from mlops.config import load_settings
from mlops.data.dlq import MAX_DLQ_VALUE_BYTES, DeadLetters, reason_kind
from mlops.data.schemas import MAX_EVENT_BYTES, parse_reading
from mlops.errors import ValidationError

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
GOOD = {"schema_version": 1, "device_id": "d1", "device_type": "pump", "event_time": "2026-05-01T00:00:00Z",
        "cycle": 1, "sensors": {"temp": 1.0}}


def _dead() -> DeadLetters:
    return DeadLetters(load_settings("local"), "unit-test", now=lambda: NOW)


def _reason(raw: bytes | None) -> str:
    with pytest.raises(ValidationError) as caught:
        parse_reading(raw)
    return caught.value.reason


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (None, "empty"),
        (b"{not json", "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_json"),
        (b'{"x": NaN}', "invalid_fields"),  # NaN is refused per field (unknown 'x', missing fields)
        (b"[1, 2]", "not_an_object"),
        (b"x" * (MAX_EVENT_BYTES + 1), "too_large"),
        (json.dumps({**GOOD, "schema_version": 9}).encode(), "unknown_version"),
        (json.dumps({**GOOD, "cycle": "many"}).encode(), "invalid_fields"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "device_id"}).encode(), "invalid_fields"),
    ],
)
def test_schema_reasons_map_to_their_kind(raw: bytes | None, kind: str) -> None:
    # Guards the coupling with mlops.data.schemas: if its messages change, the counters must not
    # silently lump everything into "invalid_fields".
    assert reason_kind(_reason(raw)) == kind


def test_record_keeps_original_bytes_key_reason_and_source() -> None:
    raw = b"\x00\x9f binary \xff"
    record = _dead().record(value=raw, key=b"dev-7", topic="iot.readings", partition=2, offset=912, reason="bad")
    assert base64.b64decode(record["value_b64"]) == raw
    assert base64.b64decode(record["key_b64"]) == b"dev-7"
    assert record["source"] == {"topic": "iot.readings", "partition": 2, "offset": 912}
    assert record["consumer"] == "unit-test" and record["reason"] == "bad" and record["time"] == NOW.isoformat()
    assert "value_truncated" not in record
    json.dumps(record)  # serialisable as it is


def test_record_of_missing_value_and_key() -> None:
    record = _dead().record(value=None, key=None, topic="t", partition=0, offset=0, reason="")
    assert record["value_b64"] is None and record["key_b64"] is None
    assert record["reason"] == "unspecified"


def test_huge_value_is_cut_with_size_and_digest() -> None:
    raw = bytes(range(256)) * (MAX_DLQ_VALUE_BYTES // 256 + 100)
    record = _dead().record(value=raw, key="k", topic="t", partition=0, offset=5, reason="big")
    assert record["value_truncated"] is True
    assert record["value_size"] == len(raw)
    assert record["value_sha256"] == hashlib.sha256(raw).hexdigest()
    assert base64.b64decode(record["value_b64"]) == raw[:MAX_DLQ_VALUE_BYTES]
    assert len(json.dumps(record)) < 1_000_000  # fits the broker's default record limit


def test_constructor_does_no_io_and_counts_start_empty() -> None:
    dead = _dead()
    assert dead.counts == {} and dead.total == 0
    dead.close()  # nothing to flush, no producer was ever created

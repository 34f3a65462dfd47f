"""Event schemas on Kafka, version 1. Documented in docs/events.md.

A **reading** (topic ``iot.readings``, key = device id)::

    {"schema_version": 1, "device_id": "dev-0001", "device_type": "pump-a",
     "event_time": "2026-11-21T10:00:00+00:00", "cycle": 412,
     "sensors": {"temperature": 71.2, "vibration": 0.31, ...},
     "settings": {"load": 0.8, ...}}

A **label** (topic ``iot.labels``, key = device id): ground truth that arrives late::

    {"schema_version": 1, "device_id": "dev-0001", "event_time": "...", "kind": "failure"}
    kind: "failure" | "maintenance" | "rul"; "rul" carries "rul": remaining useful life in cycles
    at event_time.

``event_time`` is an ISO-8601 timestamp with a timezone (or epoch seconds); it is stored as a UTC
``datetime``. ``cycle`` counts readings of the device since its last failure or maintenance.

Validation is strict and its error says which field and why: missing fields, unknown fields,
wrong types, NaN or infinite numbers, values outside the physical range and unknown schema
versions are all rejected with :class:`~mlops.errors.ValidationError`.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic import ValidationError as PydanticValidationError

from mlops.errors import ValidationError

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})
MAX_EVENT_BYTES = 64 * 1024
"""Readings and labels are small; anything larger is a poison message, not data."""
MAX_ABS_VALUE = 1e9
"""No sensor on a real machine reports beyond this; larger values are corrupt."""
MAX_SENSORS = 256
EARLIEST_EVENT_TIME = datetime(1970, 1, 1, tzinfo=UTC)
LATEST_EVENT_TIME = datetime(2200, 1, 1, tzinfo=UTC)
"""Event times outside [1970, 2200) are corrupt clocks, not data."""
_EPOCH_RANGE = (EARLIEST_EVENT_TIME.timestamp(), LATEST_EVENT_TIME.timestamp())
# What the validators below accept, for the OpenAPI schema of the REST API (which takes readings).
_EVENT_TIME_SCHEMA = {"anyOf": [
    {"type": "string", "format": "date-time", "pattern": "^(197[1-9]|19[89][0-9]|20[0-9]{2}|21[0-8][0-9]|219[0-8])-",
     "description": "with a timezone"},
    {"type": "number", "minimum": _EPOCH_RANGE[0], "exclusiveMaximum": _EPOCH_RANGE[1],
     "description": "epoch seconds"},
]}

# Strict numbers: JSON true/false and numeric strings are wrong types, not numbers; NaN, infinity
# and magnitudes beyond MAX_ABS_VALUE are corrupt. pydantic-core checks all of it natively, which
# matters because it runs for every reading on the scorer's hot path.
Number = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]
Measurements = Annotated[dict[str, Number], Field(max_length=MAX_SENSORS)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    schema_version: int = Field(json_schema_extra={"enum": list[Any](sorted(SUPPORTED_VERSIONS))})
    device_id: str = Field(min_length=1, max_length=128)
    event_time: Annotated[datetime, WithJsonSchema(_EVENT_TIME_SCHEMA)]

    @field_validator("schema_version", mode="before")
    @classmethod
    def _known_version(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be an integer, got {type(value).__name__}")
        if value not in SUPPORTED_VERSIONS:
            raise ValueError(f"unknown schema version {value} (supported: {sorted(SUPPORTED_VERSIONS)})")
        return value

    @field_validator("event_time", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("must be an ISO-8601 timestamp or epoch seconds, got a boolean")
        if isinstance(value, int | float):
            if not math.isfinite(value):
                raise ValueError("must be finite")
            if not _EPOCH_RANGE[0] <= value < _EPOCH_RANGE[1]:  # before fromtimestamp, which overflows on 1e20
                raise ValueError(f"epoch seconds {value} are outside the range [{EARLIEST_EVENT_TIME.year}, "
                                 f"{LATEST_EVENT_TIME.year})")
            return datetime.fromtimestamp(value, tz=UTC)
        return value

    @field_validator("event_time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a timezone (e.g. +00:00 or Z)")
        # replace() is much cheaper than astimezone() for the usual UTC input.
        value = value.astimezone(UTC) if value.utcoffset() else value.replace(tzinfo=UTC)
        if not EARLIEST_EVENT_TIME <= value < LATEST_EVENT_TIME:
            raise ValueError(f"{value.isoformat()} is outside the range [{EARLIEST_EVENT_TIME.year}, "
                             f"{LATEST_EVENT_TIME.year})")
        return value


class Reading(_Event):
    """One sensor reading of one device."""

    device_type: str = Field(min_length=1, max_length=64)
    cycle: int = Field(ge=0, strict=True)

    @field_validator("cycle", mode="before")
    @classmethod
    def _whole(cls, value: Any) -> Any:
        # JSON has one number type: 12.0 is the integer 12 (JSON Schema agrees); 12.5 and "12" are not.
        return int(value) if isinstance(value, float) and value.is_integer() else value
    sensors: Measurements = Field(min_length=1)
    settings: Measurements = Field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        """Flat row for the lake and for feature computation: sensors and settings become columns."""
        return {
            "device_id": self.device_id,
            "device_type": self.device_type,
            "event_time": self.event_time,
            "cycle": self.cycle,
            **self.sensors,
            **{f"setting_{key}" if not key.startswith("setting") else key: v for key, v in self.settings.items()},
        }


class Label(_Event):
    """Ground truth for one device at one time, published late."""

    kind: Literal["failure", "maintenance", "rul"]
    rul: Annotated[Number, Field(ge=0)] | None = None

    def model_post_init(self, __context: Any) -> None:
        if self.kind == "rul" and self.rul is None:
            raise ValueError("kind 'rul' needs field 'rul'")
        if self.kind != "rul" and self.rul is not None:
            raise ValueError(f"field 'rul' is only allowed with kind 'rul', not {self.kind!r}")

    def to_row(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "event_time": self.event_time, "kind": self.kind, "rul": self.rul}


def _describe(err: PydanticValidationError) -> str:
    parts = []
    for problem in err.errors():
        field = ".".join(str(p) for p in problem["loc"]) or "event"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "json_invalid":
            return f"not valid JSON: {message.removeprefix('Invalid JSON: ')}"
        if problem["type"] == "model_type":
            return "expected a JSON object"
        if problem["type"] == "missing":
            message = "missing"
        elif problem["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"field '{field}': {message}")
    return "; ".join(parts)


EventT = TypeVar("EventT", bound=_Event)


def _parse(model: type[EventT], raw: bytes | str | None) -> EventT:
    """Decode and validate in one pass (pydantic's JSON parser: several times faster than json.loads
    followed by validation, which matters on the scorer's hot path)."""
    if raw is None:
        raise ValidationError("empty message (no value)")
    if len(raw) > MAX_EVENT_BYTES:
        raise ValidationError(f"message is {len(raw)} bytes, larger than the {MAX_EVENT_BYTES}-byte limit")
    try:
        return model.model_validate_json(raw)
    except PydanticValidationError as err:
        raise ValidationError(_describe(err)) from err
    except ValueError as err:
        raise ValidationError(str(err)) from err


def parse_reading(raw: bytes | str | None) -> Reading:
    """Decode and validate one reading; raise ValidationError with a precise reason.

    NaN and Infinity are refused by the finiteness check of every number, naming the field."""
    return _parse(Reading, raw)


def parse_label(raw: bytes | str | None) -> Label:
    """Decode and validate one label event; raise ValidationError with a precise reason."""
    return _parse(Label, raw)


def encode(event: Reading | Label) -> bytes:
    """JSON bytes as they go on Kafka."""
    return event.model_dump_json(exclude_none=True).encode()

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

import json
import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
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

# Strict numbers: JSON true/false and numeric strings are wrong types, not numbers.
Number = Annotated[float, Field(strict=True)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    schema_version: int
    device_id: str = Field(min_length=1, max_length=128)
    event_time: datetime

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
            return datetime.fromtimestamp(value, tz=UTC)
        return value

    @field_validator("event_time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a timezone (e.g. +00:00 or Z)")
        value = value.astimezone(UTC)
        if not EARLIEST_EVENT_TIME <= value < LATEST_EVENT_TIME:
            raise ValueError(f"{value.isoformat()} is outside the range [{EARLIEST_EVENT_TIME.year}, "
                             f"{LATEST_EVENT_TIME.year})")
        return value


def _finite_map(name: str, values: dict[str, float]) -> dict[str, float]:
    if len(values) > MAX_SENSORS:
        raise ValueError(f"has {len(values)} entries, at most {MAX_SENSORS} allowed")
    for key, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"{name}.{key} is {value}: must be a finite number")
        if abs(value) > MAX_ABS_VALUE:
            raise ValueError(f"{name}.{key} is {value}: outside the range ±{MAX_ABS_VALUE:g}")
    return values


class Reading(_Event):
    """One sensor reading of one device."""

    device_type: str = Field(min_length=1, max_length=64)
    cycle: int = Field(ge=0, strict=True)
    sensors: dict[str, Number] = Field(min_length=1)
    settings: dict[str, Number] = {}

    @field_validator("sensors")
    @classmethod
    def _sensors_finite(cls, value: dict[str, float]) -> dict[str, float]:
        return _finite_map("sensors", value)

    @field_validator("settings")
    @classmethod
    def _settings_finite(cls, value: dict[str, float]) -> dict[str, float]:
        return _finite_map("settings", value)

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
    rul: Number | None = Field(default=None, ge=0)

    @field_validator("rul")
    @classmethod
    def _rul_finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError(f"is {value}: must be a finite number")
        return value

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
        if problem["type"] == "missing":
            message = "missing"
        elif problem["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"field '{field}': {message}")
    return "; ".join(parts)


def _decode(raw: bytes | str | None) -> dict[str, Any]:
    if raw is None:
        raise ValidationError("empty message (no value)")
    if len(raw) > MAX_EVENT_BYTES:
        raise ValidationError(f"message is {len(raw)} bytes, larger than the {MAX_EVENT_BYTES}-byte limit")
    try:
        # NaN and Infinity are not JSON; Python's parser would accept them, so refuse them here.
        data = json.loads(raw, parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValidationError(f"not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValidationError(f"expected a JSON object, got {type(data).__name__}")
    return data


def _reject_constant(name: str) -> float:
    raise ValidationError(f"not valid JSON: {name} is not a number")


def parse_reading(raw: bytes | str | None) -> Reading:
    """Decode and validate one reading; raise ValidationError with a precise reason."""
    data = _decode(raw)
    try:
        return Reading.model_validate(data)
    except PydanticValidationError as err:
        raise ValidationError(_describe(err)) from err
    except ValueError as err:
        raise ValidationError(str(err)) from err


def parse_label(raw: bytes | str | None) -> Label:
    """Decode and validate one label event; raise ValidationError with a precise reason."""
    data = _decode(raw)
    try:
        return Label.model_validate(data)
    except PydanticValidationError as err:
        raise ValidationError(_describe(err)) from err
    except ValueError as err:
        raise ValidationError(str(err)) from err


def encode(event: Reading | Label) -> bytes:
    """JSON bytes as they go on Kafka."""
    return event.model_dump_json(exclude_none=True).encode()

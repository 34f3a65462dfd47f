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

The other messages of the loop have their contract here too, each with its encoder and decoder:

- a **prediction** (topic ``iot.predictions``, version :data:`PREDICTION_SCHEMA_VERSION`):
  :func:`encode_predictions` (the scorer, one batch at a time) and :func:`parse_prediction`;
- a **model event** (topic ``mlops.model-events``, version :data:`MODEL_EVENT_SCHEMA_VERSION`):
  :meth:`ModelEvent.encode` and :meth:`ModelEvent.decode`;
- a **lake row** (one row of the lake's Parquet files): :func:`lake_row` and :func:`parse_lake_row`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import to_json

from mlops.errors import ValidationError

__all__ = [
    "EARLIEST_EVENT_TIME",
    "LAKE_META_COLUMNS",
    "LATEST_EVENT_TIME",
    "MAX_ABS_VALUE",
    "MAX_EVENT_BYTES",
    "MAX_SENSORS",
    "MODEL_EVENT_SCHEMA_VERSION",
    "PREDICTION_SCHEMA_VERSION",
    "PREDICTION_VERSIONS",
    "SCHEMA_VERSION",
    "SUPPORTED_VERSIONS",
    "EventT",
    "Label",
    "Measurements",
    "ModelEvent",
    "Number",
    "Position",
    "Prediction",
    "Reading",
    "ScoringModel",
    "encode",
    "encode_predictions",
    "lake_row",
    "parse_label",
    "parse_lake_row",
    "parse_prediction",
    "parse_reading",
]

SCHEMA_VERSION = 1
"""Version of readings and labels."""
SUPPORTED_VERSIONS = frozenset({SCHEMA_VERSION})
PREDICTION_SCHEMA_VERSION = 1
PREDICTION_VERSIONS = frozenset({PREDICTION_SCHEMA_VERSION})
MODEL_EVENT_SCHEMA_VERSION = 1
LAKE_META_COLUMNS = ("_topic", "_partition", "_offset")
"""Where a lake row was read from, next to the event's own columns."""
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


# ------------------------------------------------------------------------------------ predictions

@dataclass(frozen=True)
class Position:
    """Where a record was read: topic, partition, offset."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Prediction:
    """One record of the predictions topic (docs/contracts.md, "Predictions")."""

    device_id: str
    event_time: datetime
    probability: float
    decision: int
    model_name: str
    model_version: str
    features: dict[str, float]
    source: Position | None = None
    """The reading this prediction scored."""
    position: Position | None = None
    """This prediction's own record on the predictions topic."""


class _FeatureNames(Protocol):
    def feature_names(self) -> list[str]: ...


class ScoringModel(Protocol):
    """What a prediction records of the model that made it (a :class:`~mlops.registry.loader.LoadedModel`)."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def threshold(self) -> float: ...
    @property
    def spec(self) -> _FeatureNames: ...


def encode_predictions(
    readings: Sequence[Reading],
    sources: Sequence[tuple[str, int, int]],
    features: np.ndarray,
    probabilities: np.ndarray,
    model: ScoringModel,
    scored_at: datetime,
) -> list[bytes]:
    """One JSON prediction per reading, in order; ``sources`` are (topic, partition, offset).

    pydantic-core's serialiser: about five times faster than ``json.dumps`` on the scorer's hot path.
    """
    names = model.spec.feature_names()
    scored = scored_at.isoformat()
    rows = features.tolist()  # one conversion for the batch: plain floats serialise fast
    out = []
    for reading, (topic, partition, offset), row, probability in zip(
        readings, sources, rows, probabilities.tolist(), strict=True
    ):
        out.append(to_json({
            "schema_version": PREDICTION_SCHEMA_VERSION,
            "device_id": reading.device_id,
            "event_time": reading.event_time.isoformat(),
            "cycle": reading.cycle,
            "probability": probability,
            "decision": int(probability >= model.threshold),
            "model_name": model.name,
            "model_version": model.version,
            "features": dict(zip(names, row, strict=True)),
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "scored_at": scored,
        }))
    return out


def _require(data: dict[str, Any], name: str, kinds: type | tuple[type, ...]) -> Any:
    if name not in data:
        raise ValidationError(f"field '{name}': missing")
    value = data[name]
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise ValidationError(f"field '{name}': expected {kinds}, got a boolean")
    if not isinstance(value, kinds):
        raise ValidationError(f"field '{name}': expected {kinds}, got {type(value).__name__}")
    return value


def parse_prediction(value: bytes | None, position: Position | None = None) -> Prediction:
    """Parse one predictions-topic record; raises :class:`ValidationError` saying which field is wrong."""
    if not value:
        raise ValidationError("empty message")
    try:
        data = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValidationError(f"not valid JSON: {err}") from err
    if not isinstance(data, dict):
        raise ValidationError(f"expected a JSON object, got {type(data).__name__}")
    if data.get("schema_version") not in PREDICTION_VERSIONS:
        raise ValidationError(f"unknown schema version {data.get('schema_version')!r} "
                              f"(supported: {sorted(PREDICTION_VERSIONS)})")
    try:
        event_time = datetime.fromisoformat(_require(data, "event_time", str))
    except ValueError as err:
        raise ValidationError(f"field 'event_time': not an ISO-8601 timestamp: {err}") from err
    if event_time.tzinfo is None:
        raise ValidationError("field 'event_time': must carry a timezone")
    probability = float(_require(data, "probability", (int, float)))
    if not (0.0 <= probability <= 1.0):
        raise ValidationError(f"field 'probability': {probability} is outside [0, 1]")
    features = _require(data, "features", dict)
    for name, number in features.items():
        if isinstance(number, bool) or not isinstance(number, int | float) or not math.isfinite(number):
            raise ValidationError(f"field 'features.{name}': {number!r} is not a finite number")
    source = data.get("source")
    reading = None
    if isinstance(source, dict) and {"topic", "partition", "offset"} <= source.keys():
        reading = Position(str(source["topic"]), int(source["partition"]), int(source["offset"]))
    return Prediction(
        device_id=str(_require(data, "device_id", str)),
        event_time=event_time.astimezone(UTC),
        probability=probability,
        decision=int(_require(data, "decision", int)),
        model_name=str(_require(data, "model_name", str)),
        model_version=str(_require(data, "model_version", (str, int))),
        features={str(k): float(v) for k, v in features.items()},
        source=reading,
        position=position,
    )


# ----------------------------------------------------------------------------------- model events

@dataclass(frozen=True)
class ModelEvent:
    """A promotion or rollback on ``mlops.model-events`` (compacted, key = registered model name)::

        {"schema_version": 1, "model": "iot-failure", "action": "promote", "version": "7",
         "previous_version": "6", "alias": "champion", "time": "2026-11-21T10:00:00+00:00",
         "actor": "loop", "reason": "drift window 42: 0.71 of features drifted"}

    Consumers (scorer, API) treat the event as a hint and re-read the alias from the registry,
    which stays the source of truth; polling the registry is the fallback.
    """

    model: str
    action: Literal["promote", "rollback"]
    version: str
    previous_version: str | None = None
    alias: str = "champion"
    actor: str = "unknown"
    reason: str = ""
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    schema_version: int = MODEL_EVENT_SCHEMA_VERSION

    def encode(self) -> bytes:
        """JSON bytes as they go on Kafka."""
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> ModelEvent:
        """Decode one record; raise :class:`ValidationError` when it is not a model event."""
        try:
            data = json.loads(raw or b"")
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as err:
            raise ValidationError(f"model event is not valid: {err}") from err


# --------------------------------------------------------------------------------------- lake rows

def lake_row(event: Reading | Label, topic: str, partition: int, offset: int) -> dict[str, Any]:
    """The lake's row of an event read at ``topic``/``partition``/``offset``: ``to_row()`` plus
    :data:`LAKE_META_COLUMNS`."""
    return {**event.to_row(), "_topic": topic, "_partition": partition, "_offset": offset}


_READING_COLUMNS = frozenset({"device_id", "device_type", "event_time", "cycle"})


def _null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def parse_lake_row(row: Mapping[str, Any]) -> tuple[Reading | Label, Position]:
    """The event and its source position back from a lake row (a readings or a labels row).

    A reading's ``setting*`` columns become its settings under their column names, the other
    columns its sensors, so ``lake_row(*parse_lake_row(row))`` is ``row`` again.
    """
    # A Parquet file holds the union of its rows' columns: another device type's sensor, or a
    # label's rul, is null (NaN through pandas) in this row, which means "not measured".
    values = {k: v for k, v in row.items() if k not in LAKE_META_COLUMNS and not _null(v)}
    try:
        position = Position(str(row["_topic"]), int(row["_partition"]), int(row["_offset"]))
        event: Reading | Label
        if "kind" in values:
            event = Label(schema_version=SCHEMA_VERSION, device_id=values["device_id"],
                          event_time=values["event_time"], kind=values["kind"], rul=values.get("rul"))
        else:
            measured = {k: v for k, v in values.items() if k not in _READING_COLUMNS}
            event = Reading(
                schema_version=SCHEMA_VERSION, device_id=values["device_id"], device_type=values["device_type"],
                event_time=values["event_time"], cycle=values["cycle"],
                sensors={k: v for k, v in measured.items() if not k.startswith("setting")},
                settings={k: v for k, v in measured.items() if k.startswith("setting")},
            )
    except KeyError as err:
        raise ValidationError(f"lake row: column {err.args[0]!r} is missing") from err
    except PydanticValidationError as err:
        raise ValidationError(f"lake row: {_describe(err)}") from err
    except ValueError as err:
        raise ValidationError(f"lake row: {err}") from err
    return event, position

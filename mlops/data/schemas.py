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

Two decoders, one contract. The pydantic models (:class:`Reading`, :class:`Label`) are the
contract: what they accept is valid, and the reason they give for what they refuse is the reason
a dead letter carries. The scorer's hot path decodes readings with msgspec first (a typed
``Struct`` with the same constraints, about eight times faster than pydantic's JSON validation
followed by model construction): a reading msgspec accepts, and whose time passes the same
checks, becomes the same :class:`Reading` pydantic would have built. Anything msgspec refuses, or
accepts in a form it might not read as pydantic does, goes to the pydantic model, which either
accepts it (an epoch-seconds time, a cycle written ``12.0``) or refuses it with its reason. So
the reasons are pydantic's by construction, for every invalid input, including those with more
than one bad field (pydantic names every one; msgspec stops at the first), and
``tests/unit/test_schemas_fast.py`` checks that both decoders agree on valid and invalid inputs.

The other messages of the loop have their contract here too, each with its encoder and decoder:

- a **prediction** (topic ``iot.predictions``, version :data:`PREDICTION_SCHEMA_VERSION`):
  :func:`encode_predictions` (the scorer, one batch at a time) and :func:`parse_prediction`;
- a **model event** (topic ``mlops.model-events``, version :data:`MODEL_EVENT_SCHEMA_VERSION`):
  :meth:`ModelEvent.encode` and :meth:`ModelEvent.decode`;
- a **lake row** (one row of the lake's Parquet files): :func:`lake_row` and :func:`parse_lake_row`.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol, TypeVar

import msgspec
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic import ValidationError as PydanticValidationError

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
    "fast_readings",
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

# ------------------------------------------------------------------ the readings' fast decoder

# The same constraints as Reading's fields, for msgspec. A float field takes JSON integers (as
# pydantic's strict float does) and refuses booleans, strings, NaN and infinity (msgspec's JSON
# parser refuses the NaN and Infinity literals, and the bounds refuse a 1e999 that overflows).
_WireNumber = Annotated[float, msgspec.Meta(ge=-MAX_ABS_VALUE, le=MAX_ABS_VALUE)]
_WireMeasurements = Annotated[dict[str, _WireNumber], msgspec.Meta(max_length=MAX_SENSORS)]


class _WireReading(msgspec.Struct, forbid_unknown_fields=True):
    schema_version: int
    device_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    device_type: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    event_time: str | float  # parsed below: msgspec rounds a 7th fractional digit, pydantic cuts it
    cycle: Annotated[int, msgspec.Meta(ge=0)]
    sensors: Annotated[dict[str, _WireNumber], msgspec.Meta(min_length=1, max_length=MAX_SENSORS)]
    settings: _WireMeasurements | msgspec.UnsetType = msgspec.UNSET


_WIRE_READING = msgspec.json.Decoder(_WireReading)
# The timestamp forms the fast path parses itself (``datetime.fromisoformat`` reads them as
# pydantic does); any other form, epoch seconds included, is left to pydantic.
_PLAIN_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)\Z", re.ASCII)
_match_time = _PLAIN_TIME.match
_ALL_READING_FIELDS = frozenset(Reading.model_fields)
_READING_FIELDS_NO_SETTINGS = _ALL_READING_FIELDS - {"settings"}
_new_object = object.__new__
_set = object.__setattr__


def _fast_reading(raw: bytes | str) -> Reading | None:
    """The reading msgspec decodes from ``raw``, or None to leave ``raw`` to the pydantic model."""
    try:
        wire = _WIRE_READING.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):  # invalid UTF-8 in a string
        return None
    return _reading_of(wire)


_WIRE_BODY = msgspec.json.Decoder(_WireReading | list[_WireReading])


def fast_readings(raw: bytes, max_batch: int) -> list[Reading] | None:
    """The readings of a REST predict body (one reading, or an array of 1..``max_batch``) that msgspec
    decodes, or None to leave the body to the pydantic model, which accepts it or says why not."""
    try:
        wire = _WIRE_BODY.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return None
    wires = wire if isinstance(wire, list) else [wire]
    if not 1 <= len(wires) <= max_batch:
        return None
    readings = []
    for one in wires:
        reading = _reading_of(one)
        if reading is None:
            return None
        readings.append(reading)
    return readings


def _reading_of(wire: _WireReading) -> Reading | None:
    """The :class:`Reading` pydantic would build from ``wire``, or None where only pydantic can say.

    Builds it exactly as pydantic's validation would (same field values and types, same
    ``model_fields_set``) without running it again: that construction is the cost.
    """
    text = wire.event_time
    if wire.schema_version not in SUPPORTED_VERSIONS or not isinstance(text, str) or _match_time(text) is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:  # e.g. February 30th: pydantic says why
        return None
    if when.tzinfo is not UTC:  # fromisoformat gives the UTC singleton for Z and +00:00; replace() is slow
        when = when.astimezone(UTC) if when.utcoffset() else when.replace(tzinfo=UTC)
    if not EARLIEST_EVENT_TIME <= when < LATEST_EVENT_TIME:
        return None
    settings = wire.settings
    reading: Reading = _new_object(Reading)
    # Field order as pydantic's: the inherited fields first.
    _set(reading, "__dict__", {
        "schema_version": wire.schema_version, "device_id": wire.device_id, "event_time": when,
        "device_type": wire.device_type, "cycle": wire.cycle, "sensors": wire.sensors,
        "settings": {} if settings is msgspec.UNSET else settings,
    })
    _set(reading, "__pydantic_fields_set__",
         set(_READING_FIELDS_NO_SETTINGS if settings is msgspec.UNSET else _ALL_READING_FIELDS))
    _set(reading, "__pydantic_extra__", None)
    _set(reading, "__pydantic_private__", None)
    return reading


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

    msgspec decodes the valid ones; whatever it does not accept is validated by the pydantic
    model, whose reasons are the contract (module docstring). NaN and Infinity are refused by the
    finiteness check of every number, naming the field."""
    if raw is not None and len(raw) <= MAX_EVENT_BYTES:
        reading = _fast_reading(raw)
        if reading is not None:
            return reading
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


class _WireSource(msgspec.Struct):
    topic: str
    partition: int
    offset: int


class _WirePrediction(msgspec.Struct):
    """A prediction record's keys in the order of docs/contracts.md ("Predictions")."""

    schema_version: int
    device_id: str
    event_time: str
    cycle: int
    probability: float
    decision: int
    model_name: str
    model_version: str
    features: msgspec.Struct
    source: _WireSource
    scored_at: str


_ENCODER = msgspec.json.Encoder()


@functools.lru_cache(maxsize=16)
def _features_struct(names: tuple[str, ...]) -> type[msgspec.Struct]:
    """A Struct that encodes one feature row as ``{name: value}`` in ``names`` order.

    Positional fields ``f0..fn`` renamed to the feature names, so any name encodes (not only
    Python identifiers); building it from a row is one call, much cheaper than a dict.
    """
    fields = [f"f{i}" for i in range(len(names))]
    return msgspec.defstruct("FeatureRow", [(f, float) for f in fields], rename=dict(zip(fields, names, strict=True)))


def encode_predictions(
    readings: Sequence[Reading],
    sources: Sequence[tuple[str, int, int]],
    features: np.ndarray,
    probabilities: np.ndarray,
    model: ScoringModel,
    scored_at: datetime,
) -> list[bytes]:
    """One JSON prediction per reading, in order; ``sources`` are (topic, partition, offset).

    msgspec Structs: a third of the cost of pydantic-core's ``to_json`` of a dict on the scorer's
    hot path. Floats are written as the shortest text that reads back as the same float, as
    before (a NaN, which finite sensor values cannot produce, would be written ``null``).
    """
    row_of = _features_struct(tuple(model.spec.feature_names()))
    scored = scored_at.isoformat()
    threshold, name, version = model.threshold, model.name, model.version
    rows = features.tolist()  # one conversion for the batch: plain floats encode fast
    encode = _ENCODER.encode
    return [
        encode(_WirePrediction(
            PREDICTION_SCHEMA_VERSION, reading.device_id, reading.event_time.isoformat(), reading.cycle,
            probability, int(probability >= threshold), name, version, row_of(*row),
            _WireSource(topic, partition, offset), scored,
        ))
        for reading, (topic, partition, offset), row, probability in zip(
            readings, sources, rows, probabilities.tolist(), strict=True
        )
    ]


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

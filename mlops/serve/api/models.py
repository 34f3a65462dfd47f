"""Request and response bodies of the REST API (pydantic); the OpenAPI schema is built from these.

Readings are validated with the stream's own schema (:class:`mlops.data.schemas.Reading`), so the
API accepts exactly what the scorer accepts on ``iot.readings``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter

from mlops.data.schemas import Reading

__all__ = ["AUTH", "DEVICE_ERRORS", "DEVICE_ID_LIMITS", "ERRORS", "NOT_READY", "VERSION_MAX_DIGITS", "VERSION_PATTERN",
           "ChangeResponse", "DevicePredictResponse", "ErrorItem", "ErrorResponse", "ModelResponse", "PredictResponse",
           "Prediction", "PromoteRequest", "RollbackRequest", "StatusResponse", "predict_body", "predict_request",
           "with_sensors"]


class _Strict(BaseModel):
    # Strict types too: the schema says boolean and string, so "yes" and 1 are refused, not coerced.
    model_config = ConfigDict(extra="forbid", strict=True)


def _shape(value: Any) -> str:
    # Route the body to one branch, so errors name the fields of that branch only.
    return "batch" if isinstance(value, list) else "reading"


def predict_body(max_batch: int) -> Any:
    """The body of ``POST /v1/predict``: one reading, or a JSON array of 1..max_batch readings."""
    batch = Annotated[list[Reading], Field(min_length=1, max_length=max_batch)]
    return Annotated[
        Annotated[Reading, Tag("reading")] | Annotated[batch, Tag("batch")],
        Discriminator(_shape),
    ]


def predict_request(max_batch: int) -> tuple[TypeAdapter[Any], dict[str, Any], dict[str, Any]]:
    """The validator of the ``POST /v1/predict`` body, its OpenAPI ``requestBody``, and the schemas
    that refers to (for ``components.schemas``).

    The API validates the raw bytes with ``validate_json`` (one pass in pydantic-core, no
    intermediate Python objects), so FastAPI does not see the body and the schema is declared here.
    """
    adapter: TypeAdapter[Any] = TypeAdapter(predict_body(max_batch))
    schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    body = {"required": True, "content": {"application/json": {"schema": schema}},
            "description": f"One reading, or a JSON array of 1..{max_batch} readings (the stream's schema)."}
    return adapter, {"requestBody": body}, definitions


def with_sensors(definitions: dict[str, Any], sensors: Sequence[str]) -> dict[str, Any]:
    """The predict body's schemas for a champion that needs ``sensors``: a reading without one of
    them is refused (422), so the schema requires them, and says so again when a swap changes them."""
    reading = copy.deepcopy(definitions["Reading"])
    measured = reading["properties"]["sensors"]
    measured["properties"] = {name: measured["additionalProperties"] for name in sensors}
    measured["required"] = list(sensors)
    measured["minProperties"] = max(measured.get("minProperties", 0), len(sensors))
    measured["description"] = f"Must include the serving model's sensors {list(sensors)}; others are ignored."
    return {**definitions, "Reading": reading}


class Prediction(BaseModel):
    device_id: str
    event_time: str
    cycle: int
    probability: float = Field(ge=0, le=1, description="Probability that the device fails within the horizon.")
    decision: int = Field(ge=0, le=1, description="1 when probability >= the model's decision threshold.")


class PredictResponse(BaseModel):
    model_name: str
    model_version: str
    predictions: list[Prediction] = Field(description="One per reading, in the order of the request.")


def _device_id_limits() -> dict[str, int]:
    # The stream schema's bounds on device_id: the path accepts exactly the ids a reading may carry.
    limits: dict[str, int] = {}
    for constraint in Reading.model_fields["device_id"].metadata:
        for key in ("min_length", "max_length"):
            if hasattr(constraint, key):
                limits[key] = getattr(constraint, key)
    return limits


DEVICE_ID_LIMITS = _device_id_limits()


class DevicePredictResponse(BaseModel):
    model_name: str
    model_version: str
    device_id: str
    features_time: str = Field(description="Event time of the reading whose features were scored "
                                           "(the online store keeps whole seconds).")
    probability: float = Field(ge=0, le=1, description="Probability that the device fails within the horizon.")
    decision: int = Field(ge=0, le=1, description="1 when probability >= the model's decision threshold.")


class ModelResponse(BaseModel):
    name: str
    version: str
    run_id: str | None
    threshold: float
    feature_spec: dict[str, Any]
    metrics: dict[str, float] = Field(description="Validation metrics of the version's training run.")
    lineage: dict[str, str] = Field(description="Trigger, reason, git commit and lineage.* tags.")
    aliases: list[str]
    loaded_at: str


class ErrorItem(BaseModel):
    field: str = Field(description="Where the problem is, e.g. 'body[3].sensors.s2'.")
    message: str
    type: str


class ErrorResponse(BaseModel):
    error: str
    detail: list[ErrorItem] = []


class StatusResponse(BaseModel):
    status: str
    model_version: str | None = None


# Registry versions count from 1; one spelling per version (no leading zeros), because aliases and
# the audit trail compare versions as strings. At most 18 digits: the registry stores versions as
# 64-bit integers, and MLflow answers a larger one with a 500 that its client retries for minutes
# (a promote of version 9223372036854775808 hung for 4 minutes); 18 digits always fit.
VERSION_MAX_DIGITS = 18
VERSION_PATTERN = rf"^[1-9][0-9]{{0,{VERSION_MAX_DIGITS - 1}}}$"


class PromoteRequest(_Strict):
    version: str = Field(min_length=1, max_length=VERSION_MAX_DIGITS, pattern=VERSION_PATTERN)
    reason: str = Field(min_length=1, max_length=1000)
    force: bool = Field(False, description="Skip the evaluation gate.")


class RollbackRequest(_Strict):
    to_version: str | None = Field(None, min_length=1, max_length=VERSION_MAX_DIGITS, pattern=VERSION_PATTERN,
                                   description="Default: the champion before the current one.")
    reason: str = Field(min_length=1, max_length=1000)


class ChangeResponse(BaseModel):
    action: str
    model: str
    version: str
    previous_version: str | None
    changed: bool
    event_id: int
    event_published: bool
    gate: dict[str, Any] | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed request."},
    413: {"model": ErrorResponse, "description": "Request body larger than the batch limit allows."},
    415: {"model": ErrorResponse, "description": "The body is not declared as JSON (Content-Type)."},
    422: {"model": ErrorResponse, "description": "Validation failed: `detail` names each field and why."},
}
NOT_READY: dict[int | str, dict[str, Any]] = {503: {"model": ErrorResponse, "description": "No model loaded yet."}}
DEVICE_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "The online store holds no features for this device."},
    422: {"model": ErrorResponse, "description": "Bad device id: `detail` says why."},
    503: {"model": ErrorResponse,
          "description": "No model loaded yet, or the online store cannot serve this model's features."},
}
AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No API key (header X-API-Key)."},
    403: {"model": ErrorResponse, "description": "Wrong API key."},
    404: {"model": ErrorResponse, "description": "Unknown model version."},
    409: {"model": ErrorResponse, "description": "Refused: the evaluation gate or the audit trail says no."},
    503: {"model": ErrorResponse, "description": "The registry or the audit database cannot be reached."},
}

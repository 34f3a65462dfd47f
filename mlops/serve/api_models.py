"""Request and response bodies of the REST API (pydantic); the OpenAPI schema is built from these.

Readings are validated with the stream's own schema (:class:`mlops.data.schemas.Reading`), so the
API accepts exactly what the scorer accepts on ``iot.readings``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from mlops.data.schemas import Reading


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class PromoteRequest(_Strict):
    version: str = Field(min_length=1, max_length=32, pattern=r"^[0-9]+$")
    reason: str = Field(min_length=1, max_length=1000)
    force: bool = Field(False, description="Skip the evaluation gate.")


class RollbackRequest(_Strict):
    to_version: str | None = Field(None, min_length=1, max_length=32, pattern=r"^[0-9]+$",
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
    422: {"model": ErrorResponse, "description": "Validation failed: `detail` names each field and why."},
}
NOT_READY: dict[int | str, dict[str, Any]] = {503: {"model": ErrorResponse, "description": "No model loaded yet."}}
AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "No API key (header X-API-Key)."},
    403: {"model": ErrorResponse, "description": "Wrong API key."},
    404: {"model": ErrorResponse, "description": "Unknown model version."},
    409: {"model": ErrorResponse, "description": "Refused: the evaluation gate or the audit trail says no."},
}

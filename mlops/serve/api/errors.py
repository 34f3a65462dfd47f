"""One error body for every failure the API answers (:class:`~mlops.serve.api.models.ErrorResponse`):
the handlers here turn FastAPI's and Starlette's exceptions into it, naming each bad field."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mlops.log import get_logger
from mlops.serve.api.models import ErrorResponse

__all__ = ["UnprocessableError", "error", "install_error_handlers"]

log = get_logger(__name__)


class UnprocessableError(HTTPException):
    """A 422 for field-level problems found after validation; ``detail`` names each field."""

    def __init__(self, detail: list[dict[str, str]]) -> None:
        super().__init__(422, detail)


def error(status: int, error: str, detail: list[dict[str, str]] | None = None) -> JSONResponse:
    """The error body with ``status``."""
    return JSONResponse(ErrorResponse(error=error, detail=detail or []).model_dump(), status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Answer validation errors, HTTP errors and anything unexpected with the error body."""
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)


def _field(loc: tuple[Any, ...]) -> str:
    parts = list(loc)
    if len(parts) > 1 and parts[0] == "body" and parts[1] in ("reading", "batch"):
        del parts[1]  # the union branch's tag is ours, not the client's
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    detail = []
    for problem in exc.errors():
        message = str(problem.get("msg", "")).removeprefix("Value error, ")
        kind = str(problem.get("type", ""))
        if kind == "json_invalid":
            message = f"not valid JSON: {problem.get('ctx', {}).get('error', message)}"
        elif kind == "missing":
            message = "field required"
        elif kind == "extra_forbidden":
            message = "unknown field"
        detail.append({"field": _field(tuple(problem.get("loc", ()))), "message": message, "type": kind})
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in detail[:5])
    return error(422, f"invalid request: {summary}", detail)


async def _on_http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.detail, list):  # field-level problems found after validation (e.g. a missing sensor)
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in exc.detail[:5])
        return error(exc.status_code, f"invalid request: {summary}", exc.detail)
    if exc.status_code == 400 and str(exc.detail).startswith("There was an error parsing the body"):
        # FastAPI's own message for a body that is not UTF-8 or not decodable: say which field and why.
        detail = [{"field": "body", "message": "not valid JSON (undecodable bytes)", "type": "json_invalid"}]
        return error(400, "invalid request: body: not valid JSON (undecodable bytes)", detail)
    response = error(exc.status_code, str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", error=exc)
    return error(500, f"internal error: {type(exc).__name__}")

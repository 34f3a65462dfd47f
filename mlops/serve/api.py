"""The REST API (FastAPI): score readings with the champion, show it, promote and roll back.

    POST /v1/predict        one reading or a JSON array of readings (the stream's schema)
    POST /v1/predict/device/{device_id}   a device's latest features from the Feast online store
    GET  /v1/model          the champion: version, run id, metrics, lineage summary
    POST /v1/promote        move the champion alias (API key; runs the evaluation gate unless forced)
    POST /v1/rollback       back to the previous champion or a given version (API key)
    GET  /healthz /readyz   alive / a model is loaded
    GET  /metrics           Prometheus

Features come from the shared kernel through :class:`~mlops.features.state.DeviceWindows`: the
readings of one request are the history, per device in event-time order (a single reading is a
one-reading window). The rows of concurrent requests are scored together, one model call per
batch on a scoring thread (:class:`~mlops.serve.batcher.BatchScorer`). The model is held in one
reference that a background thread replaces when the :class:`~mlops.registry.watcher.ModelWatcher`
has a newly promoted, smoke-tested version ready; a request reads the reference once, so a swap
never fails a request. Nothing in the scoring path calls MLflow. docs/api.md describes the API.
"""

# No ``from __future__ import annotations``: FastAPI must see the route parameters' real types,
# some of which (the serving dependency) are built inside create_app.
import secrets
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Path, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlops.config import Settings, require_api_key
from mlops.data.schemas import MAX_EVENT_BYTES, Reading
from mlops.errors import MlopsError, PolicyError
from mlops.features.feast_repo import OnlineReader
from mlops.features.state import DeviceWindows
from mlops.log import get_logger
from mlops.registry import catalog
from mlops.registry.loader import LoadedModel, load_champion
from mlops.registry.promotion import NoPreviousChampionError, PromotionRejectedError, promote, rollback
from mlops.registry.watcher import ModelWatcher
from mlops.serve import api_models as m
from mlops.serve.batcher import BatchScorer

log = get_logger(__name__)

API_KEY_HEADER = "X-API-Key"
RETRY_LOAD_S = 2.0
SWAP_CHECK_S = 0.1


@dataclass(frozen=True)
class Serving:
    """The model serving now and what ``GET /v1/model`` says about it (read once per request)."""

    model: LoadedModel
    info: dict[str, Any]


class ApiMetrics:
    """The API's Prometheus metrics, on a registry of their own."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("mlops_api_requests", "HTTP requests", ["route", "method", "status"], registry=r)
        self.latency = Histogram("mlops_api_request_seconds", "Request time", ["route"], registry=r,
                                 buckets=(.0005, .001, .0025, .005, .01, .02, .05, .1, .25, .5, 1, 2.5))
        self.predictions = Counter("mlops_api_predictions", "Readings scored", registry=r)
        self.model_call_rows = Histogram("mlops_api_model_call_rows", "Rows per model call (requests batched)",
                                         registry=r, buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096))
        self.model_version = Gauge("mlops_api_model_version", "Registered model version serving", registry=r)
        self.swaps = Counter("mlops_api_model_swaps", "Models swapped in", registry=r)
        self.load_failures = Counter("mlops_api_model_load_failures", "Versions that failed to load", registry=r)


class ModelKeeper:
    """Background thread: load the champion, then swap in whatever the watcher has ready."""

    def __init__(self, settings: Settings, metrics: ApiMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.serving: Serving | None = None
        self.load_error: str | None = None
        self.watcher: ModelWatcher | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="api-model-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)
        if self.watcher is not None:
            self.watcher.stop()

    def check_now(self) -> None:
        """Re-read the alias at once (after a promotion made through this API)."""
        if self.watcher is not None:
            self.watcher.check_now()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.watcher is None:
                try:
                    loaded = load_champion(self.settings)
                except MlopsError as err:
                    self.load_error = str(err)
                    log.warning("no model to serve yet; retrying", error=err, retry_s=RETRY_LOAD_S)
                    self._stop.wait(RETRY_LOAD_S)
                    continue
                self._swap(loaded)
                self.watcher = ModelWatcher(self.settings, loaded.version, on_failure=self._failed).start()
            fresh = self.watcher.take()
            if fresh is not None:
                self._swap(fresh)
            self._stop.wait(SWAP_CHECK_S)

    def _failed(self, version: str, error: str) -> None:
        self.metrics.load_failures.inc()
        self.load_error = f"version {version}: {error}"

    def _swap(self, loaded: LoadedModel) -> None:
        # One assignment: a request holds either the old or the new Serving, never a mix.
        self.serving = Serving(loaded, _model_info(self.settings, loaded))
        self.load_error = None
        self.metrics.swaps.inc()
        self.metrics.model_version.set(float(loaded.version) if loaded.version.isdigit() else -1)
        log.info("serving model", model_name=loaded.name, model_version=loaded.version, run_id=loaded.run_id)


def _model_info(settings: Settings, loaded: LoadedModel) -> dict[str, Any]:
    """What GET /v1/model answers; read from MLflow once per swap, not per request."""
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    aliases: list[str] = []
    try:
        info = catalog.version_info(settings, loaded.version)
        metrics, tags, aliases = info.metrics, info.tags, info.aliases
    except MlopsError as err:
        log.warning("model details unavailable", model_version=loaded.version, error=err)
    return m.ModelResponse(
        name=loaded.name, version=loaded.version, run_id=loaded.run_id, threshold=loaded.threshold,
        feature_spec=loaded.spec.to_dict(), metrics=metrics, lineage=catalog.lineage_summary(tags),
        aliases=aliases, loaded_at=datetime.now(UTC).isoformat(),
    ).model_dump()


# ------------------------------------------------------------------------------------------ errors

def _field(loc: tuple[Any, ...]) -> str:
    parts = list(loc)
    if len(parts) > 1 and parts[0] == "body" and parts[1] in ("reading", "batch"):
        del parts[1]  # the union branch's tag is ours, not the client's
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def _error(status: int, error: str, detail: list[dict[str, str]] | None = None) -> JSONResponse:
    return JSONResponse(m.ErrorResponse(error=error, detail=detail or []).model_dump(), status_code=status)


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
    return _error(422, f"invalid request: {summary}", detail)


async def _on_http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.detail, list):  # field-level problems found after validation (e.g. a missing sensor)
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in exc.detail[:5])
        return _error(exc.status_code, f"invalid request: {summary}", exc.detail)
    if exc.status_code == 400 and str(exc.detail).startswith("There was an error parsing the body"):
        # FastAPI's own message for a body that is not UTF-8 or not decodable: say which field and why.
        detail = [{"field": "body", "message": "not valid JSON (undecodable bytes)", "type": "json_invalid"}]
        return _error(400, "invalid request: body: not valid JSON (undecodable bytes)", detail)
    response = _error(exc.status_code, str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", error=exc)
    return _error(500, f"internal error: {type(exc).__name__}")


class _Edge:
    """Pure ASGI middleware: refuse oversized bodies (by Content-Length before reading them, while
    reading a chunked one), count and time requests."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, max_body: int) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        length = dict(scope["headers"]).get(b"content-length")
        received = 0

        async def limited() -> Message:
            # Only chunked bodies (no Content-Length) get here: count them as they arrive.
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise HTTPException(413, f"body exceeds the {self.max_body}-byte limit")
            return message

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if length is None:
                await self.app(scope, limited, watch)
            elif not length.isdigit():
                await _error(400, f"bad Content-Length {length.decode(errors='replace')!r}")(scope, receive, watch)
            elif int(length) > self.max_body:
                reason = f"body of {int(length)} bytes exceeds the {self.max_body}-byte limit"
                await _error(413, reason)(scope, receive, watch)
            else:
                await self.app(scope, receive, watch)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)


# ------------------------------------------------------------------------------------------- app

def create_app(settings: Settings, keeper: ModelKeeper | None = None) -> FastAPI:
    """The API for ``settings``; the keeper (default: a new one) is started and stopped with the app."""
    metrics = keeper.metrics if keeper is not None else ApiMetrics()
    keeper = keeper or ModelKeeper(settings, metrics)
    scorer = BatchScorer(on_call=metrics.model_call_rows.observe)
    online = OnlineReader(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        keeper.start()
        try:
            yield
        finally:
            keeper.stop()
            scorer.close()

    app = FastAPI(title="mlops-loop API", version="1", lifespan=lifespan,
                  description="Scores IoT readings with the champion model; promotion and rollback.")
    app.state.keeper = keeper
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)
    app.add_middleware(_Edge, metrics=metrics, max_body=settings.api.max_batch * MAX_EVENT_BYTES)

    async def serving() -> Serving:  # async: a sync dependency would cost a thread hop per request
        current = keeper.serving
        if current is None:
            raise HTTPException(503, f"no model loaded yet: {keeper.load_error or 'loading'}")
        return current

    ServingDep = Annotated[Serving, Depends(serving)]
    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="settings.api.api_key")

    def require_key(key: Annotated[str | None, Security(key_header)]) -> str:
        if not key:
            raise HTTPException(401, f"missing API key: send header {API_KEY_HEADER}",
                                headers={"WWW-Authenticate": "APIKey"})
        if not secrets.compare_digest(key.encode(), settings.api.api_key.encode()):
            raise HTTPException(403, "wrong API key")
        return key

    body_adapter, body_openapi, body_schemas = m.predict_request(settings.api.max_batch)

    @app.post("/v1/predict", response_model=m.PredictResponse, responses={**m.ERRORS, **m.NOT_READY},
              openapi_extra=body_openapi,
              summary="Score one reading or a batch (a batch of one device in time order is its history)")
    async def predict(request: Request, current: ServingDep) -> Response:
        body = await _validated_body(request, body_adapter)
        readings: list[Reading] = [body] if isinstance(body, Reading) else body
        model = current.model
        features, order = _features(model, readings)
        probabilities = np.empty(len(readings))
        probabilities[order] = await scorer.predict_proba(model, features)
        metrics.predictions.inc(len(readings))
        return _json(_answer(model, readings, probabilities))

    @app.post("/v1/predict/device/{device_id:path}", response_model=m.DevicePredictResponse,
              responses=m.DEVICE_ERRORS, summary="Score a device from its latest features in the Feast online store")
    async def predict_device(device_id: Annotated[str, Path(**m.DEVICE_ID_LIMITS)], current: ServingDep,
                             ) -> Response:
        model = current.model
        try:
            found = await run_in_threadpool(online.read, model.spec, device_id)
        except MlopsError as err:
            raise HTTPException(503, f"online features unavailable: {err}") from err
        if found is None:
            raise HTTPException(404, f"device {device_id!r} has no features in the online store (unknown device, "
                                     f"or its features were never materialized: `mlops features materialize`)")
        probability = float((await scorer.predict_proba(model, found.values))[0])
        metrics.predictions.inc()
        return _json({
            "model_name": model.name, "model_version": model.version, "device_id": device_id,
            "features_time": found.event_time.isoformat(), "probability": probability,
            "decision": int(probability >= model.threshold),
        })

    @app.get("/v1/model", response_model=m.ModelResponse, responses=m.NOT_READY, summary="The champion serving now")
    async def model(current: ServingDep) -> JSONResponse:
        return JSONResponse(current.info)

    @app.get("/healthz", response_model=m.StatusResponse, summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=m.StatusResponse, responses=m.NOT_READY, summary="A model is loaded")
    async def readyz(current: ServingDep) -> dict[str, str]:
        return {"status": "ready", "model_version": current.model.version}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    auth = {**m.AUTH, **m.ERRORS}

    @app.post("/v1/promote", response_model=m.ChangeResponse, responses=auth, dependencies=[Depends(require_key)],
              summary="Make a version the champion (the evaluation gate runs unless force)")
    def promote_version(body: m.PromoteRequest, request: Request) -> dict[str, Any]:
        return _change(keeper, lambda actor: promote(settings, body.version, actor=actor, reason=body.reason,
                                                     force=body.force), request)

    @app.post("/v1/rollback", response_model=m.ChangeResponse, responses=auth, dependencies=[Depends(require_key)],
              summary="Back to the previous champion, or to a given version")
    def rollback_version(body: m.RollbackRequest, request: Request) -> dict[str, Any]:
        return _change(keeper, lambda actor: rollback(settings, body.to_version, actor=actor, reason=body.reason),
                       request)

    generate_openapi = app.openapi
    described_sensors: tuple[str, ...] | None = None

    def openapi() -> dict[str, Any]:
        # The predict body's schema is declared by hand (openapi_extra): add the models it refers to,
        # requiring the sensors the serving model needs (rebuilt when a swap changes them).
        nonlocal described_sensors
        current = keeper.serving
        sensors = tuple(current.model.spec.sensors) if current is not None else ()
        if app.openapi_schema is None or sensors != described_sensors:
            app.openapi_schema = None
            schemas = m.with_sensors(body_schemas, sensors) if sensors else body_schemas
            generate_openapi().setdefault("components", {}).setdefault("schemas", {}).update(schemas)
            described_sensors = sensors
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _validated_body(request: Request, adapter: TypeAdapter[Any]) -> Any:
    """The request's JSON body validated by ``adapter`` straight from its bytes; 415 or 422 if it is not."""
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise HTTPException(415, f"Content-Type {content_type!r}: send the body as application/json")
    try:
        return adapter.validate_json(await request.body())
    except PydanticValidationError as err:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in err.errors()]) from err


def _json(content: dict[str, Any]) -> Response:
    # pydantic-core's encoder: several times faster than json.dumps on a batch's predictions.
    return Response(to_json(content), media_type="application/json")


def _features(model: LoadedModel, readings: list[Reading]) -> tuple[np.ndarray, list[int]]:
    """Features of the readings, each device's in event-time order, and that order (request indices).

    A 422 names every reading that lacks a sensor the model needs.
    """
    sensors = model.spec.sensors
    problems = [
        {"field": f"body[{i}].sensors.{s}" if len(readings) > 1 else f"body.sensors.{s}",
         "message": f"missing: model version {model.version} needs sensor {s!r}", "type": "missing"}
        for i, r in enumerate(readings) for s in sensors if s not in r.sensors
    ]
    if problems:
        raise _UnprocessableError(problems)
    order = sorted(range(len(readings)), key=lambda i: readings[i].event_time)  # stable: ties keep request order
    features = DeviceWindows(model.spec).update_and_compute(
        (readings[i].device_id, readings[i].sensors) for i in order)
    return features, order


def _answer(model: LoadedModel, readings: list[Reading], probabilities: np.ndarray) -> dict[str, Any]:
    """The response body: one prediction per reading, in request order."""
    threshold = model.threshold
    return {
        "model_name": model.name,
        "model_version": model.version,
        "predictions": [
            {"device_id": r.device_id, "event_time": r.event_time.isoformat(), "cycle": r.cycle,
             "probability": p, "decision": int(p >= threshold)}
            for r, p in zip(readings, probabilities.tolist(), strict=True)
        ],
    }


class _UnprocessableError(HTTPException):
    def __init__(self, detail: list[dict[str, str]]) -> None:
        super().__init__(422, detail)


def _change(keeper: ModelKeeper, action: Any, request: Request) -> dict[str, Any]:
    actor = f"api:{request.client.host if request.client else 'unknown'}"
    try:
        result = action(actor)
    except catalog.VersionNotFoundError as err:
        raise HTTPException(404, str(err)) from err
    except (PolicyError, NoPreviousChampionError) as err:
        gate = err.decision.to_dict() if isinstance(err, PromotionRejectedError) and err.decision else None
        raise HTTPException(409, str(err) if gate is None else f"{err} gate={gate}") from err
    except MlopsError as err:
        raise HTTPException(503, str(err)) from err
    keeper.check_now()
    return dict(result.to_dict())


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Run the API with uvicorn until interrupted (never with the development key outside ``local``)."""
    import uvicorn

    require_api_key(settings)

    # One worker process (more processes: run more APIs behind a balancer); uvloop and httptools
    # when installed (they are dependencies), no access log: each costs per request.
    uvicorn.run(create_app(settings), host=host or settings.api.host, port=port or settings.api.port,
                log_level="warning", access_log=False, loop="auto", http="auto", workers=1)

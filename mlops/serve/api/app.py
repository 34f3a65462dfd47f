"""The wiring: one FastAPI app from the settings (keeper, scorer, online store, error handlers,
middleware, routes), and :func:`serve` to run it with uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from mlops.config import Settings, require_api_key
from mlops.data.schemas import MAX_EVENT_BYTES
from mlops.features.feast_repo import OnlineReader
from mlops.serve.api import models as m
from mlops.serve.api.deps import serving_of
from mlops.serve.api.errors import install_error_handlers
from mlops.serve.api.keeper import ModelKeeper
from mlops.serve.api.metrics import ApiMetrics
from mlops.serve.api.middleware import Edge
from mlops.serve.api.routes import changes, scoring, status
from mlops.serve.batcher import BatchScorer

__all__ = ["create_app", "serve"]


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
    install_error_handlers(app)
    app.add_middleware(Edge, metrics=metrics, max_body=settings.api.max_batch * MAX_EVENT_BYTES)

    serving = serving_of(keeper)
    body_adapter, body_openapi, body_schemas = m.predict_request(settings.api.max_batch)
    # In this order: the OpenAPI document lists the paths in the order they were added.
    scoring.add_routes(app, serving, scorer, online, metrics, body_adapter, body_openapi,
                       settings.api.max_batch)
    status.add_routes(app, serving, metrics)
    changes.add_routes(app, settings, keeper)
    _describe_predict_body(app, keeper, body_schemas)
    return app


def _describe_predict_body(app: FastAPI, keeper: ModelKeeper, body_schemas: dict[str, Any]) -> None:
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


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Run the API with uvicorn until interrupted (never with the development key outside ``local``)."""
    import uvicorn  # heavy

    require_api_key(settings)

    # One worker process (more processes: run more APIs behind a balancer); uvloop and httptools
    # when installed (they are dependencies), no access log: each costs per request.
    uvicorn.run(create_app(settings), host=host or settings.api.host, port=port or settings.api.port,
                log_level="warning", access_log=False, loop="auto", http="auto", workers=1)

"""Read-only status: the champion serving now (``GET /v1/model``), liveness (``/healthz``),
readiness (``/readyz``: a model is loaded) and the Prometheus metrics (``/metrics``)."""

# No ``from __future__ import annotations``: FastAPI reads the route parameters' types at run time,
# and ServingDep is built inside add_routes().
from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mlops.serve.api import models as m
from mlops.serve.api.deps import ServingProvider
from mlops.serve.api.keeper import Serving
from mlops.serve.api.metrics import ApiMetrics

__all__ = ["add_routes"]


def add_routes(app: FastAPI, serving: ServingProvider, metrics: ApiMetrics) -> None:
    """Add the status routes to ``app``, answering from ``serving`` and ``metrics``."""
    ServingDep = Annotated[Serving, Depends(serving)]

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

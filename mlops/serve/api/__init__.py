"""The REST API (FastAPI): score readings with the champion, show it, promote and roll back.

    POST /v1/predict        one reading or a JSON array of readings (the stream's schema)
    POST /v1/predict/device/{device_id}   a device's latest features from the Feast online store
    GET  /v1/model          the champion: version, run id, metrics, lineage summary
    POST /v1/promote        move the champion alias (API key; runs the evaluation gate unless forced)
    POST /v1/rollback       back to the previous champion or a given version (API key)
    GET  /healthz /readyz   alive / a model is loaded
    GET  /metrics           Prometheus

Features come from the shared kernel, and the rows of concurrent requests are scored together
(:mod:`~mlops.serve.api.routes.scoring`). The model is held in one reference that a background
thread replaces when the :class:`~mlops.registry.watcher.ModelWatcher` has a newly promoted,
smoke-tested version ready; a request reads the reference once, so a swap never fails a request.
Nothing in the scoring path calls MLflow. docs/api.md describes the API.

- :mod:`~mlops.serve.api.app`: :func:`create_app` (the wiring) and :func:`serve` (uvicorn);
- :mod:`~mlops.serve.api.keeper`: :class:`ModelKeeper`, the thread that loads and swaps the model;
- :mod:`~mlops.serve.api.deps`: the dependencies (the model serving now, the API key);
- :mod:`~mlops.serve.api.routes`: the routes, one module per resource;
- :mod:`~mlops.serve.api.errors`: the error body and the exception handlers;
- :mod:`~mlops.serve.api.middleware`: body-size limit, request metrics;
- :mod:`~mlops.serve.api.metrics`: :class:`ApiMetrics`, the Prometheus metrics;
- :mod:`~mlops.serve.api.models`: request and response bodies (pydantic).
"""

from mlops.serve.api.app import create_app, serve
from mlops.serve.api.keeper import ModelKeeper
from mlops.serve.api.metrics import ApiMetrics

__all__ = ["ApiMetrics", "ModelKeeper", "create_app", "serve"]

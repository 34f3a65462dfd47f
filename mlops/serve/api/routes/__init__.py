"""The API's routes, one module per resource; each adds its routes to the app, given what they use.

They are added to the app itself, not through ``APIRouter`` and ``include_router``: FastAPI keeps
an included router as one wrapper in ``app.routes``, where the routes themselves are looked for
(by the tests of the Docker healthcheck and Prometheus scrape paths, for one).

- :mod:`~mlops.serve.api.routes.scoring`: ``POST /v1/predict``, ``POST /v1/predict/device/{device_id}``;
- :mod:`~mlops.serve.api.routes.status`: ``GET /v1/model``, ``/healthz``, ``/readyz``, ``/metrics``;
- :mod:`~mlops.serve.api.routes.changes`: ``POST /v1/promote``, ``POST /v1/rollback`` (API key).
"""

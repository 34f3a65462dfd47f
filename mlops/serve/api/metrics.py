"""The API's Prometheus metrics, apart from the app: the keeper, the middleware and the routes count
into one registry, and a test can list what the API exports without building the app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["ApiMetrics"]


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

"""Prometheus metrics of the streaming scorer, on a registry of its own (one per scorer instance).

    mlops_scorer_events_total{outcome="scored|dead_letter"}   rate() gives events per second
    mlops_scorer_batch_size                                    histogram of readings per batch
    mlops_scorer_batch_seconds                                 histogram of consume-to-commit time
    mlops_scorer_consumer_lag{partition}                       high watermark minus position
    mlops_scorer_model_version / mlops_scorer_model_info       the version serving now
    mlops_scorer_dead_letters_total                            invalid readings sent to the DLQ
    mlops_scorer_transactions_aborted_total                    batches rolled back and re-read
    mlops_scorer_clients_reopened_total                        Kafka clients replaced after a hang or self-fencing
    mlops_scorer_model_load_failures_total                     promoted versions that failed to load
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, start_http_server

from mlops.log import get_logger

__all__ = ["ScorerMetrics"]

log = get_logger(__name__)


class ScorerMetrics:
    """The scorer's metrics; :meth:`serve` exposes them over HTTP."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("mlops_scorer_events", "Readings processed", ["outcome"], registry=r)
        self.batch_size = Histogram("mlops_scorer_batch_size", "Readings per micro-batch", registry=r,
                                    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000))
        self.batch_seconds = Histogram("mlops_scorer_batch_seconds", "Batch time from consume to commit",
                                       registry=r, buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5))
        self.lag = Gauge("mlops_scorer_consumer_lag", "Records behind the high watermark", ["partition"], registry=r)
        self.model_version = Gauge("mlops_scorer_model_version", "Registered model version serving", registry=r)
        self.model_info = Info("mlops_scorer_model", "Model serving now", registry=r)
        self.dead_letters = Counter("mlops_scorer_dead_letters", "Invalid readings sent to the DLQ", registry=r)
        self.aborted = Counter("mlops_scorer_transactions_aborted", "Transactions aborted and re-read", registry=r)
        self.reopened = Counter("mlops_scorer_clients_reopened", "Kafka clients replaced after a hang or "
                                "self-fencing", registry=r)
        self.load_failures = Counter("mlops_scorer_model_load_failures", "Promoted versions that failed to load",
                                     registry=r)
        self._server: Any = None

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Start the HTTP endpoint (port 0: disabled)."""
        if port:
            self._server, _thread = start_http_server(port, addr=addr, registry=self.registry)
            log.info("metrics endpoint", url=f"http://{addr}:{port}/metrics")

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def set_model(self, name: str, version: str, run_id: str | None) -> None:
        self.model_info.info({"name": name, "version": version, "run_id": run_id or ""})
        try:
            self.model_version.set(float(version))
        except ValueError:
            self.model_version.set(-1)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """Current value of one sample (tests and progress display)."""
        return float(self.registry.get_sample_value(name, labels or {}) or 0.0)

"""Prometheus metrics of the loop, read from its own state at each scrape.

    mlops_loop_events_total{kind}                          audit rows per kind: triggers, retrainings,
                                                           promotions, rejections, rollbacks, ...
    mlops_loop_champion_version                            the version the newest promotion or rollback made champion
    mlops_loop_drift_share{model_version}                  newest drift window: share of drifted features
    mlops_loop_drift_level{model_version}                  its drift statistic over its threshold (>= 1: drifted)
    mlops_loop_realised{model_version,metric}              newest performance window: f1, precision, ... on live labels
    mlops_loop_window_end_seconds{kind}                    event time the newest window of each kind ends at

The numbers come from ``loop_events`` and ``window_results`` (:mod:`mlops.store`), not from
counters in the process: they agree with ``mlops status`` and ``mlops loop history``, they survive
a restart, and any process of the loop (``mlops monitor``, ``mlops loop run``) serves the same
values. One scrape costs three small queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mlops import store
from mlops.config import Settings
from mlops.errors import ConfigError
from mlops.log import get_logger
from mlops.store.results import engine_for, list_results

__all__ = ["LoopCollector", "serve_loop_metrics"]

log = get_logger(__name__)

CHAMPION_KINDS = ("promotion", "rollback")


class LoopCollector(Collector):
    """Collects the loop's metrics for one registered model from the database."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model = settings.mlflow.registered_model
        self.engine = engine_for(settings)

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily("mlops_loop_events", "Loop audit rows by kind", labels=["kind"])
        for kind, count in sorted(store.count_events(self.engine, model_name=self.model).items()):
            events.add_metric([kind], count)
        yield events

        champion = GaugeMetricFamily("mlops_loop_champion_version",
                                     "Version the newest promotion or rollback made champion")
        changes = store.list_events(self.engine, kinds=CHAMPION_KINDS, model_name=self.model, limit=1,
                                    newest_first=True)
        if changes and (changes[0].model_version or "").isdigit():
            champion.add_metric([], float(changes[0].model_version or 0))
        yield champion

        yield from self._windows()

    def _windows(self) -> Iterator[Metric]:
        share = GaugeMetricFamily("mlops_loop_drift_share", "Newest drift window: share of drifted features",
                                  labels=["model_version"])
        level = GaugeMetricFamily("mlops_loop_drift_level",
                                  "Newest drift window: drift statistic over its threshold (>= 1: drifted)",
                                  labels=["model_version"])
        realised = GaugeMetricFamily("mlops_loop_realised", "Newest performance window: metric on live labels",
                                     labels=["model_version", "metric"])
        ends = GaugeMetricFamily("mlops_loop_window_end_seconds", "Event time the newest window ends at",
                                 labels=["kind"])
        for kind in ("drift", "performance"):
            newest = list_results(self.engine, model_name=self.model, kind=kind, limit=1)
            if not newest:
                continue
            window = newest[0]
            ends.add_metric([kind], window.end_time.timestamp())
            if kind == "drift":
                if window.drift_share is not None:
                    share.add_metric([window.model_version], window.drift_share)
                drift_level = window.drift_level(self.settings.policy.drift_threshold)
                if drift_level is not None:
                    level.add_metric([window.model_version], drift_level)
            else:
                for name, value in _metrics(window.metrics):
                    realised.add_metric([window.model_version, name], value)
        yield from (share, level, realised, ends)


def _metrics(metrics: dict[str, Any] | None) -> Iterator[tuple[str, float]]:
    for name, value in sorted((metrics or {}).items()):
        if not name.startswith("n_") and isinstance(value, int | float) and value == value:  # NaN: undefined here
            yield name, float(value)


def serve_loop_metrics(settings: Settings) -> Callable[[], None]:
    """Serve the loop's metrics on ``monitor.metrics_port`` (0: off); returns the function that stops it."""
    port = settings.monitor.metrics_port
    if not port:
        return lambda: None
    registry = CollectorRegistry()
    registry.register(LoopCollector(settings))
    try:
        server, _thread = start_http_server(port, addr=settings.monitor.metrics_host, registry=registry)
    except OSError as err:
        raise ConfigError(f"key 'monitor.metrics_port': cannot listen on {settings.monitor.metrics_host}:{port}: "
                          f"{err} (another loop or monitor runs here? set another port, or 0 for none)") from err
    log.info("loop metrics endpoint", url=f"http://{settings.monitor.metrics_host}:{port}/metrics")

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return stop

"""``mlops services up | down | status``: the local Kafka broker (or cluster) and MLflow server as one unit.

Services marked ``managed: false`` in configuration (an external cluster, the docker profile) are
never started or stopped here, only checked.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import version as package_version

from mlops import kafka
from mlops.config import Settings
from mlops.errors import ServiceError
from mlops.services import mlflow_server
from mlops.services.kafka_broker import KafkaBroker, KafkaCluster, kafka_version
from mlops.services.process import stop_together, wait_for

__all__ = ["ServiceStatus", "down", "require_ready", "status", "up"]


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str
    managed: bool
    running: bool
    """A process we started is alive (always False for an external service)."""
    ready: bool
    """The service answers: broker metadata, MLflow /health."""
    version: str
    pid: int | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def status(settings: Settings) -> list[ServiceStatus]:
    """One row per service; a managed Kafka cluster has one row per node (``kafka``, ``kafka-2``, ...)."""
    tracking = mlflow_server.MlflowServer(settings)
    mlflow_proc = tracking.process.process()
    rows = _kafka_status(settings)
    rows.append(ServiceStatus(
        "mlflow", settings.mlflow.tracking_uri, settings.mlflow.managed, mlflow_proc is not None,
        mlflow_server.is_ready(settings.mlflow), package_version("mlflow"), mlflow_proc.pid if mlflow_proc else None,
    ))
    return rows


def _kafka_status(settings: Settings) -> list[ServiceStatus]:
    if not settings.kafka.managed:  # an external cluster: whether it answers at all
        return [ServiceStatus("kafka", settings.kafka.bootstrap_servers, False, False,
                              kafka.is_ready(settings.kafka), kafka_version())]
    rows = []
    for broker in KafkaCluster(settings).brokers:
        proc = broker.process.process()
        answers = kafka.is_ready(settings.kafka.model_copy(update={"bootstrap_servers": broker.node.address}))
        rows.append(ServiceStatus(broker.name, broker.node.address, True, proc is not None, answers,
                                  kafka_version(), proc.pid if proc else None))
    return rows


def up(settings: Settings, report: Callable[[str], None] = print) -> dict[str, float]:
    """Start (or check) every service and create the design's topics. Idempotent.

    If one service fails, the ones this call started are stopped again, so nothing is left
    half-started. Returns the seconds each service took to become ready.
    """
    started: list[KafkaBroker | mlflow_server.MlflowServer] = []
    timings: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        if settings.kafka.managed:
            cluster = KafkaCluster(settings)
            nodes = f" ({len(cluster.brokers)} nodes)" if len(cluster.brokers) > 1 else ""
            report(f"kafka: starting Apache Kafka {kafka_version()} on {settings.kafka.bootstrap_servers}{nodes}")
            started.extend(cluster.start())
        else:
            report(f"kafka: external, checking {settings.kafka.bootstrap_servers}")
            kafka.wait_until_ready(settings.kafka, settings.kafka.ready_timeout_s)
        created = kafka.ensure_topics(settings.kafka, kafka.design_topics(settings.kafka))
        timings["kafka"] = time.monotonic() - t0
        report(f"kafka: ready in {timings['kafka']:.1f}s" + (f", created {', '.join(created)}" if created else ""))

        t0 = time.monotonic()
        if settings.mlflow.managed:
            tracking = mlflow_server.MlflowServer(settings)
            report(f"mlflow: starting tracking server on {settings.mlflow.tracking_uri}")
            if tracking.start():
                started.append(tracking)
        else:
            report(f"mlflow: external, checking {settings.mlflow.tracking_uri}")
            wait_for(lambda: mlflow_server.is_ready(settings.mlflow), settings.mlflow.ready_timeout_s,
                     f"mlflow {settings.mlflow.tracking_uri}")
        timings["mlflow"] = time.monotonic() - t0
        report(f"mlflow: ready in {timings['mlflow']:.1f}s, UI at {settings.mlflow.tracking_uri}")
    except BaseException:
        stop_together([service.process for service in started])
        raise
    return timings


def down(settings: Settings, report: Callable[[str], None] = print) -> list[str]:
    """Stop exactly the processes ``up`` started (by pid file); return their names."""
    stopped = []
    if mlflow_server.MlflowServer(settings).stop():
        stopped.append("mlflow")
    stopped += KafkaCluster(settings).stop()
    for name in stopped:
        report(f"{name}: stopped")
    return stopped


def require_ready(settings: Settings) -> None:
    """Raise a clear error if Kafka or MLflow does not answer (for commands that need both).

    Kafka answers if the cluster does: a cluster with one node down still serves.
    """
    problems = [f"{name} at {address}" for name, address, ready in (
        ("kafka", settings.kafka.bootstrap_servers, kafka.is_ready(settings.kafka)),
        ("mlflow", settings.mlflow.tracking_uri, mlflow_server.is_ready(settings.mlflow)),
    ) if not ready]
    if problems:
        names = ", ".join(problems)
        raise ServiceError(f"not reachable: {names}. Start them with `mlops services up`.")

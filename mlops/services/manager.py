"""``mlops services up | down | status``: the local Kafka broker and MLflow server as one unit.

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
from mlops.services.kafka_broker import KafkaBroker, kafka_version
from mlops.services.process import wait_for


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
    broker, tracking = KafkaBroker(settings), mlflow_server.MlflowServer(settings)
    kafka_proc, mlflow_proc = broker.process.process(), tracking.process.process()
    return [
        ServiceStatus(
            "kafka", settings.kafka.bootstrap_servers, settings.kafka.managed, kafka_proc is not None,
            kafka.is_ready(settings.kafka), kafka_version(), kafka_proc.pid if kafka_proc else None,
        ),
        ServiceStatus(
            "mlflow", settings.mlflow.tracking_uri, settings.mlflow.managed, mlflow_proc is not None,
            mlflow_server.is_ready(settings.mlflow), package_version("mlflow"),
            mlflow_proc.pid if mlflow_proc else None,
        ),
    ]


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
            broker = KafkaBroker(settings)
            report(f"kafka: starting Apache Kafka {kafka_version()} on {settings.kafka.bootstrap_servers}")
            if broker.start():
                started.append(broker)
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
        for service in reversed(started):
            service.stop()
        raise
    return timings


def down(settings: Settings, report: Callable[[str], None] = print) -> list[str]:
    """Stop exactly the processes ``up`` started (by pid file); return their names."""
    stopped = []
    for service in (mlflow_server.MlflowServer(settings), KafkaBroker(settings)):
        if service.stop():
            stopped.append(service.name)
            report(f"{service.name}: stopped")
    return stopped


def require_ready(settings: Settings) -> None:
    """Raise a clear error if Kafka or MLflow does not answer (for commands that need both)."""
    problems = [s for s in status(settings) if not s.ready]
    if problems:
        names = ", ".join(f"{s.name} at {s.address}" for s in problems)
        raise ServiceError(f"not reachable: {names}. Start them with `mlops services up`.")

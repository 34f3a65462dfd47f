"""``mlops status``: the whole system on one screen, read from where each fact lives.

    report = gather(settings)          # plain data; every section is there even if its source is down
    report["champion"]["version"], report["scorer"]["lag"], report["schedule"]["next_run"]

Sections and their sources of truth:

- ``services``: each Kafka node and the MLflow server answer or not (:mod:`mlops.services.manager`);
- ``champion``: the registry's ``champion`` alias, with the version's trigger and validation metrics;
- ``scorer``: the scorer group's committed offsets on the readings topic against its high watermarks;
- ``windows``: the newest closed windows (``window_results``);
- ``schedule``: the next run of ``policy.schedule_cron`` and the scheduler's lease holder;
- ``decisions``: the newest loop decisions in the audit trail (``loop_events``).

A section whose source does not answer says why under ``error`` instead of failing the screen:
status is what people run when something is wrong.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition

from mlops import kafka, store
from mlops.clock import utc_now
from mlops.config import Settings
from mlops.errors import MlopsError
from mlops.monitor.scheduler import retrain_trigger
from mlops.registry.catalog import version_info
from mlops.registry.loader import CHAMPION, resolve_alias
from mlops.serve.scorer import DEFAULT_GROUP
from mlops.services import manager
from mlops.store.lease import Lease
from mlops.store.results import engine_for, list_results

__all__ = ["DECISION_KINDS", "gather"]

DECISION_KINDS = ("trigger", "retrain_started", "retrain_finished", "retrain_failed", "evaluation", "promotion",
                  "rejection", "rollback", "manual_action")
"""Audit rows shown as decisions (window results and non-triggers are the windows section's)."""
KAFKA_TIMEOUT_S = 5.0
COORDINATOR_WAIT_S = 20.0
"""How long a group coordinator that is loading or moving (a broker just started) is asked again."""
_COORDINATOR_MOVING = frozenset({KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
                                 KafkaError.COORDINATOR_NOT_AVAILABLE})


def gather(settings: Settings, *, windows: int = 5, decisions: int = 5, group: str = DEFAULT_GROUP,
           now: Callable[[], datetime] = utc_now) -> dict[str, Any]:
    """Every section of the status screen as JSON-safe data."""
    services = [row.as_dict() for row in manager.status(settings)]
    kafka_up = any(row["ready"] for row in services if str(row["name"]).startswith("kafka"))
    mlflow_up = any(row["ready"] for row in services if row["name"] == "mlflow")
    # A service that does not answer is named at once: its clients would retry for minutes.
    return {
        "services": services,
        "champion": _section(lambda: _champion(settings)) if mlflow_up
        else _down("mlflow", settings.mlflow.tracking_uri),
        "scorer": _section(lambda: _scorer(settings, group)) if kafka_up
        else _down("kafka", settings.kafka.bootstrap_servers),
        "windows": _section(lambda: {"newest": [_window(w) for w in reversed(list_results(
            engine_for(settings), model_name=settings.mlflow.registered_model, limit=windows))]}),
        "schedule": _section(lambda: _schedule(settings, now())),
        "decisions": _section(lambda: {"newest": [_decision(e) for e in store.list_events(
            settings, kinds=DECISION_KINDS, model_name=settings.mlflow.registered_model, limit=decisions,
            newest_first=True)]}),
    }


def _section(read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return read()
    except (MlopsError, KafkaException) as err:
        return {"error": str(err).splitlines()[0]}


def _down(service: str, address: str) -> dict[str, Any]:
    return {"error": f"{service} at {address} does not answer (`mlops services up`)"}


def _champion(settings: Settings) -> dict[str, Any]:
    name = settings.mlflow.registered_model
    try:
        version = resolve_alias(settings, CHAMPION)
    except MlopsError:
        return {"model": name, "version": None, "note": "no champion yet: `mlops train`, then `mlops promote`"}
    info = version_info(settings, version)
    metric = "val_" + settings.policy.primary_metric
    return {"model": name, "version": version, "aliases": info.aliases, "trigger": info.trigger,
            "created": info.created.isoformat(), metric: info.metrics.get(metric)}


def _scorer(settings: Settings, group: str) -> dict[str, Any]:
    """Records of the readings topic the scorer group has not committed yet, per partition."""
    topic = settings.kafka.topics.readings
    client = kafka.consumer(settings.kafka, group)
    try:
        partitions = sorted(client.list_topics(topic, timeout=KAFKA_TIMEOUT_S).topics[topic].partitions)
        committed = _committed(client, [TopicPartition(topic, p) for p in partitions])
        lag: dict[str, int] = {}
        for tp in committed:
            low, high = client.get_watermark_offsets(tp, timeout=KAFKA_TIMEOUT_S)
            lag[str(tp.partition)] = high - (tp.offset if tp.offset >= 0 else low)
    finally:
        client.close()
    return {"group": group, "topic": topic, "lag": lag, "total_lag": sum(lag.values()),
            "started": any(tp.offset >= 0 for tp in committed)}


def _committed(client: Any, partitions: list[TopicPartition]) -> list[TopicPartition]:
    deadline = time.monotonic() + COORDINATOR_WAIT_S
    while True:
        try:
            return list(client.committed(partitions, timeout=KAFKA_TIMEOUT_S))
        except KafkaException as exc:
            error = exc.args[0]
            if not (error.retriable() or error.code() in _COORDINATOR_MOVING) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)  # the client looks the coordinator up again


def _window(result: store.results.WindowResult) -> dict[str, Any]:
    row: dict[str, Any] = {"id": result.window_id, "kind": result.kind, "version": result.model_version,
                           "end": result.end_time.isoformat(), "predictions": result.n_predictions}
    if result.kind == "drift":
        row.update(drift_share=result.drift_share, drift_score=result.drift_score,
                   drift_threshold=result.drift_threshold, drifted=result.drifted)
    else:
        row["metrics"] = {k: v for k, v in (result.metrics or {}).items() if not k.startswith("n_")}
    return row


def _schedule(settings: Settings, now: datetime) -> dict[str, Any]:
    trigger = retrain_trigger(settings)
    holder = Lease(engine_for(settings), "scheduler", holder="status").holder_now()
    leader = holder[0] if holder and holder[1] > now else None
    next_run = trigger.get_next_fire_time(None, now) if trigger else None
    return {"cron": settings.policy.schedule_cron, "next_run": next_run.isoformat() if next_run else None,
            "leader": leader, "note": None if leader or not trigger else "no `mlops scheduler` holds the lease"}


def _decision(event: store.EventRecord) -> dict[str, Any]:
    return {"time": event.time.isoformat(), "kind": event.kind, "version": event.model_version,
            "previous": event.previous_version, "actor": event.actor, "reason": (event.reason or "").split("\n", 1)[0]}

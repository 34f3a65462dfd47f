"""Promotion and rollback: move the ``champion`` alias, tell the consumers, record who and why.

    promote(settings, "7", actor="alice", reason="wins on last week's data")      # runs the gate
    promote(settings, "7", actor="alice", reason="hotfix", force=True)            # skips it
    rollback(settings, actor="alice", reason="alerts from the field")             # previous champion

Reading the alias, deciding and moving it happen under one database lock
(:func:`mlops.db.locked`), so two promotions or rollbacks at the same time run one after the other:
the champion ends consistent and both attempts are in the audit trail, the second one seeing the
first one's result as its ``previous_version``. The registry alias is the source of truth; the
:class:`~mlops.registry.events.ModelEvent` published afterwards is a hint that makes the scorer
and the API re-read it at once instead of at their next poll.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from mlops import db, kafka
from mlops.config import Settings
from mlops.errors import MlopsError, PolicyError, RegistryError
from mlops.log import get_logger
from mlops.registry.catalog import aliases, model_version, registry_client
from mlops.registry.events import ModelEvent
from mlops.registry.gate import GateDecision, evaluate_gate, lake_evaluation_data, trained_until
from mlops.registry.loader import CHAMPION, load_version

log = get_logger(__name__)

CHALLENGER = "challenger"
EVENT_TIMEOUT_S = 10.0


class PromotionRejectedError(PolicyError):
    """The evaluation gate refused the promotion; ``decision`` holds the numbers."""

    def __init__(self, message: str, decision: GateDecision | None = None) -> None:
        super().__init__(message)
        self.decision = decision


class NoPreviousChampionError(RegistryError):
    """A rollback without a target, but the audit trail records no champion before the current one."""


@dataclass(frozen=True)
class ChangeResult:
    """What a promotion or rollback did."""

    action: Literal["promote", "rollback"]
    model: str
    version: str
    previous_version: str | None
    changed: bool
    event_id: int
    event_published: bool
    decision: GateDecision | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action, "model": self.model, "version": self.version,
            "previous_version": self.previous_version, "changed": self.changed, "event_id": self.event_id,
            "event_published": self.event_published,
            "gate": self.decision.to_dict() if self.decision else None,
        }


def _lock_name(model: str) -> str:
    return f"champion:{model}"


def promote(settings: Settings, version: str, *, actor: str, reason: str, force: bool = False,
            evaluation_data: pd.DataFrame | None = None) -> ChangeResult:
    """Make ``version`` the champion.

    Unless ``force``, the evaluation gate compares it with the current champion first, on
    ``evaluation_data`` (features + ``label``) or, when that is None, on labelled lake data newer
    than both models' training data; a loss raises :class:`PromotionRejectedError` and is recorded.
    """
    name = settings.mlflow.registered_model
    version = str(version)
    client = registry_client(settings)
    meta = model_version(settings, version, client)
    decision = None if force else _run_gate(settings, client, version, actor, reason, evaluation_data)

    with db.locked(settings, _lock_name(name), holder=actor) as conn:
        current = aliases(settings, client).get(CHAMPION)
        stale = decision is not None and current != decision.champion_version and current != version
        if stale:
            # The champion moved while we evaluated: the verdict is about a model no longer serving.
            message = (f"champion changed from {decision.champion_version if decision else None} to {current} "
                       "during the evaluation; run the promotion again")
            db.record_event(conn, "rejection", model_name=name, model_version=version, previous_version=current,
                            run_id=meta.run_id, actor=actor, reason=reason,
                            details={"action": "promote", "error": message,
                                     "gate": decision.to_dict() if decision else None})
        else:
            changed = current != version
            if changed:
                _set_alias(client, name, CHAMPION, version)
            _clear_alias_if(client, name, CHALLENGER, version)
            published = changed and _publish(settings, ModelEvent(
                model=name, action="promote", version=version, previous_version=current, actor=actor, reason=reason))
            event_id = db.record_event(
                conn, "promotion", model_name=name, model_version=version, previous_version=current,
                run_id=meta.run_id, actor=actor, reason=reason,
                details={"changed": changed, "forced": force, "event_published": published,
                         "gate": decision.to_dict() if decision else None},
            )
    if stale:
        raise PromotionRejectedError(message, decision)
    log.info("promoted" if changed else "already champion", model_name=name, model_version=version,
             previous_version=current, actor=actor, forced=force)
    return ChangeResult("promote", name, version, current, changed, event_id, published, decision)


def rollback(settings: Settings, to_version: str | None = None, *, actor: str, reason: str) -> ChangeResult:
    """Make ``to_version`` (default: the champion before the current one, from the audit trail) the champion."""
    name = settings.mlflow.registered_model
    client = registry_client(settings)
    if to_version is not None:
        model_version(settings, str(to_version), client)  # fail before taking the lock if it does not exist
    with db.locked(settings, _lock_name(name), holder=actor) as conn:
        current = aliases(settings, client).get(CHAMPION)
        target = str(to_version) if to_version is not None else None
        if target is None:
            if current is None:
                raise NoPreviousChampionError(f"model {name!r}: no champion to roll back from; use --to VERSION")
            target = db.previous_champion(conn, name, current)
            if target is None:
                raise NoPreviousChampionError(f"model {name!r}: the audit trail records no champion before "
                                              f"version {current}; use --to VERSION")
        run_id = model_version(settings, target, client).run_id
        changed = current != target
        if changed:
            _set_alias(client, name, CHAMPION, target)
        published = changed and _publish(settings, ModelEvent(
            model=name, action="rollback", version=target, previous_version=current, actor=actor, reason=reason))
        event_id = db.record_event(
            conn, "rollback", model_name=name, model_version=target, previous_version=current, run_id=run_id,
            actor=actor, reason=reason, details={"changed": changed, "event_published": published,
                                                 "requested": to_version},
        )
    log.info("rolled back" if changed else "already champion", model_name=name, model_version=target,
             previous_version=current, actor=actor)
    return ChangeResult("rollback", name, target, current, changed, event_id, published)


def _run_gate(settings: Settings, client: Any, version: str, actor: str, reason: str,
              evaluation_data: pd.DataFrame | None) -> GateDecision:
    """Mark ``version`` as challenger, evaluate it against the champion, record a rejection."""
    name = settings.mlflow.registered_model
    champion_version = aliases(settings, client).get(CHAMPION)
    if champion_version == version:
        raise PolicyError(f"model {name!r} version {version} is already the champion")
    _set_alias(client, name, CHALLENGER, version)
    try:
        challenger = load_version(settings, version)
        champion = load_version(settings, champion_version) if champion_version else None
        if evaluation_data is None:
            models = [m for m in (challenger, champion) if m is not None]
            since = max(trained_until(dict(model_version(settings, m.version, client).tags or {}),
                                      f"model {name!r} version {m.version}") for m in models)
            evaluation_data = lake_evaluation_data(settings, models, since)
        decision = evaluate_gate(settings.policy, challenger, champion, evaluation_data)
    except MlopsError as err:
        _clear_alias_if(client, name, CHALLENGER, version)
        db.record_event(settings, "rejection", model_name=name, model_version=version,
                        previous_version=champion_version, actor=actor, reason=reason,
                        details={"action": "promote", "error": str(err)})
        raise
    if not decision.promote:
        _clear_alias_if(client, name, CHALLENGER, version)
        db.record_event(settings, "rejection", model_name=name, model_version=version,
                        previous_version=champion_version, run_id=challenger.run_id, actor=actor, reason=reason,
                        details={"action": "promote", "gate": decision.to_dict()})
        raise PromotionRejectedError(
            f"model {name!r} version {version} not promoted: {decision.summary()} (use --force to override)",
            decision)
    return decision


def _set_alias(client: Any, name: str, alias: str, version: str) -> None:
    try:
        client.set_registered_model_alias(name, alias, version)
    except Exception as err:
        raise RegistryError(f"model {name!r}: cannot point alias {alias!r} at version {version}: {err}") from err


def _clear_alias_if(client: Any, name: str, alias: str, version: str) -> None:
    """Delete ``alias`` if it points at ``version`` (a challenger that was decided on)."""
    try:
        if str(client.get_registered_model(name).aliases.get(alias)) == version:
            client.delete_registered_model_alias(name, alias)
    except Exception as err:
        raise RegistryError(f"model {name!r}: cannot clear alias {alias!r}: {err}") from err


def _publish(settings: Settings, event: ModelEvent) -> bool:
    """Publish the hint; False (logged) if Kafka does not take it: consumers still poll the alias."""
    topic = settings.kafka.topics.model_events
    errors: list[str] = []
    try:
        kafka.ensure_topics(settings.kafka, [t for t in kafka.design_topics(settings.kafka) if t.name == topic],
                            timeout_s=EVENT_TIMEOUT_S)
        producer = kafka.producer(settings.kafka)
        producer.produce(topic, key=event.model.encode(), value=event.encode(),
                         on_delivery=lambda err, _msg: errors.append(str(err)) if err else None)
        remaining = producer.flush(EVENT_TIMEOUT_S)
    except MlopsError as err:
        errors.append(str(err))
        remaining = 0
    except Exception as err:  # KafkaException, BufferError: the alias has moved, so do not fail the promotion
        errors.append(f"{type(err).__name__}: {err}")
        remaining = 0
    if errors or remaining:
        log.warning("model event not published; consumers will notice at their next registry poll", topic=topic,
                    model_version=event.version, error="; ".join(errors) or f"{remaining} undelivered")
        return False
    return True

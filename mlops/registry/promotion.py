"""Promotion and rollback: move the ``champion`` alias, tell the consumers, record who and why.

    promote(settings, "7", actor="alice", reason="wins on last week's data")      # runs the gate
    promote(settings, "7", actor="alice", reason="hotfix", force=True)            # skips it
    rollback(settings, actor="alice", reason="alerts from the field")             # previous champion

Reading the alias, deciding and moving it happen under one database lock
(:func:`mlops.store.locked`), so two promotions or rollbacks at the same time, from one process or
two, run one after the other: the champion ends consistent and both attempts are in the audit
trail, the second one seeing the first one's result as its ``previous_version``.

Atomic from the operator's view: either the alias moved and its audit row committed, or neither.
Under the lock the audit row is written first (uncommitted), then the alias is moved, then the row
commits; a registry that fails the move rolls the row back, and a database that fails the commit
has the alias moved back. A registry that does not answer fails the command at once, before
anything changed, with :class:`~mlops.mlflow.RegistryUnavailableError` naming its URL.

The registry alias is the source of truth; the :class:`~mlops.data.schemas.ModelEvent`
published under the same lock (so events are in audit order) is a best-effort hint that makes the
scorer and the API re-read the alias at once instead of at their next poll. The challenger alias
is bookkeeping of the gate: clearing it is best-effort too.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
from sqlalchemy import update

from mlops import kafka, store
from mlops.config import Settings
from mlops.data.schemas import ModelEvent
from mlops.errors import MlopsError, PolicyError, RegistryError
from mlops.evaluation.data import lake_evaluation_data, trained_until
from mlops.evaluation.gate import GateDecision, evaluate_gate
from mlops.log import get_logger
from mlops.mlflow import RegistryUnavailableError, require_reachable, tracking_client, unavailable, unreachable
from mlops.registry.catalog import VersionNotFoundError, aliases, model_version
from mlops.registry.loader import CHAMPION, load_version

__all__ = [
    "CHALLENGER",
    "EVENT_TIMEOUT_S",
    "MAX_REGISTRY_VERSION",
    "ChangeResult",
    "NoPreviousChampionError",
    "PromotionRejectedError",
    "promote",
    "rollback",
]

log = get_logger(__name__)

CHALLENGER = "challenger"
EVENT_TIMEOUT_S = 10.0
MAX_REGISTRY_VERSION = 2**63 - 1
"""The registry stores versions as 64-bit integers. MLflow answers a larger one with HTTP 500,
which its client retries with backoff for about 4 minutes: such a version is refused up front."""


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


def promote(settings: Settings, version: str, *, actor: str, reason: str, force: bool = False,
            evaluation_data: pd.DataFrame | None = None) -> ChangeResult:
    """Make ``version`` the champion.

    Unless ``force``, the evaluation gate compares it with the current champion first, on
    ``evaluation_data`` (features + ``label``) or, when that is None, on labelled lake data newer
    than both models' training data; a loss raises :class:`PromotionRejectedError` and is recorded.
    A registry that does not answer raises RegistryUnavailableError and changes nothing.
    """
    name = settings.mlflow.registered_model
    version = str(version)
    _require_registrable(name, version)
    require_reachable(settings, f"promoting model {name!r} version {version}; nothing was changed")
    client = tracking_client(settings)
    meta = model_version(settings, version, client)
    decision = None if force else _run_gate(settings, client, version, actor, reason, evaluation_data)

    with _ChampionChange(settings, client, actor, reason) as change:
        current = change.current
        stale = decision is not None and current != decision.champion_version and current != version
        if stale:
            # The champion moved while we evaluated: the verdict is about a model no longer serving.
            message = (f"champion changed from {decision.champion_version if decision else None} to {current} "
                       "during the evaluation; run the promotion again")
            store.record_event(change.conn, "rejection", model_name=name, model_version=version,
                            previous_version=current, run_id=meta.run_id, actor=actor, reason=reason,
                            details={"action": "promote", "error": message,
                                     "gate": decision.to_dict() if decision else None})
        else:
            event_id, published = change.apply(
                "promote", version, run_id=meta.run_id,
                details={"forced": force, "gate": decision.to_dict() if decision else None})
    if stale:
        raise PromotionRejectedError(message, decision)
    _clear_alias_if(client, name, CHALLENGER, version)
    changed = current != version
    log.info("promoted" if changed else "already champion", model_name=name, model_version=version,
             previous_version=current, actor=actor, forced=force)
    return ChangeResult("promote", name, version, current, changed, event_id, published, decision)


def rollback(settings: Settings, to_version: str | None = None, *, actor: str, reason: str) -> ChangeResult:
    """Make ``to_version`` (default: the champion before the current one, from the audit trail) the champion."""
    name = settings.mlflow.registered_model
    if to_version is not None:
        _require_registrable(name, str(to_version))
    require_reachable(settings, f"rolling back model {name!r}; nothing was changed")
    client = tracking_client(settings)
    if to_version is not None:
        model_version(settings, str(to_version), client)  # fail before taking the lock if it does not exist
    with _ChampionChange(settings, client, actor, reason) as change:
        current = change.current
        target = str(to_version) if to_version is not None else None
        if target is None:
            if current is None:
                raise NoPreviousChampionError(f"model {name!r}: no champion to roll back from; use --to VERSION")
            target = store.previous_champion(change.conn, name, current)
            if target is None:
                raise NoPreviousChampionError(f"model {name!r}: the audit trail records no champion before "
                                              f"version {current}; use --to VERSION")
        run_id = model_version(settings, target, client).run_id
        event_id, published = change.apply("rollback", target, run_id=run_id, details={"requested": to_version})
    changed = current != target
    log.info("rolled back" if changed else "already champion", model_name=name, model_version=target,
             previous_version=current, actor=actor)
    return ChangeResult("rollback", name, target, current, changed, event_id, published)


def _require_registrable(name: str, version: str) -> None:
    """Refuse a whole number the registry cannot hold (it could not answer for it in bounded time)."""
    if version.isdigit() and int(version) > MAX_REGISTRY_VERSION:
        raise VersionNotFoundError(f"model {name!r} version {version}: no such version (registry versions are "
                                   f"whole numbers up to {MAX_REGISTRY_VERSION}); nothing was changed")


class _ChampionChange:
    """The champion lock held for one read-decide-move, and the move's audit row (see the module docstring).

    Entering takes the lock and reads the champion; :meth:`apply` writes the row, moves the alias and
    publishes the hint; leaving commits the row with the lock. If anything fails after the alias
    moved (the commit itself included), the alias is moved back before the error propagates.
    """

    def __init__(self, settings: Settings, client: Any, actor: str, reason: str) -> None:
        self.settings, self.client, self.actor, self.reason = settings, client, actor, reason
        self.name = settings.mlflow.registered_model
        self.current: str | None = None
        self.conn: Any = None
        self._moved_to: str | None = None
        self._lock: Any = None

    def __enter__(self) -> _ChampionChange:
        self._lock = store.locked(self.settings, f"champion:{self.name}", holder=self.actor)
        self.conn = self._lock.__enter__()
        try:
            self.current = aliases(self.settings, self.client).get(CHAMPION)
        except BaseException:
            self._lock.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: Any) -> None:
        try:
            self._lock.__exit__(kind, err, tb)  # commits, or rolls back and re-raises
        except BaseException as failure:
            if self._moved_to is not None:
                self._undo(failure)
            raise
        if err is not None and self._moved_to is not None:
            self._undo(err)

    def apply(self, action: Literal["promote", "rollback"], target: str, *, run_id: str | None,
              details: dict[str, Any]) -> tuple[int, bool]:
        """Record and make the change to ``target``; the row id and whether the event was published."""
        changed = self.current != target
        kind = "promotion" if action == "promote" else "rollback"
        # The row first: a database that cannot take it fails the command before the registry changes.
        event_id = store.record_event(
            self.conn, kind, model_name=self.name, model_version=target, previous_version=self.current,
            run_id=run_id, actor=self.actor, reason=self.reason,
            details={**details, "changed": changed, "event_published": False})
        if not changed:
            return event_id, False
        self._move_alias(target)
        published = _publish(self.settings, ModelEvent(
            model=self.name, action=action, version=target, previous_version=self.current, actor=self.actor,
            reason=self.reason))
        if published:
            self.conn.execute(update(store.LoopEvent).where(store.LoopEvent.id == event_id).values(
                details={**details, "changed": True, "event_published": True}))
        return event_id, published

    def _move_alias(self, target: str) -> None:
        try:
            self.client.set_registered_model_alias(self.name, CHAMPION, target)
        except Exception as err:
            if not unreachable(err):
                raise RegistryError(f"model {self.name!r}: cannot point alias {CHAMPION!r} at version {target}: "
                                    f"{err}; nothing was changed") from err
            # MLflow retried for minutes; the request may still have reached the server: say so.
            raise unavailable(
                self.settings,
                f"moving alias {CHAMPION!r} of model {self.name!r} from version {self.current} to {target}; "
                f"nothing was recorded. If `mlops models list` shows version {target} as champion once the "
                "registry is back, the move went through: run the command again to record it", err) from err
        self._moved_to = target

    def _undo(self, failure: BaseException) -> None:
        """The audit row did not commit: move the alias back, so that neither change stays, and say so."""
        target, self._moved_to = self._moved_to, None
        where = f"model {self.name!r}: the audit row for the move to version {target} did not commit ({failure})"
        try:
            if self.current is None:
                self.client.delete_registered_model_alias(self.name, CHAMPION)
            else:
                self.client.set_registered_model_alias(self.name, CHAMPION, self.current)
        except Exception as undo_err:
            raise RegistryError(
                f"{where}, and moving alias {CHAMPION!r} back to version {self.current} failed ({undo_err}): "
                f"the champion is version {target} without an audit row. Run `mlops promote {target} --force` "
                f"to record it, or `mlops rollback --to {self.current}`") from failure
        log.error("champion alias moved back: the audit row did not commit", model_name=self.name,
                  model_version=self.current, undone_version=target, error=failure)
        if self.current is not None:  # consumers that followed the first event re-read the alias on this one
            _publish(self.settings, ModelEvent(model=self.name, action="rollback", version=self.current,
                                               previous_version=target, actor=self.actor,
                                               reason="undo: " + self.reason))
        if isinstance(failure, Exception):  # an interrupt stays an interrupt
            raise store.DatabaseError(f"{where}; the champion alias was moved back to version {self.current}: "
                                   "nothing was changed") from failure


def _run_gate(settings: Settings, client: Any, version: str, actor: str, reason: str,
              evaluation_data: pd.DataFrame | None) -> GateDecision:
    """Mark ``version`` as challenger, evaluate it against the champion, record a rejection."""
    name = settings.mlflow.registered_model
    champion_version = aliases(settings, client).get(CHAMPION)
    if champion_version == version:
        raise PolicyError(f"model {name!r} version {version} is already the champion")
    _set_alias(settings, client, CHALLENGER, version)
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
        if not isinstance(err, RegistryUnavailableError):  # an outage decides nothing about the model
            store.record_event(settings, "rejection", model_name=name, model_version=version,
                            previous_version=champion_version, actor=actor, reason=reason,
                            details={"action": "promote", "error": str(err)})
        raise
    if not decision.promote:
        _clear_alias_if(client, name, CHALLENGER, version)
        store.record_event(settings, "rejection", model_name=name, model_version=version,
                        previous_version=champion_version, run_id=challenger.run_id, actor=actor, reason=reason,
                        details={"action": "promote", "gate": decision.to_dict()})
        raise PromotionRejectedError(
            f"model {name!r} version {version} not promoted: {decision.summary()} (use --force to override)",
            decision)
    return decision


def _set_alias(settings: Settings, client: Any, alias: str, version: str) -> None:
    name = settings.mlflow.registered_model
    try:
        client.set_registered_model_alias(name, alias, version)
    except Exception as err:
        if unreachable(err):
            raise unavailable(settings, f"pointing alias {alias!r} of model {name!r} at version {version}",
                              err) from err
        raise RegistryError(f"model {name!r}: cannot point alias {alias!r} at version {version}: {err}") from err


def _clear_alias_if(client: Any, name: str, alias: str, version: str) -> None:
    """Delete ``alias`` if it points at ``version`` (a challenger that was decided on); best-effort.

    A challenger alias left behind only marks a version once evaluated; the next gate run moves it.
    """
    try:
        if str(client.get_registered_model(name).aliases.get(alias)) == version:
            client.delete_registered_model_alias(name, alias)
    except Exception as err:
        log.warning("challenger alias not cleared", model_name=name, alias=alias, model_version=version, error=err)


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

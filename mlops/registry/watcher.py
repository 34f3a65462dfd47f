"""Hot swap: notice a promotion, load the new champion in the background, hand it over when ready.

Two ways to notice: a :class:`~mlops.data.schemas.ModelEvent` on the model-events topic (fast),
and a poll of the alias every ``scorer.registry_poll_s`` seconds (the fallback when an event is
lost or the topic is down). Either way the alias in the registry is the source of truth.

The new version is loaded and smoke-tested on the watcher's own thread; only a model that passed
is offered through :meth:`ModelWatcher.take`, which the owner calls between two batches. So no
batch ever sees a half-loaded model, and a version that fails to load leaves the old one serving:
the failure is logged, counted and kept in :attr:`ModelWatcher.last_error`.

Two kinds of failure, two answers. A broken version (contract tags, smoke test) is not retried
until a new event names it. A registry that does not answer (stopped, unreachable) says nothing
about the version: the old model keeps serving, :attr:`ModelWatcher.registry_failures` counts the
failed checks, ``on_failure`` is told once per outage about a version that was announced or found
but could not be loaded, and the next poll tries again, so the swap completes within one
``registry_poll_s`` of the server's return. Each check first probes the server's health
(:func:`~mlops.mlflow.require_reachable`), so a stopped server costs a failed probe
rather than MLflow's minutes of client retries.

Framework-free: the scorer and the REST API both use it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_END, KafkaException, TopicPartition

from mlops import kafka
from mlops.config import Settings
from mlops.data.schemas import ModelEvent
from mlops.errors import FatalKafkaError, MlopsError, ValidationError
from mlops.log import get_logger
from mlops.mlflow import RegistryUnavailableError, require_reachable
from mlops.registry.loader import CHAMPION, LoadedModel, load_version, resolve_alias

__all__ = ["ModelWatcher"]

log = get_logger(__name__)


class ModelWatcher:
    """Watches one alias of the configured model; offers each newly promoted, tested version once."""

    def __init__(
        self,
        settings: Settings,
        current_version: str,
        alias: str = CHAMPION,
        poll_s: float | None = None,
        on_failure: Callable[[str, str], None] | None = None,
        loader: Callable[[Settings, str], LoadedModel] = load_version,
    ) -> None:
        self.settings = settings
        self.alias = alias
        self.poll_s = poll_s if poll_s is not None else settings.scorer.registry_poll_s
        self.on_failure = on_failure
        self.loader = loader
        self.last_error: str | None = None
        self.failures = 0
        """Versions that loaded but were unfit to serve."""
        self.registry_failures = 0
        """Checks that failed because the registry did not answer."""
        self._current = current_version
        self._failed_version: str | None = None
        self._unreachable_reported: set[str] = set()
        """Versions ``on_failure`` heard about during the current outage (empty while the registry answers)."""
        self._registry_down = False
        self._pending: LoadedModel | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- owner side -------------------------------------------------------------------------
    def start(self) -> ModelWatcher:
        """Start the background thread (event listener + poller)."""
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def __enter__(self) -> ModelWatcher:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def take(self) -> LoadedModel | None:
        """The newly loaded model if one is ready (once), else None. Call between batches."""
        with self._lock:
            model, self._pending = self._pending, None
            return model

    def check_now(self) -> None:
        """Ask the thread to re-read the alias at once (e.g. after an out-of-band promotion)."""
        self._wake.set()

    # -- watcher thread ---------------------------------------------------------------------
    def _run(self) -> None:
        events = self._open_events()
        next_poll = time.monotonic() + self.poll_s
        try:
            while not self._stop.is_set():
                try:
                    announced = self._wait_for_event(events, timeout_s=0.5)
                except FatalKafkaError as err:
                    # The events are only a hint: without them the alias poll still finds every swap.
                    log.error("model events lost; polling the registry only", error=str(err), poll_s=self.poll_s)
                    events.close()
                    events = announced = None
                if announced is not None or self._wake.is_set() or time.monotonic() >= next_poll:
                    self._wake.clear()
                    next_poll = time.monotonic() + self.poll_s
                    self._check(announced)
        finally:
            if events is not None:
                events.close()

    def _open_events(self):  # type: ignore[no-untyped-def]
        topic = self.settings.kafka.topics.model_events
        try:
            consumer = kafka.consumer(self.settings.kafka, group_id=f"mlops-watcher-{self.alias}")
            metadata = consumer.list_topics(topic, timeout=10.0)
            partitions = metadata.topics[topic].partitions
            if metadata.topics[topic].error is not None or not partitions:
                raise KafkaException(metadata.topics[topic].error)
            # Only new events matter: the alias is read from the registry at start anyway.
            consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in partitions])
            return consumer
        except KafkaException as err:
            log.warning("model events unavailable; polling the registry only", topic=topic, error=err,
                        poll_s=self.poll_s)
            return None

    def _wait_for_event(self, events, timeout_s: float) -> str | None:  # type: ignore[no-untyped-def]
        """The version a model event for our alias announces, or None (no event within ``timeout_s``)."""
        if events is None:
            self._wake.wait(timeout_s)
            return None
        messages = kafka.consume(events, 1, timeout_s, f"model watcher (alias {self.alias})")
        if not messages:
            return None
        message = messages[0]
        try:
            event = ModelEvent.decode(message.value())
        except ValidationError as err:
            log.warning("ignoring invalid model event", topic=message.topic(), partition=message.partition(),
                        offset=message.offset(), reason=err.reason)
            return None
        if event.model != self.settings.mlflow.registered_model or event.alias != self.alias:
            return None
        log.info("model event", action=event.action, model_name=event.model, model_version=event.version,
                 offset=message.offset())
        return event.version

    def _check(self, announced: str | None) -> None:
        """Read the alias and load a new version; ``announced``: the version a model event just named."""
        try:
            require_reachable(self.settings, f"checking alias {self.alias!r}")
            version = resolve_alias(self.settings, self.alias)
        except RegistryUnavailableError as err:
            self._registry_failed(announced, err)
            return
        except MlopsError as err:
            log.warning("cannot read the alias; keeping the current model", alias=self.alias, error=err)
            return
        self._registry_answered()
        # A version that failed is retried only on a new hint, not on every poll.
        if version == self._current or (version == self._failed_version and announced is None):
            return
        try:
            loaded = self.loader(self.settings, version)
        except RegistryUnavailableError as err:
            self._registry_failed(version, err)
            return
        except MlopsError as err:
            if self._registry_gone():  # the server went away mid-load: the version is not to blame
                self._registry_failed(version, err)
                return
            self._failed_version = version
            self.failures += 1
            self.last_error = str(err)
            log.error("new model rejected; the current one keeps serving", model_version=version,
                      serving_version=self._current, error=err)
            if self.on_failure is not None:
                self.on_failure(version, str(err))
            return
        with self._lock:
            self._pending = loaded
            self._current = version
            self._failed_version = None
        log.info("new model ready to swap in", model_name=loaded.name, model_version=version, run_id=loaded.run_id)

    def _registry_gone(self) -> bool:
        try:
            require_reachable(self.settings)
        except RegistryUnavailableError:
            return True
        return False

    def _registry_failed(self, version: str | None, err: MlopsError) -> None:
        """The registry did not answer: keep serving, count it, retry at the next poll."""
        self.registry_failures += 1
        self.last_error = str(err)
        if not self._registry_down:
            log.error("registry unreachable; the current model keeps serving, retrying every poll",
                      alias=self.alias, serving_version=self._current, model_version=version, poll_s=self.poll_s,
                      error=err)
        self._registry_down = True
        if version is not None and version != self._current and version not in self._unreachable_reported:
            self._unreachable_reported.add(version)
            if self.on_failure is not None:
                self.on_failure(version, str(err))

    def _registry_answered(self) -> None:
        if self._registry_down:
            log.info("registry reachable again", alias=self.alias, serving_version=self._current,
                     failed_checks=self.registry_failures)
        self._registry_down = False
        self._unreachable_reported.clear()

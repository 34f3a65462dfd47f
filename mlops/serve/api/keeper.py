"""The model the API serves, kept fresh off the request path: a background thread loads the
champion and swaps in each version the :class:`~mlops.registry.watcher.ModelWatcher` has ready,
so no request waits for MLflow and a swap never fails a request."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlops.config import Settings
from mlops.errors import MlopsError
from mlops.heap import freeze_long_lived
from mlops.log import get_logger
from mlops.registry import catalog
from mlops.registry.loader import LoadedModel, load_champion
from mlops.registry.watcher import ModelWatcher
from mlops.serve.api.metrics import ApiMetrics
from mlops.serve.api.models import ModelResponse

__all__ = ["RETRY_LOAD_S", "SWAP_CHECK_S", "ModelKeeper", "Serving"]

log = get_logger(__name__)

RETRY_LOAD_S = 2.0
SWAP_CHECK_S = 0.1


@dataclass(frozen=True)
class Serving:
    """The model serving now and what ``GET /v1/model`` says about it (read once per request)."""

    model: LoadedModel
    info: dict[str, Any]


class ModelKeeper:
    """Background thread: load the champion, then swap in whatever the watcher has ready."""

    def __init__(self, settings: Settings, metrics: ApiMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.serving: Serving | None = None
        self.load_error: str | None = None
        self.watcher: ModelWatcher | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="api-model-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)
        if self.watcher is not None:
            self.watcher.stop()

    def check_now(self) -> None:
        """Re-read the alias at once (after a promotion made through this API)."""
        if self.watcher is not None:
            self.watcher.check_now()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.watcher is None:
                try:
                    loaded = load_champion(self.settings)
                except MlopsError as err:
                    self.load_error = str(err)
                    log.warning("no model to serve yet; retrying", error=err, retry_s=RETRY_LOAD_S)
                    self._stop.wait(RETRY_LOAD_S)
                    continue
                self._swap(loaded)
                self.watcher = ModelWatcher(self.settings, loaded.version, on_failure=self._failed).start()
            fresh = self.watcher.take()
            if fresh is not None:
                self._swap(fresh)
            self._stop.wait(SWAP_CHECK_S)

    def _failed(self, version: str, error: str) -> None:
        self.metrics.load_failures.inc()
        self.load_error = f"version {version}: {error}"

    def _swap(self, loaded: LoadedModel) -> None:
        # One assignment: a request holds either the old or the new Serving, never a mix.
        self.serving = Serving(loaded, _model_info(self.settings, loaded))
        self.load_error = None
        self.metrics.swaps.inc()
        self.metrics.model_version.set(float(loaded.version) if loaded.version.isdigit() else -1)
        freeze_long_lived()  # one pause here, instead of 130-205 ms every ~0.4 s under load
        log.info("serving model", model_name=loaded.name, model_version=loaded.version, run_id=loaded.run_id)


def _model_info(settings: Settings, loaded: LoadedModel) -> dict[str, Any]:
    """What GET /v1/model answers; read from MLflow once per swap, not per request."""
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    aliases: list[str] = []
    try:
        info = catalog.version_info(settings, loaded.version)
        metrics, tags, aliases = info.metrics, info.tags, info.aliases
    except MlopsError as err:
        log.warning("model details unavailable", model_version=loaded.version, error=err)
    return ModelResponse(
        name=loaded.name, version=loaded.version, run_id=loaded.run_id, threshold=loaded.threshold,
        feature_spec=loaded.spec.to_dict(), metrics=metrics, lineage=catalog.lineage_summary(tags),
        aliases=aliases, loaded_at=datetime.now(UTC).isoformat(),
    ).model_dump()

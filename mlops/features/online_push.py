"""Each device's latest scored features, written to the Feast online store (for ``mlops features follow``).

    pusher = OnlinePusher(settings, spec_of=lambda name, version: ...)
    pusher.add("dev-001", event_time, "iot-failure", "3", {"s_2__mean": 1.0, ...})  # no I/O
    if pusher.flush():      # True: nothing pending any more (written, or dropped on purpose)
        ...                 # the caller may now commit the input the rows came from

:meth:`OnlinePusher.add` keeps only the latest row per device (a later row replaces an earlier one
not yet written), so memory and the size of a write are bounded by the fleet, not the stream.
:meth:`OnlinePusher.flush` writes the pending rows with :func:`~mlops.features.feast_repo.push_online`,
one write per model version; ``spec_of`` names a version's :class:`FeatureSpec` (the follower asks
the registry). Nothing here runs on its own thread: Feast's writes hold the GIL (41 ms for 20
devices, 1.2 s for 2,000), which is why they run in their own process and not in the scorer.

Before the first write for a spec, the feature view is checked: none registered yet, one is
registered for the spec (:func:`~mlops.features.feast_repo.apply`); one with other features, the
rows of that spec are dropped with one warning (the REST API could not serve that model from the
store anyway). A failed write or spec lookup is logged and counted, and its rows stay pending
for the next flush. Rows whose features are not their model's are dropped and counted.

The online store keeps whatever was written last (the SQLite store does not compare event
times), so rows must be added in the stream's order per device, which a Kafka consumer does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import pandas as pd

from mlops.errors import ValidationError
from mlops.features import feast_repo
from mlops.features.compute import FeatureSpec
from mlops.log import get_logger

if TYPE_CHECKING:
    from feast import FeatureStore

    from mlops.config import Settings

__all__ = ["ModelKey", "OnlinePusher", "OnlineRow", "PushCounts", "SpecOf"]

log = get_logger(__name__)

ModelKey = tuple[str, str]
"""(registered model name, version) of the model that scored a row."""
SpecOf = Callable[[str, str], FeatureSpec]
"""The feature spec of (model name, version); raises when it cannot tell now (the rows are retried)."""


@dataclass(frozen=True, slots=True)
class OnlineRow:
    """A device's latest scored features, waiting to be written."""

    event_time: datetime
    model: ModelKey
    features: Mapping[str, float]


@dataclass
class PushCounts:
    pushed: int = 0
    """Rows written to the online store."""
    failures: int = 0
    """Failed writes or spec lookups (their rows were kept and retried)."""
    dropped: int = 0
    """Rows never written: the registered view has other features, or the row not its model's features."""


class OnlinePusher:
    """Coalesces rows per device and writes them to the online store on :meth:`flush`."""

    def __init__(self, settings: Settings, spec_of: SpecOf) -> None:
        self.settings = settings
        self.counts = PushCounts()
        self._spec_of = spec_of
        self._pending: dict[str, OnlineRow] = {}
        self._fitting_specs: set[FeatureSpec] = set()  # the registered view has exactly their features
        self._other_specs: set[FeatureSpec] = set()  # it has other features: warned once, rows dropped
        self._store: FeatureStore | None = None

    def open(self) -> None:
        """Import Feast and open the store now (seconds of CPU), so that the first flush does not wait for it."""
        try:
            if self._store is None:
                self._store = feast_repo.open_store(self.settings)
        except Exception as err:  # the first flush tries again
            log.warning("Feast store not ready", repo=str(self.settings.feast_repo_dir), error=str(err))

    def add(self, device_id: str, event_time: datetime, model_name: str, model_version: str,
            features: Mapping[str, float]) -> None:
        """Remember the device's newest row (replacing one not yet written)."""
        self._pending[device_id] = OnlineRow(event_time, (model_name, model_version), features)

    def pending_count(self) -> int:
        return len(self._pending)

    def clear(self) -> None:
        """Forget the pending rows (their input will be read again, e.g. by another consumer)."""
        self._pending = {}

    def flush(self) -> bool:
        """Write the pending rows; True when none is pending any more, False if some wait for a retry."""
        by_model: dict[ModelKey, dict[str, OnlineRow]] = {}
        for device, row in self._pending.items():
            by_model.setdefault(row.model, {})[device] = row
        self._pending = {}
        for model, rows in by_model.items():
            if not self._write(model, rows):
                self._pending.update(rows)
        return not self._pending

    def _write(self, model: ModelKey, rows: dict[str, OnlineRow]) -> bool:
        """Write one model version's rows; False (logged, counted) if they should be tried again."""
        try:
            spec = self._spec_of(*model)
            if not self._view_fits(spec, model):
                self.counts.dropped += len(rows)
                return True
            frame = self._frame(rows, spec, model)
            if len(frame):
                assert self._store is not None
                feast_repo.push_online(self._store, frame, spec)
        except Exception as err:  # any registry or store failure: the rows wait for the next flush
            self._store = None  # reopened on the next try, as OnlineReader does
            self.counts.failures += 1
            log.warning("online push failed; rows kept for the next try", rows=len(rows), model_name=model[0],
                        model_version=model[1], error=str(err))
            return False
        self.counts.pushed += len(frame)
        log.debug("online features pushed", rows=len(frame), model_version=model[1])
        return True

    def _frame(self, rows: dict[str, OnlineRow], spec: FeatureSpec, model: ModelKey) -> pd.DataFrame:
        """The rows as :func:`~mlops.features.feast_repo.push_online` takes them; rows of other features dropped."""
        names = spec.feature_names()
        fitting = {device: row for device, row in rows.items() if row.features.keys() == set(names)}
        if len(fitting) < len(rows):
            self.counts.dropped += len(rows) - len(fitting)
            log.warning("rows dropped: their features are not their model's", rows=len(rows) - len(fitting),
                        model_name=model[0], model_version=model[1])
        frame = pd.DataFrame([[row.features[n] for n in names] for row in fitting.values()], columns=names,
                             dtype="float64")
        frame.insert(0, feast_repo.JOIN_KEY, list(fitting))
        frame.insert(1, "event_time", [row.event_time for row in fitting.values()])
        return frame

    def _view_fits(self, spec: FeatureSpec, model: ModelKey) -> bool:
        """Open the store; register the view if there is none; False (warned once) if it has other features."""
        from feast.errors import FeatureViewNotFoundException

        if spec in self._other_specs:
            return False
        if self._store is None:
            self._store = feast_repo.open_store(self.settings)
        if spec in self._fitting_specs:
            return True
        try:
            view = feast_repo.registered_view(self._store)
        except ValidationError as err:
            if not isinstance(err.__cause__, FeatureViewNotFoundException):
                raise  # the registry could not be read: try again rather than overwrite it
            self._store = feast_repo.apply(self.settings, spec)
            log.info("online push: feature view registered for the model", model_name=model[0],
                     model_version=model[1])
            self._fitting_specs.add(spec)
            return True
        registered = {field.name for field in view.features}
        if registered == set(spec.feature_names()):
            self._fitting_specs.add(spec)
            return True
        self._other_specs.add(spec)
        log.warning("online push off for this model: the registered feature view has other features than "
                    "the model; build and apply the feature table for the model's sensors "
                    "(`mlops features build`, `mlops features apply`) to serve it from the online store",
                    model_name=model[0], model_version=model[1], view=feast_repo.FEATURE_VIEW,
                    model_only=sorted(set(spec.feature_names()) - registered),
                    view_only=sorted(registered - set(spec.feature_names())))
        return False

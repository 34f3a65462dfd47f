"""Load the model an alias points to, ready to score: the scorer and the REST API share this.

A registered version is usable only if it carries the contract's tags (``feature_spec``,
``decision_threshold``; see docs/contracts.md) and passes a smoke test: ``predict_proba`` on a
synthetic feature row returns one finite probability per row. Anything else raises
:class:`~mlops.errors.RegistryError` naming the model, version and what is wrong, so a caller
that already serves a model keeps serving it. A registry that does not answer raises the
subclass :class:`~mlops.mlflow.RegistryUnavailableError`: that version is not broken
and is worth trying again when the server is back.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

import numpy as np
import pandas as pd

from mlops.config import Settings
from mlops.errors import RegistryError
from mlops.features.compute import FeatureSpec
from mlops.log import get_logger
from mlops.mlflow import tracking_client, unavailable, unreachable, use_tracking_server

__all__ = [
    "CHAMPION",
    "SMALL_INPUT_ROWS",
    "LoadedModel",
    "load_champion",
    "load_version",
    "resolve_alias",
    "smoke_row",
    "smoke_test",
]

log = get_logger(__name__)

CHAMPION = "champion"
# LoadedModel.by_position: scikit-learn warns on every call that the array has no feature names;
# the names were checked once, at load.
warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
SMALL_INPUT_ROWS = 2048
"""Inputs up to this many rows are scored on one OpenMP thread (see :meth:`LoadedModel.predict_proba`)."""


@dataclass(frozen=True)
class LoadedModel:
    """A registered model version that loaded and passed its smoke test."""

    name: str
    version: str
    run_id: str | None
    model: Any
    spec: FeatureSpec
    threshold: float

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Probability of the positive class for each row of ``features`` (columns: spec order).

        Small inputs (a scorer micro-batch, an API request) run on one OpenMP thread: gradient
        boosting opens a parallel region per tree, and for a few rows waking a second thread costs
        more than it saves; on a busy machine far more (one reading, C-MAPSS model: ~10 ms on one
        thread, ~330 ms on two, measured under load). Serving scales with processes instead.
        """
        rows: Any = features if self.by_position else pd.DataFrame(features, columns=self.spec.feature_names())
        if len(features) > SMALL_INPUT_ROWS:
            return np.asarray(self.model.predict_proba(rows), dtype=np.float64)[:, 1]
        with _openmp().limit(limits=1):
            return np.asarray(self.model.predict_proba(rows), dtype=np.float64)[:, 1]

    @cached_property
    def by_position(self) -> bool:
        """True when the model's own feature names are the spec's, in order: then it is given the
        plain array. A DataFrame costs scikit-learn a dtype check per column on every call (3-4 ms
        of a 7-10 ms one-row prediction with 45 features); a model fitted on other names gets the
        DataFrame, so that scikit-learn rejects the mismatch instead of scoring the wrong columns.
        """
        fitted = getattr(self.model, "feature_names_in_", None)
        return fitted is not None and list(fitted) == self.spec.feature_names()


@cache
def _openmp() -> Any:
    """The process's OpenMP runtimes (threadpoolctl); found once, after scikit-learn has loaded them."""
    import sklearn  # noqa: F401  (loads scikit-learn's OpenMP runtime, so the scan below finds it)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="openmp")


def _client(settings: Settings) -> Any:
    use_tracking_server(settings)  # mlflow.sklearn.load_model resolves models:/ URIs through it
    return tracking_client(settings)


def resolve_alias(settings: Settings, alias: str = CHAMPION, name: str | None = None) -> str:
    """The version number ``alias`` points to; RegistryError if the alias is not set."""
    name = name or settings.mlflow.registered_model
    try:
        return str(_client(settings).get_model_version_by_alias(name, alias).version)
    except Exception as err:
        if unreachable(err):
            raise unavailable(settings, f"resolving alias {alias!r} of model {name!r}", err) from err
        raise RegistryError(
            f"model {name!r}: cannot resolve alias {alias!r} at {settings.mlflow.tracking_uri}: {err} "
            f"(train and promote a model first: `mlops train`, `mlops promote`)"
        ) from err


def load_version(settings: Settings, version: str, name: str | None = None) -> LoadedModel:
    """Load one version, read its contract tags and smoke-test it."""
    import mlflow.sklearn

    name = name or settings.mlflow.registered_model
    where = f"model {name!r} version {version}"
    client = _client(settings)
    try:
        meta = client.get_model_version(name, version)
    except Exception as err:
        if unreachable(err):
            raise unavailable(settings, f"reading {where}", err) from err
        raise RegistryError(f"{where}: not found in the registry: {err}") from err
    spec, threshold = _contract_tags(where, dict(meta.tags or {}))
    try:
        model = mlflow.sklearn.load_model(f"models:/{name}/{version}")
    except Exception as err:
        if unreachable(err):
            raise unavailable(settings, f"downloading {where}", err) from err
        raise RegistryError(f"{where}: cannot load the sklearn model: {err}") from err
    loaded = LoadedModel(name=name, version=str(version), run_id=meta.run_id, model=model, spec=spec,
                         threshold=threshold)
    smoke_test(loaded, where)
    log.info("model loaded", model_name=name, model_version=version, run_id=meta.run_id,
             features=len(spec.feature_names()), threshold=threshold)
    return loaded


def load_champion(settings: Settings, alias: str = CHAMPION) -> LoadedModel:
    """Resolve ``alias`` and load that version (see :func:`load_version`)."""
    return load_version(settings, resolve_alias(settings, alias))


def _contract_tags(where: str, tags: dict[str, str]) -> tuple[FeatureSpec, float]:
    for key in ("feature_spec", "decision_threshold"):
        if key not in tags:
            raise RegistryError(f"{where}: tag {key!r} is missing (see docs/contracts.md)")
    try:
        spec = FeatureSpec.from_dict(json.loads(tags["feature_spec"]))
    except (ValueError, KeyError, TypeError, AssertionError) as err:
        raise RegistryError(f"{where}: tag 'feature_spec' is not a FeatureSpec: {tags['feature_spec']!r}") from err
    if not spec.sensors or spec.window < 1:
        raise RegistryError(f"{where}: tag 'feature_spec' names no sensors or a window < 1")
    try:
        threshold = float(tags["decision_threshold"])
    except ValueError as err:
        raise RegistryError(f"{where}: tag 'decision_threshold' is not a number: "
                            f"{tags['decision_threshold']!r}") from err
    if not 0.0 <= threshold <= 1.0:
        raise RegistryError(f"{where}: tag 'decision_threshold' is {threshold}, outside [0, 1]")
    return spec, threshold


def smoke_row(spec: FeatureSpec) -> np.ndarray:
    """Two plausible feature rows: a full, flat window and a one-reading window."""
    rows = []
    for count in (spec.window, 1):
        values: list[float] = []
        for _sensor in spec.sensors:
            values += [1.0, 0.0, 0.0, 1.0]  # mean, std, slope, last
        rows.append([*values, float(count)])
    return np.asarray(rows, dtype=np.float64)


def smoke_test(loaded: LoadedModel, where: str = "") -> None:
    """Score synthetic rows; RegistryError unless every row gets a finite probability in [0, 1]."""
    where = where or f"model {loaded.name!r} version {loaded.version}"
    rows = smoke_row(loaded.spec)
    try:
        probabilities = loaded.predict_proba(rows)
    except Exception as err:  # whatever the model raises, it is not fit to serve
        raise RegistryError(f"{where}: smoke test failed: predict_proba raised {type(err).__name__}: {err}") from err
    if probabilities.shape != (len(rows),) or not all(
        math.isfinite(p) and 0.0 <= p <= 1.0 for p in probabilities
    ):
        raise RegistryError(f"{where}: smoke test failed: predict_proba returned {probabilities!r}")

"""What the registry holds: every version of the model with its aliases, key metrics and trigger.

    for info in list_versions(settings):
        print(info.version, info.aliases, info.metrics.get("val_f1"), info.trigger)

A registry that does not answer (connection refused, timeout, 5xx after MLflow's retries) raises
:class:`~mlops.mlflow.RegistryUnavailableError`, never :class:`VersionNotFoundError`: "the server is
down" and "there is no such version" call for different actions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlops.config import Settings
from mlops.errors import RegistryError
from mlops.lineage import (
    COMPARED_WITH,
    DECISION_THRESHOLD,
    FEATURE_SPEC,
    GIT_COMMIT,
    LINEAGE_PREFIX,
    REASON,
    TRIGGER,
)
from mlops.mlflow import tracking_client, unavailable, unreachable

__all__ = ["KEY_METRICS", "VersionInfo", "VersionNotFoundError", "aliases", "describe_version", "lineage_summary",
           "list_versions", "model_version", "run_metrics", "version_info"]

KEY_METRICS = ("val_f1", "val_roc_auc", "val_pr_auc", "val_precision", "val_recall", "val_accuracy")


class VersionNotFoundError(RegistryError):
    """The registered model or the version asked for does not exist."""


def aliases(settings: Settings, client: Any = None) -> dict[str, str]:
    """Alias -> version of the configured model; {} when no alias is set."""
    name = settings.mlflow.registered_model
    client = client or tracking_client(settings)
    try:
        model = client.get_registered_model(name)
    except Exception as err:
        if unreachable(err):
            raise unavailable(settings, f"reading the aliases of model {name!r}", err) from err
        raise VersionNotFoundError(f"model {name!r}: not in the registry at {settings.mlflow.tracking_uri}: "
                                   f"{err}") from err
    return {alias: str(version) for alias, version in dict(model.aliases or {}).items()}


def model_version(settings: Settings, version: str, client: Any = None) -> Any:
    """The registry's ModelVersion; VersionNotFoundError naming the model and version if absent."""
    name = settings.mlflow.registered_model
    client = client or tracking_client(settings)
    try:
        return client.get_model_version(name, str(version))
    except Exception as err:
        if unreachable(err):
            raise unavailable(settings, f"reading model {name!r} version {version}", err) from err
        raise VersionNotFoundError(f"model {name!r} version {version}: not in the registry at "
                                   f"{settings.mlflow.tracking_uri}: {err}") from err


@dataclass(frozen=True)
class VersionInfo:
    """One registered version as the CLI and the API show it."""

    version: str
    aliases: list[str]
    run_id: str | None
    created: datetime
    status: str
    trigger: str | None
    reason: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created"] = self.created.isoformat()
        return data


def _info(meta: Any, alias_map: dict[str, str], metrics: dict[str, float]) -> VersionInfo:
    tags = dict(meta.tags or {})
    return VersionInfo(
        version=str(meta.version),
        aliases=sorted(a for a, v in alias_map.items() if v == str(meta.version)),
        run_id=meta.run_id,
        created=datetime.fromtimestamp(meta.creation_timestamp / 1000, tz=UTC),
        status=str(meta.status),
        trigger=tags.get("trigger"),
        reason=tags.get("reason"),
        metrics=metrics,
        tags=tags,
    )


def run_metrics(client: Any, run_id: str | None) -> dict[str, float]:
    """The key validation metrics of a run ({} when the run is gone)."""
    if not run_id:
        return {}
    try:
        data = client.get_run(run_id).data
    except Exception:  # a deleted run still leaves its model version listed
        return {}
    return {k: float(v) for k, v in data.metrics.items() if k in KEY_METRICS}


def version_info(settings: Settings, version: str, client: Any = None) -> VersionInfo:
    """One version with its aliases and key metrics."""
    client = client or tracking_client(settings)
    meta = model_version(settings, version, client)
    return _info(meta, aliases(settings, client), run_metrics(client, meta.run_id))


def list_versions(settings: Settings, client: Any = None) -> list[VersionInfo]:
    """Every version of the configured model, newest first."""
    name = settings.mlflow.registered_model
    client = client or tracking_client(settings)
    alias_map = aliases(settings, client)
    try:
        versions = list(client.search_model_versions(f"name = '{name}'", max_results=1000))
    except Exception as err:
        if unreachable(err):
            raise unavailable(settings, f"listing the versions of model {name!r}", err) from err
        raise RegistryError(f"model {name!r}: cannot list versions at {settings.mlflow.tracking_uri}: {err}") from err
    versions.sort(key=lambda meta: int(meta.version), reverse=True)
    return [_info(meta, alias_map, run_metrics(client, meta.run_id)) for meta in versions]


def lineage_summary(tags: dict[str, str]) -> dict[str, str]:
    """The lineage tags of a version (``lineage.*``, trigger, reason, git commit) without the prefix noise."""
    keep = {"trigger", "reason", "git_commit"}
    return {k: v for k, v in sorted(tags.items()) if k.startswith("lineage.") or k in keep}


def _resolve(client: Any, name: str, version: str) -> Any:
    # "3" is a version number; anything else ("champion", "@challenger") is an alias.
    alias = version.removeprefix("@")
    if alias.isdigit():
        return client.get_model_version(name, alias)
    return client.get_model_version_by_alias(name, alias)


def describe_version(settings: Settings, version: str, name: str | None = None) -> dict[str, Any]:
    """Everything known about one model version (number or alias): tags, lineage, run, metrics, data.

    Raises RegistryError if the registry does not know the version or does not answer.
    """
    name = name or settings.mlflow.registered_model
    client = tracking_client(settings)
    try:
        meta = _resolve(client, name, version)
        run = client.get_run(meta.run_id) if meta.run_id else None
        children = (
            client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'",
                               max_results=1000)
            if run else []
        )
    except Exception as err:  # MlflowException and connection errors: the registry did not answer usefully
        raise RegistryError(f"model {name!r} version {version}: cannot describe it at "
                            f"{settings.mlflow.tracking_uri}: {err}") from err
    tags = dict(meta.tags or {})
    run_tags = dict(run.data.tags) if run else {}
    lineage = {k.removeprefix(LINEAGE_PREFIX): _maybe_json(v)
               for k, v in sorted({**run_tags, **tags}.items()) if k.startswith(LINEAGE_PREFIX)}
    return {
        "model": name,
        "version": str(meta.version),
        "aliases": list(getattr(meta, "aliases", []) or []),
        "status": meta.status,
        "created": meta.creation_timestamp,
        "run_id": meta.run_id,
        "run_status": run.info.status if run else None,
        "source": meta.source,
        "trigger": tags.get(TRIGGER, run_tags.get(TRIGGER)),
        "reason": tags.get(REASON, run_tags.get(REASON)),
        "git_commit": tags.get(GIT_COMMIT, run_tags.get(GIT_COMMIT)),
        "compared_with": tags.get(COMPARED_WITH, run_tags.get(COMPARED_WITH)),
        "decision_threshold": _maybe_float(tags.get(DECISION_THRESHOLD)),
        "feature_spec": _maybe_json(tags.get(FEATURE_SPEC, "null")),
        "metrics": dict(sorted(run.data.metrics.items())) if run else {},
        "params": dict(sorted(run.data.params.items())) if run else {},
        "lineage": lineage,
        "datasets": [
            {"name": d.dataset.name, "digest": d.dataset.digest, "source": d.dataset.source,
             "context": next((t.value for t in d.tags if t.key == "mlflow.data.context"), None),
             "tags": {t.key: t.value for t in d.tags if t.key != "mlflow.data.context"}}
            for d in (run.inputs.dataset_inputs if run and run.inputs else [])
        ],
        "candidates": len(children),
    }


def _maybe_json(value: str) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _maybe_float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None

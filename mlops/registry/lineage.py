"""Lineage of a registered model version: write it on the training run and the version, read it back.

What every version answers (``/work/shared/design.md``, "Lineage"), as tags on both the run and
the model version:

- ``feature_spec``, ``decision_threshold``, ``trigger``, ``reason``, ``git_commit``, ``compared_with``
  (the contract tags, docs/contracts.md);
- ``lineage.*``: lake files, partitions, Kafka offset ranges, row counts, event-time range and
  content digests of the readings and labels the model learnt from, the feature names and Feast
  feature views, the chosen hyperparameters and the search space, the config snapshot's digest.

The run additionally holds the dataset inputs (with digests), the search space and config snapshot
as artifacts, and one child run per candidate. :func:`describe_version` gathers all of it.
"""

from __future__ import annotations

import json
from typing import Any

from mlops.config import Settings
from mlops.errors import RegistryError
from mlops.mlflow import tracking_client

FEATURE_SPEC = "feature_spec"
DECISION_THRESHOLD = "decision_threshold"
TRIGGER = "trigger"
REASON = "reason"
GIT_COMMIT = "git_commit"
COMPARED_WITH = "compared_with"
FAILURE_REASON = "failure_reason"
LINEAGE_PREFIX = "lineage."
VERSION_TAGS = (FEATURE_SPEC, DECISION_THRESHOLD, TRIGGER, REASON, GIT_COMMIT, COMPARED_WITH)
"""Copied from the run to the model version, together with every ``lineage.*`` tag."""
MAX_TAG_CHARS = 5000
"""MLflow's limit for a model version tag value; longer values are cut and point at the artifact."""
LINEAGE_ARTIFACT = "lineage/lineage.json"


def fit_tag(value: str) -> str:
    """A tag value within MLflow's limit; the whole value is always in the lineage artifact."""
    if len(value) <= MAX_TAG_CHARS:
        return value
    suffix = f"... (cut; whole value in {LINEAGE_ARTIFACT})"
    return value[: MAX_TAG_CHARS - len(suffix)] + suffix


def version_tags(run_tags: dict[str, str]) -> dict[str, str]:
    """The subset of a training run's tags that the model version carries too."""
    return {k: fit_tag(v) for k, v in run_tags.items() if k in VERSION_TAGS or k.startswith(LINEAGE_PREFIX)}


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

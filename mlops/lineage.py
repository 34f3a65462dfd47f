"""The lineage vocabulary: the tags a training run and its model version carry, shared by the
training job that writes them and the registry that reads them back
(:func:`mlops.registry.catalog.describe_version`).

What every version answers (``/work/shared/design.md``, "Lineage"), as tags on both the run and
the model version:

- ``feature_spec``, ``decision_threshold``, ``trigger``, ``reason``, ``git_commit``, ``compared_with``
  (the contract tags, docs/contracts.md);
- ``lineage.*``: lake files, partitions, Kafka offset ranges, row counts, event-time range and
  content digests of the readings and labels the model learnt from, the feature names and Feast
  feature views, the chosen hyperparameters and the search space, the config snapshot's digest.

The run additionally holds the dataset inputs (with digests), the search space and config snapshot
as artifacts, and one child run per candidate.
"""

from __future__ import annotations

__all__ = ["COMPARED_WITH", "DECISION_THRESHOLD", "FAILURE_REASON", "FEATURE_SPEC", "GIT_COMMIT", "LINEAGE_ARTIFACT",
           "LINEAGE_PREFIX", "MAX_TAG_CHARS", "REASON", "TRAINED_UNTIL_TAGS", "TRIGGER", "VERSION_TAGS", "fit_tag",
           "version_tags"]

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
TRAINED_UNTIL_TAGS = ("lineage.event_time_max", "lineage.until")
"""Tags that say up to which event time a version's training data reaches (first found wins)."""


def fit_tag(value: str) -> str:
    """A tag value within MLflow's limit; the whole value is always in the lineage artifact."""
    if len(value) <= MAX_TAG_CHARS:
        return value
    suffix = f"... (cut; whole value in {LINEAGE_ARTIFACT})"
    return value[: MAX_TAG_CHARS - len(suffix)] + suffix


def version_tags(run_tags: dict[str, str]) -> dict[str, str]:
    """The subset of a training run's tags that the model version carries too."""
    return {k: fit_tag(v) for k, v in run_tags.items() if k in VERSION_TAGS or k.startswith(LINEAGE_PREFIX)}

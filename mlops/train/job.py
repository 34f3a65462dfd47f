"""The training job: window -> training set (Spark) -> time split -> distributed search -> MLflow run
-> registered model version with its lineage.

One MLflow parent run per job and one nested child run per candidate (tag ``mlflow.parentRunId``),
so the UI lists a training's candidates under it and compares them: every child logs the same
``val_*`` metrics, the parent logs the whole search space as ``search_space.<family>.<name>`` params.
The experiment is tagged as a model-training experiment (:data:`EXPERIMENT_KIND`). The chosen
candidate is refit on the driver, logged in the sklearn flavour and registered as a new version of
``settings.mlflow.registered_model`` with its evaluation plots (:mod:`mlops.train.plots`) on both
the run and the logged model; nothing else in the registry changes (promotion is the loop's job).
Any failure — Spark, an empty or too-small window, MLflow — marks the run FAILED with a
``failure_reason`` tag, registers nothing and raises :class:`~mlops.errors.TrainingError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import yaml

from mlops import config, lineage
from mlops.config import Settings
from mlops.errors import MlopsError, TrainingError, ValidationError
from mlops.evaluation.metrics import METRIC_NAMES, evaluate
from mlops.log import get_logger
from mlops.mlflow import tracking_client, use_tracking_server
from mlops.monitor.calibration import CALIBRATION_ARTIFACT, CALIBRATION_TAG, calibrate_for_policy, summary
from mlops.spark import execution_tags, spark_session
from mlops.train import plots
from mlops.train.dataset import TrainingSet, build_training_set
from mlops.train.model import fit_and_score
from mlops.train.regimes import regime_split, weighted_rate
from mlops.train.search import (
    CandidateResult,
    SearchData,
    choose_best,
    distributed_search,
    on_windows,
    sample_candidates,
)
from mlops.train.split import LABEL, Split

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "MODEL_TRAINING_KINDS", "POSITIVE_RATE_MISMATCH",
           "REFERENCE_MIN_ROWS", "TRAINING_ROWS_TAG", "TRIGGERS", "TrainRequest", "TrainResult", "Trigger",
           "config_snapshot", "experiment_url", "git_commit", "parse_duration", "resolve_window", "run_training",
           "search_space_params", "training_experiment"]

log = get_logger(__name__)

Trigger = Literal["manual", "schedule", "drift"]
TRIGGERS = ("manual", "schedule", "drift")
_SECRET_KEYS = ("key", "password", "secret", "token", "connection_string")

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
"""The experiment tag MLflow 3 reads to tell a model-training experiment from a GenAI one."""
MODEL_TRAINING_KINDS = (EXPERIMENT_KIND, "finetuning", "regression", "classification", "forecasting", "automl")
"""Kinds someone may have chosen on purpose for a training experiment: left as they are."""


@dataclass(frozen=True)
class TrainRequest:
    """What to train on and why. ``since``/``until`` win over ``window`` (which ends at ``until`` or now)."""

    window: str | timedelta | None = None
    since: datetime | None = None
    until: datetime | None = None
    trigger: Trigger = "manual"
    reason: str = ""
    reference_since: datetime | None = None
    """Event time from which the training rows make the drift monitor's reference: the start of the
    regime the model must serve (a drift retraining's drift start). None: every training row."""


@dataclass(frozen=True)
class TrainResult:
    """A registered version and how it came about."""

    run_id: str
    model_name: str
    version: str
    family: str
    params: dict[str, Any]
    metrics: dict[str, float]
    threshold: float
    compared_with: str
    candidates: int
    duration_s: float
    tags: dict[str, str] = field(default_factory=dict)


def parse_duration(value: str | timedelta) -> timedelta:
    """A window given as ``"7d"``, ``"12h"``, ``"90m"``, ``"30s"``, ``"2w"`` or already as a timedelta
    (settings hold durations typed: :data:`mlops.config.Duration`)."""
    try:
        return config.parse_duration(value)
    except ValueError as err:
        raise TrainingError(f"window: {err}") from err


def resolve_window(request: TrainRequest, default_window: str | timedelta,
                   now: datetime) -> tuple[datetime, datetime]:
    """The event-time window ``[since, until)`` of a request, in UTC."""
    def utc(value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    until = utc(request.until) if request.until else utc(now)
    since = utc(request.since) if request.since else until - parse_duration(request.window or default_window)
    if since >= until:
        raise TrainingError(f"training window is empty: since {since.isoformat()} is not before "
                            f"until {until.isoformat()}")
    return since, until


def git_commit(directory: Path | None = None) -> str:
    """``git rev-parse HEAD`` of the code, with ``+dirty`` for uncommitted changes; ``unknown`` outside git."""
    where = directory or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def config_snapshot(settings: Settings) -> dict[str, Any]:
    """The settings as plain data, secrets replaced by ``***``."""
    def redact(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: redact(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [redact(v) for v in value]
        return "***" if any(word in key.lower() for word in _SECRET_KEYS) and value else value
    snapshot: dict[str, Any] = redact(settings.model_dump(mode="json"))
    return snapshot


def experiment_url(tracking_uri: str, experiment_id: str) -> str:
    """The experiment's runs in the MLflow UI, opened as model training.

    MLflow 3.17's UI shows an experiment as its sidebar's workflow (``GenAI`` by default, remembered
    per browser) says; ``workflowType=machine_learning`` in the link switches it to model training.
    """
    return f"{tracking_uri.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def training_experiment(client: Any, name: str) -> str:
    """The id of experiment ``name`` (created when missing), tagged as a model-training experiment."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        with contextlib.suppress(Exception):  # another training may have created it first
            client.create_experiment(name)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise TrainingError(f"MLflow experiment {name!r} could neither be found nor created")
    experiment_id = str(experiment.experiment_id)
    kind = experiment.tags.get(EXPERIMENT_KIND_TAG)
    if kind not in MODEL_TRAINING_KINDS:  # unset, or a kind the UI guessed (it tags its guesses too)
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment_id


def search_space_params(space: dict[str, dict[str, list[Any]]]) -> dict[str, str]:
    """The search space as parent-run params: ``search_space.<family>.<name>`` = the JSON list of values."""
    return {f"search_space.{family}.{name}": json.dumps(values)
            for family in sorted(space) for name, values in sorted(space[family].items())}


def _champion(client: Any, name: str) -> str:
    try:
        return str(client.get_model_version_by_alias(name, "champion").version)
    except Exception:  # no registered model or no champion yet: nothing to compare with
        return "none"


def _pip_requirements() -> list[str]:
    # Explicit: MLflow's requirement inference would import-trace the model in a subprocess (slow).
    return [f"{package}=={metadata.version(package)}"
            for package in ("scikit-learn", "numpy", "pandas", "scipy", "skops", "mlflow")]


def _short(digest: str) -> str:
    # MLflow caps a dataset digest at 36 characters; the full SHA-256 is in the input's tags and lineage.*.
    return digest.removeprefix("sha256:")[:32]


def _log_datasets(training: TrainingSet, split: Split) -> None:
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.data.sources import LocalArtifactDatasetSource  # type: ignore[attr-defined]

    for table in (training.readings, training.labels):
        source = LocalArtifactDatasetSource(str(Path(table.root) / table.table))
        dataset = MetaDataset(source, name=f"lake.{table.table}", digest=_short(table.digest))  # type: ignore[abstract]
        mlflow.log_input(dataset, context="source", tags={
            "digest": table.digest, "rows": str(table.rows), "files": str(len(table.files)),
            "partitions": ",".join(table.partitions),
            "offsets": json.dumps(table.offsets(), separators=(",", ":")),
            "since": training.since.isoformat(), "until": training.until.isoformat()})
    source = str(Path(training.readings.root) / "readings")
    for context, part in (("training", split.train), ("validation", split.validation)):
        hashed = pd.util.hash_pandas_object(part, index=False).to_numpy().tobytes()
        digest = "sha256:" + hashlib.sha256(hashed).hexdigest()
        part_dataset = from_pandas(part, source=source, targets=LABEL, name=f"training-set.{context}",
                                   digest=_short(digest))
        mlflow.log_input(part_dataset, context=context, tags={
            "rows": str(len(part)), "positives": str(int(part[LABEL].sum())), "digest": digest,
            "event_time_min": pd.Timestamp(part["event_time"].min()).isoformat(),
            "event_time_max": pd.Timestamp(part["event_time"].max()).isoformat(),
            "readings_offsets": json.dumps(training.readings.offsets(), separators=(",", ":"))})


def _log_children(client: Any, parent: Any, results: list[CandidateResult]) -> None:
    """One nested run per candidate, with the task's real start time and duration."""
    for result in results:
        start_ms = int(result.started_at * 1000)
        index = result.candidate.index
        child = client.create_run(parent.info.experiment_id, start_time=start_ms, run_name=f"candidate-{index}",
                                  tags={"mlflow.parentRunId": parent.info.run_id, "candidate": str(index)})
        params = {"candidate": str(result.candidate.index), **result.candidate.as_params()}
        # Every successful candidate logs every metric name (NaN where undefined): the UI compares them.
        metrics = {} if result.error else {f"val_{k}": result.metrics.get(k, float("nan")) for k in METRIC_NAMES}
        metrics.update(duration_s=result.duration_s, decision_threshold=result.threshold)
        from mlflow.entities import Metric, Param, RunTag

        now_ms = start_ms + int(result.duration_s * 1000)
        client.log_batch(child.info.run_id, metrics=[Metric(k, float(v), now_ms, 0) for k, v in metrics.items()],
                         params=[Param(k, v) for k, v in params.items()],
                         tags=[RunTag("error", result.error[:4000])] if result.error else [])
        client.set_terminated(child.info.run_id, "FAILED" if result.error else "FINISHED", end_time=now_ms)


def _features(part: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    return part[names].astype("float64").reset_index(drop=True)


def run_training(settings: Settings, request: TrainRequest, *, spark: SparkSession | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC),
                 progress: Callable[[str], None] = lambda _message: None) -> TrainResult:
    """Run one training job end to end and register the chosen model; TrainingError if anything fails.

    ``spark``: an existing session to use (kept open); by default one is built from ``settings.spark``
    and stopped at the end. ``progress`` receives one line per step (the CLI shows them).
    """
    import mlflow

    if request.trigger not in TRIGGERS:
        raise TrainingError(f"trigger {request.trigger!r}: expected one of {', '.join(TRIGGERS)}")
    since, until = resolve_window(request, settings.train.window, now())
    name = settings.mlflow.registered_model
    use_tracking_server(settings)  # the run is logged through mlflow's fluent API
    client = tracking_client(settings)
    try:
        experiment_id = training_experiment(client, settings.mlflow.experiment)
        mlflow.set_experiment(experiment_id=experiment_id)
        run = client.create_run(experiment_id, run_name=f"train-{request.trigger}-{now():%Y%m%dT%H%M%S}")
    except Exception as err:
        raise TrainingError(f"MLflow at {settings.mlflow.tracking_uri} did not accept a run: {err}") from err
    started = time.perf_counter()

    def step(line: str) -> None:
        log.info("training step", step=line, run_id=run.info.run_id, elapsed_s=round(time.perf_counter() - started, 1))
        progress(line)

    with mlflow.start_run(run_id=run.info.run_id):
        try:
            result = _train(settings, request, since, until, client, run, spark, step)
        except Exception as err:
            reason = str(err) if isinstance(err, MlopsError) else f"{type(err).__name__}: {err}"
            mlflow.set_tag(lineage.FAILURE_REASON, lineage.fit_tag(reason))
            mlflow.end_run(status="FAILED")
            log.error("training failed; nothing registered", run_id=run.info.run_id, reason=reason.splitlines()[0])
            if isinstance(err, TrainingError):
                raise
            raise TrainingError(f"training run {run.info.run_id} failed, nothing registered: {reason}") from err
    log.info("training finished", run_id=run.info.run_id, model=name, model_version=result.version,
             duration_s=round(time.perf_counter() - started, 1))
    progress(f"candidates compared in the MLflow UI: {experiment_url(settings.mlflow.tracking_uri, experiment_id)}")
    return result


def _train(settings: Settings, request: TrainRequest, since: datetime, until: datetime, client: Any, run: Any,
           spark: SparkSession | None, progress: Callable[[str], None]) -> TrainResult:
    import mlflow


    clock = time.perf_counter()
    cfg = settings.train
    name = settings.mlflow.registered_model
    compared_with = _champion(client, name)
    tags = {
        lineage.TRIGGER: request.trigger, lineage.REASON: request.reason or "none",
        lineage.GIT_COMMIT: git_commit(), lineage.COMPARED_WITH: compared_with,
        "lineage.since": since.isoformat(), "lineage.until": until.isoformat(),
    }
    if request.reference_since is not None:
        tags["lineage.reference_since"] = request.reference_since.isoformat()
    mlflow.set_tags(tags)
    snapshot = config_snapshot(settings)
    snapshot_text = yaml.safe_dump(snapshot, sort_keys=True)
    mlflow.log_text(snapshot_text, "config/config.yaml")
    tags["lineage.config_digest"] = "sha256:" + hashlib.sha256(snapshot_text.encode()).hexdigest()

    own_session = spark is None
    progress(f"reading the lake {since.isoformat()} .. {until.isoformat()} with Spark")
    session = spark_session(settings) if spark is None else spark
    try:
        training = build_training_set(settings, session, since, until)
        if len(training.frame) < cfg.min_rows:
            raise TrainingError(f"window {since.isoformat()} .. {until.isoformat()} has {len(training.frame)} "
                                f"labelled rows, fewer than train.min_rows={cfg.min_rows}: widen the window")
        windows = regime_split(training.frame, request.reference_since, cfg.validation_fraction,
                               timedelta(seconds=settings.features.horizon_cycles * settings.features.cycle_seconds),
                               min_positives=cfg.min_positives, training_rows=cfg.drift_training_rows)
        split = windows.split
        tags.update(training.tags())
        tags.update({f"lineage.{k}": v for k, v in split.describe().items()})
        tags.update(windows.tags())
        tags[lineage.FEATURE_SPEC] = json.dumps(training.spec.to_dict(), separators=(",", ":"))
        mlflow.set_tags({k: lineage.fit_tag(v) for k, v in tags.items()})
        _log_datasets(training, split)

        names = training.spec.feature_names()
        data = SearchData(_features(split.train, names), split.train[LABEL].to_numpy(dtype=np.int64),
                          _features(split.validation, names), split.validation[LABEL].to_numpy(dtype=np.int64),
                          cfg.seed, cfg.calibration, cfg.calibration_folds, windows.weights)
        candidates = on_windows(sample_candidates(cfg.search_space, cfg.candidates, cfg.seed), list(windows.weights))
        progress(f"searching {len(candidates)} candidates on Spark ({len(split.train)} train / "
                 f"{len(split.validation)} validation rows; training rows {', '.join(windows.weights)})")
        results = distributed_search(session, candidates, data)
        mlflow.set_tags(execution_tags(session))  # where the tasks ran: master and executors
    finally:
        if own_session:
            session.stop()
    _log_children(client, run, results)
    best = choose_best(results, settings.policy.primary_metric)

    progress(f"refitting candidate {best.candidate.index} ({best.candidate.family}, training rows "
             f"{best.candidate.rows}) on the driver")
    weights = data.weights[best.candidate.rows]
    fitted = fit_and_score(best.candidate.family, best.candidate.params, data.x_train, data.y_train, data.x_val,
                           data.y_val, seed=cfg.seed, calibration=cfg.calibration, folds=cfg.calibration_folds,
                           sample_weight=weights)
    metrics = evaluate(data.y_val, fitted.probability, fitted.threshold)
    tags.update(_positive_rates(weighted_rate(data.y_train, weights), float(np.mean(data.y_val))))
    tags[TRAINING_ROWS_TAG] = best.candidate.rows
    search_space = json.dumps(cfg.search_space, sort_keys=True, separators=(",", ":"))
    mlflow.log_params({
        **best.candidate.as_params(), "chosen_candidate": str(best.candidate.index), "candidates": str(len(candidates)),
        "seed": str(cfg.seed), "calibration": cfg.calibration, "calibration_folds": str(cfg.calibration_folds),
        "validation_fraction": str(cfg.validation_fraction), "horizon_cycles": str(settings.features.horizon_cycles),
        "window": str(training.spec.window), "primary_metric": settings.policy.primary_metric,
        "search_space": search_space[:6000], **search_space_params(cfg.search_space),
        **(training.sample.params(len(training.frame)) if training.sample is not None else {}),
    })
    mlflow.log_metrics({**{f"val_{k}": metrics[k] for k in METRIC_NAMES if not np.isnan(metrics[k])},
                        "train_rows": len(split.train), "validation_rows": len(split.validation),
                        "decision_threshold": fitted.threshold})
    tags.update({
        lineage.DECISION_THRESHOLD: repr(fitted.threshold),
        "lineage.family": best.candidate.family,
        "lineage.hyperparameters": json.dumps(best.candidate.params, sort_keys=True),
        "lineage.search_space": search_space,
        "lineage.candidates": str(len(candidates)),
    })
    mlflow.set_tags({k: lineage.fit_tag(v) for k, v in tags.items()})
    mlflow.log_dict(cfg.search_space, "search/search_space.json")
    mlflow.log_dict({"results": [{"candidate": r.candidate.index, "family": r.candidate.family,
                                  "params": r.candidate.params, "metrics": r.metrics, "threshold": r.threshold,
                                  "duration_s": r.duration_s, "error": r.error} for r in results]},
                    "search/results.json")
    mlflow.log_dict({"tags": tags, "readings": training.readings.to_dict(), "labels": training.labels.to_dict()},
                    lineage.LINEAGE_ARTIFACT)

    progress("logging plots, reference data and the model")
    importance = plots.importance_table(fitted.pipeline, data.x_val, data.y_val, cfg.seed)
    fraction = training.sample.fraction if training.sample is not None else 1.0
    tags.update(_log_reference(settings, fitted.pipeline,
                               _regime(split.train, split.validation, request.reference_since, names), fraction))
    with tempfile.TemporaryDirectory() as tmp:
        plot_dir = Path(tmp) / "plots"
        plots.write_all(plot_dir, data.y_val, fitted.probability, fitted.threshold, importance)
        mlflow.log_artifacts(str(plot_dir), "plots")
        version = _register(settings, fitted.pipeline, data.x_train, tags, run.info.run_id, plot_dir)
    return TrainResult(run.info.run_id, name, version, best.candidate.family, dict(best.candidate.params), metrics,
                       fitted.threshold, compared_with, len(candidates), time.perf_counter() - clock, tags)


REFERENCE_MIN_ROWS = 200
"""Fewest training rows of the current regime that make a reference; fewer and every training row does."""


def _regime(train: pd.DataFrame, validation: pd.DataFrame, since: datetime | None,
            names: list[str]) -> pd.DataFrame:
    """The rows (features + ``label``) the drift reference is drawn from.

    Without ``since``: the training part. With it: every labelled row at or after ``since``, the
    validation part included (after a drift the new regime is mostly the newest, validation, rows).
    A model trained on the old regime and a little of the new one must be judged against the new
    one: against all of its training rows, the stream would still look drifted after its promotion.
    Too few such rows (fewer than :data:`REFERENCE_MIN_ROWS`): the training part.
    """
    def rows(part: pd.DataFrame) -> pd.DataFrame:
        return _features(part, names).assign(label=part[LABEL].to_numpy(dtype=np.int64),
                                             event_time=pd.to_datetime(part["event_time"], utc=True).to_numpy())

    if since is None:
        return rows(train)
    both = pd.concat([train, validation], ignore_index=True)
    recent = both[pd.to_datetime(both["event_time"], utc=True) >= pd.Timestamp(since)]
    return rows(recent) if len(recent) >= REFERENCE_MIN_ROWS else rows(train)


TRAINING_ROWS_TAG = "lineage.training_rows"
"""The training window the chosen candidate learnt from (:mod:`mlops.train.regimes`)."""
POSITIVE_RATE_MISMATCH = 2.0
"""A validation part with this many times more (or fewer) positives than the training part is flagged."""


def _positive_rates(train_rate: float, val_rate: float) -> dict[str, str]:
    """Log both parts' positive rates (the chosen training rows', weighted); a large mismatch is warned
    about and tagged on the version."""
    import mlflow

    mlflow.log_metrics({"train_positive_rate": train_rate, "val_positive_rate": val_rate})
    ratio = val_rate / train_rate if train_rate > 0 else float("inf")
    if 1 / POSITIVE_RATE_MISMATCH <= ratio <= POSITIVE_RATE_MISMATCH:
        return {}
    detail = (f"validation positive rate {val_rate:.3f} against the training part's {train_rate:.3f}: the decision "
              "threshold was chosen at the training rate; validation metrics are at the validation rate")
    log.warning("positive rates of the time split differ", detail=detail)
    return {"lineage.positive_rate_mismatch": detail}


def _log_reference(settings: Settings, pipeline: Any, rows: pd.DataFrame,
                   sample_fraction: float = 1.0) -> dict[str, str]:
    """The drift monitor's reference and calibration, logged with the run; returns the tags to add.

    Reference: a seeded sample of ``rows`` (features + label) with the model's probability.
    Calibration: the drift statistic's threshold from the same rows' own null distribution
    (:func:`mlops.monitor.calibration.calibrate`), at the stream's reading rate (``rows`` hold
    ``sample_fraction`` of its readings when the training set was sampled); too few rows for one log
    a warning and no calibration (the monitor then falls back to the drift share).
    """
    import mlflow


    cfg, policy = settings.train, settings.policy
    features = [c for c in rows.columns if c not in (LABEL, "event_time")]
    sample = rows.sample(n=min(cfg.reference_rows, len(rows)), random_state=cfg.seed).sort_index()
    reference = sample[[*features, LABEL]].assign(probability=pipeline.predict_proba(sample[features])[:, 1])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reference.parquet"
        reference.reset_index(drop=True).to_parquet(path, index=False)
        mlflow.log_artifact(str(path), "reference")
    try:
        calibration = calibrate_for_policy(rows, features, policy, reference_rows=len(reference), seed=cfg.seed,
                                           sample_fraction=sample_fraction)
    except ValidationError as err:
        log.warning("no drift calibration for this model: the monitor will use the drift share", reason=str(err))
        return {CALIBRATION_TAG: f"none: {err}"}
    mlflow.log_text(calibration.to_json(), CALIBRATION_ARTIFACT)
    mlflow.log_metrics(summary(calibration))
    return {CALIBRATION_TAG: calibration.tag()}


def _register(settings: Settings, pipeline: Any, x_train: pd.DataFrame, tags: dict[str, str], run_id: str,
              plot_dir: Path) -> str:
    """Log the model with its plots, register a version with the lineage tags; a half-made version is
    deleted again."""
    import mlflow
    import mlflow.sklearn
    from mlflow.models import infer_signature
    from skops.io import dumps, get_untrusted_types

    example = x_train.head(5)
    signature = infer_signature(example, pipeline.predict_proba(example))
    info = mlflow.sklearn.log_model(
        pipeline, name="model", signature=signature, input_example=example,
        pip_requirements=_pip_requirements(), pyfunc_predict_fn="predict_proba",
        # skops (safe loading) needs the sklearn types it may rebuild listed; these are ours.
        skops_trusted_types=get_untrusted_types(data=dumps(pipeline)),
    )
    name = settings.mlflow.registered_model
    client = tracking_client(settings)
    # The plots travel with the logged model, so the version's own artifacts show them too.
    client.log_model_artifacts(info.model_id, str(plot_dir), "plots")
    version = mlflow.register_model(info.model_uri, name, await_registration_for=120)
    try:
        for key, value in lineage.version_tags(tags).items():
            client.set_model_version_tag(name, version.version, key, value)
        client.set_model_version_tag(name, version.version, "run_id", run_id)
    except Exception:
        client.delete_model_version(name, version.version)
        raise
    return str(version.version)

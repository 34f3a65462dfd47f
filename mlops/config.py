"""One typed settings tree for every part of the product.

Settings are read from ``configs/<profile>.yaml`` (profile ``local`` unless ``MLOPS_PROFILE`` says
otherwise) and then overridden by environment variables named after the key path:
``MLOPS_KAFKA__BOOTSTRAP_SERVERS`` overrides ``kafka.bootstrap_servers``. Every section forbids
unknown keys, so a typo fails at start with a message naming the key and where it came from.

Values are typed and checked here, when the settings load, not where they are used: durations
(``"7d"``, ``"6h"``) become :class:`~datetime.timedelta`, cron expressions are parsed by APScheduler,
model families and metric names are checked against the ones training and the monitor compute.
A bad value fails at start, not hours later in the retraining thread after a drift alarm.

Paths that are not set explicitly live under ``paths.data_dir`` (default ``./.mlops``), so one
directory holds the broker's log, the MLflow store, the lake and the project's database.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from mlops.errors import ConfigError
from mlops.evaluation.names import METRIC_NAMES, REALISED_METRIC_NAMES
from mlops.train.names import FAMILIES

__all__ = [
    "DEFAULT_PROFILE",
    "DEVELOPMENT_API_KEY",
    "ENV_DELIMITER",
    "ENV_PREFIX",
    "ApiSettings",
    "DatabaseSettings",
    "DemoSettings",
    "Duration",
    "FeastSettings",
    "FeatureSettings",
    "KafkaSettings",
    "LakeSettings",
    "MlflowSettings",
    "MonitorSettings",
    "PartitionSettings",
    "PathSettings",
    "PolicySettings",
    "SchedulerSettings",
    "ScorerSettings",
    "SearchSpace",
    "SearchValue",
    "Settings",
    "SparkSettings",
    "TopicSettings",
    "TrainSettings",
    "config_dir",
    "describe_file_errors",
    "format_duration",
    "load_settings",
    "parse_duration",
    "read_yaml_mapping",
    "require_api_key",
]

ENV_PREFIX = "MLOPS_"
ENV_DELIMITER = "__"
DEFAULT_PROFILE = "local"
DEVELOPMENT_API_KEY = "change-me"
"""The API key the shipped profiles carry; only the local profile may serve with it."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}  # written back without weeks: 7d, not 1w


def parse_duration(value: str | timedelta) -> timedelta:
    """``"7d"``, ``"12h"``, ``"90m"``, ``"30s"``, ``"2w"`` (or a timedelta) as a positive timedelta.

    Raises ValueError saying what was expected; settings turn it into a ConfigError naming the key.
    """
    if isinstance(value, timedelta):
        duration = value
    else:
        match = _DURATION.match(value) if isinstance(value, str) else None
        if not match:
            raise ValueError(f"{value!r} is not a duration: expected a number and a unit s, m, h, d or w (e.g. 7d)")
        duration = timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    if duration <= timedelta(0):
        raise ValueError(f"{value!r} is not a positive duration")
    return duration


def format_duration(duration: timedelta) -> str:
    """The inverse of :func:`parse_duration` in the largest whole unit: ``timedelta(days=7)`` -> ``"7d"``."""
    seconds = duration.total_seconds()
    for unit, size in _UNIT_SECONDS.items():
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration),
                     PlainSerializer(format_duration, return_type=str, when_used="json")]
"""A duration setting: written ``7d`` in files and variables, a timedelta in code, ``7d`` again in JSON dumps."""


def _cron(value: str | None) -> str | None:
    if value is None:
        return None
    # Imported here: only a profile that schedules retraining pays for APScheduler's import.
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value, timezone="UTC")
    except ValueError as err:
        raise ValueError(f"{value!r} is not a cron expression (minute hour day month weekday, "
                         f"e.g. '0 3 * * *'): {err}") from err
    return value


def _known(names: tuple[str, ...], what: str) -> Any:
    def check(value: str) -> str:
        if value not in names:
            raise ValueError(f"unknown {what} {value!r} (known: {', '.join(names)})")
        return value
    return BeforeValidator(check)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathSettings(_Section):
    data_dir: Path = Path(".mlops")
    """Root of everything the product writes locally; relative paths resolve against the cwd."""

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # Absolute, so that child processes started elsewhere agree on where everything lives.
        return value.expanduser().resolve()


class TopicSettings(_Section):
    readings: str = "iot.readings"
    labels: str = "iot.labels"
    predictions: str = "iot.predictions"
    dlq: str = "iot.readings.dlq"
    model_events: str = "mlops.model-events"


class PartitionSettings(_Section):
    readings: int = Field(4, ge=1)
    labels: int = Field(2, ge=1)
    predictions: int = Field(4, ge=1)
    dlq: int = Field(1, ge=1)
    model_events: int = Field(1, ge=1)


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    managed: bool = True
    """True: ``mlops services up`` runs a local KRaft node per address of ``bootstrap_servers`` (one: the
    single developer broker; three: a cluster, docs/operations.md). False: only check it answers."""
    controller_port: int = Field(9093, ge=1, le=65535)
    heap: str = "1g"
    ready_timeout_s: float = Field(90.0, gt=0)
    replication_factor: int = Field(1, ge=1)
    topics: TopicSettings = TopicSettings()
    partitions: PartitionSettings = PartitionSettings()
    client: dict[str, str | int | float | bool] = {}
    """Extra librdkafka properties for every client (e.g. security settings for a real cluster)."""

    @property
    def host(self) -> str:
        return self.bootstrap_servers.split(",")[0].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])

    @field_validator("bootstrap_servers")
    @classmethod
    def _has_port(cls, value: str) -> str:
        for server in value.split(","):
            host, _, port = server.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value


class MlflowSettings(_Section):
    tracking_uri: str = "http://127.0.0.1:5000"
    managed: bool = True
    """True: ``mlops services up`` runs ``mlflow server`` locally. False: only check it answers."""
    backend_store_uri: str | None = None
    """Default: SQLite file under the data directory."""
    artifacts_destination: str | None = None
    """Default: directory under the data directory."""
    registered_model: str = "iot-failure"
    experiment: str = "iot-failure"
    workers: int = Field(1, ge=1)
    ready_timeout_s: float = Field(120.0, gt=0)

    @property
    def host(self) -> str:
        return self.tracking_uri.split("://", 1)[-1].split(":", 1)[0]

    @property
    def port(self) -> int:
        rest = self.tracking_uri.split("://", 1)[-1]
        return int(rest.split(":", 1)[1].split("/", 1)[0]) if ":" in rest else 80


class SparkSettings(_Section):
    master: str = "local[*]"
    app_name: str = "mlops-train"
    driver_memory: str = "2g"
    shuffle_partitions: int = Field(4, ge=1)
    conf: dict[str, str] = {}


class FeastSettings(_Section):
    project: str = "iot"
    repo_dir: Path | None = None
    """Default: ``<data_dir>/feast``; the repo is generated from mlops/features/feast_repo.py."""
    offline_store: Literal["file", "spark"] = "file"
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_connection_string: str = "127.0.0.1:6379"
    push_interval_s: float = Field(2.0, gt=0)
    """Seconds between the writes of ``mlops features follow`` to the online store (each device's latest row)."""


class DatabaseSettings(_Section):
    url: str | None = None
    """SQLAlchemy URL of the loop's own state. Default: SQLite file under the data directory."""


class FeatureSettings(_Section):
    window: int = Field(10, ge=2)
    """Number of most recent readings per device the rolling features look at."""
    horizon_cycles: int = Field(30, ge=1)
    """The label: does the device fail within this many cycles (readings)?"""
    cycle_seconds: float = Field(60.0, gt=0)
    """Event time between two readings of one device; turns the horizon into event time."""
    sensors: list[str] | None = None
    """Sensors the features use; None: every sensor column the training data holds (non-constant)."""
    device_types: list[str] | None = None
    """Device types the model is for: training reads only their readings. None: every type in the
    window, which must then share their sensors (a lake of two fleets names the types and fails)."""


class PolicySettings(_Section):
    window_size: int = Field(500, ge=10)
    """Monitor window length in predictions."""
    drift_threshold: float = Field(0.25, ge=0, le=1)
    """Share of drifted features (Evidently) that counts as drift in a window."""
    feature_drift_threshold: float = Field(0.3, gt=0)
    """Normed Wasserstein distance from the reference above which one feature counts as drifted."""
    performance_drop: float = Field(0.1, ge=0, le=1)
    """Drop of the primary metric against the champion's validation value that counts as decay."""
    consecutive_windows: int = Field(2, ge=1)
    """Bad windows in a row that trigger: performance windows, and drift windows judged on the drift share."""
    drift_consecutive_windows: int = Field(1, ge=1)
    """Calibrated drift windows in a row that trigger. The calibration's threshold is set for one
    window's false-alarm rate (mlops/monitor/calibration.py): one window over it is the evidence."""
    cooldown_s: float = Field(300.0, ge=0)
    max_retrains_per_day: int = Field(6, ge=0)
    primary_metric: Annotated[str, _known(REALISED_METRIC_NAMES, "metric")] = "f1"
    """Decides the gate and the choice among candidates, and its realised value on live labels judges decay,
    so it must be one the evaluation and the monitor both compute."""
    promotion_margin: float = Field(0.01, ge=0)
    guard_metrics: list[Annotated[str, _known(METRIC_NAMES, "metric")]] = ["roc_auc"]
    """Metrics of the evaluation gate on which the challenger may not be much worse than the champion."""
    guard_tolerance: float = Field(0.02, ge=0)
    retrain_window: Duration = timedelta(days=7)
    """Longest event-time window a drift retraining trains on (ending at the monitor's clock)."""
    retrain_min_window: Duration = timedelta(hours=3)
    """Event time of drifted data the loop waits for before it retrains (drift start + this)."""
    drift_training_context: Duration | None = None
    """Event time before the drift's start that a drift retraining's window also reaches (within
    ``retrain_window``). Its candidates then learn from the drifted rows alone, the whole window and the
    window with the old regime weighted down, and the search picks (``train.drift_training_rows``).
    None: drifted data only."""
    retrain_retries: int = Field(2, ge=0)
    retrain_backoff_s: float = Field(30.0, ge=0)
    """Wait before the first retry of a failed retraining; doubles with each further retry."""
    min_evaluation_rows: int = Field(300, ge=1)
    """Labelled rows newer than the challenger's training data needed before the gate decides."""
    evaluation_timeout_s: float = Field(600.0, gt=0)
    probation_windows: int = Field(6, ge=0)
    """Performance windows after a loop promotion in which a worse new champion is rolled back."""
    schedule_cron: Annotated[str | None, BeforeValidator(_cron)] = None
    """Cron expression for scheduled retraining (UTC); None disables it."""
    window_mode: Literal["count", "time"] = "count"
    """Monitor windows: ``count`` closes every ``window_size`` predictions, ``time`` every ``window_seconds``."""
    window_seconds: float = Field(3600.0, gt=0)
    """Event-time length of a monitor window when ``window_mode`` is ``time``."""
    label_lateness_s: float = Field(600.0, ge=0)
    """How late a failure label may arrive: a prediction at t is judged negative only once the monitor's
    event-time clock passes t + horizon + this."""
    min_window_positives: int = Field(20, ge=1)
    """Fewest positive labels a performance window needs for f1/precision/recall: with n positives a
    window's recall has a standard error up to 0.5/sqrt(n), 0.11 at 20 (mlops/monitor/judge.py)."""
    false_alarm_rate: float = Field(1 / 30, gt=0)
    """False drift triggers per day of a stationary stream that the calibrated drift threshold allows
    (mlops/monitor/calibration.py)."""


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    api_key: str = DEVELOPMENT_API_KEY
    """Sent by clients in the X-API-Key header; profiles other than ``local`` refuse to serve with the default."""
    max_batch: int = Field(1000, ge=1)


class ScorerSettings(_Section):
    batch_size: int = Field(2000, ge=1)
    """Most readings scored in one micro-batch (= one Kafka transaction)."""
    poll_timeout_s: float = Field(0.01, gt=0)
    """Longest wait for a batch to fill; bounds the latency a quiet stream adds."""
    metrics_port: int = Field(9108, ge=0, le=65535)
    """Prometheus endpoint of `mlops score`; 0 disables it."""
    metrics_host: str = "127.0.0.1"
    """Address the Prometheus endpoint listens on (``0.0.0.0`` where Prometheus scrapes it from another host)."""
    transactional_id_prefix: str = "mlops-scorer"
    """transactional.id = <prefix>-<group>-<instance>: stable per process, so a restart fences its zombie."""
    state_lookback: int = Field(5000, ge=0)
    """Records per partition re-read before the committed offset to rebuild the device windows."""
    registry_poll_s: float = Field(30.0, gt=0)
    """Fallback: how often the scorer re-reads the champion alias when no model event arrives."""
    session_timeout_ms: int = Field(10000, ge=6000)
    """Consumer group session timeout: how soon a dead scorer's partitions move to the others."""
    transaction_timeout_ms: int = Field(15000, ge=1000)
    """Broker aborts a dead scorer's open transaction after this, unblocking read_committed readers."""


class LakeSettings(_Section):
    batch_rows: int = Field(5000, ge=1)
    """The lake sink writes a micro-batch when this many events are pending..."""
    flush_interval_s: float = Field(5.0, gt=0)
    """...or when the oldest pending event has waited this long."""
    group_id: str = "mlops-lake-sink"
    """Consumer group (for partition assignment and lag monitoring; positions come from the lake)."""
    instance_id: str | None = None
    """Static group membership, so a restarted sink gets its partitions back at once instead of
    waiting for the crashed one's session to time out. Default: derived from the lake directory."""


SearchValue = float | int | str | bool | None
SearchSpace = dict[str, dict[str, list[SearchValue]]]


class TrainSettings(_Section):
    search_space: SearchSpace = {
        "hist_gradient_boosting": {"learning_rate": [0.05, 0.1, 0.2], "max_depth": [3, 5, None],
                                   "max_iter": [100, 200], "l2_regularization": [0.0, 1.0]},
        "random_forest": {"n_estimators": [100, 200], "max_depth": [6, 10, None], "min_samples_leaf": [1, 5]},
        "logistic_regression": {"C": [0.01, 0.1, 1.0, 10.0]},
    }
    """Model family -> parameter -> the values to try; candidates are drawn from this grid."""

    @field_validator("search_space")
    @classmethod
    def _families_and_values(cls, space: SearchSpace) -> SearchSpace:
        if not space:
            raise ValueError("is empty: configure at least one model family")
        for family, params in space.items():
            if family not in FAMILIES:
                raise ValueError(f"unknown model family {family!r} (known: {', '.join(FAMILIES)})")
            for name, values in params.items():
                if not values:
                    raise ValueError(f"{family}.{name}: no values to try")
        return space
    candidates: int = Field(8, ge=1)
    """K: parameter sets drawn (deterministically from ``seed``) and trained in parallel Spark tasks."""
    seed: int = 42
    min_rows: int = Field(200, ge=1)
    """A window with fewer labelled rows (or too few of either class) fails instead of training."""
    min_positives: int = Field(5, ge=1)
    validation_fraction: float = Field(0.25, gt=0, lt=1)
    """Share of the window's event time (the latest part) held out for validation."""
    calibration: Literal["sigmoid", "isotonic"] = "sigmoid"
    calibration_folds: int = Field(3, ge=2)
    reference_rows: int = Field(2000, ge=10)
    """Training rows stored with the model as the drift monitor's reference data."""
    max_rows: int = Field(500_000, ge=1000)
    """Most labelled rows collected to the driver for the search: a larger training set is sampled in Spark
    first, per label (the positive rate is kept) and deterministically from ``seed``
    (:func:`mlops.train.sample.stratified_sample`). The default leaves fleets of up to ~50 devices over
    7 days at one reading a minute unsampled."""
    window: Duration = timedelta(days=7)
    """Training window when the command gives neither --window nor --since/--until."""
    drift_training_rows: list[Literal["regime", "all", "recent"]] = ["regime", "all", "recent"]
    """After a drift (a request with ``reference_since``), each candidate parameter set is trained on each
    of these windows, all validated on the newest rows since the drift (:mod:`mlops.train.regimes`):
    ``regime`` the rows since the drift alone, ``all`` the whole window, ``recent`` the whole window with
    the old regime weighted down by age. ``[all]``: one window, as a training without a drift."""

    @field_validator("drift_training_rows")
    @classmethod
    def _some_rows(cls, rows: list[str]) -> list[str]:
        if not rows or len(set(rows)) != len(rows):
            raise ValueError("give each training window at most once, and at least one")
        return rows


class SchedulerSettings(_Section):
    misfire_grace_s: int = Field(600, ge=1)
    """A run missed (scheduler down) still fires once on restart if it is at most this late."""
    lease_ttl_s: float = Field(30.0, gt=0)
    """Leader lease of the scheduler; a standby instance takes over this long after the leader dies."""


class MonitorSettings(_Section):
    group_id: str = "mlops-monitor"
    """Consumer group of `mlops monitor` on the predictions and labels topics."""
    poll_timeout_s: float = Field(0.5, gt=0)
    max_pending_per_device: int = Field(2000, ge=1)
    """Predictions per device waiting for their label; beyond this the oldest are dropped (and counted)."""
    window_grace_s: float = Field(60.0, ge=0)
    """Time windows close once the newest prediction is this much past their end (out-of-order slack)."""
    min_window: int = Field(50, ge=2)
    """Fewest predictions a drift window needs to be judged (one cut short by a model change, a quiet time window)."""
    partition_wait_s: float = Field(5.0, ge=0)
    """How long the monitor holds predictions back for a partition that has none ready, so that
    drift windows hold the whole fleet in event-time order (mlops/monitor/windows.py, PartitionMerge)."""
    metrics_port: int = Field(9109, ge=0, le=65535)
    """Prometheus endpoint of `mlops monitor` and `mlops loop run` (0: off): :mod:`mlops.monitor.metrics`."""
    metrics_host: str = "127.0.0.1"
    """Address that endpoint listens on (``0.0.0.0`` where Prometheus scrapes it from another host)."""


class DemoSettings(_Section):
    """`mlops demo`: the whole loop on a simulated fleet, in its own data directory and ports."""

    scenario: str = "recalibration"
    devices: int = Field(20, ge=1)
    seed: int = 1
    history_readings: int = Field(28_800, ge=100)
    """Readings published (fast) before the stream, to train the initial model on."""
    rate: float = Field(100.0, gt=0)
    """Readings per second of the live stream."""
    after_promotion_windows: int = Field(3, ge=1)
    """Performance windows of the new champion to see before the demo ends."""
    timeout_s: float = Field(900.0, gt=0)
    data_dir: Path = Path(".mlops-demo")
    """Started afresh on every run, so that the demo never mixes with earlier data."""
    port_offset: int = Field(10000, ge=0, le=50000)
    """Added to every configured port, so that the demo runs beside `mlops services up`."""


class Settings(BaseSettings):
    """The whole settings tree. Build it with :func:`load_settings`, never at import time."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
        frozen=True,
    )

    profile: str = DEFAULT_PROFILE
    paths: PathSettings = PathSettings()
    kafka: KafkaSettings = KafkaSettings()
    mlflow: MlflowSettings = MlflowSettings()
    spark: SparkSettings = SparkSettings()
    feast: FeastSettings = FeastSettings()
    database: DatabaseSettings = DatabaseSettings()
    features: FeatureSettings = FeatureSettings()
    policy: PolicySettings = PolicySettings()
    api: ApiSettings = ApiSettings()
    lake: LakeSettings = LakeSettings()
    scorer: ScorerSettings = ScorerSettings()
    train: TrainSettings = TrainSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    demo: DemoSettings = DemoSettings()
    monitor: MonitorSettings = MonitorSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the YAML file (passed as init kwargs): the usual 12-factor order.
        return (env_settings, init_settings)

    # Derived locations: everything lives under one data directory unless configured otherwise.
    @property
    def data_dir(self) -> Path:
        return self.paths.data_dir

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def kafka_data_dir(self) -> Path:
        return self.data_dir / "kafka"

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def mlflow_backend_store_uri(self) -> str:
        return self.mlflow.backend_store_uri or f"sqlite:///{self.data_dir / 'mlflow' / 'mlflow.db'}"

    @property
    def mlflow_artifacts_destination(self) -> str:
        return self.mlflow.artifacts_destination or str(self.data_dir / "mlflow" / "artifacts")

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'mlops.db'}"

    @property
    def feast_repo_dir(self) -> Path:
        return self.feast.repo_dir or self.data_dir / "feast"


def config_dir() -> Path:
    """Directory holding ``<profile>.yaml``: ``MLOPS_CONFIG_DIR`` or ``./configs``."""
    return Path(os.environ.get("MLOPS_CONFIG_DIR", "configs"))


def _env_variable_for(loc: tuple[str | int, ...]) -> str:
    return ENV_PREFIX + ENV_DELIMITER.join(str(part).upper() for part in loc)


def _env_keys() -> set[str]:
    # Variables that configure *how* settings are loaded, not settings themselves.
    return {"MLOPS_PROFILE", "MLOPS_CONFIG_DIR"}


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file (empty file: {}); ConfigError naming the file otherwise."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def describe_file_errors(err: PydanticValidationError, path: Path) -> str:
    """One line per problem of a strictly validated file: ``<file>: key 'a.b': <message>``."""
    lines = []
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "<top level>"
        message = "unknown key" if problem["type"] == "extra_forbidden" else problem["msg"]
        lines.append(f"{path}: key '{key}': {message.removeprefix('Value error, ')}")
    return "invalid file:\n  " + "\n  ".join(lines)


def load_settings(profile: str | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Load ``configs/<profile>.yaml``, apply ``MLOPS_*`` variables and ``overrides``, validate.

    Raises :class:`ConfigError` naming the bad key and the file or variable it came from.
    """
    profile = profile or os.environ.get("MLOPS_PROFILE", DEFAULT_PROFILE)
    path = config_dir() / f"{profile}.yaml"
    data: dict[str, Any] = {}
    if path.exists():
        data = read_yaml_mapping(path)
    elif profile != DEFAULT_PROFILE:
        raise ConfigError(f"profile {profile!r}: no file {path} (set MLOPS_CONFIG_DIR or MLOPS_PROFILE)")
    data = _deep_merge(data, overrides or {})
    data["profile"] = profile

    hidden = {key: os.environ.pop(key) for key in _env_keys() if key in os.environ}
    try:
        return Settings(**data)
    except PydanticValidationError as err:
        raise ConfigError(_describe(err, path, data)) from err
    finally:
        os.environ.update(hidden)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(err: PydanticValidationError, path: Path, data: dict[str, Any]) -> str:
    lines = []
    for problem in err.errors():
        loc = _key_path(tuple(problem["loc"]))
        key = ".".join(str(part) for part in loc)
        # The variable may set the key or a section above it (MLOPS_POLICY='{"...": ...}').
        variables = [_env_variable_for(loc[:end]) for end in range(len(loc), 0, -1)]
        variable = next((name for name in variables if name in os.environ), None)
        if variable is not None:
            source = f"environment variable {variable}"
        elif _lookup(data, loc) is not _MISSING or problem["type"] == "extra_forbidden":
            source = str(path)
        else:
            source = f"{path} or environment"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: key '{key}': {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _key_path(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    # Pydantic adds the validator's branch to the location of a union member
    # (``policy.drift_training_context.function-before[...]``); the key ends before it.
    return tuple(part for part in loc if not (isinstance(part, str) and "[" in part))


def require_api_key(settings: Settings) -> None:
    """Refuse to serve the API with the development key outside the ``local`` profile.

    Raises :class:`ConfigError` naming the key and where the key came from.
    """
    if settings.profile == DEFAULT_PROFILE or settings.api.api_key != DEVELOPMENT_API_KEY:
        return
    variable = _env_variable_for(("api", "api_key"))
    source = (f"environment variable {variable}" if variable in os.environ
              else str(config_dir() / f"{settings.profile}.yaml"))
    raise ConfigError(f"{source}: key 'api.api_key': the development key {DEVELOPMENT_API_KEY!r} is refused in profile "
                      f"{settings.profile!r}: set {variable} to a secret of your own")


_MISSING = object()


def _lookup(data: Any, loc: tuple[str | int, ...]) -> Any:
    for part in loc:
        found = ((isinstance(data, list) and isinstance(part, int) and part < len(data))
                 or (isinstance(data, dict) and part in data))
        if not found:
            return _MISSING
        data = data[part]
    return data

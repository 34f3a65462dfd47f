from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from mlops.config import DEVELOPMENT_API_KEY, load_settings, require_api_key
from mlops.errors import ConfigError, TrainingError
from mlops.evaluation.names import METRIC_NAMES, REALISED_METRIC_NAMES
from mlops.train.names import FAMILIES
from tests.conftest import REPO


def _profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Path:
    path = tmp_path / "custom.yaml"
    path.write_text(text)
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(tmp_path))
    return path


def test_local_profile_has_the_embedded_defaults() -> None:
    settings = load_settings("local")
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.kafka.partitions.readings >= 4
    assert settings.mlflow.tracking_uri == "http://127.0.0.1:5000"
    assert settings.spark.master == "local[*]"
    assert settings.mlflow_backend_store_uri.startswith("sqlite:///")
    assert settings.database_url.startswith("sqlite:///")
    assert settings.data_dir.is_absolute() and settings.data_dir.name == ".mlops"
    assert settings.lake_dir.parent == settings.data_dir


def test_unknown_key_names_the_key_and_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _profile(tmp_path, monkeypatch, "kafka:\n  bootstrap_servrs: 127.0.0.1:1\n")
    with pytest.raises(ConfigError) as err:
        load_settings("custom")
    assert "kafka.bootstrap_servrs" in str(err.value)
    assert str(path) in str(err.value)


def test_invalid_value_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _profile(tmp_path, monkeypatch, "kafka:\n  partitions:\n    readings: 0\n")
    with pytest.raises(ConfigError, match=r"kafka\.partitions\.readings"):
        load_settings("custom")


def test_bad_bootstrap_servers_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _profile(tmp_path, monkeypatch, "kafka:\n  bootstrap_servers: no-port-here\n")
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap_servers"):
        load_settings("custom")


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _profile(tmp_path, monkeypatch, "kafka:\n  bootstrap_servers: 10.0.0.1:9092\n")
    monkeypatch.setenv("MLOPS_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:19092")
    monkeypatch.setenv("MLOPS_POLICY__WINDOW_SIZE", "250")
    settings = load_settings("custom")
    assert settings.kafka.bootstrap_servers == "127.0.0.1:19092"
    assert settings.policy.window_size == 250


def test_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_POLICY__WINDOW_SIZE", "many")
    with pytest.raises(ConfigError, match="MLOPS_POLICY__WINDOW_SIZE"):
        load_settings("local")


def test_missing_profile_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match="no file"):
        load_settings("nonexistent")


def test_invalid_yaml_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _profile(tmp_path, monkeypatch, "kafka: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_settings("custom")
    assert str(path) in str(err.value)


def test_every_shipped_profile_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    configs = Path(__file__).resolve().parents[2] / "configs"
    profiles = [p.stem for p in configs.glob("*.yaml")]
    assert "local" in profiles
    for profile in profiles:
        assert load_settings(profile).profile == profile


# --- values typed and checked at load ---------------------------------------------------------


def test_durations_are_timedeltas_and_dump_back_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _profile(tmp_path, monkeypatch, "policy:\n  retrain_window: 2d\n  retrain_min_window: 90m\n"
                                    "  drift_training_context: 36h\ntrain:\n  window: 1.5h\n")
    settings = load_settings("custom")
    assert settings.policy.retrain_window == timedelta(days=2)
    assert settings.policy.retrain_min_window == timedelta(minutes=90)
    assert settings.policy.drift_training_context == timedelta(hours=36)
    assert settings.train.window == timedelta(minutes=90)
    dumped = settings.model_dump(mode="json")
    assert (dumped["policy"]["retrain_window"], dumped["policy"]["retrain_min_window"]) == ("2d", "90m")
    assert dumped["policy"]["drift_training_context"] == "36h" and dumped["train"]["window"] == "90m"


@pytest.mark.parametrize(("text", "message"), [("[newest]", "regime"), ("[]", "at least one"),
                                               ("[all, all]", "at most once")])
def test_bad_drift_training_rows_name_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str,
                                              message: str) -> None:
    _profile(tmp_path, monkeypatch, f"train:\n  drift_training_rows: {text}\n")
    with pytest.raises(ConfigError, match=message) as err:
        load_settings("custom")
    assert "train.drift_training_rows" in str(err.value)


@pytest.mark.parametrize(("key", "text", "message"), [
    ("retrain_min_window", "3x", "'3x' is not a duration"),
    ("retrain_window", "0d", "not a positive duration"),
    ("retrain_window", "7", "'7' is not a duration"),
    ("drift_training_context", "a week", "expected a number and a unit"),
])
def test_a_bad_duration_names_the_key_and_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str,
                                                   text: str, message: str) -> None:
    path = _profile(tmp_path, monkeypatch, f"policy:\n  {key}: '{text}'\n")
    with pytest.raises(ConfigError, match=message) as err:
        load_settings("custom")
    assert f"{path}: key 'policy.{key}'" in str(err.value)


def test_a_bad_duration_in_a_variable_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_TRAIN__WINDOW", "seven days")
    with pytest.raises(ConfigError, match=r"environment variable MLOPS_TRAIN__WINDOW: key 'train\.window'"):
        load_settings("local")


def test_the_training_job_takes_typed_and_written_windows() -> None:
    from mlops.train.job import TrainRequest, parse_duration, resolve_window

    now = datetime(2026, 3, 1, tzinfo=UTC)
    settings = load_settings("local")
    assert parse_duration(settings.policy.retrain_window) == parse_duration("7d") == timedelta(days=7)
    two_hours = TrainRequest(window=timedelta(hours=2))
    assert resolve_window(two_hours, settings.train.window, now)[0] == now - timedelta(hours=2)
    assert resolve_window(TrainRequest(), settings.train.window, now)[0] == now - timedelta(days=7)


def test_a_bad_cron_expression_fails_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _profile(tmp_path, monkeypatch, "policy:\n  schedule_cron: '0 3 * * 8'\n")
    with pytest.raises(ConfigError, match=r"key 'policy\.schedule_cron': '0 3 \* \* 8' is not a cron") as err:
        load_settings("custom")
    assert str(path) in str(err.value)
    _profile(tmp_path, monkeypatch, "policy:\n  schedule_cron: '*/15 2-5 * * mon-fri'\n")
    assert load_settings("custom").policy.schedule_cron == "*/15 2-5 * * mon-fri"


def test_unknown_metrics_and_model_families_fail_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cases = {
        "policy:\n  primary_metric: auc\n": r"key 'policy\.primary_metric': unknown metric 'auc'",
        # pr_auc is a validation metric, but the monitor cannot judge decay or probation by it.
        "policy:\n  primary_metric: pr_auc\n": r"key 'policy\.primary_metric': unknown metric 'pr_auc'",
        "policy:\n  guard_metrics: [roc_auc, f2]\n": r"key 'policy\.guard_metrics\.1': unknown metric 'f2'",
        "train:\n  search_space:\n    xgboost: {max_depth: [3]}\n": r"key 'train\.search_space': unknown model family",
        "train:\n  search_space: {}\n": r"key 'train\.search_space': is empty",
        "train:\n  search_space:\n    random_forest: {max_depth: []}\n": r"random_forest\.max_depth: no values to try",
    }
    for text, message in cases.items():
        path = _profile(tmp_path, monkeypatch, text)
        with pytest.raises(ConfigError, match=message) as err:
            load_settings("custom")
        assert str(path) in str(err.value), text
    _profile(tmp_path, monkeypatch, "policy:\n  primary_metric: recall\n  guard_metrics: [pr_auc, roc_auc]\n")
    assert load_settings("custom").policy.guard_metrics == ["pr_auc", "roc_auc"]


def test_the_metric_names_are_the_ones_evaluation_and_monitor_compute() -> None:
    from mlops.evaluation.metrics import evaluate
    from mlops.monitor.drift import performance

    y = np.array([0, 1, 0, 1, 1, 0])
    probability = np.array([0.1, 0.8, 0.4, 0.6, 0.3, 0.2])
    assert set(evaluate(y, probability, 0.5)) == set(METRIC_NAMES)
    realised, _report = performance(y.tolist(), probability.tolist(), (probability >= 0.5).astype(int).tolist())
    assert set(REALISED_METRIC_NAMES) == set(METRIC_NAMES) & set(realised)


def test_model_families_are_the_ones_training_builds() -> None:
    from mlops.train.model import build_pipeline

    for family in FAMILIES:
        assert build_pipeline(family, {}, seed=1) is not None
    with pytest.raises(TrainingError, match="unknown model family"):
        build_pipeline("xgboost", {}, seed=1)


# --- the API's key ----------------------------------------------------------------------------


def test_other_profiles_refuse_to_serve_the_api_with_the_development_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.serve.api import serve

    monkeypatch.delenv("MLOPS_API__API_KEY", raising=False)
    docker = load_settings("docker")
    assert docker.api.api_key == DEVELOPMENT_API_KEY
    with pytest.raises(ConfigError, match=r"configs/docker\.yaml: key 'api\.api_key': the development key") as err:
        serve(docker)  # refused before uvicorn binds anything
    assert "set MLOPS_API__API_KEY" in str(err.value)

    monkeypatch.setenv("MLOPS_API__API_KEY", DEVELOPMENT_API_KEY)
    with pytest.raises(ConfigError, match=r"environment variable MLOPS_API__API_KEY: key 'api\.api_key'"):
        require_api_key(load_settings("docker"))
    monkeypatch.setenv("MLOPS_API__API_KEY", "s3cret-of-our-own")
    require_api_key(load_settings("docker"))
    monkeypatch.delenv("MLOPS_API__API_KEY")
    require_api_key(load_settings("local"))  # one machine, loopback only: the default is allowed


def test_the_api_command_exits_non_zero_with_the_message(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env["MLOPS_CONFIG_DIR"] = str(REPO / "configs")
    done = subprocess.run([sys.executable, "-m", "mlops", "api", "--profile", "docker"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "error:" in done.stderr and "key 'api.api_key': the development key 'change-me' is refused" in done.stderr

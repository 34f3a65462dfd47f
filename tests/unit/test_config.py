from __future__ import annotations

from pathlib import Path

import pytest

from mlops.config import load_settings
from mlops.errors import ConfigError


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

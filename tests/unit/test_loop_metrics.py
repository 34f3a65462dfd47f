"""The loop's Prometheus metrics are what its audit trail and window results say, for its own model."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mlops import store
from mlops.config import Settings, load_settings
from mlops.errors import ConfigError
from mlops.monitor.metrics import LoopCollector, serve_loop_metrics
from mlops.store.results import WindowResult, engine_for
from mlops.testing import free_port

END = datetime(2026, 3, 4, 10, 0, tzinfo=UTC)


def _settings(tmp_path: Path, port: int = 0) -> Settings:
    return load_settings("local", overrides={"paths": {"data_dir": str(tmp_path)},
                                             "mlflow": {"registered_model": "m"}, "monitor": {"metrics_port": port}})


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _fill(settings: Settings) -> None:
    engine = engine_for(settings)
    for minutes, share in ((0, 0.05), (10, 0.30)):
        store.results.save(engine, WindowResult(
            kind="drift", model_name="m", model_version="2", start_time=END - timedelta(minutes=10 - minutes),
            end_time=END + timedelta(minutes=minutes), n_predictions=400, source_offsets={}, drift_share=share,
            drift_score=6.0, drift_threshold=4.0, drifted=True))
    store.results.save(engine, WindowResult(
        kind="performance", model_name="m", model_version="2", start_time=END - timedelta(hours=1), end_time=END,
        n_predictions=900, source_offsets={}, metrics={"f1": 0.42, "roc_auc": float("nan"), "n_positives": 30.0}))
    for kind, version in (("trigger", "2"), ("promotion", "2"), ("trigger", "2"), ("promotion", "3"),
                          ("rollback", "2")):
        store.record_event(settings, kind, model_name="m", model_version=version)
    store.record_event(settings, "promotion", model_name="other", model_version="9")


def test_loop_metrics_read_the_newest_windows_and_count_the_audit_rows(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    _fill(settings)
    registry = CollectorRegistry()
    registry.register(LoopCollector(settings))

    samples = _samples(generate_latest(registry).decode())

    assert samples[("mlops_loop_events_total", (("kind", "trigger"),))] == 2
    assert samples[("mlops_loop_events_total", (("kind", "promotion"),))] == 2  # the other model's is not ours
    assert samples[("mlops_loop_champion_version", ())] == 2  # the rollback came last
    assert samples[("mlops_loop_drift_share", (("model_version", "2"),))] == 0.30  # the newest drift window
    assert samples[("mlops_loop_drift_level", (("model_version", "2"),))] == 1.5
    assert samples[("mlops_loop_realised", (("metric", "f1"), ("model_version", "2")))] == 0.42
    assert not any(name == "mlops_loop_realised" and ("metric", "roc_auc") in labels
                   for name, labels in samples), "an undefined metric is left out, not exported as NaN"
    assert samples[("mlops_loop_window_end_seconds", (("kind", "drift"),))] == (END + timedelta(minutes=10)).timestamp()


def test_the_endpoint_serves_them_and_a_taken_port_names_the_key(tmp_path: Path) -> None:
    port = free_port()
    settings = _settings(tmp_path, port)
    _fill(settings)
    stop = serve_loop_metrics(settings)
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert answer.status_code == 200 and "mlops_loop_champion_version 2.0" in answer.text, answer.text[:500]
        with pytest.raises(ConfigError, match=r"monitor\.metrics_port"):
            serve_loop_metrics(settings)
    finally:
        stop()
    with socket.socket() as probe:  # nothing listens once stopped (SO_REUSEADDR only passes TIME_WAIT)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
    serve_loop_metrics(_settings(tmp_path, 0))()  # port 0: no endpoint, and stopping it is a no-op

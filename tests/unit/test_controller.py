from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mlops import db
from mlops.config import load_settings
from mlops.errors import TrainingError
from mlops.monitor.controller import LoopController

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@dataclass
class Window:
    window_id: int
    drift_share: float | None
    kind: str = "drift"
    model_version: str | None = "1"
    start_time: datetime | None = None
    end_time: datetime | None = None
    metrics: dict[str, float] | None = field(default_factory=dict)


def _controller(tmp_path: Path, train, context: str | None = None):  # type: ignore[no-untyped-def]
    settings = load_settings("local", overrides={
        "paths": {"data_dir": str(tmp_path)},
        "policy": {"consecutive_windows": 2, "drift_threshold": 0.5, "retrain_retries": 0,
                   "retrain_window": "2d", "retrain_min_window": "1h", "drift_training_context": context},
    })
    return settings, LoopController(settings, clock=lambda: T0, train=train)


def _window(i: int, share: float) -> Window:
    start = T0 + timedelta(hours=i)
    return Window(i, share, start_time=start, end_time=start + timedelta(hours=1))


def test_stationary_windows_never_trigger_and_every_decision_is_recorded(tmp_path: Path) -> None:
    settings, controller = _controller(tmp_path, train=lambda *_a, **_k: None)
    for i in range(10):
        assert not controller.on_window(_window(i, 0.1)).trigger  # type: ignore[union-attr]
    kinds = [e.kind for e in db.list_events(settings)]
    assert kinds.count("window_result") == 10
    assert kinds.count("not_triggered") == 10
    assert "trigger" not in kinds


def test_a_failed_retraining_is_recorded_and_leaves_the_loop_ready(tmp_path: Path) -> None:
    calls = []

    def failing_train(settings, request):  # type: ignore[no-untyped-def]
        calls.append(request)
        raise TrainingError("training window holds 12 labelled rows, at least 200 needed")

    settings, controller = _controller(tmp_path, train=failing_train)
    controller.on_window(_window(0, 0.1))
    assert not controller.on_window(_window(1, 0.9)).trigger  # type: ignore[union-attr]
    assert controller.on_window(_window(2, 0.9)).trigger  # type: ignore[union-attr]
    assert controller.wait_idle(30)
    assert not controller.policy.running
    kinds = [e.kind for e in db.list_events(settings)]
    assert {"trigger", "retrain_started", "retrain_failed"} <= set(kinds)
    failed = next(e for e in db.list_events(settings) if e.kind == "retrain_failed")
    assert "12 labelled rows" in (failed.reason or "")
    # Training starts where the drift began (window 1), once retrain_min_window (1h) of it exists.
    assert calls[0].since == T0 + timedelta(hours=1)
    assert calls[0].until == T0 + timedelta(hours=3)
    assert calls[0].trigger == "drift"


def test_training_window_starts_where_the_drift_began(tmp_path: Path) -> None:
    _, controller = _controller(tmp_path, train=None)
    controller.event_clock = T0 + timedelta(days=10)
    since, until = controller.training_window(drift_started=T0 + timedelta(days=9, hours=20))
    assert until == T0 + timedelta(days=10)
    assert since == T0 + timedelta(days=9, hours=20)
    since, _ = controller.training_window(drift_started=T0)
    assert since == until - timedelta(days=2)  # drift began long ago: at most retrain_window
    since, _ = controller.training_window(drift_started=None)
    assert since == until - timedelta(days=2)
    # With context, the old regime before the drift is trained on too (still within retrain_window).
    for context, expected in (("6h", T0 + timedelta(days=9, hours=14)), ("30d", until - timedelta(days=2))):
        _, controller = _controller(tmp_path, train=None, context=context)
        controller.event_clock = until
        assert controller.training_window(drift_started=T0 + timedelta(days=9, hours=20)) == (expected, until)


def test_retraining_waits_for_enough_drifted_data(tmp_path: Path) -> None:
    _, controller = _controller(tmp_path, train=None)
    controller.event_clock = T0 + timedelta(hours=2)
    controller.wait_for_drifted_data(drift_started=T0 + timedelta(minutes=30))  # 1h30 >= 1h: no wait
    import threading

    done = threading.Event()
    waiter = threading.Thread(target=lambda: (controller.wait_for_drifted_data(T0 + timedelta(hours=1, minutes=30)),
                                              done.set()))
    waiter.start()
    assert not done.wait(1.0)  # only 30 min of drifted data so far
    controller.event_clock = T0 + timedelta(hours=3)
    assert done.wait(10.0)
    waiter.join()


def test_windows_of_a_replaced_model_do_not_trigger(tmp_path: Path) -> None:
    _settings, controller = _controller(tmp_path, train=lambda *_a, **_k: None)
    controller.champion_version = "2"
    for i in range(5):
        window = _window(i, 0.9)
        window.model_version = "1"
        decision = controller.on_window(window)
        assert decision is not None and not decision.trigger
        assert "no longer the champion" in decision.reason
    assert controller.policy.bad_streak == 0

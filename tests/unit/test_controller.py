"""The loop's decision core on a fake event-time clock, and the threaded controller around it (no services)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlops import store
from mlops.config import PolicySettings, load_settings
from mlops.errors import TrainingError
from mlops.monitor.controller import LoopController
from mlops.monitor.loop import EVALUATION_POLL, Evaluate, LoopCore, Note, Retrain, Rollback, drift_training_window

T0 = datetime(2026, 3, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


@dataclass
class Window:
    window_id: int
    drift_share: float | None
    kind: str = "drift"
    model_version: str | None = "1"
    start_time: datetime | None = None
    end_time: datetime | None = None
    metrics: dict[str, float] | None = field(default_factory=dict)


@dataclass
class JudgedWindow(Window):
    """A result that carries the monitor's calibrated verdict."""

    drifted: bool | None = None


def drift(i: int, share: float, version: str = "1") -> Window:
    """Drift window ``i`` spans hour i .. i+1 of event time."""
    return Window(i, share, model_version=version, start_time=T0 + i * HOUR, end_time=T0 + (i + 1) * HOUR)


def performance(i: int, metrics: dict[str, float], version: str = "1") -> Window:
    return Window(i, None, kind="performance", model_version=version, start_time=T0 + i * HOUR,
                  end_time=T0 + (i + 1) * HOUR, metrics=metrics)


def core(**policy: Any) -> LoopCore:
    base = {"consecutive_windows": 2, "drift_threshold": 0.5, "retrain_retries": 0, "retrain_window": "2d",
            "retrain_min_window": "1h", "cooldown_s": 60, "max_retrains_per_day": 6, "min_evaluation_rows": 100,
            "probation_windows": 3, "guard_tolerance": 0.02, "performance_drop": 0.2}
    return LoopCore(PolicySettings(**{**base, **policy}), champion="1", baseline_metric=0.7)  # type: ignore[arg-type]


def of(kind: type, commands: list[Any]) -> list[Any]:
    return [c for c in commands if isinstance(c, kind)]


def trigger_and_train(c: LoopCore, first: int = 1) -> Retrain:
    """Two drifted windows from hour ``first`` on: the trigger, then the Retrain once 1h of drift exists."""
    assert not of(Retrain, c.on_window(drift(first, 0.9)))
    commands = c.on_window(drift(first + 1, 0.9))
    assert of(Note, commands)[0].kind == "trigger"
    (retrain,) = of(Retrain, commands)
    return retrain


def test_stationary_windows_never_trigger_and_every_window_gets_a_reason() -> None:
    c = core()
    for i in range(48):
        commands = c.on_window(drift(i, 0.1))
        assert [n.kind for n in of(Note, commands)] == ["not_triggered"]
        assert not of(Retrain, commands)
    assert not c.busy


def test_trigger_waits_for_drifted_data_then_trains_from_the_drift_start() -> None:
    c = core(retrain_min_window="3h")
    c.on_window(drift(0, 0.1))
    assert not of(Retrain, c.on_window(drift(1, 0.9)))  # bad window 1 of 2
    commands = c.on_window(drift(2, 0.9))  # trigger at 03:00; the drift began at 01:00
    assert of(Note, commands)[0].kind == "trigger" and not of(Retrain, commands)
    assert not of(Retrain, c.tick(T0 + 3 * HOUR + timedelta(minutes=59)))
    (retrain,) = of(Retrain, c.tick(T0 + 4 * HOUR))  # 3h of drifted data since 01:00
    assert (retrain.since, retrain.until, retrain.drift_started) == (T0 + HOUR, T0 + 4 * HOUR, T0 + HOUR)
    # While it runs, more bad windows are recorded but start nothing.
    commands = c.on_window(drift(4, 0.9))
    commands += c.on_window(drift(5, 0.9))
    assert not of(Retrain, commands) and "already running" in of(Note, commands)[-1].reason


def test_retrained_challenger_is_gated_once_enough_fresh_labels_exist_then_promoted() -> None:
    c = core()
    retrain = trigger_and_train(c)
    (evaluate,) = of(Evaluate, c.retrained("2", val_metric=0.8, now=T0 + 3 * HOUR))
    assert evaluate == Evaluate("2", retrain.until, retrain.reason)
    assert not c.evaluation_ready(rows=99, classes=2) and not c.evaluation_ready(rows=500, classes=1)
    assert c.evaluation_ready(rows=100, classes=2)
    # Not ready: asked again after EVALUATION_POLL of event time, not before.
    assert not of(Evaluate, c.tick(T0 + 3 * HOUR + EVALUATION_POLL - timedelta(seconds=1)))
    assert of(Evaluate, c.tick(T0 + 3 * HOUR + EVALUATION_POLL))
    notes = of(Note, c.promoted("2", previous="1", now=T0 + 4 * HOUR))
    assert c.champion == "2" and c.baseline_metric == 0.8 and not c.busy
    assert c.probation is not None and "probation" in notes[0].reason
    # The replaced model's windows say nothing about the new champion.
    for i in range(5, 8):
        note = of(Note, c.on_window(drift(i, 0.9, version="1")))[0]  # (then the follow-up due at 05:00)
        assert "no longer the champion" in note.reason
    assert c.policy.bad_streak == 0


def test_a_rejected_challenger_frees_the_loop_and_the_champion_stays() -> None:
    c = core(cooldown_s=3600)
    trigger_and_train(c)
    c.retrained("2", val_metric=0.5)
    c.rejected("2", "reject: f1 0.41 < 0.45 + 0.01")
    assert c.champion == "1" and not c.busy and c.candidate is None
    # Cooldown counts from the trigger (03:00): a streak at 03:30 waits, one after 04:00 trains.
    c.on_window(Window(10, 0.9, start_time=T0 + 3 * HOUR, end_time=T0 + 3.25 * HOUR))
    cooling = of(Note, c.on_window(Window(11, 0.9, start_time=T0 + 3.25 * HOUR, end_time=T0 + 3.5 * HOUR)))
    assert "cooling down" in cooling[0].reason
    assert of(Note, c.on_window(drift(4, 0.9)))[0].kind == "trigger"


def test_a_worse_new_champion_is_rolled_back_after_its_probation_windows() -> None:
    c = core(probation_windows=3)
    trigger_and_train(c)
    c.retrained("2", val_metric=0.8)
    c.promoted("2", previous="1")
    # Judged on the same events: the new champion's f1 and the replaced version's (previous_f1).
    assert not of(Rollback, c.on_window(performance(5, {"f1": 0.30, "previous_f1": 0.50}, "2")))
    # A window with too few positives judges nothing and does not count.
    assert not of(Rollback, c.on_window(performance(6, {"judged": 0.0, "positive_rate": 0.001}, "2")))
    assert not of(Rollback, c.on_window(performance(7, {"f1": 0.60, "previous_f1": 0.45}, "2")))
    (rollback,) = of(Rollback, c.on_window(performance(8, {"f1": 0.35, "previous_f1": 0.50}, "2")))
    assert (rollback.to_version, rollback.from_version) == ("1", "2")
    assert "0.417 against version 1's 0.483" in rollback.reason
    c.rolled_back("1")
    assert c.champion == "1" and c.baseline_metric == 0.7 and c.probation is None and c.follow_ups is None


def test_a_new_champion_as_good_as_the_old_one_passes_probation() -> None:
    c = core(probation_windows=2)
    trigger_and_train(c)
    c.retrained("2", val_metric=0.8)
    c.promoted("2", previous="1")
    c.on_window(performance(5, {"f1": 0.40, "previous_f1": 0.45}, "2"))
    commands = c.on_window(performance(6, {"f1": 0.50, "previous_f1": 0.46}, "2"))
    assert not of(Rollback, commands) and c.probation is None
    assert any(n.kind == "evaluation" and "probation passed" in n.reason for n in of(Note, commands))


def test_a_performance_window_without_the_primary_metric_neither_extends_nor_resets_a_streak() -> None:
    c = core(consecutive_windows=2)
    bad = {"f1": 0.3}  # 0.4 below the champion's validation f1 of 0.7
    c.on_window(performance(0, bad))
    (note,) = of(Note, c.on_window(performance(1, {"judged": 0.0})))
    assert "judges nothing" in note.reason and c.policy.bad_streak == 1
    (note,) = of(Note, c.on_window(performance(2, {"accuracy": 0.9})))  # no f1 at all
    assert c.policy.bad_streak == 1
    assert of(Note, c.on_window(performance(3, bad)))[0].kind == "trigger"


def test_the_monitors_drift_verdict_wins_over_the_drift_share() -> None:
    c = core(consecutive_windows=1, drift_threshold=0.5)
    quiet = JudgedWindow(0, 0.9, start_time=T0, end_time=T0 + HOUR, drifted=False)
    assert of(Note, c.on_window(quiet))[0].reason == "window is fine"
    alarm = JudgedWindow(1, 0.1, start_time=T0 + HOUR, end_time=T0 + 2 * HOUR, drifted=True)
    assert of(Note, c.on_window(alarm))[0].kind == "trigger"
    fallback = core(consecutive_windows=1)
    assert of(Note, fallback.on_window(JudgedWindow(0, 0.6, start_time=T0, end_time=T0 + HOUR)))[0].kind == "trigger"


def test_follow_up_retrainings_use_more_drifted_data_without_a_new_detection() -> None:
    c = core(retrain_min_window="1h")
    first = trigger_and_train(c)  # drift began at 01:00, trained at 03:00 on 2h: a follow-up at 07:00
    assert (first.since, first.until) == (T0 + HOUR, T0 + 3 * HOUR) and not first.follow_up
    c.retrained("2", 0.8)
    c.promoted("2", previous="1")
    assert not of(Retrain, c.tick(T0 + 7 * HOUR - timedelta(minutes=1)))
    commands = c.tick(T0 + 7 * HOUR)
    (retrain,) = of(Retrain, commands)
    assert retrain.follow_up and (retrain.since, retrain.until) == (T0 + HOUR, T0 + 7 * HOUR)
    assert retrain.drift_started == T0 + HOUR and "follow-up: 6.0 h" in of(Note, commands)[0].reason
    c.retrained("3", 0.8)
    c.rejected("3", "no better")
    assert not c.busy and not c.tick(T0 + 20 * HOUR)  # one follow-up per drift


def test_the_daily_cap_bounds_the_follow_up() -> None:
    c = core(retrain_min_window="1h", max_retrains_per_day=1)
    trigger_and_train(c)
    c.retrained("2", 0.8)
    c.promoted("2", previous="1")
    (note,) = of(Note, c.tick(T0 + 7 * HOUR))
    assert note.kind == "not_triggered" and "daily cap" in note.reason and not c.busy


def test_a_follow_up_waits_while_a_retraining_runs() -> None:
    c = core(retrain_min_window="1h")
    trigger_and_train(c)  # a follow-up at 07:00
    assert not of(Retrain, c.tick(T0 + 8 * HOUR))  # the first challenger still waits for its gate
    c.retrained("2", 0.8)
    (retrain,) = of(Retrain, c.rejected("2", "no better", now=T0 + 9 * HOUR))
    assert retrain.follow_up and retrain.until == T0 + 9 * HOUR


def test_a_failed_retraining_is_retried_then_given_up() -> None:
    c = core(retrain_retries=1)
    first = trigger_and_train(c)
    (retry,) = of(Retrain, c.retrain_failed("12 labelled rows"))
    assert retry.attempt == 2 and retry.since == first.since
    assert not c.retrain_failed("12 labelled rows again") and not c.busy


def test_training_window_starts_where_the_drift_began() -> None:
    policy = PolicySettings(retrain_window="2d")  # type: ignore[arg-type]
    until = T0 + timedelta(days=10)
    drift_start = T0 + timedelta(days=9, hours=20)
    assert drift_training_window(policy, drift_start, until) == (drift_start, until)
    assert drift_training_window(policy, T0, until) == (until - timedelta(days=2), until)  # at most retrain_window
    assert drift_training_window(policy, None, until) == (until - timedelta(days=2), until)
    # With context, the old regime before the drift is trained on too (still within retrain_window).
    for context, expected in (("6h", T0 + timedelta(days=9, hours=14)), ("30d", until - timedelta(days=2))):
        with_context = PolicySettings(retrain_window="2d", drift_training_context=context)  # type: ignore[arg-type]
        assert drift_training_window(with_context, drift_start, until) == (expected, until)


# --- the threaded controller (a real SQLite audit trail, a fake training job) --------------------
def _controller(tmp_path: Path, train: Any) -> tuple[Any, LoopController]:
    settings = load_settings("local", overrides={
        "paths": {"data_dir": str(tmp_path)},
        "policy": {"consecutive_windows": 2, "drift_threshold": 0.5, "retrain_retries": 0,
                   "retrain_window": "2d", "retrain_min_window": "1h"},
    })
    controller = LoopController(settings, train=train)
    controller.champion_version = "1"
    return settings, controller


def test_every_window_is_recorded_with_its_decision(tmp_path: Path) -> None:
    settings, controller = _controller(tmp_path, train=lambda *_a, **_k: None)
    for i in range(10):
        decision = controller.on_window(drift(i, 0.1))
        assert decision is not None and not decision.trigger
    kinds = [e.kind for e in store.list_events(settings)]
    assert kinds.count("window_result") == 10 and kinds.count("not_triggered") == 10
    assert "trigger" not in kinds


def test_a_failed_retraining_is_recorded_and_leaves_the_loop_ready(tmp_path: Path) -> None:
    calls = []

    def failing_train(settings: Any, request: Any) -> Any:
        calls.append(request)
        raise TrainingError("training window holds 12 labelled rows, at least 200 needed")

    settings, controller = _controller(tmp_path, train=failing_train)
    controller.on_window(drift(0, 0.1))
    assert not controller.on_window(drift(1, 0.9)).trigger  # type: ignore[union-attr]
    assert controller.on_window(drift(2, 0.9)).trigger  # type: ignore[union-attr]
    assert controller.wait_idle(30)
    assert not controller.policy.running
    events = store.list_events(settings)
    assert {"trigger", "retrain_started", "retrain_failed"} <= {e.kind for e in events}
    failed = next(e for e in events if e.kind == "retrain_failed")
    assert "12 labelled rows" in (failed.reason or "")
    # Training waits for retrain_min_window (1h) of drift since it began (window 1); its window reaches
    # back drift_training_context (the profile's 7d), at most retrain_window (2d), and the drift's start
    # goes with it: the candidates' training windows are cut there (mlops.train.regimes).
    assert (calls[0].since, calls[0].until, calls[0].reference_since, calls[0].trigger) == (
        T0 + 3 * HOUR - timedelta(days=2), T0 + 3 * HOUR, T0 + HOUR, "drift")


def test_a_champion_promoted_outside_the_loop_is_followed_without_probation() -> None:
    c = core(consecutive_windows=1)
    c.on_window(JudgedWindow(1, 0.9, start_time=T0, end_time=T0 + HOUR))  # a bad window of v1: streak 1
    notes = c.champion_changed("7", baseline_metric=0.8, now=T0 + 2 * HOUR)
    assert c.champion == "7" and c.baseline_metric == 0.8 and c.probation is None
    assert not c.policy.streaks.get("drift") and "outside the loop" in notes[0].reason  # type: ignore[union-attr]
    assert c.champion_changed("7", baseline_metric=0.8) == []  # already followed


def test_with_overlapping_windows_the_drift_starts_after_the_last_fine_window() -> None:
    c = core()
    c.on_window(JudgedWindow(1, 0.0, start_time=T0, end_time=T0 + HOUR, drifted=False))
    notes = c.on_window(JudgedWindow(2, 0.4, start_time=T0 + HOUR / 2, end_time=T0 + 3 * HOUR / 2, drifted=True))
    assert any(getattr(n, "kind", None) == "trigger" for n in notes)
    assert c.drift_started == T0 + HOUR  # not the bad window's start: the fine window covered up to here

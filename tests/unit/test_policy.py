from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mlops.config import PolicySettings
from mlops.monitor.policy import RetrainPolicy, WindowSignal

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def policy(**overrides: object) -> RetrainPolicy:
    base = {"drift_threshold": 0.5, "consecutive_windows": 2, "cooldown_s": 600, "max_retrains_per_day": 2,
            "performance_drop": 0.1}
    return RetrainPolicy(PolicySettings(**{**base, **overrides}))  # type: ignore[arg-type]


def drifted(i: int, share: float = 0.8) -> WindowSignal:
    return WindowSignal(f"w{i}", drift_share=share)


def test_noise_below_threshold_never_triggers() -> None:
    p = policy()
    decisions = [p.observe(drifted(i, share=0.3), T0 + timedelta(minutes=i)) for i in range(50)]
    assert not any(d.trigger for d in decisions)
    assert all(d.reason == "window is fine" for d in decisions)


def test_triggers_only_after_k_consecutive_bad_windows() -> None:
    p = policy(consecutive_windows=3)
    first = p.observe(drifted(1), T0)
    second = p.observe(drifted(2), T0)
    third = p.observe(drifted(3), T0)
    assert not first.trigger and "bad window 1 of 3" in first.reason
    assert not second.trigger
    assert third.trigger and "w1, w2, w3" in third.reason


def test_a_good_window_resets_the_streak() -> None:
    p = policy()
    p.observe(drifted(1), T0)
    p.observe(drifted(2, share=0.1), T0)
    assert not p.observe(drifted(3), T0).trigger
    assert p.observe(drifted(4), T0).trigger


def test_performance_drop_counts_as_bad() -> None:
    p = policy(consecutive_windows=1)
    fine = p.observe(WindowSignal("w1", metric=0.75, baseline_metric=0.8), T0)
    bad = p.observe(WindowSignal("w2", metric=0.6, baseline_metric=0.8), T0)
    assert not fine.trigger
    assert bad.trigger and "f1 0.600" in bad.reason


def test_no_second_retraining_while_one_runs() -> None:
    p = policy(consecutive_windows=1)
    assert p.observe(drifted(1), T0).trigger
    p.retraining_started(T0)
    decision = p.observe(drifted(2), T0 + timedelta(hours=1))
    assert not decision.trigger and "already running" in decision.reason


def test_cooldown_then_daily_cap() -> None:
    p = policy(consecutive_windows=1, cooldown_s=600, max_retrains_per_day=2)
    p.retraining_started(T0)
    p.retraining_finished()
    cooling = p.observe(drifted(1), T0 + timedelta(minutes=5))
    assert not cooling.trigger and "cooling down" in cooling.reason
    assert p.observe(drifted(2), T0 + timedelta(minutes=11)).trigger
    p.retraining_started(T0 + timedelta(minutes=11))
    p.retraining_finished()
    capped = p.observe(drifted(3), T0 + timedelta(hours=2))
    assert not capped.trigger and "daily cap" in capped.reason
    # A day later the oldest retraining no longer counts against the cap.
    assert p.observe(drifted(4), T0 + timedelta(days=1, minutes=1)).trigger


def test_drift_and_performance_streaks_are_independent() -> None:
    p = policy(consecutive_windows=2)
    assert not p.observe(WindowSignal("p1", metric=0.5, baseline_metric=0.8), T0).trigger
    assert not p.observe(drifted(1, share=0.1), T0).trigger  # a fine drift window ...
    decision = p.observe(WindowSignal("p2", metric=0.5, baseline_metric=0.8), T0)
    assert decision.trigger and "performance windows (p1, p2)" in decision.reason  # ... does not reset it

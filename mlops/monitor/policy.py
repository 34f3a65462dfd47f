"""When to retrain: a small, explicit policy over the monitor's window results.

A drift window is *bad* when the monitor's detector says it drifted (``drifted``), or, for a
result without that verdict, when its drift share reaches ``drift_threshold``; a performance
window is bad when its realised primary metric fell by at least ``performance_drop`` below the
champion's validation value. Retraining is
triggered after ``consecutive_windows`` bad windows in a row (``drift_consecutive_windows`` for
calibrated drift verdicts, whose threshold already holds one window's false-alarm rate), unless

- a retraining is already running,
- the last one started less than ``cooldown_s`` ago,
- ``max_retrains_per_day`` were already started in the last 24 hours.

Input drift and realised performance are judged as separate streams: a window of one kind never
resets the other's streak (a new fault mode may show no input drift at all, only worse predictions).

Every call returns a :class:`Decision` with its reason, including "not triggered", so the loop can
record why it did or did not act. Time is injected (``now``) so tests run on a fake clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mlops.config import PolicySettings

__all__ = ["Decision", "RetrainPolicy", "WindowSignal"]


@dataclass(frozen=True)
class WindowSignal:
    """What the policy needs from one monitor window."""

    window_id: str
    drift_share: float | None = None
    """Share of features whose distribution drifted (0..1); None when not computed."""
    drifted: bool | None = None
    """The monitor's calibrated drift verdict; when set it decides, not ``drift_share``."""
    drift_score: float | None = None
    """The calibrated statistic behind ``drifted`` and its threshold (for the reason text)."""
    drift_threshold: float | None = None
    metric: float | None = None
    """Realised primary metric on the window's labelled predictions; None when not yet known."""
    baseline_metric: float | None = None
    """The champion's validation value of the primary metric, for the performance-drop test."""
    kind: str | None = None
    """"drift" or "performance"; None: drift when a drift statistic is set."""

    @property
    def stream(self) -> str:
        if self.kind is not None:
            return self.kind
        return "drift" if self.drift_share is not None or self.drifted is not None else "performance"


@dataclass(frozen=True)
class Decision:
    trigger: bool
    reason: str
    window_id: str
    bad_streak: int


@dataclass
class RetrainPolicy:
    """Stateful policy: feed it window signals in order; it keeps the streak and the history."""

    settings: PolicySettings
    running: bool = False
    started: deque[datetime] = field(default_factory=deque)
    streaks: dict[str, list[str]] = field(default_factory=dict)
    """Per stream ("drift", "performance"): the ids of the current run of bad windows."""

    @property
    def bad_streak(self) -> int:
        return max((len(ids) for ids in self.streaks.values()), default=0)

    def why_bad(self, signal: WindowSignal) -> str | None:
        """The reason a window counts as bad, or None if it is fine."""
        s = self.settings
        share = "-" if signal.drift_share is None else f"{signal.drift_share:.2f}"
        if signal.drifted is not None:
            if not signal.drifted:
                return None
            if signal.drift_score is None or signal.drift_threshold is None:
                return f"drift detected (drift share {share})"
            return (f"drift score {signal.drift_score:.2f} >= calibrated threshold {signal.drift_threshold:.2f} "
                    f"(drift share {share})")
        if signal.drift_share is not None and signal.drift_share >= s.drift_threshold:
            return f"drift share {signal.drift_share:.2f} >= {s.drift_threshold:.2f}"
        if signal.metric is not None and signal.baseline_metric is not None:
            drop = signal.baseline_metric - signal.metric
            if drop >= s.performance_drop:
                return (f"{s.primary_metric} {signal.metric:.3f} is {drop:.3f} below the champion's "
                        f"{signal.baseline_metric:.3f} (limit {s.performance_drop:.3f})")
        return None

    def observe(self, signal: WindowSignal, now: datetime) -> Decision:
        """Account for one window and decide whether to start a retraining now."""
        s = self.settings
        bad = self.why_bad(signal)
        streak = self.streaks.setdefault(signal.stream, [])
        if bad is None:
            streak.clear()
            return Decision(False, "window is fine", signal.window_id, 0)
        streak.append(signal.window_id)
        needed = s.drift_consecutive_windows if signal.drifted is not None else s.consecutive_windows
        if len(streak) < needed:
            return Decision(False, f"{bad}; bad window {len(streak)} of {needed} needed",
                            signal.window_id, len(streak))
        if self.running:
            return Decision(False, f"{bad}; a retraining is already running", signal.window_id, len(streak))
        blocked = self.blocked(now)
        if blocked is not None:
            return Decision(False, f"{bad}; {blocked}", signal.window_id, len(streak))
        return Decision(True, f"{bad} in {len(streak)} consecutive {signal.stream} windows ({', '.join(streak)})",
                        signal.window_id, len(streak))

    def cooldown_left(self, now: datetime) -> float:
        """Seconds until the cooldown after the last retraining's start is over (0: none)."""
        if not self.started:
            return 0.0
        return max(0.0, self.settings.cooldown_s - (now - self.started[-1]).total_seconds())

    def at_daily_cap(self, now: datetime) -> bool:
        """True when ``max_retrains_per_day`` retrainings started in the 24 hours before ``now``."""
        self._forget_before(now - timedelta(days=1))
        return len(self.started) >= self.settings.max_retrains_per_day

    def blocked(self, now: datetime) -> str | None:
        """Why a retraining may not start at ``now`` (cooldown, daily cap), or None."""
        remaining = self.cooldown_left(now)
        if remaining > 0:
            return f"cooling down for another {remaining:.0f}s"
        if self.at_daily_cap(now):
            return f"daily cap of {self.settings.max_retrains_per_day} retrainings reached"
        return None

    def retraining_started(self, now: datetime) -> None:
        self.running = True
        self.started.append(now)
        self.streaks.clear()

    def retraining_finished(self) -> None:
        self.running = False

    def _forget_before(self, cutoff: datetime) -> None:
        while self.started and self.started[0] < cutoff:
            self.started.popleft()

"""The loop's decision core: window results and an event-time clock in, commands out.

One synchronous object holds every rule of the closed loop, so that ``mlops loop run`` (threads,
Spark, MLflow, Kafka), the scheduler and ``bench/loop.py`` (event time, no threads) all drive the
same decisions. It never trains, reads the lake or touches the registry: it returns commands, an
adapter executes them and reports back.

    core = LoopCore(settings.policy, champion="3", baseline_metric=0.67)
    for command in core.on_window(result):      # a closed monitor window (its end_time is the clock)
        ...                                      # Note -> audit trail; Retrain -> train, then
    core.retrained("4", val_metric=0.7, now=t)   # -> [Evaluate("4", after=until)] once due
    core.evaluation_ready(rows, classes)         # enough labelled rows after the training window?
    core.promoted("4", previous="3", now=t)      # or core.rejected(...): the gate's verdict
    core.tick(t)                                 # time passed without a window

What it keeps (all in event time, from window end times or ``tick``):

- the :class:`RetrainPolicy` (streaks per stream, cooldown, daily cap, one retraining at a time);
- a triggered retraining that waits for ``policy.retrain_min_window`` of drifted data since the
  first bad window of the streak (training at the trigger would mostly see the old regime);
- the trained challenger, polled every :data:`EVALUATION_POLL` until ``policy.min_evaluation_rows``
  labelled readings newer than its training window exist (the gate judges on data neither model saw);
- a follow-up retraining: as more drifted data arrives after a drift retraining on ``d`` of it
  (``retrain_min_window``, or more when the trigger came later), the loop trains again at drift
  start + 3d without detecting the drift again (a model trained on 2 h of a new regime is a first
  answer, not the best one; one follow-up, because in the loop benchmark a second one was rejected
  by the gate and a retraining is what a fixed schedule is measured against). A follow-up waits
  while a retraining runs or cools down; a new trigger replaces the schedule, a rollback cancels
  it, and the daily cap drops what exceeds it;
- probation after a promotion that replaced a champion: over ``policy.probation_windows``
  performance windows of the new champion, its primary metric is compared with the replaced
  model's on the same events (``previous_<metric>`` in the window's metrics); if its mean is lower
  by more than ``policy.guard_tolerance``, it is rolled back. One window's f1 is noisy (a few dozen
  failing devices), so the verdict is on the mean of all of them, not window by window.

How a window is read: a drift window is bad iff ``result.drifted`` is True when the result has
that attribute and it is not None, else iff ``drift_share >= policy.drift_threshold``. A
performance window whose metrics lack the primary metric (too few positives to judge it, or
``metrics["judged"] == 0``) judges nothing: it neither extends nor resets a streak, and does not
count towards probation. Windows of a version that is no longer the champion say nothing about it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from mlops.config import PolicySettings, parse_duration
from mlops.monitor.policy import RetrainPolicy, WindowSignal

__all__ = [
    "EVALUATION_POLL",
    "FOLLOW_UPS",
    "Candidate",
    "Command",
    "Evaluate",
    "LoopCore",
    "Note",
    "Probation",
    "Retrain",
    "Rollback",
    "WindowLike",
    "drift_training_window",
    "drifted_data_ready",
    "duration",
    "evaluation_ready",
    "window_signal",
]


def duration(value: str | timedelta) -> timedelta:
    """A policy duration setting (``"6h"``) as a timedelta."""
    return parse_duration(value)  # a setting parsed at load is returned as it is


EVALUATION_POLL = timedelta(minutes=15)
"""How often (event time) a waiting challenger asks for fresh labelled data."""
FOLLOW_UPS = (3,)
"""Follow-up retrainings at drift start + these multiples of the first drift retraining's drifted data."""


class WindowLike(Protocol):
    """The fields of a monitor window result the core reads (``drifted`` is optional)."""

    @property
    def window_id(self) -> Any: ...
    @property
    def kind(self) -> str: ...
    @property
    def model_version(self) -> str | None: ...
    @property
    def start_time(self) -> datetime | None: ...
    @property
    def end_time(self) -> datetime | None: ...
    @property
    def drift_share(self) -> float | None: ...
    @property
    def metrics(self) -> dict[str, float] | None: ...


# --- commands ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Note:
    """A decision to record in the audit trail (``kind`` is a :data:`mlops.store.EVENT_KINDS` kind)."""

    kind: str
    reason: str
    window_id: str | None = None
    model_version: str | None = None
    bad_streak: int = 0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Retrain:
    """Train a challenger on ``[since, until)`` of event time; report with ``retrained`` or ``retrain_failed``."""

    since: datetime
    until: datetime
    reason: str
    window_id: str
    drift_started: datetime | None
    """The drift's start: the new model's drift reference begins there."""
    attempt: int = 1
    follow_up: bool = False


@dataclass(frozen=True)
class Evaluate:
    """Gate challenger ``version`` against the champion on labelled data newer than ``after``, if there
    is enough of it (:meth:`LoopCore.evaluation_ready`), and promote it if it wins."""

    version: str
    after: datetime
    reason: str = ""
    """Why the challenger was trained."""


@dataclass(frozen=True)
class Rollback:
    """Make ``to_version`` the champion again; report with ``rolled_back``."""

    to_version: str
    from_version: str
    reason: str


Command = Note | Retrain | Evaluate | Rollback


# --- the rules over event time ----------------------------------------------------------------
def drift_training_window(policy: PolicySettings, drift_started: datetime | None,
                          until: datetime) -> tuple[datetime, datetime]:
    """[since, until) in event time for a retraining at ``until``: from the drift's start less
    ``drift_training_context`` (if set), at most ``retrain_window`` back; the whole window without a drift start."""
    longest = until - duration(policy.retrain_window)
    if drift_started is None:
        return longest, until
    context = duration(policy.drift_training_context) if policy.drift_training_context else timedelta(0)
    return max(drift_started - context, longest), until


def drifted_data_ready(policy: PolicySettings, drift_started: datetime | None, clock: datetime) -> bool:
    """True once ``retrain_min_window`` of event time has passed since the drift began."""
    return drift_started is None or clock >= drift_started + duration(policy.retrain_min_window)


def evaluation_ready(policy: PolicySettings, rows: int, classes: int) -> bool:
    """Enough fresh labelled data for the gate: ``min_evaluation_rows`` rows with both classes."""
    return rows >= policy.min_evaluation_rows and classes >= 2


def window_signal(result: WindowLike, policy: PolicySettings,
                  baseline_metric: float | None) -> WindowSignal | str:
    """What the policy reads from one window, or why the window judges nothing."""
    window_id = str(result.window_id)
    if result.kind == "drift":
        drifted = getattr(result, "drifted", None)
        if drifted is None and result.drift_share is None:
            return "drift window without a drift statistic"
        if drifted is None and getattr(result, "drift_score", None) is not None:
            return "drift window judges nothing: it is not a sample of the fleet (mlops.monitor.judge.fleet_sample)"
        return WindowSignal(window_id, drift_share=result.drift_share,
                            drifted=None if drifted is None else bool(drifted),
                            drift_score=getattr(result, "drift_score", None),
                            drift_threshold=getattr(result, "drift_threshold", None))
    metrics = result.metrics or {}
    metric = metrics.get(policy.primary_metric)
    if metric is None or metrics.get("judged") == 0.0:
        return (f"performance window judges nothing: no {policy.primary_metric} "
                f"({metrics.get('positives', metrics.get('n_positive', '?'))} positives)")
    return WindowSignal(window_id, metric=metric, baseline_metric=baseline_metric, kind="performance")


@dataclass
class _Waiting:
    """A retraining that was decided on and waits for enough drifted data (or a free slot)."""

    drift_started: datetime | None
    reason: str
    window_id: str
    attempt: int = 1
    follow_up: bool = False


@dataclass
class Candidate:
    """A trained challenger waiting for fresh labelled data."""

    version: str
    after: datetime
    next_poll: datetime
    val_metric: float | None
    since: datetime
    reason: str


@dataclass
class Probation:
    """A champion the loop just promoted, watched against the one it replaced on the same events."""

    version: str
    previous_version: str
    windows: int
    new: list[float] = field(default_factory=list)
    old: list[float] = field(default_factory=list)


@dataclass
class _FollowUps:
    drift_started: datetime
    due: list[datetime]


class LoopCore:
    """The loop's state and rules. Not thread-safe: a threaded adapter calls it under one lock."""

    def __init__(self, policy: PolicySettings, *, champion: str | None = None,
                 baseline_metric: float | None = None) -> None:
        self.settings = policy
        self.policy = RetrainPolicy(policy)
        self.champion = champion
        self.baseline_metric = baseline_metric
        self.clock: datetime | None = None
        self.drift_started: datetime | None = None
        self.waiting: _Waiting | None = None
        self.retraining: Retrain | None = None
        self.candidate: Candidate | None = None
        self.probation: Probation | None = None
        self.follow_ups: _FollowUps | None = None
        self._baselines: dict[str, float | None] = {}
        self._fine_until: dict[str, datetime] = {}
        """Per stream: the end of the newest window that was fine."""
        if champion is not None:
            self._baselines[champion] = baseline_metric

    @property
    def busy(self) -> bool:
        """A retraining is waiting, training, or its challenger waits for the gate."""
        return self.policy.running

    # --- input: windows and time ----------------------------------------------------------
    def on_window(self, result: WindowLike) -> list[Command]:
        """Judge one closed window; its end time advances the clock."""
        if result.end_time is not None:
            self._advance(result.end_time)
        window_id = str(result.window_id)
        out: list[Command] = []
        if result.kind == "performance":
            out += self._judge_probation(result)
        if self.champion is not None and result.model_version != self.champion:
            out.append(Note("not_triggered", f"window of version {result.model_version}, which is no longer the "
                                             "champion", window_id, result.model_version))
            return out + self._tick(window_id)
        signal = window_signal(result, self.settings, self.baseline_metric)
        if isinstance(signal, str):
            streak = self.policy.bad_streak
            out.append(Note("not_triggered", f"{signal}; streak unchanged", window_id, result.model_version, streak))
            return out + self._tick(window_id)
        bad = self.policy.why_bad(signal) is not None
        if bad and not self.policy.streaks.get(signal.stream):
            # Drift windows overlap: the window before this one was fine up to its end, so the
            # drift began after that (training from the window's start would mix the old regime in).
            start, fine_until = result.start_time, self._fine_until.get(signal.stream)
            end = result.end_time
            overlaps = start is not None and fine_until is not None and end is not None and start < fine_until < end
            self.drift_started = fine_until if overlaps else start
        if not bad and result.end_time is not None:
            self._fine_until[signal.stream] = result.end_time
        decision = self.policy.observe(signal, self._now())
        out.append(Note("trigger" if decision.trigger else "not_triggered", decision.reason, window_id,
                        result.model_version, decision.bad_streak))
        if decision.trigger:
            started = self.drift_started or result.start_time
            self.policy.retraining_started(self._now())
            self.waiting = _Waiting(started, decision.reason, window_id)
            self.follow_ups = None  # a new drift: its own follow-ups once it trains
        return out + self._tick(window_id)

    def tick(self, now: datetime) -> list[Command]:
        """Event time passed (a block of the stream, a status poll): issue whatever became due."""
        self._advance(now)
        return self._tick()

    # --- feedback from the adapters ---------------------------------------------------------
    def retrained(self, version: str, val_metric: float | None, now: datetime | None = None) -> list[Command]:
        """The challenger of the running :class:`Retrain` is registered as ``version``."""
        command = self._take_retraining()
        if now is not None:
            self._advance(now)
        self.candidate = Candidate(version, command.until, self._now(), val_metric, command.since, command.reason)
        return self._tick()

    def retrain_failed(self, reason: str, now: datetime | None = None) -> list[Command]:
        """The running :class:`Retrain` failed; it is retried ``policy.retrain_retries`` times."""
        command = self._take_retraining()
        if now is not None:
            self._advance(now)
        if command.attempt <= self.settings.retrain_retries:  # the adapter waits its backoff before a retry
            self.waiting = _Waiting(command.drift_started, command.reason, command.window_id, command.attempt + 1,
                                    command.follow_up)
        else:
            self.policy.retraining_finished()
        return self._tick()

    def evaluation_ready(self, rows: int, classes: int) -> bool:
        """Enough fresh labelled data for the gate (:func:`evaluation_ready`)."""
        return evaluation_ready(self.settings, rows, classes)

    def promoted(self, version: str, previous: str | None, now: datetime | None = None) -> list[Command]:
        """The gate promoted the candidate ``version``, replacing ``previous``."""
        if now is not None:
            self._advance(now)
        candidate = self.candidate
        self.candidate = None
        self.policy.retraining_finished()
        self.policy.streaks.clear()  # the old model's bad windows say nothing about the new one
        self.champion = version
        if candidate is not None and candidate.version == version:
            self.baseline_metric = candidate.val_metric
        self._baselines[version] = self.baseline_metric
        out: list[Command] = []
        if previous is not None and previous != version and self.settings.probation_windows > 0:
            self.probation = Probation(version, previous, self.settings.probation_windows)
            out.append(Note("evaluation", f"version {version} on probation for {self.settings.probation_windows} "
                                          f"performance windows against version {previous}", None, version))
        return out + self._tick()

    def rejected(self, version: str, reason: str, now: datetime | None = None) -> list[Command]:
        """The gate kept the champion (or could not decide): the retraining is over."""
        if now is not None:
            self._advance(now)
        if self.candidate is not None and self.candidate.version == version:
            self.candidate = None
        self.policy.retraining_finished()
        return self._tick()

    def champion_changed(self, version: str, baseline_metric: float | None,
                         now: datetime | None = None) -> list[Command]:
        """Someone else (``mlops promote`` or ``rollback``, the API) made ``version`` the champion: follow it.

        No probation (a person decided); the old champion's streaks and probation end; a retraining
        in flight goes on, its challenger then gated against the new champion.
        """
        if now is not None:
            self._advance(now)
        if version == self.champion:
            return []
        previous = self.champion
        self.champion = version
        self.baseline_metric = baseline_metric if baseline_metric is not None else self._baselines.get(version)
        self._baselines[version] = self.baseline_metric
        self.policy.streaks.clear()
        self.probation = None
        self.follow_ups = None  # they were the old champion's answer to its drift
        note = Note("evaluation", f"version {version} became the champion outside the loop (was {previous}); "
                                  "the loop follows it", None, version)
        return [note, *self._tick()]

    def rolled_back(self, version: str, now: datetime | None = None) -> list[Command]:
        """A :class:`Rollback` was executed: ``version`` serves again."""
        if now is not None:
            self._advance(now)
        self.champion = version
        self.baseline_metric = self._baselines.get(version, self.baseline_metric)
        self.policy.streaks.clear()
        self.follow_ups = None  # the drifted-data models lost: do not train more of them
        return self._tick()

    # --- internals --------------------------------------------------------------------------
    def _advance(self, now: datetime) -> None:
        self.clock = now if self.clock is None else max(self.clock, now)

    def _now(self) -> datetime:
        if self.clock is None:
            raise RuntimeError("the loop core has no event time yet: feed it a window or a tick first")
        return self.clock

    def _take_retraining(self) -> Retrain:
        if self.retraining is None:
            raise RuntimeError("no retraining is running")
        command, self.retraining = self.retraining, None
        return command

    def _tick(self, window_id: str | None = None) -> list[Command]:
        """Issue what is due at the clock; ``window_id``: the window that advanced it (for the audit trail)."""
        if self.clock is None:
            return []
        now = self.clock
        out: list[Command] = self._follow_up(now, window_id or f"{now:%Y-%m-%dT%H:%M}")
        waiting = self.waiting
        if waiting is not None and self.retraining is None and drifted_data_ready(self.settings,
                                                                                  waiting.drift_started, now):
            since, until = drift_training_window(self.settings, waiting.drift_started, now)
            self.retraining = Retrain(since, until, waiting.reason, waiting.window_id, waiting.drift_started,
                                      waiting.attempt, waiting.follow_up)
            self.waiting = None
            out.append(self.retraining)
            if waiting.drift_started is not None and not waiting.follow_up and waiting.attempt == 1:
                drifted = until - waiting.drift_started
                self.follow_ups = _FollowUps(waiting.drift_started, [waiting.drift_started + k * drifted
                                                                     for k in FOLLOW_UPS])
        candidate = self.candidate
        if candidate is not None and now >= candidate.next_poll:
            candidate.next_poll = now + EVALUATION_POLL
            out.append(Evaluate(candidate.version, candidate.after, candidate.reason))
        return out

    def _follow_up(self, now: datetime, window_id: str) -> list[Command]:
        plan = self.follow_ups
        if plan is None or not plan.due or plan.due[0] > now or self.policy.running or self.policy.cooldown_left(now):
            return []  # not due, or deferred until the loop is free
        while len(plan.due) > 1 and plan.due[1] <= now:  # missed while busy: fire once, for the newest
            plan.due.pop(0)
        plan.due.pop(0)
        if not plan.due:
            self.follow_ups = None
        hours = (now - plan.drift_started) / timedelta(hours=1)
        reason = (f"follow-up: {hours:.1f} h of drifted data since the drift began at "
                  f"{plan.drift_started:%Y-%m-%d %H:%M}")
        if self.policy.at_daily_cap(now):
            return [Note("not_triggered", f"{reason}; daily cap of {self.settings.max_retrains_per_day} "
                                          "retrainings reached", window_id, self.champion, details={"follow_up": True})]
        self.policy.retraining_started(now)
        self.waiting = _Waiting(plan.drift_started, reason, window_id, follow_up=True)
        return [Note("trigger", reason, window_id, self.champion, details={"follow_up": True})]

    def _judge_probation(self, result: WindowLike) -> list[Command]:
        probation = self.probation
        if probation is None or result.model_version != probation.version:
            return []
        primary = self.settings.primary_metric
        metrics = result.metrics or {}
        new, old = metrics.get(primary), metrics.get(f"previous_{primary}")
        if new is None or old is None or metrics.get("judged") == 0.0:
            return []  # judges nothing: too few positives for the metric
        probation.new.append(new)
        probation.old.append(old)
        if len(probation.new) < probation.windows:
            return []
        self.probation = None
        mean_new, mean_old = sum(probation.new) / len(probation.new), sum(probation.old) / len(probation.old)
        summary = (f"version {probation.version} {primary} {mean_new:.3f} against version "
                   f"{probation.previous_version}'s {mean_old:.3f} on the same events over "
                   f"{len(probation.new)} windows")
        if mean_new < mean_old - self.settings.guard_tolerance:
            return [Rollback(probation.previous_version, probation.version,
                             f"{summary} (worse by more than {self.settings.guard_tolerance:.3f})")]
        return [Note("evaluation", f"probation passed: {summary}", str(result.window_id), probation.version)]

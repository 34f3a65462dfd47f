"""The whole loop on one machine: the engine behind ``mlops demo`` and the end-to-end tests.

1. services up (Kafka, MLflow); the lake sink, API and scheduler start, then (step 2) the scorer
   and the loop (monitor + controller), each as its own ``mlops`` process, exactly as an operator
   would run them;
2. the scenario's history (stationary) is published fast, sunk into the lake, and the initial
   model is trained on it by ``mlops train`` (Spark) and promoted;
3. the stream goes on at a steady rate, stationary first and drifting from the scenario's onset;
   the loop must notice, retrain, pass the evaluation gate and promote; the scorer switches;
4. the stream runs on for a few more windows so that the new champion is judged, then everything
   this run started is stopped and the report is written.

A scenario without drift streams ``live_readings`` readings instead, waits until the monitor has
judged them, and stops: whatever the loop did in the meantime is a false alarm.

Live progress (events scored, serving version, drift level, loop events) goes to ``report`` as it
happens. Every process this run starts, the initial training included, writes its output to
``<data_dir>/logs/<role>.log``, so the terminal only shows the progress lines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mlops import kafka, store
from mlops.config import Settings
from mlops.data.lake import lake_files, read_table
from mlops.data.publish import publish
from mlops.data.scenarios import load_scenario
from mlops.data.schemas import Label, Reading
from mlops.data.simulator import Simulator
from mlops.demo.processes import EARLY_ROLES, LIVE_ROLES, QUIET_ENV, Processes, exit_on_sigterm
from mlops.demo.report import write_report
from mlops.errors import MlopsError, ServiceError, TrainingError
from mlops.log import get_logger
from mlops.monitor.retraining import gate_and_promote
from mlops.registry.loader import resolve_alias
from mlops.serve.scorer import DEFAULT_GROUP as SCORER_GROUP
from mlops.services.process import wait_for
from mlops.store.results import engine_for, list_results

__all__ = ["LoopRun", "RunOutcome", "loop_events_since", "take_readings", "train_in_subprocess"]

log = get_logger(__name__)
SHOWN_EVENTS = ("trigger", "retrain_started", "retrain_finished", "retrain_failed", "evaluation", "promotion",
                "rejection", "rollback")
"""Loop events worth a progress line (window results and "not triggered" decisions are too many)."""
PROGRESS_EVERY_S = 10.0


@dataclass
class RunOutcome:
    """What happened, for the summary, the report and the tests."""

    scenario: str
    onset_time: datetime | None
    initial_version: str
    promoted_versions: list[str] = field(default_factory=list)
    serving_version: str | None = None
    readings_published: int = 0
    duration_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    report_path: Path | None = None


def take_readings(events: Iterator[Reading | Label], count: int) -> Iterator[Reading | Label]:
    """Pass events through until ``count`` readings went by; the source iterator stays usable."""
    seen = 0
    for event in events:
        yield event
        if isinstance(event, Reading):
            seen += 1
            if seen >= count:
                return


def loop_events_since(settings: Settings, after_id: int) -> list[store.EventRecord]:
    """Audit rows newer than ``after_id``, oldest first ([] while the database is busy)."""
    try:
        rows = store.list_events(settings, limit=200, newest_first=True)
    except MlopsError as err:
        log.warning("cannot read the audit trail yet", error=str(err).splitlines()[0])
        return []
    return [e for e in rows if e.id > after_id][::-1]


def train_in_subprocess(settings: Settings, env: dict[str, str], since: datetime, until: datetime, reason: str,
                        log_path: Path, timeout_s: float) -> dict[str, Any]:
    """Run ``mlops train --json`` on ``[since, until)``; its chatter goes to ``log_path``. Returns the JSON."""
    command = [sys.executable, "-m", "mlops", "train", "--since", since.isoformat(), "--until", until.isoformat(),
               "--trigger", "manual", "--reason", reason, "--json"]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as err:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, env=env,
                              timeout=timeout_s, check=False)
    output = done.stdout.decode(errors="replace")
    if done.returncode != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise TrainingError(f"`mlops train` exited with code {done.returncode} (log {log_path}):\n{tail}")
    # The JSON document is the last thing on stdout; anything a library printed before it is skipped.
    return dict(json.loads(output[output.index("{\n"):]))


class LoopRun:
    """One demo / end-to-end run. ``report`` receives every progress line."""

    def __init__(self, settings: Settings, *, scenario: str, devices: int, seed: int, history_readings: int,
                 rate: float, after_promotion_windows: int, timeout_s: float,
                 report: Callable[[str], None] = print, env: dict[str, str] | None = None,
                 write_report: bool = True, live_readings: int = 20_000) -> None:
        self.settings = settings
        self.scenario_name = scenario
        self.devices = devices
        self.seed = seed
        self.history_readings = history_readings
        self.rate = rate
        self.after_promotion_windows = after_promotion_windows
        self.timeout_s = timeout_s
        self.live_readings = live_readings
        """Readings streamed after the history when the scenario has no drift."""
        self.report = report
        self.env = {**os.environ, **(env or {}), **QUIET_ENV, "MLOPS_PROFILE": settings.profile}
        self.write_report = write_report
        self.processes = Processes(settings, self.env)
        self._t0 = time.monotonic()
        self._sim: Any = None
        self._history_published = 0
        self._last_progress = 0.0

    def run(self) -> RunOutcome:
        self._t0 = t0 = time.monotonic()
        scenario = load_scenario(self.scenario_name)
        self._sim = sim = Simulator(scenario, devices=self.devices, seed=self.seed,
                                    cycle_seconds=self.settings.features.cycle_seconds)
        stop_stream = threading.Event()
        events = sim.events(should_stop=stop_stream.is_set)
        onset = sim.onset
        timings: dict[str, float] = {}
        promoted: list[str] = []
        # SIGTERM (a supervisor, `kill`) must stop the processes this run started, as Ctrl-C does:
        # its default action would leave them running.
        previous_handler = signal.signal(signal.SIGTERM, exit_on_sigterm) \
            if threading.current_thread() is threading.main_thread() else None
        try:
            for role in EARLY_ROLES:
                self.processes.start(role)
            self.report(f"history: publishing {self.history_readings} readings of scenario "
                        f"'{scenario.name}' (seed {self.seed}, {self.devices} devices)")
            published = publish(take_readings(events, self.history_readings), self.settings)
            self._history_published = published.readings
            self._wait_lake(published.readings)
            timings["history_s"] = time.monotonic() - t0

            initial = self._train_initial()
            timings["initial_model_s"] = time.monotonic() - t0
            # The history trained the initial model; the scorer starts at the live stream (it still
            # re-reads the history's tail to warm its per-device feature windows).
            kafka.commit_end_offsets(self.settings.kafka, SCORER_GROUP, self.settings.kafka.topics.readings)
            live_since_id = self._newest_event_id()
            for role in LIVE_ROLES:
                self.processes.start(role)
            self.report(self._stamp("started: " + ", ".join(f"mlops {r}" for r in self.processes.running)))

            live = events if onset is not None else take_readings(events, self.live_readings)
            streamer = threading.Thread(target=publish, args=(live, self.settings),
                                        kwargs={"rate": self.rate}, name="stream", daemon=True)
            streamer.start()
            if onset is None:
                self.report(f"stream: {self.live_readings} readings at {self.rate:.0f}/s, no drift "
                            f"(the loop must not retrain)")
                self._watch_stationary(streamer)
            else:
                self.report(f"stream: {self.rate:.0f} readings/s; drift '{onset.kind}' begins at event time "
                            f"{onset.event_time:%Y-%m-%d %H:%M} (cycle {onset.cycle})")
                promoted = self._follow(streamer)
                timings["promotion_s"] = time.monotonic() - t0
                self._judge_new_champion(promoted[-1], streamer)
            stop_stream.set()
            self._wait_for_reports()
        finally:
            stop_stream.set()
            stopping = time.monotonic()
            killed = self.processes.stop_all()
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, previous_handler)
            self.report(self._stamp(f"stopped the processes in {time.monotonic() - stopping:.0f}s"
                                    + (f" (killed after the grace time: {', '.join(killed)})" if killed else "")))
        # The loop may promote again while the first new champion is judged (a follow-up retraining on
        # more drifted data): the outcome lists every promotion, read once the processes stopped, so it
        # agrees with the version that serves.
        promoted = self._loop_promotions(live_since_id)
        outcome = RunOutcome(scenario.name, onset.event_time if onset else None, initial, promoted,
                             self._serving_version(), sim.readings_emitted, time.monotonic() - t0, timings)
        if self.write_report:
            outcome.report_path = write_report(self.settings, outcome)
        return outcome

    # --- steps --------------------------------------------------------------------------------
    def _stamp(self, line: str) -> str:
        return f"[{time.monotonic() - self._t0:4.0f}s] {line}"

    def _progress_if_due(self) -> None:
        """A progress line at most every PROGRESS_EVERY_S, for the waits that poll."""
        if time.monotonic() - self._last_progress >= PROGRESS_EVERY_S:
            self._last_progress = time.monotonic()
            self.report(self._stamp(self._progress_line()))

    def _wait_lake(self, readings: int) -> None:
        def rows() -> int:
            return sum(f.rows for f in lake_files(self.settings, "readings"))

        wait_for(lambda: rows() >= readings, 300, f"lake holding {readings} readings",
                 check=self.processes.check)
        self.report(self._stamp(f"lake: {rows()} readings"))

    def _train_initial(self) -> str:
        readings = read_table(self.settings, "readings")
        since, until = readings["event_time"].min(), readings["event_time"].max()
        log_path = self.processes.log_path("train-initial")
        self.report(self._stamp(f"training the initial model on the history: `mlops train` (Spark, distributed "
                                f"search; log {log_path})"))
        result = train_in_subprocess(self.settings, self.env, since.to_pydatetime(),
                                     until.to_pydatetime() + (until - since) * 0.001, "initial model (demo history)",
                                     log_path, self.timeout_s)
        version = str(result["version"])
        verdict = gate_and_promote(self.settings, version, actor="demo", reason="initial model", force=True)
        if not verdict.promoted:
            raise TrainingError(f"the initial model (version {version}) could not be promoted: {verdict.reason}")
        self.report(self._stamp(f"initial model: version {version} ({result['family']}, val f1 "
                                f"{result['metrics'].get('f1', float('nan')):.3f}, trained in "
                                f"{result['duration_s']:.0f}s), now champion"))
        return version

    def _serving_version(self) -> str | None:
        try:
            return resolve_alias(self.settings)
        except MlopsError:
            return None

    def _show_loop_events(self, after_id: int) -> tuple[int, list[store.EventRecord]]:
        """Print the loop events newer than ``after_id``; return the newest id and the events."""
        events = loop_events_since(self.settings, after_id)
        for event in events:
            if event.kind in SHOWN_EVENTS:
                version = f"v{event.model_version} " if event.model_version else ""
                self.report(self._stamp(f"loop: {event.kind} {version}{event.reason or ''}"[:240]))
        return (events[-1].id if events else after_id), events

    def _loop_promotions(self, after_id: int) -> list[str]:
        """The versions the loop promoted after event ``after_id``, in order."""
        return [e.model_version for e in store.list_events(self.settings, kinds=["promotion"])
                if e.id > after_id and e.actor == "loop" and e.model_version]

    def _newest_event_id(self) -> int:
        return max((e.id for e in store.list_events(self.settings, limit=1, newest_first=True)), default=0)

    def _follow(self, streamer: threading.Thread) -> list[str]:
        """Print loop events and progress until a drift-triggered promotion reaches the predictions."""
        last_id = self._newest_event_id()
        promoted: list[str] = []
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            self.processes.check()
            if not streamer.is_alive():
                raise ServiceError("the stream ended before the loop promoted a new model")
            last_id, events = self._show_loop_events(last_id)
            promoted += [e.model_version for e in events
                         if e.kind == "promotion" and e.actor == "loop" and e.model_version]
            if promoted and self._predictions_carry(promoted[-1]):
                self.report(self._stamp(f"scorer: predictions now carry version {promoted[-1]}"))
                return promoted
            self._progress_if_due()
            time.sleep(1.0)
        raise ServiceError(f"no drift-triggered promotion reached the scorer within {self.timeout_s:.0f}s "
                           f"(see `mlops loop history` and {self.settings.log_dir})")

    def _watch_stationary(self, streamer: threading.Thread) -> None:
        """Print progress until the stream ended and the monitor judged it (all but the last window)."""
        last_id = self._newest_event_id()
        windows_needed = max(1, self.live_readings // self.settings.policy.window_size - 1)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            self.processes.check()
            last_id, _events = self._show_loop_events(last_id)
            judged = len(self._results("drift", limit=windows_needed + 50))
            if not streamer.is_alive() and judged >= windows_needed:
                self.report(self._stamp(f"stream ended; the monitor judged {judged} drift windows"))
                return
            self._progress_if_due()
            time.sleep(1.0)
        raise ServiceError(f"the monitor did not judge {windows_needed} drift windows within {self.timeout_s:.0f}s "
                           f"(see {self.settings.log_dir})")

    def _results(self, kind: str | None = None, version: str | None = None, limit: int = 200) -> list[Any]:
        """Newest monitor window results, oldest first, optionally of one kind and model version."""
        try:
            rows = list_results(engine_for(self.settings), kind=kind, limit=limit)
        except MlopsError as err:  # e.g. SQLite busy while the monitor writes: ask again next time
            log.warning("cannot read window results yet", error=str(err).splitlines()[0])
            return []
        return [r for r in rows if version is None or r.model_version == version]

    def _judge_new_champion(self, version: str, streamer: threading.Thread) -> None:
        """Keep streaming until the new champion has been judged on a few performance windows."""
        needed = self.after_promotion_windows
        self.report(self._stamp(f"stream: continuing until version {version} is judged on {needed} "
                                f"performance windows"))
        def judged() -> bool:
            if not streamer.is_alive():
                raise ServiceError("the stream ended before the new champion was judged")
            self._progress_if_due()
            return len(self._results("performance", version)) >= needed

        wait_for(judged, self.timeout_s, f"{needed} performance windows of version {version}",
                 interval_s=2.0, check=self.processes.check)

    def _wait_for_reports(self, timeout_s: float = 60.0) -> None:
        """Give the monitor's report thread time to write the Evidently reports it still has queued."""
        def missing() -> int:
            return sum(1 for w in self._results(limit=1000) if not w.report_html)

        deadline = time.monotonic() + timeout_s
        while missing() and time.monotonic() < deadline:
            time.sleep(1.0)
        left = missing()
        total = len(self._results(limit=1000))
        self.report(self._stamp(f"Evidently reports: {total - left} of {total} windows written"
                                + (f" ({left} still queued; the monitor writes them while it stops)" if left else "")))

    def _predictions_carry(self, version: str) -> bool:
        """True once the monitor has seen predictions stamped with ``version``."""
        return bool(self._results("drift", version, limit=20))

    def _progress_line(self) -> str:
        try:  # the scorer commits its input offsets with every transaction: what it has scored
            scored = str(kafka.committed_total(self.settings.kafka, SCORER_GROUP, self.settings.kafka.topics.readings)
                         - self._history_published)
        except Exception as err:  # KafkaException and timeouts alike: the next line will tell
            log.warning("cannot read the scorer's offsets", error=str(err))
            scored = "?"
        drifts, perfs = self._results("drift", limit=1), self._results("performance", limit=1)
        level = drifts[-1].drift_level(self.settings.policy.drift_threshold) if drifts else None
        drift = "-" if level is None else f"{level:.2f}"
        f1 = (perfs[-1].metrics or {}).get("f1") if perfs else None
        stamped = f" (predictions carry v{drifts[-1].model_version})" if drifts else ""
        clock = f"event time {drifts[-1].end_time:%m-%d %H:%M} | " if drifts else ""
        live = (self._sim.readings_emitted if self._sim is not None else 0) - self._history_published
        return (f"{clock}{scored}/{live} live readings scored | champion v{self._serving_version()}{stamped} | "
                f"drift {drift} of threshold | f1 {'-' if f1 is None else f'{f1:.3f}'}")

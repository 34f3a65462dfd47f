"""The whole loop on one machine: the engine behind ``mlops demo`` and the end-to-end test.

1. services up (Kafka, MLflow); the lake sink, scorer, loop (monitor + controller), API and
   scheduler start as their own ``mlops`` processes, exactly as an operator would run them;
2. the scenario's history (stationary) is published fast, sunk into the lake, and the initial
   model is trained on it with Spark and promoted;
3. the stream goes on at a steady rate, stationary first and drifting from the scenario's onset;
   the loop must notice, retrain, pass the evaluation gate and promote; the scorer switches;
4. the stream runs on for a few more windows so that the new champion is judged, then everything
   this run started is stopped and the report is written.

Live progress (events scored, serving version, drift share, loop events) is printed as it happens.
"""

from __future__ import annotations

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

from mlops import db
from mlops.config import Settings
from mlops.data.schemas import Label, Reading
from mlops.errors import MlopsError, ServiceError
from mlops.log import get_logger
from mlops.serve.scorer import DEFAULT_GROUP as SCORER_GROUP
from mlops.services.process import wait_for

log = get_logger(__name__)
ROLES = ("lake-sink", "score", "loop run", "api", "scheduler")
"""The `mlops` commands a run starts, in order; each is one process."""


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


class Processes:
    """The ``mlops`` processes of one run; each logs to ``<data_dir>/logs/<role>.log``."""

    def __init__(self, settings: Settings, env: dict[str, str]) -> None:
        self.settings = settings
        self.env = env
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def log_path(self, role: str) -> Path:
        return self.settings.log_dir / f"{role.replace(' ', '-')}.log"

    def start(self, role: str, *args: str) -> None:
        log_path = self.log_path(role)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            self.running[role] = subprocess.Popen(
                [sys.executable, "-m", "mlops", *role.split(), *args], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=self.env, start_new_session=True)

    def check(self) -> None:
        """Raise if a process died: the run cannot go on without it."""
        for role, proc in self.running.items():
            if proc.poll() is not None:
                tail = self.log_path(role).read_text(errors="replace")[-3000:]
                raise ServiceError(f"`mlops {role}` exited with code {proc.returncode}:\n{tail}")

    def stop_all(self, timeout_s: float = 60.0) -> None:
        for proc in self.running.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in self.running.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.running.clear()


def commit_end_offsets(settings: Settings, group: str, topic: str) -> None:
    """Set ``group``'s committed offsets on ``topic`` to its current end (the group must be idle)."""
    from confluent_kafka import TopicPartition

    from mlops import kafka

    consumer = kafka.consumer(settings.kafka, group)
    try:
        metadata = consumer.list_topics(topic, timeout=30)
        ends = [TopicPartition(topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1])
                for p in metadata.topics[topic].partitions]
        consumer.commit(offsets=ends, asynchronous=False)
    finally:
        consumer.close()


def take_readings(events: Iterator[Reading | Label], count: int) -> Iterator[Reading | Label]:
    """Pass events through until ``count`` readings went by; the source iterator stays usable."""
    seen = 0
    for event in events:
        yield event
        if isinstance(event, Reading):
            seen += 1
            if seen >= count:
                return


def loop_events_since(settings: Settings, after_id: int) -> list[db.EventRecord]:
    """Audit rows newer than ``after_id``, oldest first ([] while the database is busy)."""
    try:
        rows = db.list_events(settings, limit=200, newest_first=True)
    except MlopsError as err:
        log.warning("cannot read the audit trail yet", error=str(err).splitlines()[0])
        return []
    return [e for e in rows if e.id > after_id][::-1]


class LoopRun:
    """One demo / end-to-end run. ``report`` receives every progress line."""

    def __init__(self, settings: Settings, *, scenario: str, devices: int, seed: int, history_readings: int,
                 rate: float, after_promotion_windows: int, timeout_s: float,
                 report: Callable[[str], None] = print, env: dict[str, str] | None = None,
                 write_report: bool = True) -> None:
        self.settings = settings
        self.scenario_name = scenario
        self.devices = devices
        self.seed = seed
        self.history_readings = history_readings
        self.rate = rate
        self.after_promotion_windows = after_promotion_windows
        self.timeout_s = timeout_s
        self.report = report
        self.env = {**os.environ, **(env or {}), "MLOPS_PROFILE": settings.profile}
        self.write_report = write_report
        self.processes = Processes(settings, self.env)

    def run(self) -> RunOutcome:
        from mlops.data.publish import publish
        from mlops.data.scenarios import load_scenario
        from mlops.data.simulator import Simulator

        t0 = time.monotonic()
        scenario = load_scenario(self.scenario_name)
        sim = Simulator(scenario, devices=self.devices, seed=self.seed,
                        cycle_seconds=self.settings.features.cycle_seconds)
        stop_stream = threading.Event()
        events = sim.events(should_stop=stop_stream.is_set)
        onset = sim.onset
        timings: dict[str, float] = {}
        try:
            self.processes.start("lake-sink")
            self.report(f"history: publishing {self.history_readings} readings of scenario "
                        f"'{scenario.name}' (seed {self.seed}, {self.devices} devices)")
            published = publish(take_readings(events, self.history_readings), self.settings)
            self._wait_lake(published.readings)
            timings["history_s"] = time.monotonic() - t0

            initial = self._train_initial()
            timings["initial_model_s"] = time.monotonic() - t0
            # The history trained the initial model; the scorer starts at the live stream (it still
            # re-reads the history's tail to warm its per-device feature windows).
            commit_end_offsets(self.settings, SCORER_GROUP, self.settings.kafka.topics.readings)
            for role in ROLES[1:]:
                self.processes.start(role)
            self.report("started: " + ", ".join(f"mlops {r}" for r in self.processes.running))

            streamer = threading.Thread(target=publish, args=(events, self.settings),
                                        kwargs={"rate": self.rate}, name="stream", daemon=True)
            streamer.start()
            if onset is not None:
                self.report(f"stream: {self.rate:.0f} readings/s; drift '{onset.kind}' begins at event time "
                            f"{onset.event_time:%Y-%m-%d %H:%M} (cycle {onset.cycle})")
            promoted = self._follow(initial, t0, streamer)
            timings["promotion_s"] = time.monotonic() - t0
            self._judge_new_champion(promoted[-1] if promoted else initial, streamer)
        finally:
            stop_stream.set()
            self.processes.stop_all()
        outcome = RunOutcome(scenario.name, onset.event_time if onset else None, initial, promoted,
                             self._serving_version(), sim.readings_emitted, time.monotonic() - t0, timings)
        if self.write_report:
            from mlops.report import write_report

            outcome.report_path = write_report(self.settings, outcome)
        return outcome

    # --- steps --------------------------------------------------------------------------------
    def _wait_lake(self, readings: int) -> None:
        from mlops.data.lake import lake_files

        def rows() -> int:
            return sum(f.rows for f in lake_files(self.settings, "readings"))

        wait_for(lambda: rows() >= readings, 300, f"lake holding {readings} readings",
                   check=self.processes.check)
        self.report(f"lake: {rows()} readings")

    def _train_initial(self) -> str:
        from mlops.data.lake import read_table
        from mlops.registry import promotion
        from mlops.train.job import TrainRequest, run_training

        readings = read_table(self.settings, "readings")
        since, until = readings["event_time"].min(), readings["event_time"].max()
        self.report("training the initial model on the history (Spark, distributed search) ...")
        result = run_training(self.settings, TrainRequest(since=since.to_pydatetime(),
                                                          until=until.to_pydatetime() + (until - since) * 0.001,
                                                          trigger="manual", reason="initial model (demo history)"),
                              progress=lambda line: self.report(f"  train: {line}"))
        promotion.promote(self.settings, result.version, actor="demo", reason="initial model", force=True)
        self.report(f"initial model: version {result.version}, val f1 {result.metrics.get('f1', float('nan')):.3f}"
                    f", now champion")
        return result.version

    def _serving_version(self) -> str | None:
        from mlops.registry.loader import resolve_alias

        try:
            return resolve_alias(self.settings)
        except MlopsError:
            return None

    def _follow(self, initial: str, t0: float, streamer: threading.Thread) -> list[str]:
        """Print loop events and progress until a drift-triggered promotion reaches the predictions."""
        last_id = max((e.id for e in db.list_events(self.settings, limit=1, newest_first=True)), default=0)
        promoted: list[str] = []
        deadline = time.monotonic() + self.timeout_s
        last_progress = 0.0
        while time.monotonic() < deadline:
            self.processes.check()
            if not streamer.is_alive():
                raise ServiceError("the stream ended before the loop promoted a new model")
            for event in loop_events_since(self.settings, last_id):
                last_id = event.id
                if event.kind not in ("window_result", "not_triggered"):
                    version = f"v{event.model_version}" if event.model_version else ""
                    self.report(f"[{time.monotonic() - t0:5.0f}s] loop: {event.kind} {version} "
                                f"{event.reason or ''}"[:220])
                if event.kind == "promotion" and event.actor == "loop" and event.model_version:
                    promoted.append(event.model_version)
            if promoted and self._predictions_carry(promoted[-1]):
                self.report(f"[{time.monotonic() - t0:5.0f}s] scorer: predictions now carry version {promoted[-1]}")
                return promoted
            if time.monotonic() - last_progress > 10:
                last_progress = time.monotonic()
                self.report(f"[{time.monotonic() - t0:5.0f}s] {self._progress_line()}")
            time.sleep(1.0)
        raise ServiceError(f"no drift-triggered promotion reached the scorer within {self.timeout_s:.0f}s "
                           f"(see `mlops loop history` and {self.settings.log_dir})")

    def _results(self, kind: str | None = None, version: str | None = None, limit: int = 200) -> list[Any]:
        """Newest monitor window results, oldest first, optionally of one kind and model version."""
        from mlops.monitor.results import engine_for, list_results

        try:
            rows = list_results(engine_for(self.settings), kind=kind, limit=limit)
        except MlopsError as err:  # e.g. SQLite busy while the monitor writes: ask again next time
            log.warning("cannot read window results yet", error=str(err).splitlines()[0])
            return []
        return [r for r in rows if version is None or r.model_version == version]

    def _judge_new_champion(self, version: str, streamer: threading.Thread) -> None:
        """Keep streaming until the new champion has been judged on a few performance windows."""
        needed = self.after_promotion_windows
        self.report(f"stream: continuing until version {version} is judged on {needed} performance windows")

        def judged() -> bool:
            if not streamer.is_alive():
                raise ServiceError("the stream ended before the new champion was judged")
            return len(self._results("performance", version)) >= needed

        wait_for(judged, self.timeout_s, f"{needed} performance windows of version {version}",
                   interval_s=2.0, check=self.processes.check)

    def _predictions_carry(self, version: str) -> bool:
        """True once the monitor has seen predictions stamped with ``version``."""
        return bool(self._results("drift", version, limit=20))

    def _progress_line(self) -> str:
        from mlops import kafka

        scored = kafka.topic_counts(self.settings.kafka, self.settings.kafka.topics.predictions)
        drifts, perfs = self._results("drift", limit=1), self._results("performance", limit=1)
        drift = drifts[-1] if drifts else None
        perf = perfs[-1] if perfs else None
        f1 = (perf.metrics or {}).get("f1") if perf else None
        return (f"≈{scored} predictions | champion v{self._serving_version()} | "
                f"drift share {drift.drift_share if drift and drift.drift_share is not None else float('nan'):.2f} | "
                f"f1 {f1 if f1 is not None else float('nan'):.3f}")

"""Benchmark: one drift scenario, one seed, three policies — static, fixed schedule, drift-triggered loop.

    .venv/bin/python bench/loop.py [--scenario recalibration|wear_regime|fault_mode|cmapss]
                                   [--schedule-every 6h] [--schedule-promotion gate|always]
                                   [--hours-after-onset 36] [--out bench/out/loop]

The stream is generated once (the simulator with the demo's seed and fleet from ``demo`` in the
profile, or the C-MAPSS FD001 replay, see :mod:`loop_cmapss`) and driven in event time: every
block of readings is scored by each policy's serving model, then each policy may act. Trainings are
the real job (Spark local on one warm session, MLflow at ``mlflow.tracking_uri``, a fresh
experiment and registered model per run) on a real lake that holds what had been published by then.
See docs/loop-results.md for what is measured, how, and the figures.

Writes ``<out>/accuracy.png``, ``<out>/results.json`` and ``<out>/table.txt``; prints the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import tempfile
import time
import uuid
import warnings
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from loop_policies import DriftLoop, Policy, Schedule, Static, Trainer
from loop_report import Row, detection, format_table, plot, table
from loop_stream import LakeFeed, Stream, simulated_stream

from mlops.config import Settings, load_settings
from mlops.train.job import parse_duration

SCENARIOS = ("recalibration", "wear_regime", "fault_mode", "cmapss")


def arguments() -> argparse.Namespace:
    demo = load_settings("local").demo
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=SCENARIOS, default=demo.scenario,
                        help="simulator drift scenario, or cmapss (FD001 replay with an injected drift)")
    parser.add_argument("--devices", type=int, default=demo.devices)
    parser.add_argument("--seed", type=int, default=demo.seed)
    parser.add_argument("--history-readings", type=int, default=demo.history_readings,
                        help="readings before the live stream; the initial model trains on them")
    parser.add_argument("--hours-after-onset", type=float, default=36.0, help="event time streamed after the onset")
    parser.add_argument("--schedule-every", default="6h", help="fixed schedule's period in event time (e.g. 6h, 1d)")
    parser.add_argument("--schedule-promotion", choices=("gate", "always"), default="gate",
                        help="gate: the product's evaluation gate, as `mlops scheduler` does; always: no gate")
    parser.add_argument("--block", default="5m", help="event time scored between two policy decisions")
    parser.add_argument("--out", type=Path, default=Path("bench/out/loop"))
    return parser.parse_args()


def bench_settings(data_dir: Path, run_name: str) -> Settings:
    """The local profile with its own data directory, experiment and registered model."""
    return load_settings("local", overrides={
        "paths": {"data_dir": str(data_dir)},
        "mlflow": {"registered_model": run_name, "experiment": run_name},
    })


def make_stream(args: argparse.Namespace, settings: Settings) -> Stream:
    if args.scenario == "cmapss":
        from loop_cmapss import cmapss_stream

        return cmapss_stream(settings, hours_after_onset=args.hours_after_onset)
    return simulated_stream(settings, args.scenario, args.devices, args.seed, args.history_readings,
                            args.hours_after_onset)


def run(args: argparse.Namespace, settings: Settings, run_name: str) -> dict[str, Any]:
    from mlops.spark import spark_session

    t0 = time.perf_counter()

    def report(line: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {line}", flush=True)

    stream = make_stream(args, settings)
    onset = stream.onset
    labels = len(stream.events) - len(stream.readings)
    report(f"stream '{stream.name}': {len(stream.readings)} readings, {labels} labels, live from "
           f"{stream.time_of(stream.history_readings):%Y-%m-%d %H:%M}"
           + (f", drift '{onset.kind}' at {onset.event_time:%Y-%m-%d %H:%M} (reading {onset.reading})"
              if onset else ""))
    lake = LakeFeed(settings)
    first_live = int(np.flatnonzero(stream.reading_of_event == stream.history_readings)[0])
    for event in stream.events[:first_live]:
        lake.add(event)
    spark = spark_session(settings, app_name="bench-loop")
    try:
        trainer = Trainer(settings, lake, spark, report)
        start = stream.time_of(0)
        live = stream.time_of(stream.history_readings)
        report(f"initial model: training on the history {start:%Y-%m-%d %H:%M} .. {live:%Y-%m-%d %H:%M}")
        initial_training, initial = trainer.train("initial", "manual", "initial model (bench history)", start,
                                                  live, live)
        if initial is None:
            raise SystemExit(f"the initial model did not train: {initial_training.error}")
        baseline = initial_training.val_metrics.get(settings.policy.primary_metric)
        policies: list[Policy] = [
            Static(stream, trainer, initial, report),
            Schedule(stream, trainer, initial, report, parse_duration(args.schedule_every),
                     use_gate=args.schedule_promotion == "gate"),
            DriftLoop(stream, trainer, initial, report, baseline),
        ]
        drive(stream, lake, policies, parse_duration(args.block), report)
    finally:
        with contextlib.suppress(Exception):  # a JVM that died has nothing left to stop
            spark.stop()
    rows = table(stream, policies, settings.policy.promotion_margin)
    loop = next(p for p in policies if isinstance(p, DriftLoop))
    args.out.mkdir(parents=True, exist_ok=True)
    title = (f"{stream.name}: {len(stream.readings)} readings, schedule every {args.schedule_every} "
             f"({args.schedule_promotion}), MLflow experiment {run_name}")
    plot(stream, policies, loop.window_log, settings.policy.drift_threshold, args.out / "accuracy.png", title)
    return {
        "run": run_name, "scenario": stream.name, "args": {k: str(v) for k, v in vars(args).items()},
        "duration_s": round(time.perf_counter() - t0, 1), "readings": len(stream.readings),
        "live_readings": len(stream.readings) - stream.history_readings,
        "onset": onset.event_time.isoformat() if onset else None,
        "policy": settings.policy.model_dump(mode="json"), "train": settings.train.model_dump(mode="json"),
        "initial": initial_training.to_dict(), "table": [asdict(r) for r in rows],
        "trainings": [t.to_dict() for p in policies for t in p.trainings],
        "loop_windows": loop.window_log, "detection": detection(stream, loop.window_log),
        "mlflow": settings.mlflow.tracking_uri,
    }


def drive(stream: Stream, lake: LakeFeed, policies: list[Policy], block: timedelta, report: Any) -> None:
    """Score, watch and act block by block of event time; a status line every 2 hours of event time."""
    next_status = stream.time_of(stream.history_readings)
    for events, rows in stream.blocks(block):
        for i in events:
            lake.add(stream.events[i])
        for policy in policies:
            policy.score(rows)
            policy.observe(events)
        clock = stream.time_of(rows.stop - 1)
        for policy in policies:
            policy.step(clock)
        if clock >= next_status:
            next_status = clock + timedelta(hours=2)
            report(status_line(stream, policies, rows.stop, clock))


def status_line(stream: Stream, policies: list[Policy], upto: int, clock: datetime) -> str:
    """Serving version and true accuracy over the last hour of each policy (for display only)."""
    hour_ago = stream.time_ns[upto - 1] - int(3.6e12)
    recent = np.flatnonzero((stream.time_ns[:upto] > hour_ago) & (stream.truth[:upto] >= 0))
    recent = recent[recent >= stream.history_readings]
    onset = stream.onset
    where = f"{(clock - onset.event_time) / timedelta(hours=1):+.1f}h from onset" if onset else ""
    parts = [f"{p.name} v{p.champion.version} acc {np.mean(p.decision[recent] == stream.truth[recent]):.3f}"
             for p in policies]
    rss_gb = psutil.Process().memory_info().rss / 1e9
    return f"event time {clock:%m-%d %H:%M} ({where}) | " + " | ".join(parts) + f" | rss {rss_gb:.1f}GB"


def quiet() -> None:
    """Keep the progress lines readable: no library warnings, MLflow's run links or download bars."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.simplefilter("ignore")
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def main() -> None:
    args = arguments()
    quiet()
    run_name = f"bench-loop-{args.scenario}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as data_dir:
        settings = bench_settings(Path(data_dir), run_name)
        results = run(args, settings, run_name)
    text = format_table([Row(**r) for r in results["table"]])
    summary = (f"{results['scenario']}: {results['live_readings']} live readings, onset {results['onset']}, "
               f"schedule every {args.schedule_every} ({args.schedule_promotion}); run took {results['duration_s']}s")
    summary += "\n" + results["detection"]
    print("\n" + summary + "\n" + text)
    (args.out / "table.txt").write_text(summary + "\n" + text + "\n")
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwrote {args.out / 'accuracy.png'}, {args.out / 'results.json'}, {args.out / 'table.txt'}")


if __name__ == "__main__":
    main()

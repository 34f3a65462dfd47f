"""Benchmark: one drift scenario per run — static model, fixed schedules, the product's loop, a hindsight oracle.

    .venv/bin/python bench/loop.py [--scenario recalibration|gradual_drift|fault_mode|cmapss|cmapss_fd002]
                                   [--seeds 1,2,3] [--schedules 1h,6h,24h] [--schedule-promotion gate|always]
                                   [--hours-after-onset 24] [--devices 20] [--out bench/out/loop]

The stream is generated once per seed (the simulator with the demo's fleet from ``demo`` in the
profile, or the C-MAPSS FD001 replay, see :mod:`loop_cmapss`) and driven in event time: every
block of readings is scored by each policy's serving model, then each policy may act. Trainings are
the real job (Spark local on one warm session, MLflow at ``mlflow.tracking_uri``, a fresh
experiment and one registered model per policy per run) on a real lake that holds what had been
published by then; challengers are gated and promoted by the product's use case, and the loop's
decisions are the product's :class:`~mlops.monitor.loop.LoopCore`'s (see :mod:`loop_policies`).

Per scenario it prints post-onset f1 and accuracy as a fraction of the oracle's, onset -> better
model in event hours, retrainings and training CPU seconds; with several seeds, one table per seed
and the medians. The size of a run is set by ``--hours-after-onset``, ``--devices``,
``--history-readings`` and ``--schedules`` (an hourly schedule trains ~30 times a day).
See docs/loop-results.md for what is measured, how, and the figures.

Writes ``<out>/seed-<n>/accuracy.png``, ``<out>/results.json`` and ``<out>/table.txt``; prints the tables.
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
from loop_policies import ClosedLoop, Oracle, Policy, Schedule, Static, Trainer
from loop_report import Row, detection, format_table, medians, plot, table
from loop_stream import LakeFeed, Stream, simulated_stream

from mlops.config import Settings, load_settings
from mlops.train.job import parse_duration

CMAPSS_STREAMS = ("cmapss", "cmapss_fd002")
"""C-MAPSS streams (:data:`loop_cmapss.STREAMS`): FD001 with an injected drift, FD001 then FD002; any other
name is a simulator scenario."""


def arguments() -> argparse.Namespace:
    from mlops.data.scenarios import available_scenarios

    demo = load_settings("local").demo
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default=demo.scenario,
                        help=f"simulator drift scenario ({', '.join(available_scenarios())}) or "
                             f"{' / '.join(CMAPSS_STREAMS)}")
    parser.add_argument("--devices", type=int, default=demo.devices)
    parser.add_argument("--seeds", default=str(demo.seed), help="comma-separated simulator seeds, e.g. 1,2,3")
    parser.add_argument("--history-readings", type=int, default=demo.history_readings,
                        help="readings before the live stream; the initial model trains on them")
    parser.add_argument("--hours-after-onset", type=float, default=24.0, help="event time streamed after the onset")
    parser.add_argument("--schedules", default="1h,6h,24h",
                        help="fixed schedules' periods in event time, comma-separated (empty: none)")
    parser.add_argument("--schedule-promotion", choices=("gate", "always"), default="gate",
                        help="gate: the product's evaluation gate, as `mlops scheduler` does; always: no gate")
    parser.add_argument("--no-oracle", action="store_true", help="skip the hindsight oracle's training")
    parser.add_argument("--block", default="5m", help="event time scored between two policy decisions")
    parser.add_argument("--out", type=Path, default=Path("bench/out/loop"))
    args = parser.parse_args()
    if args.scenario not in CMAPSS_STREAMS and args.scenario not in available_scenarios():
        parser.error(f"--scenario {args.scenario!r}: not a scenario (known: {', '.join(available_scenarios())}, "
                     f"{', '.join(CMAPSS_STREAMS)})")
    try:
        args.seed_list = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
        args.schedule_list = [parse_duration(every.strip()) for every in args.schedules.split(",") if every.strip()]
    except ValueError as err:
        parser.error(f"--seeds {args.seeds!r} / --schedules {args.schedules!r}: {err}")
    if not args.seed_list:
        parser.error("--seeds: give at least one seed")
    return args


def bench_settings(data_dir: Path, run_name: str) -> Settings:
    """The local profile with its own data directory, experiment and registered model."""
    return load_settings("local", overrides={
        "paths": {"data_dir": str(data_dir)},
        "mlflow": {"registered_model": run_name, "experiment": run_name},
    })


def make_stream(args: argparse.Namespace, settings: Settings, seed: int) -> Stream:
    if args.scenario in CMAPSS_STREAMS:
        from loop_cmapss import STREAMS

        return STREAMS[args.scenario](settings, hours_after_onset=args.hours_after_onset, seed=seed)
    return simulated_stream(settings, args.scenario, args.devices, seed, args.history_readings,
                            args.hours_after_onset)


def run(args: argparse.Namespace, settings: Settings, run_name: str, seed: int, out: Path) -> dict[str, Any]:
    from mlops.spark import spark_session

    t0 = time.perf_counter()

    def report(line: str) -> None:
        print(f"[{time.perf_counter() - t0:6.0f}s] {line}", flush=True)

    stream = make_stream(args, settings, seed)
    onset = stream.onset
    labels = len(stream.events) - len(stream.readings)
    report(f"stream '{stream.name}' (seed {seed}): {len(stream.readings)} readings, {labels} labels, live from "
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
        initial_training = trainer.train(settings, "initial", "manual", "initial model (bench history)", start,
                                         live, live)
        if initial_training.version is None:
            raise SystemExit(f"the initial model did not train: {initial_training.error}")
        initial = trainer.model(settings, initial_training.version)
        baseline = initial_training.val_metrics.get(settings.policy.primary_metric)
        oracle = None if args.no_oracle or onset is None else Oracle(stream, trainer, initial, report)
        policies: list[Policy] = [
            Static(stream, trainer, initial, report),
            *(Schedule(stream, trainer, initial, report, every, use_gate=args.schedule_promotion == "gate")
              for every in args.schedule_list),
            ClosedLoop(stream, trainer, initial, report, baseline),
            *([oracle] if oracle is not None else []),
        ]
        clock = drive(stream, lake, policies, parse_duration(args.block), report)
        if oracle is not None:
            report("oracle: training on the whole post-onset regime with all its labels")
            oracle.fit(clock)
    finally:
        with contextlib.suppress(Exception):  # a JVM that died has nothing left to stop
            spark.stop()
    rows = table(stream, policies, settings.policy.promotion_margin)
    loop = next(p for p in policies if isinstance(p, ClosedLoop))
    out.mkdir(parents=True, exist_ok=True)
    title = (f"{stream.name} seed {seed}: {len(stream.readings)} readings, schedules {args.schedules} "
             f"({args.schedule_promotion}), MLflow experiment {run_name}")
    plot(stream, policies, loop.window_log, settings.policy.drift_threshold, out / "accuracy.png", title)
    return {
        "run": run_name, "scenario": stream.name, "seed": seed, "args": {k: str(v) for k, v in vars(args).items()},
        "duration_s": round(time.perf_counter() - t0, 1), "readings": len(stream.readings),
        "live_readings": len(stream.readings) - stream.history_readings,
        "onset": onset.event_time.isoformat() if onset else None,
        # A C-MAPSS replay can end before --hours-after-onset: it has only so many engines.
        "hours_after_onset": round((stream.time_of(len(stream.readings) - 1) - onset.event_time)
                                   / timedelta(hours=1), 1) if onset else None,
        "policy": settings.policy.model_dump(mode="json"), "train": settings.train.model_dump(mode="json"),
        "initial": initial_training.to_dict(), "table": [asdict(r) for r in rows],
        "trainings": [t.to_dict() for p in policies for t in p.trainings],
        "loop_windows": loop.window_log, "detection": detection(stream, loop.window_log),
        "mlflow": settings.mlflow.tracking_uri,
    }


def drive(stream: Stream, lake: LakeFeed, policies: list[Policy], block: timedelta, report: Any) -> datetime:
    """Score, watch and act block by block of event time; a status line every 2 hours of event time.
    Returns the event time of the last reading."""
    next_status = clock = stream.time_of(stream.history_readings)
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
    return clock


def status_line(stream: Stream, policies: list[Policy], upto: int, clock: datetime) -> str:
    """Serving version and true accuracy over the last hour of each policy (for display only)."""
    hour_ago = stream.time_ns[upto - 1] - int(3.6e12)
    recent = np.flatnonzero((stream.time_ns[:upto] > hour_ago) & (stream.truth[:upto] >= 0))
    recent = recent[recent >= stream.history_readings]
    onset = stream.onset
    where = f"{(clock - onset.event_time) / timedelta(hours=1):+.1f}h from onset" if onset else ""
    parts = [f"{p.name} v{p.champion.version} acc {np.mean(p.decision[recent] == stream.truth[recent]):.3f}"
             for p in policies if not isinstance(p, Oracle)]
    rss_gb = psutil.Process().memory_info().rss / 1e9
    return f"event time {clock:%m-%d %H:%M} ({where}) | " + " | ".join(parts) + f" | rss {rss_gb:.1f}GB"


def quiet() -> None:
    """Keep the progress lines readable: no library warnings, MLflow's run links or download bars."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    warnings.simplefilter("ignore")
    logging.getLogger("mlflow").setLevel(logging.WARNING)


def main() -> None:
    args = arguments()
    quiet()
    stamp = f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    runs: list[dict[str, Any]] = []
    texts: list[str] = []
    for seed in args.seed_list:
        run_name = f"bench-loop-{args.scenario}-s{seed}-{stamp}"
        with tempfile.TemporaryDirectory(prefix="bench-loop-") as data_dir:
            settings = bench_settings(Path(data_dir), run_name)
            results = run(args, settings, run_name, seed, args.out / f"seed-{seed}")
        runs.append(results)
        text = (f"{results['scenario']} seed {seed}: {results['live_readings']} live readings, onset "
                f"{results['onset']}, {results['hours_after_onset']} h after it; run took {results['duration_s']}s\n"
                f"{results['detection']}\n" + format_table([Row(**r) for r in results["table"]]))
        print("\n" + text, flush=True)
        texts.append(text)
    if len(runs) > 1:
        text = (f"{runs[0]['scenario']}: medians over seeds {args.seeds}\n"
                + format_table(medians([[Row(**r) for r in results["table"]] for results in runs])))
        print("\n" + text)
        texts.append(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.txt").write_text("\n\n".join(texts) + "\n")
    (args.out / "results.json").write_text(json.dumps(runs, indent=1, default=str))
    print(f"\nwrote {args.out / 'table.txt'}, {args.out / 'results.json'} and an accuracy.png per seed")


if __name__ == "__main__":
    main()

"""Benchmark: how the training-set build and the whole `mlops train` grow with the fleet.

    .venv/bin/python bench/train_scale.py [--sizes 20,200,1000] [--days 7] [--search light|config]

For each fleet size the stationary scenario's fleet (one reading per device per minute,
``features.cycle_seconds`` = 60) is simulated for ``--days`` and written straight into a fresh lake
the way the lake sink writes it (one commit per topic partition and chunk, offsets recorded; no
Kafka), then measured twice, each in its own process so that the peak memory is the step's own:

(a) the training-set build, :func:`mlops.train.dataset.build_training_set` on a Spark session of the
    configured master (the time is the build's alone, not the session start);
(b) the whole ``mlops train --since .. --until .. --json`` (wall time of the command).

Peak memory is the peak of the summed resident memory of the process and all of its descendants
(Spark's JVM and its Python workers included), sampled every 0.2 s with psutil. One MLflow server
(``mlops services``' own code) serves every size. ``--search light`` trains 2 small candidates, so
the figures show the data path rather than the model families' fitting; ``config`` uses the
configured search. Prints a table and the growth exponent log(y2/y1)/log(n2/n1) between consecutive
sizes (1: linear in the readings). Prints figures; never passes or fails on time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil

from mlops.config import Settings, load_settings
from mlops.data.lake import write_commit
from mlops.data.scenarios import load_scenario
from mlops.data.schemas import Reading
from mlops.data.simulator import Simulator
from mlops.testing import free_port, unique

REPO = Path(__file__).resolve().parents[1]
READINGS_PARTITIONS = 4
CHUNK_ROWS = 250_000
"""Readings per lake commit (all partitions together): the generator holds about this many rows."""
LIGHT_SEARCH = {"hist_gradient_boosting": {"learning_rate": [0.1], "max_iter": [100], "max_depth": [5]},
                "logistic_regression": {"C": [1.0]}}


def say(line: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {line}", flush=True)


# ------------------------------------------------------------------------------------ the lake

def fill_lake(settings: Settings, devices: int, days: float, seed: int = 7) -> tuple[datetime, datetime, int, int]:
    """Simulate ``devices`` for ``days`` into the lake; returns (since, until, readings, labels)."""
    simulator = Simulator(load_scenario("stationary"), devices=devices, seed=seed, cycle_seconds=60.0)
    topics = settings.kafka.topics
    total = int(devices * days * 24 * 60)
    readings: dict[int, list[dict[str, Any]]] = {p: [] for p in range(READINGS_PARTITIONS)}
    labels: list[dict[str, Any]] = []
    next_offset = {p: 0 for p in range(READINGS_PARTITIONS)}
    first = last = None
    written = label_count = 0
    started = time.perf_counter()

    def flush() -> None:
        nonlocal written
        for partition, rows in readings.items():
            if rows:
                write_commit(settings, "readings", topics.readings, partition, rows[0]["_offset"],
                             rows[-1]["_offset"], rows, dead_letters=0)
                written += len(rows)
                rows.clear()

    for event in simulator.events(max_readings=total):
        row = event.to_row()
        if isinstance(event, Reading):
            partition = int(event.device_id.rsplit("-", 1)[1]) % READINGS_PARTITIONS
            readings[partition].append({**row, "_topic": topics.readings, "_partition": partition,
                                        "_offset": next_offset[partition]})
            next_offset[partition] += 1
            first = first or event.event_time
            last = event.event_time
            if sum(len(r) for r in readings.values()) >= CHUNK_ROWS:
                flush()
                say(f"  {devices} devices: {written:,} / {total:,} readings in the lake "
                    f"({time.perf_counter() - started:.0f} s)")
        else:
            labels.append({**row, "_topic": topics.labels, "_partition": 0, "_offset": len(labels)})
    flush()
    if labels:
        write_commit(settings, "labels", topics.labels, 0, 0, len(labels) - 1, labels, dead_letters=0)
        label_count = len(labels)
    assert first is not None and last is not None
    return first, last + timedelta(seconds=1), written, label_count


# ------------------------------------------------------------------------- measuring a process

@dataclass
class Measured:
    seconds: float
    peak_rss_gb: float
    stdout: str


def run_measured(command: list[str], env: dict[str, str], interval_s: float = 0.2) -> Measured:
    """Run ``command``; its wall time and the peak of its process tree's summed resident memory."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    peak = 0
    root = psutil.Process(process.pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            total = 0
            for member in tree:
                try:
                    total += member.memory_info().rss
                except psutil.Error:  # ended between listing and asking
                    continue
            peak = max(peak, total)
            done.wait(interval_s)

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    done.set()
    sampler.join()
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed ({process.returncode}):\n{stderr[-4000:]}")
    return Measured(seconds, peak / 1e9, stdout)


def build_only(since: str, until: str) -> None:
    """Child mode: build the training set once on the environment's settings; print one JSON line."""
    from mlops.spark import spark_session
    from mlops.train.dataset import build_training_set

    settings = load_settings()
    spark = spark_session(settings, app_name="bench-train-scale")
    try:
        started = time.perf_counter()
        training = build_training_set(settings, spark, datetime.fromisoformat(since), datetime.fromisoformat(until))
        seconds = time.perf_counter() - started
    finally:
        spark.stop()
    sample = training.sample
    print(json.dumps({"seconds": seconds, "rows": len(training.frame),
                      "full_rows": sample.full_rows if sample else len(training.frame),
                      "readings": training.readings.rows}))


# ------------------------------------------------------------------------------------- the run

@dataclass
class SizeResult:
    devices: int
    readings: int
    labels: int
    generate_s: float
    full_rows: int
    sampled_rows: int
    build_s: float
    build_peak_gb: float
    train_s: float
    train_peak_gb: float


def _exponent(y1: float, y2: float, n1: float, n2: float) -> str:
    if min(y1, y2, n1, n2) <= 0 or n1 == n2:
        return "-"
    return f"{math.log(y2 / y1) / math.log(n2 / n1):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="20,200,1000", help="fleet sizes (devices), comma-separated")
    parser.add_argument("--days", type=float, default=7.0, help="days of readings per fleet, one a minute")
    parser.add_argument("--search", choices=("light", "config"), default="light")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the lakes go (default: a temporary dir)")
    parser.add_argument("--keep", action="store_true", help="keep the lakes and the MLflow store")
    parser.add_argument("--build-only", nargs=2, metavar=("SINCE", "UNTIL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:
        build_only(*args.build_only)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench-train-scale-"))
    work.mkdir(parents=True, exist_ok=True)

    from mlops.services.mlflow_server import MlflowServer

    port = free_port()
    server_settings = load_settings(overrides={"paths": {"data_dir": str(work / "mlflow-home")},
                                               "mlflow": {"tracking_uri": f"http://127.0.0.1:{port}"}})
    server = MlflowServer(server_settings)
    say(f"starting MLflow on {server_settings.mlflow.tracking_uri} (store under {work / 'mlflow-home'})")
    server.start()
    results: list[SizeResult] = []
    try:
        for devices in sizes:
            data_dir = work / f"fleet-{devices}"
            shutil.rmtree(data_dir, ignore_errors=True)
            settings = load_settings(overrides={"paths": {"data_dir": str(data_dir)}})
            say(f"{devices} devices x {args.days:g} days: generating the lake in {data_dir}")
            started = time.perf_counter()
            since, until, readings, labels = fill_lake(settings, devices, args.days)
            generate_s = time.perf_counter() - started
            say(f"{devices} devices: {readings:,} readings, {labels:,} labels in {generate_s:.0f} s")

            env = {**os.environ, "MLOPS_CONFIG_DIR": str(REPO / "configs"), "MLOPS_PATHS__DATA_DIR": str(data_dir),
                   "MLOPS_MLFLOW__TRACKING_URI": server_settings.mlflow.tracking_uri,
                   "MLOPS_MLFLOW__REGISTERED_MODEL": unique("bench-scale"),
                   "MLOPS_MLFLOW__EXPERIMENT": "bench-train-scale"}
            if args.search == "light":
                env.update(MLOPS_TRAIN__CANDIDATES="2", MLOPS_TRAIN__SEARCH_SPACE=json.dumps(LIGHT_SEARCH))
            say(f"{devices} devices: (a) building the training set in its own process")
            build = run_measured([sys.executable, __file__, "--build-only", since.isoformat(), until.isoformat()],
                                 env)
            built = json.loads(build.stdout.strip().splitlines()[-1])
            say(f"{devices} devices: (a) {built['seconds']:.1f} s, peak {build.peak_rss_gb:.2f} GB, "
                f"{built['full_rows']:,} labelled rows, {built['rows']:,} collected")
            say(f"{devices} devices: (b) mlops train --json")
            train = run_measured([sys.executable, "-m", "mlops", "train", "--since", since.isoformat(),
                                  "--until", until.isoformat(), "--json"], env)
            trained = json.loads(train.stdout)
            f1 = trained["metrics"].get("f1", float("nan"))
            say(f"{devices} devices: (b) {train.seconds:.1f} s, peak {train.peak_rss_gb:.2f} GB, "
                f"version {trained['version']} ({trained['family']}, validation f1 {f1:.3f})")
            results.append(SizeResult(devices, readings, labels, generate_s, built["full_rows"], built["rows"],
                                      built["seconds"], build.peak_rss_gb, train.seconds, train.peak_rss_gb))
            if not args.keep:
                shutil.rmtree(data_dir, ignore_errors=True)
    finally:
        server.stop()
        if not args.keep and args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    report(results, args)


def report(results: list[SizeResult], args: argparse.Namespace) -> None:
    cpus = os.cpu_count()
    settings = load_settings()
    print()
    print(f"fleets over {args.days:g} days at one reading a minute; spark {settings.spark.master} "
          f"({cpus} CPUs), driver memory {settings.spark.driver_memory}, train.max_rows {settings.train.max_rows:,}, "
          f"search {args.search}")
    print("| devices | readings | labelled rows | collected | (a) build s | (a) peak GB | (b) train s | (b) peak GB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r.devices:,} | {r.readings:,} | {r.full_rows:,} | {r.sampled_rows:,} | {r.build_s:.1f} | "
              f"{r.build_peak_gb:.2f} | {r.train_s:.1f} | {r.train_peak_gb:.2f} |")
    if len(results) > 1:
        print()
        print("growth exponent log(y2/y1)/log(n2/n1), n = readings:")
        print("| sizes | (a) time | (a) peak | (b) time | (b) peak |")
        print("|---|---|---|---|---|")
        for r1, r2 in itertools.pairwise(results):
            n1, n2 = r1.readings, r2.readings
            figures = [_exponent(getattr(r1, k), getattr(r2, k), n1, n2)
                       for k in ("build_s", "build_peak_gb", "train_s", "train_peak_gb")]
            print(f"| {r1.devices:,} -> {r2.devices:,} | {' | '.join(figures)} |")


if __name__ == "__main__":
    main()

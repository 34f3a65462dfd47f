"""Benchmark of the streaming scorer and a Spark peer on the running broker and MLflow (`mlops services up`).

    .venv/bin/python bench/scorer.py [--readings 20000] [--naive 300] [--spark-readings 40000]
                                     [--group-readings 60000] [--rate 2000] [--seconds 10]
                                     [--warmup 2] [--repeats 3]

On one broker it measures, each on unique topics:
  (a) a consumer that decodes every value with the scorer's decoder (`parse_reading`), and for
      reference the bare consumer that does nothing with the bytes;
  (b) the scorer with exactly-once on (one transaction per micro-batch), in this process;
  (c) a naive loop: the same scorer with one reading per transaction;
  (d) a Spark Structured Streaming peer (bench/peers/spark_scorer.py) scoring the same readings with
      the same decoder, model, feature kernel and prediction encoder; its predictions are checked
      against the batch path's features;
  (e) 1 and then 2 `mlops score` processes in one consumer group on a 4-partition topic;
then the latency from produce to committed prediction (read_committed) at a fixed input rate, after
a warm-up at that rate, of (b) as its own `mlops score` process and of (d). Throughputs count from
the end of the first batch to the end of the last, so start-up is left out; (e) counts from the
first prediction's record time to the last's. Medians of the repeats. Prints figures; never passes
or fails.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from mlops import kafka
from mlops.config import Settings, load_settings
from mlops.data.schemas import parse_reading
from mlops.errors import ValidationError
from mlops.features.compute import features_frame
from mlops.serve.scorer import Scorer
from mlops.testing import (
    SPEC,
    CommittedReader,
    fleet_readings,
    produce_readings,
    register_model,
    scorer_settings,
    settings_env,
    unique,
)

REPO = Path(__file__).resolve().parents[1]
SPARK_PEER = REPO / "bench" / "peers" / "spark_scorer.py"


def consumer_rate(settings: Settings, count: int, decode: Callable[[bytes | None], Any] | None = None) -> float:
    """Readings per second of a consumer that only reads (with ``decode``: and decodes each value with it)."""
    consumer = kafka.consumer(settings.kafka, unique("bench-bare"))
    consumer.subscribe([settings.kafka.topics.readings])
    seen, started = 0, 0.0
    while seen < count:
        messages = consumer.consume(1000, 1.0)
        if messages and not started:
            started = time.perf_counter()  # the first batch counts from its arrival
        good = [m for m in messages if m.error() is None]
        if decode is not None:
            for m in good:
                decode(m.value())
        seen += len(good)
    elapsed = time.perf_counter() - started
    consumer.close()
    return count / elapsed


def _subprocess_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings_env(settings), "MLOPS_CONFIG_DIR": str(REPO / "configs")}


def spark_rate(settings: Settings, readings: list[dict[str, Any]], per_trigger: int) -> tuple[float, int, int]:
    """Readings per second of the Spark peer over ``readings`` already on the topic, from the end of its
    first micro-batch to the end of its last; then how many predictions it wrote and how many of them
    carry the batch path's features for their reading (checked once the peer has stopped)."""
    with tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        report = Path(tmp) / "progress.json"
        with (settings.data_dir / "bench-spark-peer.log").open("ab") as log:
            subprocess.run([sys.executable, str(SPARK_PEER), "--max-readings", str(len(readings)),
                            "--max-per-trigger", str(per_trigger), "--report", str(report)],
                           env=_subprocess_env(settings), stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                           check=True, timeout=900)
        progress = json.loads(report.read_text())
    batches = [(datetime.fromisoformat(p["timestamp"]).timestamp() + p["durationMs"]["triggerExecution"] / 1000,
                p["numInputRows"]) for p in progress if p["numInputRows"]]
    (first_end, _rows), (last_end, _) = batches[0], batches[-1]
    rate = sum(rows for _end, rows in batches[1:]) / (last_end - first_end)
    records = _committed_records(settings, settings.kafka.topics.predictions)
    predictions = [json.loads(m.value() or b"") for m in records]
    return rate, len(predictions), _matching(readings, predictions)


def _matching(readings: list[dict[str, Any]], predictions: list[dict[str, Any]]) -> int:
    """How many predictions carry the features the batch path (features_frame) computes for their reading."""
    names = SPEC.feature_names()
    expected = features_frame(pd.DataFrame([parse_reading(json.dumps(r)).to_row() for r in readings]), SPEC)
    got = pd.DataFrame([{"device_id": p["device_id"], "cycle": p["cycle"], **p["features"]} for p in predictions])
    both = got.merge(expected[["device_id", "cycle", *names]], on=["device_id", "cycle"], suffixes=("", "_batch"))
    same = np.isclose(both[names].to_numpy(float), both[[f"{n}_batch" for n in names]].to_numpy(float),
                      rtol=1e-9, atol=1e-9).all(axis=1)
    return int(same.sum())


def group_rate(base: Settings, processes: int, count: int) -> float:
    """Readings per second of ``processes`` `mlops score` processes in one consumer group, on a topic
    holding ``count`` readings: from the first prediction's record time to the last's.

    They are started together, so they join the group's first generation (the broker waits
    ``group.initial.rebalance.delay.ms`` for more members) and split the partitions from the start."""
    settings = scorer_settings(base, unique("bench-group"))
    register_model(settings)
    produce_readings(settings, fleet_readings(devices=200, cycles=range(1, count // 200 + 1)))
    group = unique("bench-group")
    env = _subprocess_env(settings)
    with (settings.data_dir / "bench-scorer-group.log").open("ab") as log:
        members = [subprocess.Popen([sys.executable, "-m", "mlops", "score", "--group", group, "--instance", str(i)],
                                    env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
                   for i in range(processes)]
        try:
            deadline = time.monotonic() + 600
            while kafka.committed_total(settings.kafka, group, settings.kafka.topics.readings) < count:
                if time.monotonic() > deadline or any(m.poll() is not None for m in members):
                    raise RuntimeError(f"{processes} scorers did not commit {count} readings; see {log.name}")
                time.sleep(0.5)  # a progress poll, not a synchronisation: the condition is checked above
        finally:
            for member in members:
                member.send_signal(signal.SIGTERM)
            for member in members:
                member.wait(60)
    stamps = sorted(m.timestamp()[1] / 1000 for m in _committed_records(settings, settings.kafka.topics.predictions))
    if len(stamps) != count:
        print(f"(e) {processes} processes: {len(stamps)} predictions for {count} readings", flush=True)
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def _committed_records(settings: Settings, topic: str) -> list[Message]:
    """Every committed record of ``topic`` now, read until each partition's position reaches its high
    watermark (the offsets of a transactional topic count its markers too, so records alone fall short)."""
    consumer = kafka.consumer(settings.kafka, unique("bench-read"))
    parts = [TopicPartition(topic, p) for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions]
    highs = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in parts}
    consumer.assign([TopicPartition(topic, tp.partition, OFFSET_BEGINNING) for tp in parts])
    records: list[Message] = []
    while any(tp.offset < highs[tp.partition] for tp in consumer.position(parts)):
        records += [m for m in consumer.consume(1000, 0.5) if m.error() is None]
    consumer.close()
    return records


def scorer_rate(settings: Settings, count: int, batch_size: int | None = None) -> float:
    """Readings per second of the scorer, from its first committed batch to its last (its start-up
    and shut-down, e.g. leaving the consumer group, are not counted)."""
    marks: list[tuple[float, int]] = []  # (time, readings handled so far) after each committed batch
    scorer = Scorer(settings, group_id=unique("bench-score"), batch_size=batch_size)
    scorer.run(max_events=count, on_batch=lambda s: marks.append((time.perf_counter(), s.processed)))
    (first_at, first_count), (last_at, last_count) = marks[0], marks[-1]
    return (last_count - first_count) / (last_at - first_at)


def latency(settings: Settings, rate: float, seconds: float, warmup_s: float, command: Sequence[str]
            ) -> tuple[float, float, int]:
    """p50 and p99 (ms) from produce (record timestamp) to arrival of the committed prediction.

    The scorer (``command``: `mlops score` or the Spark peer) runs as its own process, as in
    production, so that the load generator and the reader in this process do not share its
    interpreter. The first ``warmup_s`` of traffic at the rate are not counted: they cover the
    scorer's start-up work (the model watcher's first registry call, first calls of each batch
    shape), not its steady state.
    """
    total = int(rate * (warmup_s + seconds))
    readings = fleet_readings(devices=200, cycles=range(1, total // 200 + 3))
    # The scorer is started on 200 readings through the same producer: it knows the topic's
    # partitions before the clock starts, and the scorer is running once these 200 are scored.
    kafka.ensure_topics(settings.kafka, kafka.design_topics(settings.kafka))
    producer = kafka.producer(settings.kafka, **{"linger.ms": 0})
    for r in readings[:200]:
        producer.produce(settings.kafka.topics.readings, value=json.dumps(r).encode(), key=r["device_id"])
    producer.flush(30)
    log = (settings.data_dir / "bench-scorer.log").open("ab")
    scorer = subprocess.Popen(list(command), env=_subprocess_env(settings), stdout=log, stderr=subprocess.STDOUT,
                              cwd=REPO)
    try:
        # A reader that asks the broker for news every 10 ms, not the default 500 ms, and is polled
        # with a 1 ms timeout (a longer poll would stamp arrivals late): it measures the scorer.
        out = CommittedReader(settings, settings.kafka.topics.predictions, **{"fetch.wait.max.ms": 10})
        out.wait_for(200, timeout_s=300, alive=lambda: scorer.poll() is None)
        start, sent = time.perf_counter(), 200
        measured_from = time.time() + warmup_s
        # No cyclic garbage collection in this process while it stamps arrivals: a full collection
        # over the predictions read so far (tens of thousands of dicts) stalls it for ~250 ms, which
        # would be charged to the scorer.
        gc.disable()
        while sent < len(readings):
            due = min(200 + int((time.perf_counter() - start) * rate), len(readings))
            for r in readings[sent:due]:
                producer.produce(settings.kafka.topics.readings, value=json.dumps(r).encode(), key=r["device_id"])
            sent = max(sent, due)
            producer.poll(0)
            out.poll(0.001)
        producer.flush(30)
        out.wait_for(len(readings), timeout_s=60, alive=lambda: scorer.poll() is None, poll_s=0.001)
    finally:
        gc.enable()
        scorer.send_signal(signal.SIGTERM)
        scorer.wait(60)
        log.close()
    produced = _timestamps(settings, settings.kafka.topics.readings)
    timeline = []
    for p, arrived in zip(out.records, out.received_at, strict=True):
        at = produced[(p["source"]["partition"], p["source"]["offset"])]
        if at >= measured_from:
            timeline.append((arrived - at) * 1000)
    step = max(len(timeline) // 20, 1)  # where in the run the slow ones were: spikes or throughout
    worst = [round(max(timeline[i:i + step])) for i in range(0, len(timeline), step)]
    print("worst delay (ms) per 5% of the run:", worst)
    delays = sorted(timeline)
    out.close()
    return delays[len(delays) // 2], delays[int(len(delays) * 0.99)], len(delays)


def _timestamps(settings: Settings, topic: str) -> dict[tuple[int, int], float]:
    """The record time (s) of every record of ``topic``, by (partition, offset)."""
    consumer = kafka.consumer(settings.kafka, unique("bench-ts"))
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    total = sum(consumer.get_watermark_offsets(TopicPartition(topic, p))[1] for p in parts)
    out: dict[tuple[int, int], float] = {}
    while len(out) < total:
        for m in consumer.consume(1000, 1.0):
            if m.error() is None:
                out[(m.partition() or 0, m.offset() or 0)] = m.timestamp()[1] / 1000
    consumer.close()
    return out


def _latency_runs(base: Settings, args: argparse.Namespace, what: str, command: Callable[[], Sequence[str]]
                  ) -> tuple[float, float, int]:
    runs = []
    for _ in range(args.repeats):  # a new topic, and a scorer process with a command of its own, per run
        settings = scorer_settings(base, unique("bench-lat"))
        register_model(settings)
        runs.append(latency(settings, args.rate, args.seconds, args.warmup, command()))
        print(f"{what} latency run {len(runs)}: p50 {runs[-1][0]:.1f} ms  p99 {runs[-1][1]:.1f} ms", flush=True)
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), runs[0][2]


def _decodes(raw: bytes | None) -> None:
    with contextlib.suppress(ValidationError):  # all valid here; a dead letter would cost no more
        parse_reading(raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=20_000)
    parser.add_argument("--naive", type=int, default=300)
    parser.add_argument("--spark-readings", type=int, default=40_000, help="readings of one Spark peer run")
    parser.add_argument("--spark-trigger", type=int, default=10_000, help="the Spark peer's maxOffsetsPerTrigger")
    parser.add_argument("--group-readings", type=int, default=60_000, help="readings of one (e) run")
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured length of one latency run")
    parser.add_argument("--warmup", type=float, default=2.0, help="traffic at the rate before measuring")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    os.environ.setdefault("MLOPS_CONFIG_DIR", str(REPO / "configs"))  # the repo's profiles, from any directory
    base = load_settings("local")
    base.data_dir.mkdir(parents=True, exist_ok=True)  # the logs of the processes it starts go there
    settings = scorer_settings(base, unique("bench"))
    register_model(settings)
    produce_readings(settings, fleet_readings(devices=200, cycles=range(1, args.readings // 200 + 1)))
    count = (args.readings // 200) * 200
    spark_readings = fleet_readings(devices=200, cycles=range(1, args.spark_readings // 200 + 1))
    bare, decoding, eos, naive, spark, one, two = [], [], [], [], [], [], []
    checked = []
    for i in range(args.repeats):
        bare.append(consumer_rate(settings, count))
        decoding.append(consumer_rate(settings, count, decode=_decodes))
        eos.append(scorer_rate(settings, count))
        naive.append(scorer_rate(settings, args.naive, batch_size=1))
        peer = scorer_settings(base, unique("bench-spark"))  # topics of its own: its predictions are checked
        register_model(peer)
        produce_readings(peer, spark_readings)
        rate, written, matching = spark_rate(peer, spark_readings, args.spark_trigger)
        spark.append(rate)
        checked.append((written, matching))
        one.append(group_rate(base, 1, args.group_readings))
        two.append(group_rate(base, 2, args.group_readings))
        print(f"repeat {i + 1}: bare {bare[-1]:,.0f}/s  decode {decoding[-1]:,.0f}/s  scorer {eos[-1]:,.0f}/s  "
              f"naive {naive[-1]:,.0f}/s  spark {spark[-1]:,.0f}/s ({checked[-1][0]:,} predictions for "
              f"{len(spark_readings):,} readings, {checked[-1][1]:,} with the batch path's features)  "
              f"1 process {one[-1]:,.0f}/s  2 processes {two[-1]:,.0f}/s",
              flush=True)
    a, b, c = statistics.median(decoding), statistics.median(eos), statistics.median(naive)
    d, e1, e2 = statistics.median(spark), statistics.median(one), statistics.median(two)
    print(f"    bare consumer       {statistics.median(bare):12,.0f} readings/s   (reference: no processing)")
    print(f"(a) + parse_reading     {a:12,.0f} readings/s   (the scorer's decoder, nothing else)")
    print(f"(b) scorer, EOS         {b:12,.0f} readings/s   (target >= 100,000)")
    print(f"(c) naive, 1/txn        {c:12,.0f} readings/s")
    print(f"(d) spark peer          {d:12,.0f} readings/s   (maxOffsetsPerTrigger {args.spark_trigger:,})")
    print(f"(e) 1 `mlops score`     {e1:12,.0f} readings/s")
    print(f"    2 in one group      {e2:12,.0f} readings/s   (2/1 = {e2 / e1:.2f})")
    print(f"b/a = {b / a:.2f}")
    print(f"b/c = {b / c:.1f}   (target >= 20)")
    print(f"b/d = {b / d:.1f}   (target >= 10)")
    # A group per run: a static member that rejoins its group subscribed to a new topic can be
    # handed its previous topic's partitions, and the scorer then leaves them unassigned.
    lat_b = _latency_runs(base, args, "scorer", lambda: [sys.executable, "-m", "mlops", "score",
                                                         "--group", unique("bench-lat")])
    lat_d = _latency_runs(base, args, "spark peer", lambda: [sys.executable, str(SPARK_PEER)])
    for what, (p50, p99, n) in (("(b) scorer", lat_b), ("(d) spark peer", lat_d)):
        print(f"latency {what} at {args.rate:,.0f} readings/s ({n:,} readings per run after a {args.warmup:g}s "
              f"warm-up, own process, median of {args.repeats}): p50 {p50:.1f} ms  p99 {p99:.1f} ms")
    print(f"p99(b)/p99(d) = {lat_b[1] / lat_d[1]:.3f}   (target <= 0.05)")


if __name__ == "__main__":
    main()

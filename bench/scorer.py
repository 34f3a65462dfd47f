"""Benchmark of the streaming scorer on the running broker and MLflow (`mlops services up`).

    .venv/bin/python bench/scorer.py [--readings 20000] [--naive 300] [--rate 2000] [--seconds 10]
                                     [--warmup 2] [--repeats 3]

On one broker and one unique readings topic per run it measures
  (a) a bare confluent-kafka consumer reading the topic, no processing (and, for reference, the same
      consumer json-decoding each value: the floor of any Python consumer that looks at its data);
  (b) the scorer with exactly-once on (one transaction per micro-batch);
  (c) a naive loop: the same scorer with one reading per transaction;
and prints the throughput ratios b/a and b/c (medians of the repeats), then the p50/p99 latency from
produce to committed prediction (read_committed) at a fixed input rate, after a warm-up at that rate
(medians of the repeats). Prints figures; never passes or fails.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from mlops import kafka
from mlops.config import Settings, load_settings
from mlops.serve.scorer import Scorer
from mlops.testing import (
    CommittedReader,
    fleet_readings,
    produce_readings,
    register_model,
    scorer_settings,
    settings_env,
    unique,
)

REPO = Path(__file__).resolve().parents[1]


def bare_consumer(settings: Settings, count: int, decode: bool = False) -> float:
    """Readings per second of a consumer that only reads (with ``decode``: and json-decodes each value)."""
    consumer = kafka.consumer(settings.kafka, unique("bench-bare"))
    consumer.subscribe([settings.kafka.topics.readings])
    seen, started = 0, 0.0
    while seen < count:
        messages = consumer.consume(1000, 1.0)
        if messages and not started:
            started = time.perf_counter()
            seen -= 0  # the first batch counts from its arrival
        good = [m for m in messages if m.error() is None]
        if decode:
            for m in good:
                json.loads(m.value())
        seen += len(good)
    elapsed = time.perf_counter() - started
    consumer.close()
    return count / elapsed


def scorer_rate(settings: Settings, count: int, batch_size: int | None = None) -> float:
    """Readings per second of the scorer, from its first committed batch to its last (its start-up
    and shut-down, e.g. leaving the consumer group, are not counted)."""
    marks: list[tuple[float, int]] = []  # (time, readings handled so far) after each committed batch
    scorer = Scorer(settings, group_id=unique("bench-score"), batch_size=batch_size)
    scorer.run(max_events=count, on_batch=lambda s: marks.append((time.perf_counter(), s.processed)))
    (first_at, first_count), (last_at, last_count) = marks[0], marks[-1]
    return (last_count - first_count) / (last_at - first_at)


def latency(settings: Settings, rate: float, seconds: float, warmup_s: float = 2.0) -> tuple[float, float, int]:
    """p50 and p99 (ms) from produce (record timestamp) to arrival of the committed prediction.

    The scorer runs as its own `mlops score` process, as in production, so that the load generator
    and the reader in this process do not share its interpreter. The first ``warmup_s`` of traffic
    at the rate are not counted: they cover the scorer's start-up work (the model watcher's first
    registry call, first calls of each batch shape), not its steady state.
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
    env = {**os.environ, **settings_env(settings), "MLOPS_CONFIG_DIR": str(REPO / "configs")}
    log = (settings.data_dir / "bench-scorer.log").open("ab")
    scorer = subprocess.Popen([sys.executable, "-m", "mlops", "score", "--group", unique("bench-lat")],
                              env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
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
    produced = _timestamps(settings)
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


def _timestamps(settings: Settings) -> dict[tuple[int, int], float]:
    topic = settings.kafka.topics.readings
    consumer = kafka.consumer(settings.kafka, unique("bench-ts"))
    parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    total = sum(consumer.get_watermark_offsets(TopicPartition(topic, p))[1] for p in parts)
    out: dict[tuple[int, int], float] = {}
    while len(out) < total:
        for m in consumer.consume(1000, 1.0):
            if m.error() is None:
                out[(m.partition(), m.offset())] = m.timestamp()[1] / 1000
    consumer.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readings", type=int, default=20_000)
    parser.add_argument("--naive", type=int, default=300)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured length of one latency run")
    parser.add_argument("--warmup", type=float, default=2.0, help="traffic at the rate before measuring")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    os.environ.setdefault("MLOPS_CONFIG_DIR", str(REPO / "configs"))  # the repo's profiles, from any directory
    base = load_settings("local")
    tag = unique("bench")
    settings = scorer_settings(base, tag)
    register_model(settings)
    produce_readings(settings, fleet_readings(devices=200, cycles=range(1, args.readings // 200 + 1)))
    count = (args.readings // 200) * 200
    bare, decoding, eos, naive = [], [], [], []
    for i in range(args.repeats):
        bare.append(bare_consumer(settings, count))
        decoding.append(bare_consumer(settings, count, decode=True))
        eos.append(scorer_rate(settings, count))
        naive.append(scorer_rate(settings, args.naive, batch_size=1))
        print(f"repeat {i + 1}: bare {bare[-1]:,.0f}/s  bare+json {decoding[-1]:,.0f}/s  scorer {eos[-1]:,.0f}/s  "
              f"naive {naive[-1]:,.0f}/s", flush=True)
    a, b, c = statistics.median(bare), statistics.median(eos), statistics.median(naive)
    d = statistics.median(decoding)
    print(f"(a) bare consumer   {a:12,.0f} readings/s")
    print(f"    + json.loads    {d:12,.0f} readings/s   (reference: decoding alone, no validation or scoring)")
    print(f"(b) scorer, EOS     {b:12,.0f} readings/s")
    print(f"(c) naive, 1/txn    {c:12,.0f} readings/s")
    print(f"b/a = {b / a:.2f}   (target >= 0.5)")
    print(f"b/c = {b / c:.1f}   (target >= 20)")
    print(f"b/(a+json) = {b / d:.2f}")
    runs = []
    for _ in range(args.repeats):  # a new topic and scorer process per run
        lat_settings = scorer_settings(base, unique("bench-lat"))
        register_model(lat_settings)
        runs.append(latency(lat_settings, args.rate, args.seconds, args.warmup))
        print(f"latency run {len(runs)}: p50 {runs[-1][0]:.1f} ms  p99 {runs[-1][1]:.1f} ms", flush=True)
    p50, p99 = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
    print(f"latency at {args.rate:,.0f} readings/s ({runs[0][2]:,} readings per run after a {args.warmup:g}s "
          f"warm-up, `mlops score` process, median of {len(runs)}): p50 {p50:.1f} ms  p99 {p99:.1f} ms   "
          f"(target p99 < 100 ms)")


if __name__ == "__main__":
    main()

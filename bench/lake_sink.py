"""Lake sink throughput on the running local broker: events/s from Kafka into the Parquet lake.

    .venv/bin/python bench/lake_sink.py --events 20000 [--batch-rows 5000] [--profile-code]

Produces ``--events`` readings to fresh topics, then runs the sink in this process into a temporary
lake until it has handled them all, and prints events/s (time from the first assignment to the
last commit, so broker start-up and group join are not counted). Prints figures; never fails on time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mlops import kafka
from mlops.config import Settings, load_settings
from mlops.data import lake
from mlops.data.lake_sink import LakeSink
from mlops.data.schemas import Reading, encode

SENSORS = [f"s{i}" for i in range(1, 22)]  # as many sensors as C-MAPSS


def _settings(data_dir: Path) -> Settings:
    base = load_settings()
    suffix = uuid.uuid4().hex[:8]
    topics = base.kafka.topics.model_copy(update={"readings": f"bench-readings-{suffix}",
                                                  "labels": f"bench-labels-{suffix}", "dlq": f"bench-dlq-{suffix}"})
    return base.model_copy(update={
        "kafka": base.kafka.model_copy(update={"topics": topics}),
        "paths": base.paths.model_copy(update={"data_dir": data_dir}),
        "lake": base.lake.model_copy(update={"group_id": f"bench-lake-{suffix}"}),
    })


def _produce(settings: Settings, events: int) -> None:
    producer = kafka.producer(settings.kafka)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(events):
        reading = Reading(schema_version=1, device_id=f"dev-{i % 100:03d}", device_type="pump",
                          event_time=start + timedelta(seconds=i), cycle=i // 100,
                          sensors={s: 100.0 + (i * 7 + k) % 13 for k, s in enumerate(SENSORS)},
                          settings={"altitude": 0.5, "mach": 0.2, "tra": 100.0})
        kafka.produce(producer, settings.kafka.topics.readings, encode(reading), reading.device_id.encode())
    producer.flush(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch-rows", type=int, default=5000)
    parser.add_argument("--profile-code", action="store_true", help="print the top functions by time (cProfile)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-lake-") as tmp:
        settings = _settings(Path(tmp))
        topics = settings.kafka.topics
        kafka.ensure_topics(settings.kafka, [t for t in kafka.design_topics(settings.kafka)
                                             if t.name in (topics.readings, topics.labels, topics.dlq)])
        _produce(settings, args.events)
        sink = LakeSink(settings, batch_rows=args.batch_rows, flush_interval_s=60)
        profiler = cProfile.Profile() if args.profile_code else None
        started = time.monotonic()
        if profiler:
            profiler.enable()
        stats = sink.run(max_events=args.events)
        if profiler:
            profiler.disable()
        total_s = time.monotonic() - started
        # Time from the first event consumed, so the consumer group join does not count.
        busy_s = total_s - (stats.first_event_at - started if stats.first_event_at else 0.0)
        rows = len(lake.read_table(settings, "readings"))
        files = len(lake.lake_files(settings, "readings"))
        print(f"events={stats.consumed} rows_in_lake={rows} files={files} commits={stats.commits} "
              f"batch_rows={args.batch_rows} sensors={len(SENSORS)}")
        print(f"throughput={stats.consumed / busy_s:,.0f} events/s (busy {busy_s:.2f} s; with group join "
              f"{stats.consumed / total_s:,.0f} events/s over {total_s:.2f} s)")
        if profiler:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)


if __name__ == "__main__":
    main()

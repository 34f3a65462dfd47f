"""Exactly-once under chaos: 100,000 readings stream in while the scorer is SIGKILLed at 5 random
points and the broker is SIGKILLed and restarted once, with the lake sink running throughout.

The broker's restart is where the client library fails on its own: ``send_offsets_to_transaction``
can block past its timeout and a static member can be fenced by its own rejoin; the scorer reopens
its clients (``mlops.serve.scorer``) and exactly-once must still hold.

At the end, read with read_committed consumers of the test's own:
- committed predictions = valid readings, none twice by (device_id, event_time);
- the scorer's dead letters = invalid readings (they are written inside its transactions);
- the lake's rows = the valid readings on the topic, each offset once; the lake sink's dead letters
  cover every invalid reading (at-least-once for its DLQ, docs/events.md).
"""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from mlops import kafka
from mlops.config import Settings
from mlops.data import lake
from mlops.testing import CommittedReader, fleet_readings, register_model, scorer_settings, unique
from tests.integration.processes import _kill_broker, _lake_rows, _recovery_lines, _start, _stop, _stream

pytestmark = pytest.mark.integration

DEVICES, CYCLES = 50, 2000  # 100,000 valid readings
INVALID_EVERY = 1000  # one invalid record after every 1,000 valid ones: 100 in all
KILLS = 5
BROKER_DOWN_S = [0.0, 20.0]  # a restart at once, and an outage longer than the transaction time-out (15 s)


@pytest.mark.parametrize("broker_down_s", BROKER_DOWN_S)
def test_scorer_kills_and_a_broker_restart_lose_and_duplicate_nothing(services: Settings, tmp_path: Path,
                                                                      broker_down_s: float) -> None:
    settings = scorer_settings(services, unique("chaos"), batch_size=500, state_lookback=1000)
    settings = settings.model_copy(update={
        "paths": settings.paths.model_copy(update={"data_dir": tmp_path / "data"}),
        "lake": settings.lake.model_copy(update={"group_id": unique("lake")}),
    })
    register_model(settings)
    kafka.ensure_topics(settings.kafka, kafka.design_topics(settings.kafka))
    readings = fleet_readings(devices=DEVICES, cycles=range(1, CYCLES + 1))
    invalid = [(b"not json", "dev-000"), (json.dumps({"schema_version": 1}).encode(), "dev-001")]
    values: list[tuple[bytes, str]] = []
    for i, r in enumerate(readings):
        values.append((json.dumps(r).encode(), r["device_id"]))
        if i % INVALID_EVERY == INVALID_EVERY - 1:
            values.append(invalid[(i // INVALID_EVERY) % 2])
    n_invalid = len(values) - len(readings)

    rng = random.Random(17)
    kill_at = sorted(rng.sample(range(5_000, 75_000), KILLS))
    broker_at = kill_at[2] + 5_000  # between the third and the fourth kill
    out = CommittedReader(settings, settings.kafka.topics.predictions)
    scorer_log, sink_log = tmp_path / "scorer.log", tmp_path / "sink.log"
    group = unique("g")
    done, release, publish_errors = threading.Event(), threading.Event(), []
    hold_at = int(len(values) * 0.8)  # past the last kill point (75,000 predictions)
    streamer = threading.Thread(target=_stream, args=(settings, values, hold_at, release, done, publish_errors),
                                daemon=True)
    scorer = _start(["score", "--group", group, "--instance", "0"], settings, scorer_log)
    sink = _start(["lake-sink", "--batch-rows", "2000"], settings, sink_log)
    faults: list[str] = []
    try:
        streamer.start()
        for target in kill_at:
            if target > broker_at and "broker" not in faults:
                out.wait_for(broker_at, timeout_s=180, alive=lambda p=scorer: p.poll() is None)
                _kill_broker(services, broker_down_s)
                faults.append("broker")
            out.wait_for(target, timeout_s=180, alive=lambda p=scorer: p.poll() is None)
            scorer.send_signal(signal.SIGKILL)
            scorer.wait(30)
            faults.append(f"scorer@{len(out.records)}")
            scorer = _start(["score", "--group", group, "--instance", "0"], settings, scorer_log)
        assert not done.is_set(), "the stream ended before the last fault: faults must land mid-stream"
        release.set()
        streamer.join(300)
        assert done.is_set() and not publish_errors, publish_errors[:3]
        out.wait_for(len(readings), timeout_s=300, alive=lambda p=scorer: p.poll() is None)
        deadline = time.monotonic() + 300
        while _lake_rows(settings) < len(readings):
            assert sink.poll() is None, f"lake sink exited:\n{sink_log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"lake holds {_lake_rows(settings)} of {len(readings)} rows"
            out.poll(0.5)  # the condition is polled; reading predictions meanwhile is useful work
        assert sink.poll() is None, f"lake sink died during the run:\n{sink_log.read_text()[-3000:]}"
    except AssertionError:
        print(_recovery_lines(scorer_log), sink_log.read_text()[-3000:])
        raise
    finally:
        release.set()
        _stop(scorer)
        _stop(sink)
    try:
        predictions = out.drain()
    finally:
        out.close()
    dlq = CommittedReader(settings, settings.kafka.topics.dlq)
    try:
        dlq.drain()
    finally:
        dlq.close()

    assert faults == [f for f in faults if f == "broker" or f.startswith("scorer@")] and len(faults) == KILLS + 1
    by_event = Counter((p["device_id"], p["event_time"]) for p in out.records)
    duplicates = [k for k, n in by_event.items() if n > 1]
    if duplicates:
        twice = set(duplicates)
        sources = sorted((p["source"]["partition"], p["source"]["offset"]) for p in out.records
                         if (p["device_id"], p["event_time"]) in twice)
        print(f"readings partition/offset predicted twice: {sources[:6]} .. {sources[-6:]}\nfaults: {faults}\n"
              f"{_recovery_lines(scorer_log)}")
    assert not duplicates, f"{len(duplicates)} readings predicted twice, e.g. {duplicates[:3]}"
    assert predictions == len(readings) == len(by_event)
    assert set(by_event) == {(r["device_id"], r["event_time"]) for r in readings}

    by_consumer = Counter(d["consumer"].split(":")[0] for d in dlq.records)
    assert by_consumer["scorer"] == n_invalid, by_consumer
    sink_dead = {(d["source"]["partition"], d["source"]["offset"]) for d in dlq.records
                 if d["consumer"] == "lake-sink"}
    scorer_dead = {(d["source"]["partition"], d["source"]["offset"]) for d in dlq.records
                   if d["consumer"].startswith("scorer")}
    assert sink_dead == scorer_dead and len(scorer_dead) == n_invalid

    frame = lake.read_table(settings, "readings")
    offsets = Counter(zip(frame["_partition"], frame["_offset"], strict=True))
    assert len(frame) == len(readings) and max(offsets.values()) == 1
    assert all(r.overlaps == 0 for r in lake.partition_ranges(settings, "readings"))
    print(f"chaos: readings={len(readings)} invalid={n_invalid} predictions={predictions} "
          f"duplicates={len(duplicates)} scorer_dead_letters={by_consumer['scorer']} "
          f"sink_dead_letters={len(sink_dead)} lake_rows={len(frame)} faults={faults}")

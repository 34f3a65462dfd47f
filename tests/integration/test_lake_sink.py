"""The lake sink on the real broker: poison messages, restarts and a SIGKILL mid-run.

Each test uses its own topics, consumer group and lake directory.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlops import kafka
from mlops.cli import app
from mlops.config import Settings
from mlops.data import lake
from mlops.data.lake_sink import LakeSink
from mlops.data.schemas import Label, Reading, encode
from mlops.testing import unique
from tests.conftest import REPO
from tests.integration.test_dlq import read_dead_letters

pytestmark = pytest.mark.integration

T0 = datetime(2026, 4, 30, 22, 0, tzinfo=UTC)  # the stream crosses midnight: two date partitions
GOOD = {"schema_version": 1, "device_id": "dev-1", "device_type": "pump", "event_time": "2026-05-01T00:00:00Z",
        "cycle": 1, "sensors": {"temp": 1.0}}
POISON: dict[str, bytes | None] = {
    "invalid_json": b'{"schema_version": 1, "device_id": ',
    "invalid_fields": json.dumps({k: v for k, v in GOOD.items() if k != "sensors"}).encode(),  # wrong schema
    "nan_token": json.dumps(GOOD).replace("1.0}", "NaN}").encode(),
    "too_large": json.dumps({**GOOD, "device_type": "x" * 100_000}).encode(),
    "unknown_version": json.dumps({**GOOD, "schema_version": 7}).encode(),
    "empty": None,
    "binary": b"\x00\xff\xfe garbage \x80",
}
EXPECTED_KIND = {"nan_token": "invalid_fields", "binary": "invalid_json"}  # NaN: refused as a non-finite field


def _lake_settings(services: Settings, tmp_path: Path) -> Settings:
    topics = services.kafka.topics.model_copy(update={
        "readings": unique("test-readings"), "labels": unique("test-labels"), "dlq": unique("test-dlq")})
    return services.model_copy(update={
        "kafka": services.kafka.model_copy(update={"topics": topics}),
        "paths": services.paths.model_copy(update={"data_dir": tmp_path / "data"}),
        "lake": services.lake.model_copy(update={"group_id": unique("test-lake-sink")}),
    })


def _reading(i: int) -> bytes:
    # Two sources with different sensor sets, so the lake must read the union of columns.
    sensors = {"temp": 60.0 + i % 7, "vib": 0.1 * (i % 5)} if i % 2 else {"temp": 61.0, "pressure": 2.0 + i % 3}
    return encode(Reading(schema_version=1, device_id=f"dev-{i % 20:03d}", device_type="pump",
                          event_time=T0 + timedelta(seconds=5 * i), cycle=i // 20, sensors=sensors,
                          settings={"load": 0.5}))


def _label(i: int) -> bytes:
    return encode(Label(schema_version=1, device_id=f"dev-{i % 20:03d}", event_time=T0 + timedelta(minutes=i),
                        kind="rul", rul=float(100 - i)))


def _produce(settings: Settings, topic: str, values: list[bytes | None]) -> list[tuple[int, int]]:
    """Produce values (key = device), return each one's (partition, offset) in order."""
    producer = kafka.producer(settings.kafka)
    where: dict[int, tuple[int, int]] = {}
    for index, value in enumerate(values):
        def delivered(err, msg, index=index):  # type: ignore[no-untyped-def]
            assert err is None, err
            where[index] = (msg.partition(), msg.offset())
        producer.produce(topic, value=value, key=f"dev-{index % 20:03d}".encode(), on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(60) == 0
    return [where[i] for i in range(len(values))]


def _create_topics(settings: Settings) -> None:
    names = settings.kafka.topics
    kafka.ensure_topics(settings.kafka, [kafka.TopicSpec(names.readings, 4, {}), kafka.TopicSpec(names.labels, 2, {}),
                                         kafka.TopicSpec(names.dlq, 1, {})])


def _lake_offsets(settings: Settings, table: str) -> list[tuple[int, int]]:
    frame = lake.read_table(settings, table)
    return sorted(zip(frame["_partition"].tolist(), frame["_offset"].tolist(), strict=True))


def test_valid_events_land_once_and_poison_goes_to_the_dlq(services, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = _lake_settings(services, tmp_path)
    _create_topics(settings)
    readings = [_reading(i) for i in range(2000)]
    names = list(POISON)
    # Poison spread through the stream, not only at the end.
    values: list[bytes | None] = readings[:700] + [POISON[n] for n in names] + readings[700:]
    where = _produce(settings, settings.kafka.topics.readings, values)
    label_where = _produce(settings, settings.kafka.topics.labels, [_label(i) for i in range(40)])
    poison_where = dict(zip(names, where[700:700 + len(names)], strict=True))
    valid_where = where[:700] + where[700 + len(names):]

    stats = LakeSink(settings, batch_rows=500).run(max_events=len(values) + 40, idle_exit_s=20)

    assert stats.consumed == len(values) + 40
    assert _lake_offsets(settings, "readings") == sorted(valid_where)
    assert _lake_offsets(settings, "labels") == sorted(label_where)
    frame = lake.read_table(settings, "readings")
    assert {"temp", "vib", "pressure", "setting_load"} <= set(frame.columns)
    assert frame["pressure"].notna().sum() == 1000 and frame["vib"].notna().sum() == 1000
    assert frame["event_time"].dt.date.nunique() == 2
    assert all(f.digest == lake.file_digest(f.path) for f in lake.lake_files(settings, "readings"))

    dead = read_dead_letters(settings, len(names))
    by_source = {(r["source"]["partition"], r["source"]["offset"]): r for r in dead}
    assert len(dead) == len(names) and set(by_source) == set(poison_where.values())
    for name, source in poison_where.items():
        record = by_source[source]
        original = POISON[name]
        assert record["source"]["topic"] == settings.kafka.topics.readings
        assert (base64.b64decode(record["value_b64"]) if record["value_b64"] else None) == original
        assert record["kind"] == EXPECTED_KIND.get(name, name), record["reason"]
        assert record["reason"] and record["consumer"] == "lake-sink"
    assert sum(stats.dead_letters.values()) == len(names)

    # Every offset of every partition is accounted for: in the lake or dead-lettered, none twice.
    for r in lake.partition_ranges(settings, "readings"):
        in_partition = [w for w in where if w[0] == r.partition]
        assert r.overlaps == 0
        assert (r.first_offset, r.last_offset) == (min(in_partition)[1], max(in_partition)[1])
        assert r.rows + r.dead_letters == len(in_partition)

    # A restart finds nothing new: no row written twice, no poison message dead-lettered twice.
    again = LakeSink(settings, batch_rows=500).run(idle_exit_s=1.5)
    assert again.consumed == 0 and again.rows_written == 0
    assert _lake_offsets(settings, "readings") == sorted(valid_where)
    assert len(read_dead_letters(settings, len(names), deadline_s=3)) == len(names)


def _start_sink(settings: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MLOPS_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "MLOPS_KAFKA__TOPICS__READINGS": settings.kafka.topics.readings,
        "MLOPS_KAFKA__TOPICS__LABELS": settings.kafka.topics.labels,
        "MLOPS_KAFKA__TOPICS__DLQ": settings.kafka.topics.dlq,
        "MLOPS_PATHS__DATA_DIR": str(settings.data_dir),
        "MLOPS_LAKE__GROUP_ID": settings.lake.group_id,
    }
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "mlops", "lake-sink", *args], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def _committed_rows(settings: Settings) -> int:
    try:
        return sum(c.rows for c in lake.read_commits(settings, "readings"))
    except lake.LakeError:
        return 0


def test_sigkill_mid_run_then_restart_holds_each_offset_exactly_once(services, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = _lake_settings(services, tmp_path)
    _create_topics(settings)
    total = 6000
    poison_every = 1000
    values: list[bytes | None] = [_reading(i) if i % poison_every != 999 else b"{broken" for i in range(total)]
    where = _produce(settings, settings.kafka.topics.readings, values)
    valid = sorted(w for w, v in zip(where, values, strict=True) if v != b"{broken")
    log = tmp_path / "sink.log"

    # Small batches: many commits, so the kill lands between two of them (or inside one).
    sink = _start_sink(settings, log, "--batch-rows", "50", "--idle-exit", "60")
    try:
        deadline = time.monotonic() + 60
        while _committed_rows(settings) < 500:  # several commits in, while it is writing the next
            assert sink.poll() is None, f"sink exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"not 500 rows within 60 s:\n{log.read_text()}"
            time.sleep(0.005)  # polling interval of the condition, not synchronisation by sleeping
        sink.send_signal(signal.SIGKILL)
        assert sink.wait(30) == -signal.SIGKILL
    finally:
        if sink.poll() is None:
            sink.kill()
    at_kill = _committed_rows(settings)
    assert 0 < at_kill < len(valid), "the kill must interrupt the run, not follow it"

    # More data arrives while the sink is down.
    more = [_reading(total + i) for i in range(500)]
    where += _produce(settings, settings.kafka.topics.readings, list(more))
    valid = sorted(valid + where[total:])

    restarted = _start_sink(settings, log, "--batch-rows", "500", "--idle-exit", "3")
    try:
        assert restarted.wait(120) == 0, log.read_text()
    finally:
        if restarted.poll() is None:
            restarted.kill()

    offsets = _lake_offsets(settings, "readings")
    duplicates = [o for o, n in Counter(offsets).items() if n > 1]
    assert duplicates == [], f"{len(duplicates)} offsets twice in the lake"
    assert offsets == valid  # nothing lost
    assert all(r.overlaps == 0 for r in lake.partition_ranges(settings, "readings"))
    on_disk = set((settings.lake_dir / "readings").rglob("*.parquet"))
    assert on_disk == {f.path for f in lake.lake_files(settings, "readings")}, "orphans left behind"
    # Poison: at least once in the DLQ (a crash between DLQ send and commit may repeat one).
    dead_sources = {(r["source"]["partition"], r["source"]["offset"]) for r in read_dead_letters(settings, 6)}
    assert dead_sources == {w for w, v in zip(where, values, strict=False) if v == b"{broken"}

    status = CliRunner().invoke(app, ["lake", "status", "--json"],
                                env={"MLOPS_PATHS__DATA_DIR": str(settings.data_dir)})
    assert status.exit_code == 0, status.output
    partitions = json.loads(status.stdout)["partitions"]
    assert sum(p["rows"] for p in partitions if p["table"] == "readings") == len(valid)

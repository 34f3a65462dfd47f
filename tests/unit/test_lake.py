"""The lake's layout, commit protocol and reading API, on a temporary directory (no Kafka needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops.config import Settings, load_settings
from mlops.data import lake
from mlops.data.lake import LakeError

T0 = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    return load_settings("local", overrides={"paths": {"data_dir": str(tmp_path)}})


def _readings(topic: str, partition: int, offsets: range, sensors: tuple[str, ...] = ("temp", "vib"),
              start: datetime = T0, step: timedelta = timedelta(minutes=10)) -> list[dict[str, Any]]:
    return [
        {"device_id": f"d{o % 3}", "device_type": "pump", "event_time": start + i * step, "cycle": i,
         **{s: float(o) + 0.5 for s in sensors}, "setting_load": 0.7,
         "_topic": topic, "_partition": partition, "_offset": o}
        for i, o in enumerate(offsets)
    ]


def test_a_commit_is_read_back_with_offsets_digests_and_date_partitions(settings: Settings) -> None:
    rows = _readings("r", 0, range(10, 22))  # 23:00 .. 00:50 crosses midnight: two date partitions
    commit = lake.write_commit(settings, "readings", "r", 0, 10, 24, rows, dead_letters=3)

    assert [f.path.parent.name for f in commit.files] == ["date=2026-03-01", "date=2026-03-02"]
    files = lake.lake_files(settings, "readings")
    assert [(f.first_offset, f.last_offset, f.rows) for f in files] == [(10, 15, 6), (16, 21, 6)]
    assert all(f.digest == lake.file_digest(f.path) for f in files)
    assert lake.next_offsets(settings, "readings") == {("r", 0): 25}  # dead-lettered 22..24 count as handled

    frame = lake.read_table(settings, "readings")
    assert frame["_offset"].tolist() == list(range(10, 22))
    assert "date" not in frame.columns
    assert str(frame["event_time"].dt.tz) == "UTC"
    assert frame.loc[0, "temp"] == 10.5 and frame["cycle"].dtype == "int64"
    (ranges,) = lake.partition_ranges(settings, "readings")
    assert (ranges.first_offset, ranges.last_offset, ranges.rows, ranges.dead_letters, ranges.overlaps) == (
        10, 24, 12, 3, 0)


def test_files_with_different_sensors_read_as_the_union_of_columns(settings: Settings) -> None:
    lake.write_commit(settings, "readings", "r", 0, 0, 1, _readings("r", 0, range(0, 2), ("temp",)), 0)
    lake.write_commit(settings, "readings", "r", 1, 0, 1, _readings("r", 1, range(0, 2), ("pressure",)), 0)

    frame = lake.read_table(settings, "readings")

    assert {"temp", "pressure"} <= set(frame.columns)
    assert frame["temp"].notna().sum() == 2 and frame["pressure"].notna().sum() == 2
    assert frame[["temp", "pressure"]].isna().sum().sum() == 4


def test_since_and_until_select_files_and_rows_by_event_time(settings: Settings) -> None:
    lake.write_commit(settings, "readings", "r", 0, 0, 11, _readings("r", 0, range(0, 12)), 0)
    since, until = T0 + timedelta(minutes=30), T0 + timedelta(minutes=70)

    frame = lake.read_table(settings, "readings", since=since, until=until)

    assert frame["_offset"].tolist() == [3, 4, 5, 6]  # since inclusive, until exclusive
    assert len(lake.lake_files(settings, "readings", since=T0 + timedelta(hours=2))) == 0
    assert len(lake.lake_files(settings, "readings", since="2026-03-02T00:00:00")) == 1  # naive means UTC
    empty = lake.read_table(settings, "readings", since=T0 + timedelta(days=30))
    assert empty.empty and {"device_id", "event_time", "_offset"} <= set(empty.columns)


def test_labels_keep_null_rul(settings: Settings) -> None:
    rows = [
        {"device_id": "d1", "event_time": T0, "kind": "failure", "rul": None, "_topic": "l", "_partition": 0,
         "_offset": 0},
        {"device_id": "d1", "event_time": T0, "kind": "rul", "rul": 12.0, "_topic": "l", "_partition": 0,
         "_offset": 1},
    ]
    lake.write_commit(settings, "labels", "l", 0, 0, 1, rows, 0)
    frame = lake.read_table(settings, "labels")
    assert frame["kind"].tolist() == ["failure", "rul"]
    assert pd.isna(frame.loc[0, "rul"]) and frame.loc[1, "rul"] == 12.0


def test_files_without_a_commit_are_invisible_and_removed_as_orphans(settings: Settings) -> None:
    commit = lake.write_commit(settings, "readings", "r", 0, 0, 4, _readings("r", 0, range(0, 5)), 0)
    # What a crash can leave: a Parquet file renamed into place whose commit was never written,
    # and half-written temp files.
    orphan = commit.files[0].path.with_name("r-p0-000000000005-000000000009.parquet")
    orphan.write_bytes(commit.files[0].path.read_bytes())
    temp = commit.files[0].path.parent / ".tmp-r-p0-x.parquet.1234"
    temp.write_bytes(b"half")
    manifest_temp = settings.lake_dir / "readings" / lake.MANIFEST / ".tmp-r-p0-000000000005.json.99"
    manifest_temp.write_text("{")

    assert len(lake.read_table(settings, "readings")) == 5
    removed = lake.remove_orphans(settings, "readings")

    assert set(removed) == {orphan, temp, manifest_temp}
    assert commit.files[0].path.exists()
    assert lake.next_offsets(settings, "readings") == {("r", 0): 5}


def test_overlapping_commits_are_reported(settings: Settings) -> None:
    lake.write_commit(settings, "readings", "r", 0, 0, 9, _readings("r", 0, range(0, 10)), 0)
    lake.write_commit(settings, "readings", "r", 0, 5, 14, _readings("r", 0, range(5, 15)), 0)
    (ranges,) = lake.partition_ranges(settings, "readings")
    assert ranges.overlaps == 1 and ranges.commits == 2


def test_a_damaged_commit_file_is_an_error_naming_the_file(settings: Settings) -> None:
    lake.write_commit(settings, "readings", "r", 0, 0, 0, _readings("r", 0, range(0, 1)), 0)
    (path,) = (settings.lake_dir / "readings" / lake.MANIFEST).glob("*.json")
    document = json.loads(path.read_text())
    del document["files"]
    path.write_text(json.dumps(document))
    with pytest.raises(LakeError, match=path.name):
        lake.read_commits(settings, "readings")


def test_only_one_writer_holds_the_lake(settings: Settings) -> None:
    with lake.writer_lock(settings), pytest.raises(LakeError, match="another lake sink"), lake.writer_lock(settings):
        pass
    with lake.writer_lock(settings):  # released again
        pass


def test_unknown_table_is_refused(settings: Settings) -> None:
    with pytest.raises(LakeError, match="unknown lake table 'predictions'"):
        lake.read_table(settings, "predictions")

"""The data lake: Parquet files plus a manifest that says exactly which Kafka records they hold.

Layout under ``settings.lake_dir``::

    <table>/date=YYYY-MM-DD/<topic>-p<partition>-<first>-<last>.parquet     rows, Hive-partitioned by event date
    <table>/_manifest/<topic>-p<partition>-<first>.json                       one commit (see below)

A **commit** records that the offsets ``first..last`` of one topic partition are handled: the
valid events among them are in the listed files (topic, partition, first/last offset, rows,
SHA-256 digest, event-time range), the rest went to the dead-letter topic. Parquet files are
written first, each atomically (hidden temp file + rename); the commit file is renamed into place
last, and that rename is the commit point. Readers see only files named by a commit, so a crash
at any moment leaves either a whole commit or none; files a crash left without a commit are
orphans that :func:`remove_orphans` deletes before a sink writes again. A sink resumes each
partition at the offset after its last commit (:func:`next_offsets`), so each offset lands in
the lake exactly once. Names starting with ``.`` or ``_`` are hidden from Spark and pyarrow.

Columns: the event's ``to_row()`` plus ``_topic``, ``_partition``, ``_offset``; files of
different sources may carry different sensor columns and are read as the union of columns.
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlops.clock import as_utc
from mlops.config import Settings
from mlops.errors import MlopsError
from mlops.log import get_logger

__all__ = [
    "BASE_COLUMNS",
    "MANIFEST",
    "META_COLUMNS",
    "TABLES",
    "Commit",
    "LakeError",
    "LakeFile",
    "PartitionRange",
    "file_digest",
    "lake_files",
    "next_offsets",
    "partition_ranges",
    "read_commits",
    "read_table",
    "remove_orphans",
    "table_dir",
    "write_commit",
    "writer_lock",
]

log = get_logger(__name__)

TABLES = ("readings", "labels")
MANIFEST = "_manifest"
META_COLUMNS = ("_topic", "_partition", "_offset")
BASE_COLUMNS = {
    "readings": ("device_id", "device_type", "event_time", "cycle"),
    "labels": ("device_id", "event_time", "kind", "rul"),
}
_STRINGS = frozenset({"device_id", "device_type", "kind", "_topic"})
_INTEGERS = frozenset({"cycle", "_partition", "_offset"})
_TEMP_PREFIX = ".tmp-"


class LakeError(MlopsError):
    """The lake is inconsistent or cannot be written (e.g. another sink holds it)."""


@dataclass(frozen=True)
class LakeFile:
    """One Parquet file of the lake and exactly which Kafka records it holds (for lineage)."""

    path: Path
    table: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    rows: int
    digest: str
    """``sha256:<hex>`` of the file's bytes."""
    min_event_time: datetime
    max_event_time: datetime

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(path=str(self.path), min_event_time=self.min_event_time.isoformat(),
                    max_event_time=self.max_event_time.isoformat())
        return data


@dataclass(frozen=True)
class Commit:
    """Offsets ``first_offset..last_offset`` of one topic partition, handled: in ``files`` or dead-lettered."""

    table: str
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    rows: int
    dead_letters: int
    committed_at: str
    files: tuple[LakeFile, ...] = field(default_factory=tuple)


def table_dir(settings: Settings, table: str) -> Path:
    if table not in TABLES:
        raise LakeError(f"unknown lake table {table!r} (tables: {', '.join(TABLES)})")
    return settings.lake_dir / table


def file_digest(path: Path) -> str:
    """``sha256:<hex>`` of a file, as recorded in the manifest."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


# ----------------------------------------------------------------------------------------- writing

@contextmanager
def writer_lock(settings: Settings) -> Iterator[None]:
    """Hold the lake's single-writer lock; fail at once if another sink holds it.

    Orphan clean-up is only safe when no other writer is half-way through a commit.
    """
    settings.lake_dir.mkdir(parents=True, exist_ok=True)
    path = settings.lake_dir / ".writer.lock"
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            raise LakeError(f"lake {settings.lake_dir}: another lake sink is writing to it (lock {path})") from err
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_commit(settings: Settings, table: str, topic: str, partition: int, first_offset: int,
                 last_offset: int, rows: Sequence[dict[str, Any]], dead_letters: int) -> Commit:
    """Write ``rows`` (to_row() + meta columns) of offsets first..last as one atomic commit."""
    root = table_dir(settings, table)
    by_date: dict[date, list[dict[str, Any]]] = {}
    for row in rows:
        by_date.setdefault(row["event_time"].astimezone(UTC).date(), []).append(row)
    files = []
    for day, day_rows in sorted(by_date.items()):
        offsets = [row["_offset"] for row in day_rows]
        times = [row["event_time"] for row in day_rows]
        name = f"{topic}-p{partition}-{min(offsets):012d}-{max(offsets):012d}.parquet"
        relative = Path(f"date={day.isoformat()}") / name
        data = _parquet_bytes(table, day_rows)
        _atomic_write(root / relative, data)
        files.append(LakeFile(path=root / relative, table=table, topic=topic, partition=partition,
                              first_offset=min(offsets), last_offset=max(offsets), rows=len(day_rows),
                              digest=f"sha256:{hashlib.sha256(data).hexdigest()}",
                              min_event_time=min(times).astimezone(UTC), max_event_time=max(times).astimezone(UTC)))
    commit = Commit(table=table, topic=topic, partition=partition, first_offset=first_offset,
                    last_offset=last_offset, rows=len(rows), dead_letters=dead_letters,
                    committed_at=datetime.now(UTC).isoformat(), files=tuple(files))
    document = {
        "version": 1, "table": table, "topic": topic, "partition": partition, "first_offset": first_offset,
        "last_offset": last_offset, "rows": len(rows), "dead_letters": dead_letters,
        "committed_at": commit.committed_at,
        "files": [{**f.to_dict(), "path": str(f.path.relative_to(root))} for f in files],
    }
    _atomic_write(root / MANIFEST / f"{topic}-p{partition}-{first_offset:012d}.json",
                  json.dumps(document, indent=1).encode())
    return commit


def _arrow_type(column: str) -> pa.DataType:
    if column == "event_time":
        return pa.timestamp("us", tz="UTC")
    if column in _STRINGS:
        return pa.string()
    if column in _INTEGERS:
        return pa.int64()
    return pa.float64()  # sensors, settings, rul


def _parquet_bytes(table: str, rows: Sequence[dict[str, Any]]) -> bytes:
    # Columns: the table's base columns, then every other key in first-seen order, meta last.
    columns = dict.fromkeys(BASE_COLUMNS[table])
    for row in rows:
        columns.update(dict.fromkeys(key for key in row if key not in columns))
    ordered = [c for c in columns if c not in META_COLUMNS] + list(META_COLUMNS)
    schema = pa.schema([(c, _arrow_type(c)) for c in ordered])
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), sink)  # a key a row lacks becomes null
    return bytes(sink.getvalue())


def _atomic_write(path: Path, data: bytes) -> None:
    """Write a file so that it exists either complete or not at all, and survives a power cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f"{_TEMP_PREFIX}{path.name}.{uuid.uuid4().hex[:8]}"
    with temp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself must be durable before the next step relies on it
    finally:
        os.close(directory)


def remove_orphans(settings: Settings, table: str) -> list[Path]:
    """Delete temp files and Parquet files that no commit names (left by a crash). Hold writer_lock."""
    root = table_dir(settings, table)
    if not root.exists():
        return []
    committed = {f.path for c in read_commits(settings, table) for f in c.files}
    removed = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and (path.name.startswith(_TEMP_PREFIX)
                               or (path.suffix == ".parquet" and path not in committed)):
            path.unlink()
            removed.append(path)
            log.warning("removed orphan file", table=table, path=path)
    return removed


# ----------------------------------------------------------------------------------------- manifest

def read_commits(settings: Settings, table: str) -> list[Commit]:
    """Every commit of a table, ordered by topic, partition and offset."""
    root = table_dir(settings, table)
    manifest = root / MANIFEST
    if not manifest.exists():
        return []
    commits = []
    for path in manifest.glob("*.json"):
        if path.name.startswith(_TEMP_PREFIX):
            continue
        try:
            doc = json.loads(path.read_text())
            files = tuple(
                LakeFile(path=root / f["path"], table=table, topic=doc["topic"], partition=doc["partition"],
                         first_offset=f["first_offset"], last_offset=f["last_offset"], rows=f["rows"],
                         digest=f["digest"], min_event_time=datetime.fromisoformat(f["min_event_time"]),
                         max_event_time=datetime.fromisoformat(f["max_event_time"]))
                for f in doc["files"]
            )
            commits.append(Commit(table=table, topic=doc["topic"], partition=doc["partition"],
                                  first_offset=doc["first_offset"], last_offset=doc["last_offset"],
                                  rows=doc["rows"], dead_letters=doc["dead_letters"],
                                  committed_at=doc["committed_at"], files=files))
        except (OSError, ValueError, KeyError, TypeError) as err:
            # Commit files are renamed into place whole, so this is damage, not a crash artefact.
            raise LakeError(f"lake manifest {path}: unreadable ({err}); move it away or restore it") from err
    return sorted(commits, key=lambda c: (c.topic, c.partition, c.first_offset))


def next_offsets(settings: Settings, table: str) -> dict[tuple[str, int], int]:
    """Per (topic, partition): the first offset the lake does not hold yet."""
    positions: dict[tuple[str, int], int] = {}
    for commit in read_commits(settings, table):
        key = (commit.topic, commit.partition)
        positions[key] = max(positions.get(key, 0), commit.last_offset + 1)
    return positions


@dataclass(frozen=True)
class PartitionRange:
    topic: str
    partition: int
    first_offset: int
    last_offset: int
    rows: int
    dead_letters: int
    commits: int
    overlaps: int
    """Commits whose offsets overlap an earlier one: always 0 unless the lake was damaged."""


def partition_ranges(settings: Settings, table: str) -> list[PartitionRange]:
    """Offset ranges the lake holds per topic partition, with a check that no offset is held twice."""
    grouped: dict[tuple[str, int], list[Commit]] = {}
    for commit in read_commits(settings, table):
        grouped.setdefault((commit.topic, commit.partition), []).append(commit)
    ranges = []
    for (topic, partition), commits in sorted(grouped.items()):
        overlaps = sum(1 for a, b in itertools.pairwise(commits) if b.first_offset <= a.last_offset)
        ranges.append(PartitionRange(topic, partition, commits[0].first_offset, max(c.last_offset for c in commits),
                                     sum(c.rows for c in commits), sum(c.dead_letters for c in commits),
                                     len(commits), overlaps))
    return ranges


# ----------------------------------------------------------------------------------------- reading

def _moment(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    return as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)


def lake_files(settings: Settings, table: str, since: datetime | str | None = None,
               until: datetime | str | None = None) -> list[LakeFile]:
    """Committed files of a table holding events with ``since <= event_time < until`` (naive = UTC)."""
    start, end = _moment(since), _moment(until)
    return [
        f for c in read_commits(settings, table) for f in c.files
        if (start is None or f.max_event_time >= start) and (end is None or f.min_event_time < end)
    ]


def read_table(settings: Settings, table: str, since: datetime | str | None = None,
               until: datetime | str | None = None) -> pd.DataFrame:
    """The table's rows with ``since <= event_time < until``, ordered by event time then offset.

    Columns are the union over files (a sensor missing from a file is NaN there).
    """
    start, end = _moment(since), _moment(until)
    files = lake_files(settings, table, start, end)
    if not files:
        return pd.DataFrame({c: pd.Series(dtype=_arrow_type(c).to_pandas_dtype())
                             for c in (*BASE_COLUMNS[table], *META_COLUMNS)})
    # ParquetFile, not read_table: the date=... directory must not become an extra column.
    tables = [pq.ParquetFile(f.path).read() for f in files]
    frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    if start is not None:
        frame = frame[frame["event_time"] >= pd.Timestamp(start)]
    if end is not None:
        frame = frame[frame["event_time"] < pd.Timestamp(end)]
    return frame.sort_values(["event_time", "_topic", "_partition", "_offset"], kind="stable").reset_index(drop=True)

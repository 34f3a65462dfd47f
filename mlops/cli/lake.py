"""``mlops lake-sink`` (Kafka -> Parquet lake, exactly once) and ``mlops lake status``."""

from __future__ import annotations

import json
import signal
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mlops.cli.common import JsonOption, ProfileOption, settings_for
from mlops.config import Settings
from mlops.log import configure_logging

console = Console(stderr=True)
lake_app = typer.Typer(help="Inspect the Parquet data lake.", no_args_is_help=True)


def lake_sink(
    profile: ProfileOption = None,
    max_events: Annotated[int | None, typer.Option("--max-events", min=1, help="Stop after this many events.")] = None,
    idle_exit: Annotated[float | None, typer.Option("--idle-exit", min=0,
                                                    help="Stop after this many seconds without an event.")] = None,
    batch_rows: Annotated[int | None, typer.Option("--batch-rows", min=1,
                                                   help="Events per micro-batch (default: lake.batch_rows).")] = None,
) -> None:
    """Consume readings and labels into the Parquet lake; invalid events go to the dead-letter topic."""
    from mlops.data.lake_sink import LakeSink, SinkStats

    configure_logging()
    settings = settings_for(profile)

    def progress(stats: SinkStats) -> None:
        dead = sum(stats.dead_letters.values())
        console.print(f"[dim]lake-sink[/] consumed={stats.consumed} rows={stats.rows_written} "
                      f"commits={stats.commits} dead_letters={dead} rate={stats.events_per_s:,.0f}/s")

    sink = LakeSink(settings, batch_rows=batch_rows, on_progress=progress)
    # SIGTERM/Ctrl-C: write what is held, then exit (a SIGKILL is covered by the lake's commit protocol).
    previous = {sig: signal.signal(sig, lambda *_: sink.stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with console.status(f"lake sink: {settings.kafka.topics.readings}, {settings.kafka.topics.labels} "
                            f"-> {settings.lake_dir}"):
            stats = sink.run(max_events=max_events, idle_exit_s=idle_exit)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    console.print(f"lake sink done: consumed={stats.consumed} rows={stats.rows_written} commits={stats.commits} "
                  f"dead_letters={stats.dead_letters or 0} rate={stats.events_per_s:,.0f} events/s")


def _status_rows(settings: Settings) -> list[dict[str, object]]:
    from mlops.data import lake

    rows: list[dict[str, object]] = []
    for table in lake.TABLES:
        files = lake.lake_files(settings, table)
        for r in lake.partition_ranges(settings, table):
            rows.append({"table": table, "topic": r.topic, "partition": r.partition,
                         "files": sum(1 for f in files if (f.topic, f.partition) == (r.topic, r.partition)),
                         "rows": r.rows, "dead_letters": r.dead_letters, "first_offset": r.first_offset,
                         "last_offset": r.last_offset, "commits": r.commits, "overlaps": r.overlaps})
    return rows


@lake_app.command("status")
def status(profile: ProfileOption = None, as_json: JsonOption = False) -> None:
    """Tables, files, rows and the Kafka offset ranges the lake holds. Exit 1 if any offset is held twice."""
    settings = settings_for(profile)
    rows = _status_rows(settings)
    if as_json:
        typer.echo(json.dumps({"lake_dir": str(settings.lake_dir), "partitions": rows}, indent=2))
    else:
        table = Table("table", "topic", "partition", "files", "rows", "dead letters", "offsets", "commits",
                      "overlaps", title=f"lake {settings.lake_dir}")
        for row in rows:
            table.add_row(str(row["table"]), str(row["topic"]), str(row["partition"]), str(row["files"]),
                          str(row["rows"]), str(row["dead_letters"]), f"{row['first_offset']}..{row['last_offset']}",
                          str(row["commits"]), "[red]" + str(row["overlaps"]) if row["overlaps"] else "0")
        Console().print(table if rows else "lake is empty")
    if any(row["overlaps"] for row in rows):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``lake-sink`` and ``lake status`` to the root `mlops` app."""
    app.command("lake-sink")(lake_sink)
    app.add_typer(lake_app, name="lake")

"""``mlops simulate`` and ``mlops replay``: put a simulated fleet or recorded data on the topics."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mlops.cli.common import ProfileOption, settings_for

console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[labels]} labels"), TimeElapsedColumn(), console=console)


def simulate(
    scenario: Annotated[str, typer.Option("--scenario", "-s", help="Scenario name (configs/scenarios/) or path.")
                        ] = "stationary",
    events: Annotated[int | None, typer.Option("--events", "-n", help="Stop after this many readings.")] = None,
    duration: Annotated[float | None, typer.Option("--duration", help="Stop after this many seconds of wall time.")
                        ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same events, byte for byte.")] = 0,
    devices: Annotated[int, typer.Option("--devices", min=1, help="Fleet size.")] = 20,
    rate: Annotated[float | None, typer.Option("--rate", help="Readings per second of wall time (default: as fast "
                                                              "as possible).")] = None,
    start: Annotated[str | None, typer.Option("--start", help="Event time of the first tick (ISO-8601 with zone); "
                                                              "default: the scenario's start_time.")] = None,
    label_delay: Annotated[float | None, typer.Option("--label-delay", help="Cycles of event time between a "
                                                                            "label's event and its publication.")
                           ] = None,
    run_id: Annotated[str | None, typer.Option("--run-id", help="Name of the run record.")] = None,
    profile: ProfileOption = None,
) -> None:
    """Run a fleet of wearing devices into the readings topic, labels late into the labels topic."""
    from mlops.data.runs import simulate as run
    from mlops.data.scenarios import load_scenario
    from mlops.errors import ConfigError

    settings = settings_for(profile)
    loaded = load_scenario(scenario)
    start_time = None
    if start is not None:
        start_time = datetime.fromisoformat(start)
        if start_time.tzinfo is None:
            raise ConfigError(f"--start {start!r}: give a timezone, e.g. 2026-01-01T00:00:00+00:00")
    with _progress() as bar:
        task = bar.add_task(f"simulate {loaded.name}", total=events, labels=0)
        record = run(settings, loaded, devices=devices, seed=seed, events=events, duration_s=duration, rate=rate,
                     start_time=start_time, label_delay_cycles=label_delay, run_id=run_id,
                     progress=lambda r, lab: bar.update(task, completed=r, labels=lab))
    typer.echo(json.dumps(record, indent=2))
    counts = record["counts"]
    console.print(f"[green]{counts['readings']} readings[/] -> {settings.kafka.topics.readings}, "
                  f"[green]{counts['labels']} labels[/] -> {settings.kafka.topics.labels} "
                  f"in {counts['seconds']} s ({counts['events_per_s']} events/s)")


def replay(
    file: Annotated[Path, typer.Argument(help="Recorded time series: CSV, whitespace text or Parquet.")],
    mapping: Annotated[Path, typer.Option("--mapping", "-m", help="Column-mapping YAML (configs/replay/).")],
    speed: Annotated[float | None, typer.Option("--speed", help="Readings per second of wall time (default: as "
                                                                "fast as possible).")] = None,
    labels_from: Annotated[str | None, typer.Option("--labels-from", help="failure | flag | failure_time | rul | "
                                                                          "rul_column | none (default: the "
                                                                          "mapping's labels.default).")] = None,
    rul_file: Annotated[Path | None, typer.Option("--rul-file", help="RUL file for --labels-from rul (default: "
                                                                     "from the mapping).")] = None,
    profile: ProfileOption = None,
) -> None:
    """Replay a recorded file into the readings and labels topics in event-time order."""
    from mlops.data.publish import publish
    from mlops.data.replay import LABEL_SOURCES, load_mapping, replay_events
    from mlops.errors import ConfigError

    if labels_from is not None and labels_from not in LABEL_SOURCES:
        raise ConfigError(f"--labels-from {labels_from!r}: expected one of {', '.join(LABEL_SOURCES)}")
    settings = settings_for(profile)
    rules = load_mapping(mapping)
    events = replay_events(file, rules, settings.features.cycle_seconds, labels_from,  # type: ignore[arg-type]
                           rul_file)
    with _progress() as bar:
        task = bar.add_task(f"replay {file.name}", total=None, labels=0)
        report = publish(events, settings, rate=speed,
                         progress=lambda r, lab: bar.update(task, completed=r, labels=lab))
    typer.echo(json.dumps({"file": str(file), **report.as_dict()}, indent=2))


def register(app: typer.Typer) -> None:
    """Add ``simulate`` and ``replay`` to the root ``mlops`` app."""
    app.command("simulate")(simulate)
    app.command("replay")(replay)

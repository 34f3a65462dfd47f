"""``mlops services``, ``mlops ui`` and ``mlops demo``."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from mlops.cli.common import JsonOption, ProfileOption, settings_for
from mlops.services import manager

app = typer.Typer(help="Start, stop and check the local Kafka broker and MLflow server.", no_args_is_help=True)
console = Console()


@app.command()
def up(profile: ProfileOption = None) -> None:
    """Start Kafka (KRaft) and the MLflow server, create the topics. Idempotent."""
    settings = settings_for(profile)
    manager.up(settings, report=console.print)
    _print_status(settings, as_json=False)


@app.command()
def down(profile: ProfileOption = None) -> None:
    """Stop exactly the processes `up` started."""
    stopped = manager.down(settings_for(profile), report=console.print)
    if not stopped:
        console.print("nothing to stop")


@app.command()
def status(profile: ProfileOption = None, as_json: JsonOption = False) -> None:
    """Show whether each service runs and answers. Exit code 1 if one does not answer."""
    healthy = _print_status(settings_for(profile), as_json=as_json)
    if not healthy:
        raise typer.Exit(1)


def _print_status(settings: object, as_json: bool) -> bool:
    rows = manager.status(settings)  # type: ignore[arg-type]
    if as_json:
        typer.echo(json.dumps({row.name: row.as_dict() for row in rows}, indent=2))
    else:
        table = Table("service", "address", "version", "managed", "pid", "ready")
        for row in rows:
            table.add_row(row.name, row.address, row.version, "yes" if row.managed else "external",
                          str(row.pid or "-"), "[green]yes[/]" if row.ready else "[red]no[/]")
        console.print(table)
    return all(row.ready for row in rows)


def ui(profile: ProfileOption = None) -> None:
    """Print the MLflow UI's address, starting the services if needed."""
    settings = settings_for(profile)
    if not any(s.ready for s in manager.status(settings) if s.name == "mlflow"):
        manager.up(settings, report=console.print)
    typer.echo(settings.mlflow.tracking_uri)


def demo(profile: ProfileOption = None,
         keep: bool = typer.Option(False, "--follow", help="Leave the services running afterwards.")) -> None:
    """The whole loop: history, initial model, live stream that drifts, retraining, promotion, report."""
    from mlops.demo import run_demo

    run_demo(settings_for(profile), keep_running=keep, console=console)


@app.command()
def fetch() -> None:
    """Resolve the Apache Kafka broker's jars and Spark's Kafka connector from Maven Central into the cache (once)."""
    from mlops.services import spark_kafka
    from mlops.services.kafka_broker import kafka_version, resolve_jars

    console.print(f"kafka {kafka_version()} jars: {resolve_jars()}")
    console.print(f"spark kafka connector {spark_kafka.connector_version()} jars: {spark_kafka.jars_dir()} "
                  f"({len(spark_kafka.resolve_jars())} jars)")


@app.command()
def check(profile: ProfileOption = None) -> None:
    """Prove the services work: a message through Kafka and back, a run and a model through MLflow."""
    from mlops.services.smoke import kafka_round_trip, mlflow_round_trip

    settings = settings_for(profile)
    manager.require_ready(settings)
    echoed = kafka_round_trip(settings)
    console.print(f"kafka: round trip through {echoed['topic']} partition {echoed['partition']} "
                  f"offset {echoed['offset']}")
    logged = mlflow_round_trip(settings)
    console.print(f"mlflow: run {logged['run_id']}, registered version {logged['version']}")

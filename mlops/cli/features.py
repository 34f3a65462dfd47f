"""``mlops features``: build the feature table on Spark, apply the Feast repo, materialise, follow the stream."""

from __future__ import annotations

import signal
import threading
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console

from mlops.cli.common import ProfileOption, settings_for

app = typer.Typer(help="Feature table (Spark) and the Feast feature repository.", no_args_is_help=True)
console = Console()


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command()
def build(profile: ProfileOption = None) -> None:
    """Compute features of every lake reading on Spark and write the feature table."""
    from mlops.features.spark import build_feature_table
    from mlops.spark import spark_session

    settings = settings_for(profile)
    with console.status(f"computing features on Spark ({settings.spark.master})"):
        spark = spark_session(settings, app_name="mlops-features")
        try:
            spec, rows = build_feature_table(settings, spark)
        finally:
            spark.stop()
    console.print(f"feature table: {rows} rows, {len(spec.feature_names())} features, sensors {list(spec.sensors)}")


@app.command("apply")
def apply_repo(profile: ProfileOption = None) -> None:
    """`feast apply`: register entity, sources and feature view for the feature table's spec."""
    from mlops.features import feast_repo

    settings = settings_for(profile)
    with console.status("feast apply"):
        feast_repo.apply(settings, feast_repo.table_spec(settings))
    console.print(f"applied feature view {feast_repo.FEATURE_VIEW!r} in {settings.feast_repo_dir}")


@app.command()
def materialize(
    profile: ProfileOption = None,
    start: Annotated[str | None, typer.Option(help="ISO time; default: the beginning.")] = None,
    end: Annotated[str | None, typer.Option(help="ISO time; default: now.")] = None,
) -> None:
    """Load features from the offline store into the online store."""
    from mlops.features import feast_repo

    settings = settings_for(profile)
    with console.status("materializing features into the online store"):
        first, last = feast_repo.materialize(settings, _when(start), _when(end))
    console.print(f"materialized {first.isoformat()} .. {last.isoformat()}")


@app.command()
def follow(
    profile: ProfileOption = None,
    group: Annotated[str | None, typer.Option("--group", help="Consumer group; default "
                                              "mlops-features-follow.")] = None,
) -> None:
    """Keep each device's latest scored features in the online store, from the predictions topic, until stopped
    (Ctrl-C or SIGTERM: writes and commits what it holds, then exits)."""
    from mlops.features.follow import FeatureFollower
    from mlops.log import configure_logging

    configure_logging()
    settings = settings_for(profile)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_args: stop.set())
    status = FeatureFollower(settings, group_id=group).run(stop=stop)
    console.print(f"done: {status.predictions} predictions, {status.pushed} rows written online, "
                  f"{status.malformed} malformed, {status.dropped} dropped, {status.pending} not written")


def register(root: typer.Typer) -> None:
    """Add ``mlops features`` to the root app."""
    root.add_typer(app, name="features")

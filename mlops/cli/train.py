"""`mlops train`: run a training job; `mlops train describe VERSION`: print a version's lineage."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mlops.cli.common import JsonOption, ProfileOption, settings_for, stdout_to_stderr
from mlops.errors import TrainingError

app = typer.Typer(help="Train a model on the lake (Spark + distributed search) and register it in MLflow.",
                  no_args_is_help=False, invoke_without_command=True)


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as err:
        raise TrainingError(f"{option} {value!r}: expected an ISO-8601 time such as 2026-01-01T00:00:00Z") from err


@app.callback()
def train(
    ctx: typer.Context,
    window: Annotated[str | None, typer.Option("--window", help="Event-time window, e.g. 7d, 12h, ending at --until, "
                                                                "else at the lake's newest event or now, whichever "
                                                                "is earlier.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="Window start (ISO-8601, event time).")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Window end, exclusive (ISO-8601; default now).")] = None,
    device_type: Annotated[list[str] | None, typer.Option("--device-type", help="Train on this device type's "
                                                                            "readings (repeatable; default: "
                                                                            "features.device_types).")] = None,
    trigger: Annotated[str, typer.Option("--trigger", help="Why: manual, schedule or drift.")] = "manual",
    reason: Annotated[str, typer.Option("--reason", help="Reference of the cause, e.g. a drift result id.")] = "",
    profile: ProfileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Train on the lake's window, log the search to MLflow and register the chosen model as a new version."""
    if ctx.invoked_subcommand is not None:
        return
    from mlops.log import configure_logging
    from mlops.train.job import TRIGGERS, TrainRequest, run_training

    if trigger not in TRIGGERS:
        raise typer.BadParameter(f"expected one of {', '.join(TRIGGERS)}", param_hint="--trigger")
    if window and since:
        raise typer.BadParameter("give either --window or --since/--until, not both", param_hint="--window")
    configure_logging("WARNING")
    settings = settings_for(profile)
    if device_type:
        settings = settings.model_copy(update={"features": settings.features.model_copy(
            update={"device_types": device_type})})
    start, end = _time(since, "--since"), _time(until, "--until")
    if start is None and end is None:
        from mlops.train.dataset import window_end

        end = window_end(settings, datetime.now(UTC))
    request = TrainRequest(window=window, since=start, until=end, trigger=trigger, reason=reason)  # type: ignore[arg-type]
    console = Console(stderr=True)
    # With --json, stdout is the one JSON document: whatever MLflow, Spark or a library prints goes to stderr.
    with stdout_to_stderr(as_json), console.status("training") as status:
        def progress(line: str) -> None:
            status.update(line)
            console.log(line)

        result = run_training(settings, request, progress=progress)
    if as_json:
        typer.echo(json.dumps({"run_id": result.run_id, "model": result.model_name, "version": result.version,
                               "family": result.family, "params": result.params, "metrics": result.metrics,
                               "decision_threshold": result.threshold, "compared_with": result.compared_with,
                               "candidates": result.candidates, "duration_s": result.duration_s}, indent=2))
        return
    table = Table(title=f"{result.model_name} version {result.version} registered (run {result.run_id})")
    table.add_column("metric")
    table.add_column("validation", justify="right")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.4f}")
    Console().print(table)
    Console().print(f"chosen: {result.family} {json.dumps(result.params)}; threshold {result.threshold:.4f}; "
                    f"{result.candidates} candidates; {result.duration_s:.1f}s; compared with champion "
                    f"{result.compared_with}")


@app.command("describe")
def describe(
    version: Annotated[str, typer.Argument(help="Version number or alias (champion, challenger).")],
    profile: ProfileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Print a registered version's lineage: data, features, settings, code, and why it exists."""
    from mlops.registry.catalog import describe_version

    info = describe_version(settings_for(profile), version)
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    _print_description(info)


def _print_description(info: dict[str, Any]) -> None:
    console = Console()
    head = Table(title=f"{info['model']} version {info['version']}", show_header=False)
    for key in ("aliases", "status", "run_id", "run_status", "trigger", "reason", "git_commit", "compared_with",
                "decision_threshold", "feature_spec", "candidates", "source"):
        head.add_row(key, json.dumps(info[key]) if isinstance(info[key], dict | list) else str(info[key]))
    console.print(head)
    for title, rows in (("metrics", info["metrics"]), ("lineage", info["lineage"]), ("params", info["params"])):
        table = Table(title=title, show_header=False)
        for key, value in rows.items():
            text = json.dumps(value) if isinstance(value, dict | list) else str(value)
            table.add_row(key, text if len(text) < 400 else text[:400] + " ...")
        console.print(table)
    data = Table(title="dataset inputs")
    for column in ("context", "name", "digest", "source", "tags"):
        data.add_column(column)
    for item in info["datasets"]:
        data.add_row(str(item["context"]), item["name"], item["digest"], str(item["source"])[:80],
                     json.dumps(item["tags"])[:300])
    console.print(data)


def register(app_root: typer.Typer) -> None:
    """Add `mlops train` (with `describe`) to the root `mlops` app."""
    app_root.add_typer(app, name="train")

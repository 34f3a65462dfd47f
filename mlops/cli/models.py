"""`mlops models list|describe`, `mlops promote VERSION`, `mlops rollback`: take over from the loop.

The actor recorded in the audit trail is the OS user running the command.
"""

from __future__ import annotations

import getpass
import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mlops.cli.common import JsonOption, ProfileOption, settings_for

models_app = typer.Typer(help="Registered model versions: aliases, metrics, lineage.", no_args_is_help=True)


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


@models_app.command("list")
def list_command(profile: ProfileOption = None, as_json: JsonOption = False) -> None:
    """Every version with its aliases, key validation metrics, trigger and creation time."""
    from mlops.registry.catalog import list_versions

    versions = list_versions(settings_for(profile))
    if as_json:
        typer.echo(json.dumps([v.to_dict() for v in versions], indent=2))
        return
    table = Table(title="model versions")
    for column in ("version", "aliases", "val_f1", "val_roc_auc", "trigger", "created", "reason"):
        table.add_column(column)
    for v in versions:
        table.add_row(v.version, ",".join(v.aliases), _metric(v.metrics.get("val_f1")),
                      _metric(v.metrics.get("val_roc_auc")), v.trigger or "", v.created.strftime("%Y-%m-%d %H:%M:%S"),
                      (v.reason or "")[:40])
    Console().print(table)


def _metric(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


@models_app.command("describe")
def describe_command(
    version: Annotated[str, typer.Argument(help="Version number or alias (champion, challenger).")],
    profile: ProfileOption = None,
) -> None:
    """Lineage of one version: data, features, hyperparameters, code, trigger, metrics (JSON)."""
    from mlops.registry.catalog import describe_version

    typer.echo(json.dumps(describe_version(settings_for(profile), version), indent=2, default=str))


def promote_command(
    version: Annotated[str, typer.Argument(help="The version to make champion.")],
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded in the audit trail.")] = "manual promotion",
    force: Annotated[bool, typer.Option("--force", help="Skip the evaluation gate.")] = False,
    profile: ProfileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make VERSION the champion; the evaluation gate must pass unless --force."""
    from mlops.registry.promotion import promote

    settings = settings_for(profile)
    with Console(stderr=True).status("evaluating and promoting" if not force else "promoting"):
        result = promote(settings, version, actor=_actor(), reason=reason, force=force)
    _report(result.to_dict(), as_json)


def rollback_command(
    to: Annotated[str | None, typer.Option("--to", help="Version to return to (default: the previous champion).")]
    = None,
    reason: Annotated[str, typer.Option("--reason", help="Why; recorded in the audit trail.")] = "manual rollback",
    profile: ProfileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Point the champion back at the previous champion (from the audit trail) or at --to VERSION."""
    from mlops.registry.promotion import rollback

    settings = settings_for(profile)
    with Console(stderr=True).status("rolling back"):
        result = rollback(settings, to, actor=_actor(), reason=reason)
    _report(result.to_dict(), as_json)


def _report(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    verb = "promoted" if result["action"] == "promote" else "rolled back"
    if not result["changed"]:
        typer.echo(f"{result['model']} version {result['version']} is already the champion (recorded)")
    else:
        typer.echo(f"{verb} {result['model']}: champion {result['previous_version']} -> {result['version']}")
    if result.get("gate"):
        typer.echo("gate: " + "; ".join(result["gate"]["reasons"]))
    if result["changed"] and not result["event_published"]:
        typer.echo("warning: the model event was not published; consumers follow at their next registry poll")


def register(app: typer.Typer) -> None:
    """Add `models`, `promote` and `rollback` to the root `mlops` app."""
    app.add_typer(models_app, name="models")
    app.command("promote")(promote_command)
    app.command("rollback")(rollback_command)

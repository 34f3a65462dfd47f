"""``mlops status``: services, champion, scorer lag, the last windows, the next retraining, the last decisions."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from mlops.cli.common import JsonOption, ProfileOption, settings_for


def register(app: typer.Typer) -> None:
    """Add this module's commands or sub-apps to the root `mlops` app."""
    app.command("status")(status)


def status(
    profile: ProfileOption = None,
    as_json: JsonOption = False,
    windows: Annotated[int, typer.Option("--windows", min=1, help="Newest closed windows to show.")] = 5,
    decisions: Annotated[int, typer.Option("--decisions", min=1, help="Newest loop decisions to show.")] = 5,
) -> None:
    """The whole system on one screen. Exit code 1 if a service does not answer."""
    from mlops.status import gather  # heavy: the registry's and the scorer's imports

    report = gather(settings_for(profile), windows=windows, decisions=decisions)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
    else:
        _print(report)
    if not all(row["ready"] for row in report["services"]):
        raise typer.Exit(1)


def _print(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    services = Table("service", "address", "ready", title="services", title_justify="left")
    for row in report["services"]:
        services.add_row(row["name"], row["address"], "[green]yes[/]" if row["ready"] else "[red]no[/]")
    console.print(services)

    champion = report["champion"]
    if "error" in champion or champion.get("version") is None:
        console.print(f"champion: {champion.get('error') or champion.get('note')}")
    else:
        metrics = ", ".join(f"{k} {v:.3f}" for k, v in champion.items() if k.startswith("val_") and v is not None)
        console.print(f"champion: {champion['model']} v{champion['version']} ({champion['trigger']}, "
                      f"registered {champion['created'][:19]}; {metrics})")

    scorer = report["scorer"]
    if "error" in scorer:
        console.print(f"scorer: {scorer['error']}")
    elif not scorer["started"]:
        console.print(f"scorer: group {scorer['group']} has committed nothing on {scorer['topic']} yet")
    else:
        per_partition = ", ".join(f"p{p} {n}" for p, n in scorer["lag"].items())
        console.print(f"scorer lag: {scorer['total_lag']} readings behind on {scorer['topic']} ({per_partition})")

    windows = Table("id", "kind", "version", "end", "predictions", "result", title="last windows",
                    title_justify="left")
    for w in report["windows"].get("newest", []):
        windows.add_row(str(w["id"]), w["kind"], w["version"], w["end"][:19], str(w["predictions"]), _result(w))
    console.print(windows if report["windows"].get("newest") else
                  f"last windows: {report['windows'].get('error', 'none yet (`mlops monitor` or `mlops loop run`)')}")

    schedule = report["schedule"]
    if "error" in schedule:
        console.print(f"schedule: {schedule['error']}")
    elif not schedule["cron"]:
        console.print("next scheduled retraining: none (policy.schedule_cron is not set)")
    else:
        leader = schedule["leader"] or schedule["note"]
        console.print(f"next scheduled retraining: {schedule['next_run'][:19]} ({schedule['cron']}; {leader})")

    decisions = Table("time", "kind", "version", "previous", "actor", "reason", title="last decisions",
                      title_justify="left")
    for d in report["decisions"].get("newest", []):
        decisions.add_row(d["time"][:19], d["kind"], d["version"] or "", d["previous"] or "", d["actor"] or "",
                          d["reason"][:90])
    console.print(decisions if report["decisions"].get("newest") else
                  f"last decisions: {report['decisions'].get('error', 'none yet')}")


def _result(window: dict[str, Any]) -> str:
    if window["kind"] == "drift":
        if window["drift_score"] is not None and window["drift_threshold"]:
            verdict = "drifted" if window["drifted"] else "fine"
            return f"drift score {window['drift_score']:.2f} / {window['drift_threshold']:.2f} ({verdict})"
        return f"drift share {window['drift_share']:.2f}" if window["drift_share"] is not None else ""
    return ", ".join(f"{k} {v:.3f}" for k, v in window["metrics"].items() if v is not None)

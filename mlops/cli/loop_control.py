"""``mlops loop run``, ``mlops loop history`` and ``mlops scheduler``: the closed loop's own commands."""

from __future__ import annotations

import json
import signal
import threading
from typing import Annotated

import typer

from mlops.cli.common import JsonOption, ProfileOption, settings_for

loop_app = typer.Typer(help="The closed loop: monitor + retraining controller, and its audit trail.",
                       no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add `loop ...` and `scheduler` to the root app."""
    app.add_typer(loop_app, name="loop")
    app.command("scheduler")(scheduler)


@loop_app.command("run")
def run(
    profile: ProfileOption = None,
    max_windows: Annotated[int | None, typer.Option("--max-windows", min=1)] = None,
    idle_exit: Annotated[float | None, typer.Option("--idle-exit", min=0.0)] = None,
) -> None:
    """Monitor windows and act on them: retrain on drift, gate, promote, roll back a worse champion."""
    from rich.console import Console

    from mlops.log import configure_logging
    from mlops.monitor.controller import LoopController
    from mlops.monitor.metrics import serve_loop_metrics
    from mlops.monitor.service import Monitor
    from mlops.store.results import WindowResult

    configure_logging()
    settings = settings_for(profile)
    stop_metrics = serve_loop_metrics(settings)  # first: a port in use fails before the warm-up
    console = Console(stderr=True)
    controller = LoopController(settings, report=console.print, baseline_metric=champion_baseline(settings))
    controller.champion_version = champion_version(settings)
    controller.warm_up()
    monitor = Monitor(settings)

    @monitor.on_window
    def _act(result: WindowResult) -> None:
        decision = controller.on_window(result)
        detail = (f"drift share {result.drift_share:.2f}" if result.kind == "drift" and result.drift_share is not None
                  else ", ".join(f"{k} {v:.3f}" for k, v in (result.metrics or {}).items() if not k.startswith("n_")))
        console.print(f"window {result.window_id} {result.kind} v{result.model_version}: {detail}"
                      + (f" -> {decision.reason}" if decision and decision.reason != "window is fine" else ""))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        status = monitor.run(max_windows=max_windows, idle_exit_s=idle_exit, stop=stop)
        controller.wait_idle(settings.policy.evaluation_timeout_s)
    finally:
        controller.close()
        stop_metrics()
    typer.echo(f"loop stopped: {status.windows} windows, MLflow run {status.run_id}")


def champion_version(settings: object) -> str | None:
    from mlops.errors import MlopsError
    from mlops.registry.loader import resolve_alias

    try:
        return resolve_alias(settings)  # type: ignore[arg-type]
    except MlopsError:
        return None


def champion_baseline(settings: object) -> float | None:
    """The champion's validation value of the primary metric (for the performance-drop test)."""
    from mlops.errors import MlopsError
    from mlops.registry.catalog import version_info
    from mlops.registry.loader import resolve_alias

    try:
        info = version_info(settings, resolve_alias(settings))  # type: ignore[arg-type]
    except MlopsError:
        return None
    return info.metrics.get("val_" + settings.policy.primary_metric)  # type: ignore[attr-defined]


@loop_app.command("history")
def history(
    profile: ProfileOption = None,
    as_json: JsonOption = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show the newest N events.")] = 50,
    kind: Annotated[list[str] | None, typer.Option("--kind", help="Only these kinds (repeatable).")] = None,
) -> None:
    """The audit trail: every window result, trigger, retraining, evaluation, promotion and rollback."""
    from rich.console import Console
    from rich.table import Table

    from mlops import store

    events = list(reversed(store.list_events(settings_for(profile), kinds=kind, limit=limit, newest_first=True)))
    if as_json:
        typer.echo(json.dumps([e.to_dict() for e in events], indent=2, default=str))
        return
    table = Table("id", "time", "kind", "version", "previous", "actor", "reason")
    for e in events:
        table.add_row(str(e.id), f"{e.time:%Y-%m-%d %H:%M:%S}", e.kind, e.model_version or "",
                      e.previous_version or "", e.actor or "", (e.reason or "")[:100])
    Console().print(table)


def scheduler(profile: ProfileOption = None) -> None:
    """Scheduled retraining (policy.schedule_cron) with APScheduler on the project's database; one leader."""
    from mlops.log import configure_logging
    from mlops.monitor.scheduler import run_scheduler

    configure_logging()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run_scheduler(settings_for(profile), stop, report=typer.echo)

"""`mlops monitor` (and, beside it, the loop's other commands).

Each command sits in its own ``_register_<name>(app)``, called from :func:`register`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mlops.cli.common import ProfileOption, settings_for


def register(app: typer.Typer) -> None:
    """Add this module's commands or sub-apps to the root `mlops` app."""
    _register_monitor(app)


def _register_monitor(app: typer.Typer) -> None:
    @app.command("monitor")
    def monitor(
        profile: ProfileOption = None,
        max_windows: Annotated[int | None, typer.Option("--max-windows", min=1,
                                                        help="Stop after this many window results.")] = None,
        idle_exit: Annotated[float | None, typer.Option("--idle-exit", min=0.0,
                                                        help="Stop after this many seconds without records.")] = None,
        group: Annotated[str | None, typer.Option("--group",
                                                  help="Consumer group (default: monitor.group_id).")] = None,
    ) -> None:
        """Watch predictions and late labels: drift and realised performance per window (Evidently)."""
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text

        from mlops.log import configure_logging
        from mlops.monitor.metrics import serve_loop_metrics
        from mlops.monitor.service import Monitor, MonitorStatus
        from mlops.store.results import WindowResult

        configure_logging()
        settings = settings_for(profile)
        console = Console(stderr=True)

        def line(status: MonitorStatus) -> Text:
            drift = "-" if status.latest_drift_share is None else f"{status.latest_drift_share:.2f}"
            f1 = "-" if status.latest_f1 is None else f"{status.latest_f1:.3f}"
            return Text(f"monitor: {status.predictions} predictions, {status.labels} labels, "
                        f"{status.windows} windows | drift share {drift} | f1 {f1} | "
                        f"awaiting labels {status.pending_labels} | model v{status.model_version or '-'} | "
                        f"dead letters {status.dead_letters}")

        with Live(line(MonitorStatus()), console=console, refresh_per_second=2, transient=False) as live:
            monitor = Monitor(settings, group_id=group, on_status=lambda s: live.update(line(s)))

            @monitor.on_window
            def _show(result: WindowResult) -> None:
                if result.kind == "drift":
                    detail = (f"drift share {result.drift_share:.2f}, dataset drift {result.dataset_drift}, "
                              f"prediction drift {result.prediction_drift}")
                else:
                    detail = ", ".join(f"{k} {v:.3f}" for k, v in (result.metrics or {}).items())
                live.console.print(f"window {result.window_id} ({result.kind}, v{result.model_version}, "
                                   f"{result.n_predictions} predictions): {detail}")

            stop_metrics = serve_loop_metrics(settings)
            try:
                status = monitor.run(max_windows=max_windows, idle_exit_s=idle_exit)
            finally:
                stop_metrics()
        typer.echo(f"monitor stopped: {status.windows} windows, MLflow run {status.run_id}")

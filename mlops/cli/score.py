"""``mlops score``: the exactly-once streaming scorer."""

from __future__ import annotations

import signal
import threading
import time
from typing import Annotated

import typer
from rich.console import Console

from mlops.cli.common import ProfileOption, settings_for
from mlops.log import configure_logging

console = Console(stderr=True)


def score(
    profile: ProfileOption = None,
    group: Annotated[str, typer.Option("--group", help="Consumer group; scorers in one group share partitions.")]
    = "mlops-scorer",
    instance: Annotated[str, typer.Option("--instance", help="This process's id within the group (stable "
                                          "across restarts; distinct per process).")] = "0",
    max_events: Annotated[int | None, typer.Option("--max-events", help="Stop after this many readings.")] = None,
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="Prometheus port (0: off); "
                                                     "default scorer.metrics_port.")] = None,
) -> None:
    """Score readings with the champion model, exactly once, until stopped (Ctrl-C or SIGTERM)."""
    from mlops.serve.metrics import ScorerMetrics
    from mlops.serve.scorer import Scorer, ScoreSummary

    configure_logging()
    settings = settings_for(profile)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_args: stop.set())
    metrics = ScorerMetrics()
    metrics.serve(settings.scorer.metrics_port if metrics_port is None else metrics_port)
    started = time.monotonic()
    last_report = [0.0]

    def progress(summary: ScoreSummary) -> None:
        now = time.monotonic()
        if now - last_report[0] >= 2.0:
            last_report[0] = now
            rate = summary.processed / max(now - started, 1e-9)
            console.print(f"scored {summary.scored} dead letters {summary.dead_letters} batches {summary.batches} "
                          f"aborted {summary.aborted} model v{summary.model_version} ({rate:,.0f}/s)")

    try:
        summary = Scorer(settings, group_id=group, instance_id=instance, metrics=metrics).run(
            max_events=max_events, stop=stop, on_batch=progress)
    finally:
        metrics.close()
    console.print(f"done: scored {summary.scored}, dead letters {summary.dead_letters}, "
                  f"batches {summary.batches}, aborted {summary.aborted}, model v{summary.model_version}")


def register(app: typer.Typer) -> None:
    """Add ``mlops score`` to the root app."""
    app.command("score")(score)

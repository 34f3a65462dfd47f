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
    metrics.serve(settings.scorer.metrics_port if metrics_port is None else metrics_port,
                  addr=settings.scorer.metrics_host)
    started = time.monotonic()
    latest: list[ScoreSummary] = []
    finished = threading.Event()

    def report_progress() -> None:
        # Every 2 s while the counts change, from its own thread: the last batch before the stream goes
        # quiet is shown too (reporting from the batch callback would leave a stale line up while idle).
        shown: tuple[int, ...] = ()
        while not finished.wait(2.0):
            if not latest:
                continue
            summary = latest[-1]
            counts = (summary.scored, summary.dead_letters, summary.batches, summary.aborted)
            if counts != shown:
                shown = counts
                rate = summary.processed / max(time.monotonic() - started, 1e-9)
                console.print(f"scored {summary.scored} dead letters {summary.dead_letters} batches "
                              f"{summary.batches} aborted {summary.aborted} model v{summary.model_version} "
                              f"({rate:,.0f}/s)")

    def on_batch(summary: ScoreSummary) -> None:
        latest[:] = [summary]

    reporter = threading.Thread(target=report_progress, name="score-progress", daemon=True)
    reporter.start()
    try:
        summary = Scorer(settings, group_id=group, instance_id=instance, metrics=metrics).run(
            max_events=max_events, stop=stop, on_batch=on_batch)
    finally:
        finished.set()
        reporter.join(timeout=5)
        metrics.close()
    console.print(f"done: scored {summary.scored}, dead letters {summary.dead_letters}, "
                  f"batches {summary.batches}, aborted {summary.aborted}, model v{summary.model_version}")


def register(app: typer.Typer) -> None:
    """Add ``mlops score`` to the root app."""
    app.command("score")(score)

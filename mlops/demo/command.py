"""``mlops demo``: the whole loop on embedded defaults, from an empty data directory to a report.

The demo runs in its own data directory (``demo.data_dir``, wiped at the start) and on its own
ports (every configured port + ``demo.port_offset``), so it never mixes with the services or data
of ``mlops services up``. Child processes get the same settings through ``MLOPS_*`` variables.

The terminal shows progress lines only: every process the demo starts writes to
``<data_dir>/logs/``, and this process's own log records and library warnings go to
``<data_dir>/logs/demo.log``. The scenario is ``demo.scenario`` (``MLOPS_DEMO__SCENARIO=fault_mode
mlops demo`` runs another one; ``stationary`` shows a loop that does not retrain).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from mlops.config import Settings, load_settings
from mlops.demo.report import summarise
from mlops.demo.run import LoopRun
from mlops.services import manager

__all__ = ["as_environment", "demo_overrides", "run_demo"]


def _with_port(address: str, offset: int) -> str:
    head, _, port = address.rpartition(":")
    return f"{head}:{int(port.split('/')[0]) + offset}"


def demo_overrides(settings: Settings) -> dict[str, dict[str, Any]]:
    """Settings that move the demo into its own data directory and ports."""
    offset = settings.demo.port_offset
    return {
        "paths": {"data_dir": str(settings.demo.data_dir)},
        "kafka": {"bootstrap_servers": _with_port(settings.kafka.bootstrap_servers, offset),
                  "controller_port": settings.kafka.controller_port + offset},
        "mlflow": {"tracking_uri": _with_port(settings.mlflow.tracking_uri, offset)},
        "api": {"port": settings.api.port + offset},
        "scorer": {"metrics_port": settings.scorer.metrics_port + offset},
        "monitor": {"metrics_port": settings.monitor.metrics_port + offset},
    }


def as_environment(overrides: dict[str, Any], prefix: str = "MLOPS_") -> dict[str, str]:
    """``{"kafka": {"topics": {"readings": "x"}}}`` -> ``{"MLOPS_KAFKA__TOPICS__READINGS": "x"}``."""
    env: dict[str, str] = {}
    for key, value in overrides.items():
        name = f"{prefix}{key.upper()}"
        if isinstance(value, dict):
            env.update(as_environment(value, name + "__"))
        else:
            env[name] = json.dumps(value) if isinstance(value, list) else str(value)
    return env


def _fresh_data_dir(settings: Settings, console: Console) -> None:
    """Stop services a previous demo left running and empty its data directory."""
    manager.down(settings, report=console.print)
    if settings.data_dir.exists():
        shutil.rmtree(settings.data_dir)


def _log_to_file(path: Path) -> None:
    """Send this process's log records and Python warnings to ``path`` instead of the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


def run_demo(base: Settings, keep_running: bool, console: Console) -> Path | None:
    """Run the whole loop; return the report's path."""
    overrides = demo_overrides(base)
    # This process's Kafka clients log errors only (librdkafka writes its log lines to stderr).
    quiet = {**overrides, "kafka": {**overrides["kafka"], "client": {**base.kafka.client, "log_level": 3}}}
    settings = load_settings(base.profile, overrides=quiet)
    demo = base.demo
    t0 = time.monotonic()

    def say(line: str) -> None:
        console.print(line, markup=False, highlight=False)

    console.rule(f"mlops demo: scenario '{demo.scenario}', data in {settings.data_dir}")
    _fresh_data_dir(settings, console)
    _log_to_file(settings.log_dir / "demo.log")
    try:
        manager.up(settings, report=say)
        run = LoopRun(settings, scenario=demo.scenario, devices=demo.devices, seed=demo.seed,
                      history_readings=demo.history_readings, rate=demo.rate,
                      after_promotion_windows=demo.after_promotion_windows, timeout_s=demo.timeout_s,
                      report=say, env=as_environment(overrides))
        outcome = run.run()
    finally:
        if not keep_running:
            manager.down(settings, report=say)
    summary = summarise(settings, outcome.onset_time, outcome.initial_version)
    console.rule("summary")
    for name, value in summary.as_rows():
        say(f"{name:>34}: {value}")
    say(f"model versions: initial v{outcome.initial_version}, promoted by the loop: "
        f"{', '.join('v' + v for v in outcome.promoted_versions) or 'none'}, serving v{outcome.serving_version}")
    say("wall clock: " + ", ".join(f"{name.removesuffix('_s').replace('_', ' ')} at {value:.0f}s"
                                   for name, value in outcome.timings.items()))
    say(f"report: {outcome.report_path}")
    say(f"logs: {settings.log_dir}")
    say(f"MLflow UI: {settings.mlflow.tracking_uri}" + ("" if keep_running else " (stopped; run with --follow to "
                                                       "keep the services)"))
    console.rule(f"demo finished in {time.monotonic() - t0:.0f}s")
    return outcome.report_path

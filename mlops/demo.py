"""``mlops demo``: the whole loop on embedded defaults, from an empty data directory to a report.

The demo runs in its own data directory (``demo.data_dir``, wiped at the start) and on its own
ports (every configured port + ``demo.port_offset``), so it never mixes with the services or data
of ``mlops services up``. Child processes get the same settings through ``MLOPS_*`` variables.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from mlops.config import Settings, load_settings
from mlops.services import manager


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


def run_demo(base: Settings, keep_running: bool, console: Console) -> Path | None:
    """Run the whole loop; return the report's path."""
    from mlops.loop_run import LoopRun

    overrides = demo_overrides(base)
    settings = load_settings(base.profile, overrides=overrides)
    demo = base.demo
    t0 = time.monotonic()
    console.rule(f"mlops demo: scenario '{demo.scenario}', data in {settings.data_dir}")
    _fresh_data_dir(settings, console)
    try:
        manager.up(settings, report=console.print)
        run = LoopRun(settings, scenario=demo.scenario, devices=demo.devices, seed=demo.seed,
                      history_readings=demo.history_readings, rate=demo.rate,
                      after_promotion_windows=demo.after_promotion_windows, timeout_s=demo.timeout_s,
                      report=console.print, env=as_environment(overrides))
        outcome = run.run()
    finally:
        if not keep_running:
            manager.down(settings, report=console.print)
    from mlops.report import summarise

    summary = summarise(settings, outcome.onset_time, outcome.initial_version)
    console.rule("summary")
    for name, value in summary.as_rows():
        console.print(f"{name:>32}: {value}")
    console.print(f"model versions: initial v{outcome.initial_version}, promoted by the loop "
                  f"{', '.join('v' + v for v in outcome.promoted_versions)}, serving v{outcome.serving_version}")
    console.print(f"report: {outcome.report_path}")
    console.print(f"MLflow UI: {settings.mlflow.tracking_uri}" + ("" if keep_running else " (stopped; run with "
                                                                 "--follow to keep the services)"))
    console.rule(f"demo finished in {time.monotonic() - t0:.0f}s")
    return outcome.report_path

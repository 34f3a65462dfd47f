"""A simulation run end to end: simulator -> Kafka, with its true drift onset recorded on disk.

Every run writes ``<data_dir>/scenarios/<run-id>.json``: the scenario, seed, fleet size, topics,
and the drift onset (event time; index of the first post-onset reading in the run; its partition
and offset, and the first post-onset offset of every readings partition). It is written when the
run starts (onset time and cycle are known up front) and again when it ends (offsets and counts).
:func:`latest_run` reads the newest one: the ground truth a drift monitor is measured against.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops.config import Settings
from mlops.data.publish import Progress, PublishReport, publish
from mlops.data.scenarios import Scenario
from mlops.data.simulator import Simulator
from mlops.errors import ConfigError
from mlops.log import get_logger

__all__ = ["latest_run", "new_run_id", "onset_of", "runs_dir", "simulate"]

log = get_logger(__name__)


def runs_dir(settings: Settings) -> Path:
    return settings.data_dir / "scenarios"


def new_run_id(scenario: str, seed: int, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{scenario}-s{seed}"


def simulate(settings: Settings, scenario: Scenario, *, devices: int, seed: int, events: int | None = None,
             duration_s: float | None = None, rate: float | None = None, start_time: datetime | None = None,
             label_delay_cycles: float | None = None, run_id: str | None = None,
             progress: Progress | None = None, clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Run the simulator into Kafka until ``events`` readings or ``duration_s`` of wall time.

    Returns the run record (also written to ``<data_dir>/scenarios/<run-id>.json``).
    """
    if events is None and duration_s is None:
        raise ConfigError("simulate: give --events or --duration (a run must be bounded)")
    if events is not None and events < 1:
        raise ConfigError(f"simulate: --events must be at least 1, got {events}")
    sim = Simulator(scenario, devices=devices, seed=seed, cycle_seconds=settings.features.cycle_seconds,
                    start_time=start_time, label_delay_cycles=label_delay_cycles)
    run_id = run_id or new_run_id(scenario.name, seed)
    onset = sim.onset
    record: dict[str, Any] = {
        "run_id": run_id, "scenario": scenario.name, "seed": seed, "devices": devices,
        "start_time": sim.start_time.isoformat(), "cycle_seconds": sim.cycle_seconds,
        "label_delay_s": sim.label_delay.total_seconds(),
        "topics": {"readings": settings.kafka.topics.readings, "labels": settings.kafka.topics.labels},
        "onset": None if onset is None else {
            "kind": onset.kind, "cycle": onset.cycle, "event_time": onset.event_time.isoformat(),
            "ramp_end_time": onset.ramp_end_time.isoformat(), "affected_devices": onset.affected_devices,
            "reading_index": None, "partition": None, "offset": None, "partition_offsets": {}},
        "status": "running", "started_at": datetime.now(UTC).isoformat(),
    }
    path = _write(settings, record)
    log.info("simulation started", run_id=run_id, scenario=scenario.name, seed=seed, devices=devices,
             record=str(path))
    deadline = None if duration_s is None else clock() + duration_s
    watch = None if onset is None else (lambda r: r.event_time >= onset.event_time)
    report = publish(sim.events(max_readings=events,
                                should_stop=None if deadline is None else (lambda: clock() >= deadline)),
                     settings, rate=rate, watch=watch, progress=progress, clock=clock, sleep=sleep)
    _finish(record, report)
    _write(settings, record)
    return record


def _finish(record: dict[str, Any], report: PublishReport) -> None:
    record["status"] = "done"
    record["finished_at"] = datetime.now(UTC).isoformat()
    record["counts"] = report.as_dict()
    if record["onset"] is not None and report.first_match is not None:
        record["onset"].update({
            "reading_index": report.first_match.index, "partition": report.first_match.partition,
            "offset": report.first_match.offset,
            "partition_offsets": {str(p): o for p, o in sorted(report.first_match_offsets.items())}})
    elif record["onset"] is not None:
        record["onset"]["reached"] = False  # the run ended before the onset


def _write(settings: Settings, record: dict[str, Any]) -> Path:
    directory = runs_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{record['run_id']}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def latest_run(settings: Settings, scenario: str | None = None) -> dict[str, Any] | None:
    """The newest run record (optionally of one scenario), or None if there is none."""
    directory = runs_dir(settings)
    if not directory.exists():
        return None
    records = [json.loads(p.read_text()) for p in directory.glob("*.json")]
    records = [r for r in records if scenario is None or r.get("scenario") == scenario]
    return max(records, key=lambda r: r["started_at"], default=None)


def onset_of(record: dict[str, Any]) -> datetime | None:
    """The drift onset event time of a run record (None for a stationary run)."""
    onset = record.get("onset")
    return None if not onset else datetime.fromisoformat(onset["event_time"])


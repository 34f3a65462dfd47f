"""A per-row-flag data set (AI4I 2020's layout, written here) replayed through the real broker with its labels."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlops.config import Settings
from mlops.data.schemas import parse_label, parse_reading
from tests.conftest import REPO
from tests.helpers_replay import write_ai4i
from tests.integration.test_simulate_replay import consume_all, topic_settings

pytestmark = pytest.mark.integration

LIVES = [120, 80, 150, 100, 50]
FAILURES = {119: "TWF", 150: "HDF", 151: "PWF", 300: "OSF", 333: "RNF", 449: "TWF"}
"""Rows 119 and 449 end their tool lives with a tool-wear failure; the others fail mid-life."""


def test_cli_replays_ai4i_with_flag_labels_and_tool_lives(services: Settings, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops.cli import app

    settings = topic_settings(services, tmp_path)
    for key, value in (("BOOTSTRAP_SERVERS", settings.kafka.bootstrap_servers),
                       ("TOPICS__READINGS", settings.kafka.topics.readings),
                       ("TOPICS__LABELS", settings.kafka.topics.labels)):
        monkeypatch.setenv(f"MLOPS_KAFKA__{key}", value)
    data = tmp_path / "ai4i2020.csv"
    frame = write_ai4i(data, LIVES, FAILURES)
    result = CliRunner().invoke(app, ["replay", str(data), "--mapping", str(REPO / "configs/replay/ai4i2020.yaml")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    # Six flagged rows fail; of the four tool changes, the two after rows 119 and 449 followed a failure.
    assert (report["readings"], report["labels"]) == (sum(LIVES), 6 + 2)

    readings = [parse_reading(m.value()) for m in consume_all(settings, settings.kafka.topics.readings, sum(LIVES))]
    labels = [parse_label(m.value()) for m in consume_all(settings, settings.kafka.topics.labels, 8)]
    assert len(readings) == sum(LIVES) == len(frame)
    assert Counter(lab.kind for lab in labels) == {"failure": int(frame["Machine failure"].sum()), "maintenance": 2}
    assert {r.device_id for r in readings} == {"ai4i-ai4i2020"} and {r.device_type for r in readings} == {"ai4i-mill"}
    by_time = {r.event_time: r for r in readings}
    failed_wear = sorted(by_time[lab.event_time].sensors["tool_wear"] for lab in labels if lab.kind == "failure")
    assert failed_wear == sorted(float(frame.at[row, "Tool wear [min]"]) for row in FAILURES)
    # A maintenance label marks the last reading before the tool wear drops (rows 199 and 349).
    changed = sorted(by_time[lab.event_time].cycle for lab in labels if lab.kind == "maintenance")
    assert changed == [LIVES[1] - 1, LIVES[2] - 1]

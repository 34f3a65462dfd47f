"""The consumers' error policy on the real broker: a fatal error stops the process with its message and exit 1.

The fatal error is provoked, not simulated: two lake sinks join one consumer group with the same
static ``group.instance.id`` (``lake.instance_id``), each with a lake directory of its own. The
broker fences the first; librdkafka then reports a fatal consumer error (code ``_FATAL``, whose
``fatal()`` says False), which the sink must not log and ignore.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mlops.config import Settings
from mlops.data import lake
from mlops.testing import unique
from tests.integration.test_lake_sink import _create_topics, _lake_settings, _produce, _reading, _start_sink

pytestmark = pytest.mark.integration


def _rows(settings: Settings) -> int:
    try:
        return sum(c.rows for c in lake.read_commits(settings, "readings"))
    except lake.LakeError:
        return 0


def test_a_fenced_lake_sink_exits_non_zero_with_the_reason(services, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    first = _lake_settings(services, tmp_path / "first")
    second = first.model_copy(update={"paths": first.paths.model_copy(update={"data_dir": tmp_path / "second"})})
    _create_topics(first)
    readings = [_reading(i) for i in range(300)]
    _produce(first, first.kafka.topics.readings, list(readings))
    monkeypatch.setenv("MLOPS_LAKE__INSTANCE_ID", unique("same-sink"))  # both processes inherit it
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"

    fenced = _start_sink(first, first_log, "--batch-rows", "100", "--idle-exit", "300")
    survivor = None
    try:
        deadline = time.monotonic() + 90
        while _rows(first) < len(readings):  # a member of the group, caught up, still running
            assert fenced.poll() is None, first_log.read_text()
            assert time.monotonic() < deadline, f"the first sink did not catch up:\n{first_log.read_text()}"
            time.sleep(0.05)  # polling interval of the condition
        survivor = _start_sink(second, second_log, "--batch-rows", "100", "--idle-exit", "5")

        code = fenced.wait(90)  # without the policy it would carry on until --idle-exit (300 s)
        output = first_log.read_text()
        assert code == 1, output
        error = [line for line in output.splitlines() if line.startswith("error: ")]
        assert len(error) == 1, output
        assert error[0].startswith(f"error: lake sink (group {first.lake.group_id}): fatal Kafka error _FATAL: ")
        assert "Static consumer fenced by other consumer with same group.instance.id" in error[0]
        assert "another process consumes with the same group.instance.id: stop one of them" in error[0]
        assert "Traceback" not in output

        # The process that took the identity over works normally: the whole topic in its own lake.
        assert survivor.wait(120) == 0, second_log.read_text()
        assert _rows(second) == len(readings)
    finally:
        for process in (fenced, survivor):
            if process is not None and process.poll() is None:
                process.kill()
    assert _rows(first) == len(readings)  # what the first sink committed before it stopped stays whole

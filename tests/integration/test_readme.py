"""The README's "Using it" block, run as written: each line parsed from README.md, executed as its own
process against the session's broker and MLflow (by environment variables), and its effect checked.

Every command of the block needs a check in CHECKS (or a server in SERVERS): a new line in the README
without one fails this test, so the README and the test cannot drift apart. The servers (``score``,
``loop run``, ...) are started, watched until they show their effect, and stopped as a user would.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlops import kafka
from mlops.config import Settings, load_settings
from mlops.testing import free_port, unique
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.spark, pytest.mark.timeout(1800)]  # about 10 min on 2 busy cores

SIMULATED = 8_000
CMAPSS_READINGS, CMAPSS_ENGINES = 20_631, 100  # train_FD001.txt: rows, engines (each one's last row fails)


def readme_block(readme: Path = REPO / "README.md") -> list[str]:
    """The lines of the first bash block under the "Using it" heading."""
    text = readme.read_text()
    section = text[text.index("\n## Using it"):]
    match = re.search(r"```bash\n(.*?)```", section, re.S)
    assert match, "README.md: no bash block under '## Using it'"
    return [line for line in match.group(1).splitlines() if line.strip()]


def command_of(argv: list[str]) -> str:
    """``services up``, ``train``, ``loop run``: the sub-command words, without options and arguments."""
    words = []
    for word in argv[1:]:
        if word.startswith("-") or "/" in word or word[0].isdigit():
            break
        words.append(word)
    return " ".join(words)


@dataclass
class Tour:
    """The README user's shell: environment, working directory, and what earlier steps left."""

    settings: Settings
    env: dict[str, str]
    outputs: dict[str, list[subprocess.CompletedProcess[str]]] = field(default_factory=dict)

    def run(self, argv: list[str], timeout_s: float = 600.0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(argv, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
        assert done.returncode == 0, f"{shlex.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return done

    def champion(self) -> str:
        from mlops.mlflow import tracking_client

        client = tracking_client(self.settings)
        return str(client.get_model_version_by_alias(self.settings.mlflow.registered_model, "champion").version)

    def version_tags(self, version: str) -> dict[str, str]:
        from mlops.mlflow import tracking_client

        client = tracking_client(self.settings)
        run_id = client.get_model_version(self.settings.mlflow.registered_model, version).run_id
        return dict(client.get_run(run_id).data.tags)


@pytest.fixture()
def tour(services: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tour:
    names = {t: unique(f"readme-{t}") for t in ("readings", "labels", "predictions", "dlq", "model_events")}
    overrides = {
        "MLOPS_PATHS__DATA_DIR": str(tmp_path / "data"),
        "MLOPS_KAFKA__BOOTSTRAP_SERVERS": services.kafka.bootstrap_servers,
        "MLOPS_MLFLOW__TRACKING_URI": services.mlflow.tracking_uri,
        # The session's services already run: to `services up/down` they are external ones.
        "MLOPS_KAFKA__MANAGED": "false", "MLOPS_MLFLOW__MANAGED": "false",
        **{f"MLOPS_KAFKA__TOPICS__{t.upper()}": name for t, name in names.items()},
        "MLOPS_MLFLOW__REGISTERED_MODEL": unique("readme"), "MLOPS_MLFLOW__EXPERIMENT": unique("readme"),
        "MLOPS_SCORER__METRICS_PORT": str(free_port()), "MLOPS_API__PORT": str(free_port()),
        "COLUMNS": "200",  # a wide terminal: rich does not wrap the tables the checks read
    }
    for key in [k for k in os.environ if k.startswith("MLOPS_") and k != "MLOPS_CONFIG_DIR"]:
        monkeypatch.delenv(key)
    for key, value in overrides.items():
        monkeypatch.setenv(key, value)  # the commands' environment, and load_settings for the checks
    return Tour(load_settings("local"), dict(os.environ))


def _json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout[stdout.index("{"):])


def _lake_rows(settings: Settings, table: str) -> int:
    from mlops.data.lake import lake_files

    return sum(f.rows for f in lake_files(settings, table))


def _count(settings: Settings, topic: str, expected: int, timeout_s: float = 60.0) -> int:
    """Records of a topic (read_committed) after reading until ``expected`` or the deadline, then a bit more."""
    consumer = kafka.consumer(settings.kafka, unique("readme-count"))
    consumer.subscribe([topic])
    seen, deadline = 0, time.monotonic() + timeout_s
    try:
        while seen < expected and time.monotonic() < deadline:
            seen += sum(1 for m in consumer.consume(num_messages=5000, timeout=0.5) if m.error() is None)
        seen += sum(1 for m in consumer.consume(num_messages=5000, timeout=1.0) if m.error() is None)
    finally:
        consumer.close()
    return seen


# --- the commands that end on their own: run, then check -------------------------------------------------

def check_services_up(tour: Tour, done: subprocess.CompletedProcess[str]) -> None:
    assert "kafka: external" in done.stdout and "mlflow: external" in done.stdout, done.stdout
    topics = kafka.admin(tour.settings.kafka).list_topics(timeout=10).topics
    assert {tour.settings.kafka.topics.readings, tour.settings.kafka.topics.model_events} <= set(topics)


def check_simulate(tour: Tour, done: subprocess.CompletedProcess[str]) -> None:
    record = _json(done.stdout)
    assert record["counts"]["readings"] == SIMULATED and record["counts"]["labels"] > 50, record["counts"]
    assert record["start_time"].startswith("2026-01-01")


def check_replay(tour: Tour, done: subprocess.CompletedProcess[str]) -> None:
    report = _json(done.stdout)
    assert (report["readings"], report["labels"]) == (CMAPSS_READINGS, CMAPSS_ENGINES), report


def check_lake_sink(tour: Tour, done: subprocess.CompletedProcess[str]) -> None:
    labels = _json(tour.outputs["simulate"][0].stdout)["counts"]["labels"] + CMAPSS_ENGINES
    assert _lake_rows(tour.settings, "readings") == SIMULATED + CMAPSS_READINGS
    assert _lake_rows(tour.settings, "labels") == labels


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def check_train(tour: Tour, done: subprocess.CompletedProcess[str]) -> None:
    from mlops.config import parse_duration
    from mlops.train.dataset import lake_end

    version = str(len(tour.outputs["train"]))
    assert f"version {version} registered" in " ".join(done.stdout.split()), done.stdout  # the title may wrap
    tags = tour.version_tags(version)
    since, until = (datetime.fromisoformat(tags[f"lineage.{k}"]) for k in ("since", "until"))
    given_until, window = _option(done.args, "--until"), _option(done.args, "--window")
    # The README's own bounds: --until as given, else the lake's newest event (2026-01-01), not the wall clock.
    expected_until = datetime.fromisoformat(given_until) if given_until else lake_end(tour.settings)
    assert until == expected_until and until.year == 2026, (tags["lineage.until"], expected_until)
    assert since == until - parse_duration(window or tour.settings.train.window), tags["lineage.since"]
    features = tags["lineage.features"].split(",")
    assert any(f.startswith("temperature") for f in features) and not any(f.startswith("s_") for f in features)
    # Only the pumps were read: each is one of the 20 simulated devices' readings.
    assert 0 < int(tags["lineage.readings.rows"]) <= SIMULATED


def check_models_list(tour: Tour, done: subprocess.CompletedProcess[str]) -> None:
    assert re.search(r"^\W*1\W+\S*\W+0\.\d+.*manual", done.stdout, re.M), done.stdout  # version 1, its f1, why


def check_models_describe(tour: Tour, done: subprocess.CompletedProcess[str]) -> None:
    info = json.loads(done.stdout)
    lineage = info["lineage"]
    assert info["version"] == "1" and info["trigger"] == "manual" and info["git_commit"], info
    assert lineage["readings.digest"].startswith("sha256:") and lineage["readings.rows"] > 0, lineage
    assert tour.settings.kafka.topics.readings in lineage["readings.offsets"], lineage["readings.offsets"]
    assert info["feature_spec"]["sensors"] == ["current", "pressure", "rpm", "temperature", "vibration"], info
    assert info["params"]["family"] in tour.settings.train.search_space, info["params"]


def check_promote(tour: Tour, done: subprocess.CompletedProcess[str]) -> None:
    version = done.args[2]
    assert tour.champion() == version, done.stdout
    if "--force" in done.args:
        assert "gate:" not in done.stdout, done.stdout
    else:  # judged by the gate on the pumps' labelled readings after version 1's training window
        assert re.search(r"^gate: no champion to beat; challenger f1=0\.\d+", done.stdout, re.M), done.stdout


def check_rollback(tour: Tour, done: subprocess.CompletedProcess[str]) -> None:
    assert tour.champion() == "1", done.stdout


def check_loop_history(tour: Tour, done: subprocess.CompletedProcess[str]) -> None:
    for kind in ("promot", "rollback"):
        assert kind in done.stdout, done.stdout


def check_status(tour: Tour, done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, done.stdout + done.stderr  # every service answers
    champion = f"champion: {tour.settings.mlflow.registered_model} v{tour.champion()} "
    assert champion in done.stdout and "scorer lag: " in done.stdout, done.stdout
    assert "last windows" in done.stdout and "last decisions" in done.stdout, done.stdout


def check_ui(tour: Tour, done: subprocess.CompletedProcess[str]) -> None:
    assert done.stdout.strip() == tour.settings.mlflow.tracking_uri


def check_services_down(tour: Tour, done: subprocess.CompletedProcess[str]) -> None:
    from mlops.services import manager

    assert "nothing to stop" in done.stdout, done.stdout  # it started nothing: the services were external
    manager.require_ready(tour.settings)


CHECKS: dict[str, Callable[[Tour, subprocess.CompletedProcess[str]], None]] = {
    "services up": check_services_up, "simulate": check_simulate, "replay": check_replay,
    "lake-sink": check_lake_sink, "train": check_train, "models list": check_models_list,
    "models describe": check_models_describe, "promote": check_promote, "rollback": check_rollback,
    "loop history": check_loop_history, "status": check_status, "ui": check_ui, "services down": check_services_down,
}


# --- the servers: start, wait for their effect, stop --------------------------------------------------------

class Server:
    """A long-running command as its own process, its output in files; stopped with a signal."""

    def __init__(self, tour: Tour, argv: list[str], directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.out, self.err = directory / "stdout", directory / "stderr"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(argv, cwd=REPO, env=tour.env, stdout=out, stderr=err, text=True)
        self.argv = argv

    def text(self) -> str:
        return self.out.read_text() + self.err.read_text()

    def wait_for(self, condition: Callable[[], bool], what: str, timeout_s: float = 300.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert self.process.poll() is None, f"{shlex.join(self.argv)} exited early:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"{shlex.join(self.argv)}: no {what} in {timeout_s}s:\n" \
                                                f"{self.text()[-3000:]}"
            time.sleep(0.2)  # polling interval of the condition, not a synchronisation

    def stop(self, sig: signal.Signals = signal.SIGINT, timeout_s: float = 60.0) -> str:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=timeout_s)
        assert code == 0, f"{shlex.join(self.argv)} exited {code} after {sig.name}:\n{self.text()[-3000:]}"
        return self.text()

    def kill(self) -> None:
        """After a failed check: the process must not outlive the test."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


def serve_score(tour: Tour, server: Server) -> None:
    def done() -> bool:
        counts = re.findall(r"scored (\d+) dead letters (\d+)", server.text())
        return bool(counts) and int(counts[-1][0]) + int(counts[-1][1]) >= SIMULATED + CMAPSS_READINGS

    server.wait_for(done, "scored readings")
    text = server.stop()
    # The pumps are scored; the turbofans lack the champion's sensors and are dead letters.
    assert f"done: scored {SIMULATED}, dead letters {CMAPSS_READINGS}," in text, text[-2000:]
    assert _count(tour.settings, tour.settings.kafka.topics.predictions, SIMULATED) == SIMULATED


def serve_loop(tour: Tour, server: Server) -> None:
    server.wait_for(lambda: re.search(r"^window \S+ (drift|performance)", server.text(), re.M) is not None,
                    "window result")
    text = server.stop(signal.SIGTERM, timeout_s=600)  # `loop run` finishes what it started (a retraining)
    windows = re.search(r"loop stopped: (\d+) windows", text)
    assert windows and int(windows.group(1)) >= 1, text[-2000:]


def serve_scheduler(tour: Tour, server: Server) -> None:
    server.wait_for(lambda: "scheduler: leader" in server.text(), "leadership")
    server.stop()


def serve_api(tour: Tour, server: Server) -> None:
    url = f"http://{tour.settings.api.host}:{tour.settings.api.port}/v1/model"
    answer: dict[str, Any] = {}

    def answers() -> bool:
        try:
            response = httpx.get(url, headers={"X-API-Key": tour.settings.api.api_key}, timeout=5)
        except httpx.TransportError:
            return False
        answer.update(response.json() if response.status_code == 200 else {})
        return response.status_code == 200

    server.wait_for(answers, "answer from GET /v1/model")
    assert str(answer["version"]) == "1", answer
    server.stop()


def serve_features(tour: Tour, server: Server) -> None:
    server.wait_for(lambda: "features follow status" in server.text(), "status report")
    text = server.stop()
    written = re.search(r"done: (\d+) predictions, (\d+) rows written online", text)
    assert written and int(written.group(2)) > 0, text[-2000:]


SERVERS: dict[str, Callable[[Tour, Server], None]] = {
    "score": serve_score, "loop run": serve_loop, "scheduler": serve_scheduler, "api": serve_api,
    "features follow": serve_features,
}


def test_readme_using_it_runs_as_written(tour: Tour, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = readme_block()
    assert len(lines) >= 15, lines
    for number, line in enumerate(lines, 1):
        argv = shlex.split(line, comments=True)
        if argv[0] == "export":
            key, _, value = argv[1].partition("=")
            tour.env[key] = value
            monkeypatch.setenv(key, value)
            continue
        assert argv[0] == ".venv/bin/mlops", f"README line {number}: {line!r} is not an mlops command"
        command = command_of(argv)
        started = time.monotonic()
        if command in SERVERS:
            server = Server(tour, argv, tmp_path / f"{number}-{command.replace(' ', '-')}")
            try:
                SERVERS[command](tour, server)
            finally:
                server.kill()
        else:
            assert command in CHECKS, f"README line {number}: {line!r} has no check in {__name__}"
            done = tour.run(argv)
            tour.outputs.setdefault(command, []).append(done)
            CHECKS[command](tour, done)
        print(f"README line {number} ({command}): ok in {time.monotonic() - started:.1f}s")

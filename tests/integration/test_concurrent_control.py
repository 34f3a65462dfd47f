"""Two people at once: `mlops promote` and `mlops rollback` run as two real processes started together,
round after round. The champion lock serialises them: the alias always ends where the last audit row
says, every row's previous version is the row before's target, and the model events follow the same order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlops import kafka, store
from mlops.config import Settings
from mlops.registry.promotion import promote
from mlops.testing import CommittedReader, register_model, settings_env, unique
from tests.integration.test_promotion import champion, registry_settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 4


def start_mlops(settings: Settings, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **settings_env(settings), "MLOPS_DATABASE__URL": settings.database_url}
    return subprocess.Popen([sys.executable, "-m", "mlops", *args], env=env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_concurrent_promote_and_rollback_processes_leave_one_consistent_champion(
        services: Settings, tmp_path: Path) -> None:
    settings = registry_settings(services, tmp_path, unique("race"))
    topic = settings.kafka.topics.model_events
    kafka.ensure_topics(settings.kafka, [t for t in kafka.design_topics(settings.kafka) if t.name == topic])
    base, b, c = (register_model(settings, seed=s, alias=None) for s in (1, 2, 3))
    promote(settings, base, actor="setup", reason="setup", force=True)
    start_id = store.list_events(settings, newest_first=True, limit=1)[0].id
    events = CommittedReader(settings, topic)  # from the start: the setup promotion's event is the first

    overlaps: list[float] = []
    try:
        for i in range(ROUNDS):
            target = b if i % 2 == 0 else c
            began = time.monotonic()
            pair = [start_mlops(settings, "promote", target, "--force", "--reason", f"round {i} promote"),
                    start_mlops(settings, "rollback", "--to", base, "--reason", f"round {i} rollback")]
            ends = []
            for proc in pair:
                out, err = proc.communicate(timeout=120)
                ends.append(time.monotonic())
                assert proc.returncode == 0, f"{proc.args[3:]} failed:\n{out}\n{err}"
            overlaps.append(min(ends) - began)
        rows = [r for r in store.list_events(settings, kinds=["promotion", "rollback"]) if r.id > start_id]
        changed = [r for r in rows if r.details["changed"]]
        events.wait_for(1 + len(changed), timeout_s=30)
    finally:
        events.close()

    print("audit:", [(r.kind, r.previous_version, r.model_version, r.reason) for r in rows])
    print("both processes alive together for at least", [f"{s:.1f}s" for s in overlaps])
    # Both actions of every round are audited, once each.
    assert sorted(r.reason or "" for r in rows) == sorted(
        f"round {i} {a}" for i in range(ROUNDS) for a in ("promote", "rollback"))
    # In order: each action saw the one before it (the lock serialised read, move and record).
    chain = [base, *(r.model_version for r in rows)]
    assert [r.previous_version for r in rows] == chain[:-1]
    for r in rows:
        assert r.details["changed"] == (r.previous_version != r.model_version)
    # One consistent champion: the registry's alias is the last audited action's target.
    assert champion(settings) == rows[-1].model_version
    # The hints went out in the same order as the audit rows (published under the same lock).
    assert [(e["action"], e["previous_version"], e["version"]) for e in events.records[1:]] == [
        ("promote" if r.kind == "promotion" else "rollback", r.previous_version, r.model_version) for r in changed]
    assert all(r.details["event_published"] for r in changed)

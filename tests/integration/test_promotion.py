"""Promotion, rollback, the evaluation gate and the audit trail, on the real MLflow registry and Kafka."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mlops import kafka, store
from mlops.config import Settings, load_settings
from mlops.registry.catalog import aliases, list_versions
from mlops.registry.promotion import NoPreviousChampionError, PromotionRejectedError, promote, rollback
from mlops.testing import SPEC, CommittedReader, register_model, settings_env, topic_overrides, unique

pytestmark = pytest.mark.integration


def registry_settings(services: Settings, tmp_path: Path, tag: str, **api: Any) -> Settings:
    """Settings on the test services with a model, topics and database of the test's own."""
    return load_settings("local", overrides={
        "paths": {"data_dir": str(services.data_dir)},
        "kafka": {"bootstrap_servers": services.kafka.bootstrap_servers, "topics": topic_overrides(tag)},
        "mlflow": {"tracking_uri": services.mlflow.tracking_uri, "registered_model": f"model-{tag}",
                   "experiment": "registry-tests"},
        "database": {"url": f"sqlite:///{tmp_path / 'mlops.db'}"},
        "scorer": {"registry_poll_s": 3.0},
        "api": api,
    })


def evaluation_data(rows: int = 400, seed: int = 7) -> pd.DataFrame:
    """Fresh labelled rows under the rule mlops.testing's models learn (first feature + noise > 0)."""
    rng = np.random.default_rng(seed)
    names = SPEC.feature_names()
    frame = pd.DataFrame(rng.normal(size=(rows, len(names))), columns=names)
    frame["label"] = (frame[names[0]] + rng.normal(scale=0.5, size=rows) > 0).astype(int)
    return frame


@pytest.fixture(scope="module")
def registry(services: Settings, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, dict[str, str]]:
    """Three versions: 'good' and 'other' decide at 0.5; 'bad' at 0.99 (it almost never flags a failure)."""
    settings = registry_settings(services, tmp_path_factory.mktemp("promotion"), unique("promo"))
    topic = settings.kafka.topics.model_events
    kafka.ensure_topics(settings.kafka, [t for t in kafka.design_topics(settings.kafka) if t.name == topic])
    versions = {
        "good": register_model(settings, seed=1, alias=None),
        "other": register_model(settings, seed=2, alias=None),
        "bad": register_model(settings, seed=3, threshold=0.99, alias=None),
    }
    return settings, versions


def champion(settings: Settings) -> str | None:
    return aliases(settings).get("champion")


def test_forced_promotion_and_rollback_move_the_alias_publish_and_record(registry: Any) -> None:
    settings, v = registry
    reader = CommittedReader(settings, settings.kafka.topics.model_events)
    try:
        promote(settings, v["good"], actor="alice", reason="first", force=True)
        second = promote(settings, v["other"], actor="bob", reason="second", force=True)
        assert champion(settings) == v["other"]
        assert (second.previous_version, second.changed, second.event_published) == (v["good"], True, True)

        back = rollback(settings, actor="carol", reason="alerts")
        assert champion(settings) == v["good"]
        assert (back.version, back.previous_version) == (v["good"], v["other"])

        reader.wait_for(3, 30)
        assert [(e["action"], e["version"], e["actor"]) for e in reader.records] == [
            ("promote", v["good"], "alice"), ("promote", v["other"], "bob"), ("rollback", v["good"], "carol")]
    finally:
        reader.close()
    rows = store.list_events(settings, model_name=settings.mlflow.registered_model, kinds=["promotion", "rollback"])
    assert [(r.kind, r.model_version, r.previous_version, r.actor, r.reason) for r in rows[-3:]] == [
        ("promotion", v["good"], None, "alice", "first"), ("promotion", v["other"], v["good"], "bob", "second"),
        ("rollback", v["good"], v["other"], "carol", "alerts")]
    assert rows[-1].run_id and rows[-1].details["changed"] is True

    # The audit trail has no champion before 'good': a default rollback says so instead of guessing.
    with pytest.raises(NoPreviousChampionError, match="use --to VERSION"):
        rollback(settings, actor="carol", reason="again")


def test_gate_rejects_a_worse_challenger_and_promotes_a_better_one(registry: Any) -> None:
    settings, v = registry
    promote(settings, v["good"], actor="t", reason="setup", force=True)
    data = evaluation_data()

    with pytest.raises(PromotionRejectedError, match="not promoted: reject: f1") as rejected:
        promote(settings, v["bad"], actor="t", reason="try bad", evaluation_data=data)
    assert rejected.value.decision is not None and not rejected.value.decision.promote
    assert champion(settings) == v["good"]
    assert "challenger" not in aliases(settings)
    last = store.list_events(settings, model_name=settings.mlflow.registered_model, newest_first=True, limit=1)[0]
    assert (last.kind, last.model_version, last.previous_version) == ("rejection", v["bad"], v["good"])
    assert last.details["gate"]["challenger_metrics"]["f1"] < last.details["gate"]["champion_metrics"]["f1"]

    promote(settings, v["bad"], actor="t", reason="setup", force=True)
    result = promote(settings, v["good"], actor="t", reason="better", evaluation_data=data)
    assert result.changed and result.decision is not None and result.decision.promote
    assert champion(settings) == v["good"]


def test_concurrent_promotions_leave_one_champion_and_both_attempts(registry: Any) -> None:
    settings, v = registry
    promote(settings, v["good"], actor="t", reason="setup", force=True)
    start = store.list_events(settings, newest_first=True, limit=1)[0].id
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def attempt(version: str, actor: str) -> None:
        try:
            barrier.wait(30)
            promote(settings, version, actor=actor, reason="race", force=True)
        except BaseException as err:  # reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=attempt, args=(v["other"], "one")),
               threading.Thread(target=attempt, args=(v["bad"], "two"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    rows = [r for r in store.list_events(settings, kinds=["promotion"]) if r.id > start]
    assert sorted(r.actor or "" for r in rows) == ["one", "two"]
    first, second = rows
    # Serialised: the second saw the first's result, and the alias holds the last one recorded.
    assert first.previous_version == v["good"]
    assert second.previous_version == first.model_version
    assert champion(settings) == second.model_version


def test_cli_lists_promotes_and_rolls_back(registry: Any) -> None:
    from mlops.cli import app

    settings, v = registry
    env = {**settings_env(settings), "MLOPS_DATABASE__URL": settings.database_url}
    runner = CliRunner()
    promote(settings, v["good"], actor="t", reason="setup", force=True)

    listed = runner.invoke(app, ["models", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    by_version = {row["version"]: row for row in json.loads(listed.output)}
    assert set(v.values()) <= set(by_version)
    assert by_version[v["good"]]["aliases"] == ["champion"] and by_version[v["good"]]["trigger"] == "manual"

    # Without --force the gate needs lake data newer than the models' training data: these test
    # models carry no lineage, so the command refuses with a reason instead of promoting.
    refused = runner.invoke(app, ["promote", v["other"], "--reason", "cli"], env=env)
    assert refused.exit_code != 0 and champion(settings) == v["good"]
    assert "no lineage tag" in str(refused.exception)

    forced = runner.invoke(app, ["promote", v["other"], "--reason", "cli", "--force"], env=env)
    assert forced.exit_code == 0, forced.output
    assert f"champion {v['good']} -> {v['other']}" in forced.output and champion(settings) == v["other"]

    back = runner.invoke(app, ["rollback", "--reason", "cli"], env=env)
    assert back.exit_code == 0, back.output
    assert champion(settings) == v["good"]
    last = store.list_events(settings, newest_first=True, limit=1)[0]
    assert (last.kind, last.reason, last.actor) == ("rollback", "cli", db_actor())
    assert list_versions(settings)[0].created.tzinfo is not None


def db_actor() -> str:
    import getpass

    return getpass.getuser()

"""The evaluation gate's decision, on real (small) scikit-learn models and labelled feature rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from mlops.config import PolicySettings
from mlops.errors import PolicyError
from mlops.evaluation.data import trained_until
from mlops.evaluation.gate import evaluate_gate
from mlops.features.compute import FeatureSpec
from mlops.registry.loader import LoadedModel

SPEC = FeatureSpec(sensors=("s1", "s2"), window=5)
POLICY = PolicySettings(primary_metric="f1", promotion_margin=0.01, guard_metrics=["roc_auc"], guard_tolerance=0.02)


def rule_data(spec: FeatureSpec, rows: int, seed: int) -> pd.DataFrame:
    """Random feature rows with a ``label``: 1 when ``<first sensor>__last`` > 0.5 (plus 5% noise)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(spec.feature_names()))), columns=spec.feature_names())
    frame["n_readings"] = float(spec.window)
    label = (frame[f"{spec.sensors[0]}__last"] > 0.5).astype(int)
    frame["label"] = np.where(rng.random(rows) < 0.05, 1 - label, label)
    return frame


def fitted(version: str, *, corrupt: bool = False, seed: int = 0, spec: FeatureSpec = SPEC,
           threshold: float = 0.5) -> LoadedModel:
    data = rule_data(spec, 400, seed)
    y = 1 - data["label"] if corrupt else data["label"]
    model = Pipeline([("scale", StandardScaler()), ("classifier", LogisticRegression())])
    model.fit(data[spec.feature_names()], y)
    return LoadedModel(name="m", version=version, run_id=None, model=model, spec=spec, threshold=threshold)


@pytest.fixture(scope="module")
def fresh() -> pd.DataFrame:
    return rule_data(SPEC, 300, seed=99)


def test_better_challenger_is_promoted_with_the_numbers(fresh: pd.DataFrame) -> None:
    decision = evaluate_gate(POLICY, fitted("2"), fitted("1", corrupt=True), fresh)
    assert decision.promote
    assert decision.challenger_metrics["f1"] > decision.champion_metrics["f1"] + 0.01
    assert decision.rows == 300 and 0 < decision.positives < 300
    assert decision.summary().startswith("promote: f1 ")
    assert decision.to_dict()["champion_version"] == "1"


def test_worse_challenger_is_rejected(fresh: pd.DataFrame) -> None:
    decision = evaluate_gate(POLICY, fitted("2", corrupt=True), fitted("1"), fresh)
    assert not decision.promote
    assert "does not win" in decision.summary() and "worse than tolerance" in decision.summary()


def test_a_tie_does_not_pass_the_margin(fresh: pd.DataFrame) -> None:
    decision = evaluate_gate(POLICY, fitted("2"), fitted("1"), fresh)
    assert decision.challenger_metrics == decision.champion_metrics
    assert not decision.promote


def test_guard_metric_blocks_a_primary_win(fresh: pd.DataFrame) -> None:
    # Threshold 0 flags every device: perfect recall (the primary metric here), but the corrupt
    # model ranks devices backwards, so its roc_auc (the guard) is far worse than the champion's.
    policy = POLICY.model_copy(update={"primary_metric": "recall", "promotion_margin": 0.0})
    champion = fitted("1")
    challenger = fitted("2", corrupt=True, threshold=0.0)
    decision = evaluate_gate(policy, challenger, champion, fresh)
    assert decision.challenger_metrics["recall"] >= decision.champion_metrics["recall"]
    assert not decision.promote
    assert "guard roc_auc" in decision.summary() and "worse than tolerance" in decision.summary()


def test_no_champion_passes(fresh: pd.DataFrame) -> None:
    decision = evaluate_gate(POLICY, fitted("1"), None, fresh)
    assert decision.promote and decision.champion_version is None


def test_bad_evaluation_data_is_named(fresh: pd.DataFrame) -> None:
    with pytest.raises(PolicyError, match="no 'label' column"):
        evaluate_gate(POLICY, fitted("2"), fitted("1"), fresh.drop(columns=["label"]))
    with pytest.raises(PolicyError, match="one class only"):
        evaluate_gate(POLICY, fitted("2"), fitted("1"), fresh.assign(label=0))
    with pytest.raises(PolicyError, match=r"lacks feature column.*s2__mean"):
        evaluate_gate(POLICY, fitted("2"), fitted("1"), fresh.drop(columns=["s2__mean"]))
    with pytest.raises(PolicyError, match="empty"):
        evaluate_gate(POLICY, fitted("2"), fitted("1"), fresh.iloc[:0])


def test_unknown_metric_names_the_policy_key(fresh: pd.DataFrame) -> None:
    with pytest.raises(PolicyError, match=r"policy\.primary_metric: unknown metric 'auc'"):
        evaluate_gate(POLICY.model_copy(update={"primary_metric": "auc"}), fitted("2"), fitted("1"), fresh)


def test_trained_until_reads_the_lineage_tag() -> None:
    moment = trained_until({"lineage.event_time_max": "2026-01-02T03:04:05"}, "v1")
    assert moment.isoformat() == "2026-01-02T03:04:05+00:00"
    with pytest.raises(PolicyError, match="v1: no lineage tag"):
        trained_until({}, "v1")
    assert math.isfinite(moment.timestamp())


def test_the_guards_noise_grows_when_few_devices_hold_the_failures() -> None:
    from mlops.evaluation.gate import guard_noise

    rng = np.random.default_rng(5)
    rows = 1000

    def noise(devices: int) -> float:
        device = np.arange(rows) % devices
        failing = rng.random(devices) < 0.3  # a device's readings fail together
        y = (failing[device] & (rng.random(rows) < 0.6)).astype(int)
        new = np.clip(0.3 * y + 0.7 * rng.random(rows), 0, 1)
        old = np.clip(0.3 * y + 0.7 * rng.random(rows), 0, 1)
        return guard_noise(y, (new, 0.5), (old, 0.5), "roc_auc", device)

    many, few = noise(500), noise(10)
    assert 0 < many < few
    assert few > 0.03  # on 10 devices a fixed 0.03 tolerance would judge chance

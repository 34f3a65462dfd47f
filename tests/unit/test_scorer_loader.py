"""Contract tags and the smoke test of loaded models (real sklearn models, no registry)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from mlops.errors import RegistryError
from mlops.features.compute import FeatureSpec
from mlops.registry.loader import LoadedModel, _contract_tags, smoke_row, smoke_test

SPEC = FeatureSpec(("s_2", "s_3"), window=5)


def _model(columns: list[str]) -> LogisticRegression:
    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(50, len(columns))), columns=columns)
    return LogisticRegression().fit(x, (x.iloc[:, 0] > 0).astype(int))


def test_tags_parse_and_errors_name_the_tag() -> None:
    spec, threshold = _contract_tags("m v1", {"feature_spec": json.dumps(SPEC.to_dict()), "decision_threshold": "0.3"})
    assert (spec, threshold) == (SPEC, 0.3)
    with pytest.raises(RegistryError, match="tag 'decision_threshold' is missing"):
        _contract_tags("m v1", {"feature_spec": json.dumps(SPEC.to_dict())})
    with pytest.raises(RegistryError, match="not a FeatureSpec"):
        _contract_tags("m v1", {"feature_spec": "{}", "decision_threshold": "0.3"})
    with pytest.raises(RegistryError, match="outside"):
        _contract_tags("m v1", {"feature_spec": json.dumps(SPEC.to_dict()), "decision_threshold": "2"})


def test_smoke_test_accepts_a_fitting_model_and_rejects_a_mismatched_one() -> None:
    good = LoadedModel("m", "1", None, _model(SPEC.feature_names()), SPEC, 0.5)
    smoke_test(good)
    assert good.predict_proba(smoke_row(SPEC)).shape == (2,)
    assert good.by_position  # same names, same order: scored from the plain array
    wrong = LoadedModel("m", "2", None, _model([f"x{i}" for i in range(len(SPEC.feature_names()))]), SPEC, 0.5)
    assert not wrong.by_position  # given a DataFrame, so that scikit-learn rejects the other names
    with pytest.raises(RegistryError, match="m' version 2: smoke test failed"):
        smoke_test(wrong)

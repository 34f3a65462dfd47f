"""The evaluation plots render on any validation part, and the search space becomes comparable params."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mlops.train import plots
from mlops.train.job import experiment_url, search_space_params


def test_every_plot_is_written_as_a_non_blank_png(tmp_path: Path) -> None:
    from matplotlib.image import imread

    rng = np.random.default_rng(3)
    y_true = (rng.random(400) < 0.1).astype(int)
    probability = np.clip(0.6 * y_true + rng.normal(0.2, 0.15, 400), 0, 1)
    importances = pd.Series({"vibration_mean": 0.12, "temperature_slope": 0.03, "pressure_std": -0.001})
    written = plots.write_all(tmp_path / "plots", y_true, probability, 0.45, importances)
    assert [p.name for p in written] == [*plots.PLOT_FILES, "feature_importance.json"]
    for path in written[:-1]:
        image = imread(path)
        assert image.shape[0] >= 300 and image.shape[1] >= 300 and float(image.std()) > 0.05, path.name
    assert json.loads(written[-1].read_text()) == importances.to_dict()


def test_plots_survive_a_validation_part_without_failures(tmp_path: Path) -> None:
    y_true = np.zeros(50, dtype=int)
    written = plots.write_all(tmp_path, y_true, np.linspace(0, 0.3, 50), 0.5, pd.Series({"a": 0.0}))
    assert all(p.stat().st_size > 0 for p in written)


def test_search_space_params_and_the_experiment_link() -> None:
    space = {"random_forest": {"n_estimators": [20, 50], "max_depth": [6, None]}, "logistic_regression": {"C": [1.0]}}
    assert search_space_params(space) == {
        "search_space.logistic_regression.C": "[1.0]",
        "search_space.random_forest.max_depth": "[6, null]",
        "search_space.random_forest.n_estimators": "[20, 50]",
    }
    assert experiment_url("http://127.0.0.1:5000/", "7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning")

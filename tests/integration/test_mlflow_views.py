"""What people see of a training in MLflow: a model-training experiment whose candidates compare side by
side, plots on the registered version, and the experiment page as headless Chromium renders it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlops.mlflow import tracking_client
from tests.conftest import unique
from tests.integration.test_train import CANDIDATES, SEARCH_SPACE, fill_lake, with_search_space

pytestmark = [pytest.mark.integration, pytest.mark.spark]

PAGE_TIMEOUT_S = 90.0
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained(services: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, list[str]]:
    """One `mlops train` on a simulated lake in an experiment of its own: settings, result, progress lines."""
    from mlops.config import load_settings
    from mlops.train.job import TrainRequest, run_training

    settings = with_search_space(load_settings("local", overrides={
        "paths": {"data_dir": str(tmp_path_factory.mktemp("views-data"))},
        "mlflow": {"tracking_uri": services.mlflow.tracking_uri, "registered_model": unique("iot-failure-views"),
                   "experiment": unique("views")},
        "spark": {"master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g"},
        "train": {"candidates": CANDIDATES, "seed": 11, "min_rows": 500, "reference_rows": 300},
    }))
    since, until = fill_lake(settings)
    lines: list[str] = []
    result = run_training(settings, TrainRequest(since=since, until=until), progress=lines.append)
    return settings, result, lines


def _client(settings: Any) -> Any:

    return tracking_client(settings)


def _children(client: Any, parent: Any) -> list[Any]:
    return client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")


def test_experiment_is_model_training_and_candidates_compare(trained: tuple[Any, Any, list[str]]) -> None:
    from mlops.evaluation.names import METRIC_NAMES
    from mlops.train.job import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, experiment_url

    settings, result, lines = trained
    client = _client(settings)
    experiment = client.get_experiment_by_name(settings.mlflow.experiment)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    assert lines[-1].endswith(experiment_url(settings.mlflow.tracking_uri, experiment.experiment_id))

    parent = client.get_run(result.run_id)
    for family, grid in SEARCH_SPACE.items():
        for name, values in grid.items():
            assert json.loads(parent.data.params[f"search_space.{family}.{name}"]) == values
    children = _children(client, parent)
    assert sorted(c.info.run_name for c in children) == [f"candidate-{i}" for i in range(CANDIDATES)]
    expected = {f"val_{m}" for m in METRIC_NAMES} | {"duration_s", "decision_threshold"}
    assert all(set(c.data.metrics) == expected for c in children), [sorted(c.data.metrics) for c in children]
    assert {f"val_{m}" for m in METRIC_NAMES} <= set(parent.data.metrics)  # the parent compares with its children


def test_registered_version_carries_its_plots(trained: tuple[Any, Any, list[str]], tmp_path: Path) -> None:
    import mlflow.artifacts
    from matplotlib.image import imread

    from mlops.train.plots import PLOT_FILES

    settings, result, _ = trained
    client = _client(settings)
    on_run = {Path(a.path).name for a in client.list_artifacts(result.run_id, "plots")}
    assert set(PLOT_FILES) | {"feature_importance.json"} <= on_run
    # The registered version's own model artifacts hold the same plots.
    model_dir = Path(mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{settings.mlflow.registered_model}/{result.version}", dst_path=str(tmp_path),
        tracking_uri=settings.mlflow.tracking_uri))
    for name in PLOT_FILES:
        path = model_dir / "plots" / name
        assert path.read_bytes()[:8] == PNG_MAGIC, name
        image = imread(path)
        assert image.shape[0] > 200 and image.shape[1] > 200 and float(image.std()) > 0.05, (name, image.shape)
    from mlops.features.compute import FeatureSpec

    spec = FeatureSpec.from_dict(json.loads(client.get_run(result.run_id).data.tags["feature_spec"]))
    importance = json.loads((model_dir / "plots" / "feature_importance.json").read_text())
    assert set(importance) == set(spec.feature_names())


def test_experiment_page_lists_the_candidates_in_chromium(trained: tuple[Any, Any, list[str]],
                                                           tmp_path: Path) -> None:
    from mlops.train.job import experiment_url
    from tests.helpers_browser import Browser

    settings, result, _ = trained
    client = _client(settings)
    parent = client.get_run(result.run_id)
    names = [c.info.run_name for c in _children(client, parent)]
    url = experiment_url(settings.mlflow.tracking_uri, parent.info.experiment_id)
    with Browser(tmp_path / "chromium-profile") as page:
        page.open(url)
        # The runs table of a model-training experiment, the training's parent run in it.
        page.wait_for(f"document.body && document.body.innerText.includes({json.dumps(parent.info.run_name)})",
                      PAGE_TIMEOUT_S, f"parent run {parent.info.run_name} on {url}")
        assert "/runs" in page.evaluate("location.hash") and "Run Name" in page.text()
        # The candidates are nested under it: open the parent's row as a person would.
        opened = page.evaluate("""(() => {
            const buttons = [...document.querySelectorAll('button[data-component-id*="runnamecellrenderer"]')];
            buttons.forEach(button => button.click());
            return buttons.length; })()""")
        assert opened >= 1
        page.wait_for(f"{json.dumps(names)}.every(name => document.body.innerText.includes(name))",
                      PAGE_TIMEOUT_S, f"candidate runs {names}")
        text = page.text()
        shot = page.screenshot(tmp_path / "mlflow-experiment.png")
    print(f"\nMLflow experiment page screenshot: {shot}")
    assert all(name in text for name in names) and parent.info.run_name in text
    assert shot.read_bytes()[:8] == PNG_MAGIC and shot.stat().st_size > 20_000

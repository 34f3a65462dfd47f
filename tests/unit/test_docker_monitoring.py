"""The compose stack's monitoring, validated without a Docker engine: Prometheus scrapes the services
that exist on the ports they serve, Grafana's data sources point at the compose services and the
loop's database, and every dashboard query names metrics the code exports and columns the loop's
tables have (the SQL panels run on those tables, built by the real SQLAlchemy models, in SQLite)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args, get_type_hints
from urllib.parse import urlsplit

import pytest
import yaml

from tests.unit.test_docker_stack import COMPOSE_FILE, DOCKER, _bind_mounts, _environment, _interpolate

PROMETHEUS_FILE = DOCKER / "prometheus" / "prometheus.yml"
GRAFANA = DOCKER / "grafana"
DASHBOARD_FILE = GRAFANA / "dashboards" / "mlops-loop.json"
PANELS = {"Readings per second", "Consumer lag", "Batch latency", "Dead letters", "Champion version",
          "Drift share per window", "Realised F1 per window", "Retrainings and promotions"}
_METRIC = re.compile(r"\bmlops_[a-z_]+\b")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return dict(_interpolate(yaml.safe_load(COMPOSE_FILE.read_text()))["services"])


@pytest.fixture(scope="module")
def docker_settings():  # type: ignore[no-untyped-def]
    from mlops.config import load_settings

    return load_settings("docker")


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    return dict(yaml.safe_load(PROMETHEUS_FILE.read_text()))


@pytest.fixture(scope="module")
def datasources() -> dict[str, dict[str, Any]]:
    text = (GRAFANA / "provisioning" / "datasources" / "datasources.yaml").read_text()
    return {source["uid"]: source for source in yaml.safe_load(text)["datasources"]}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD_FILE.read_text()))


def _mounted_at(spec: dict[str, Any], target: str) -> Path:
    sources = [source for source, mounted in _bind_mounts(spec) if mounted == target]
    assert sources, f"nothing is mounted at {target}"
    return DOCKER / sources[0]


def exported_metric_names(data_dir: Path) -> set[str]:
    """Every sample name the scorer's, the API's and the loop's registries expose (``_total``, ``_bucket``, ...)."""
    from prometheus_client import CollectorRegistry

    from mlops.config import load_settings
    from mlops.monitor.metrics import LoopCollector
    from mlops.serve.api import ApiMetrics
    from mlops.serve.metrics import ScorerMetrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",),
                "info": ("_info",)}
    names = set()
    loop = CollectorRegistry()
    loop.register(LoopCollector(load_settings("local", overrides={"paths": {"data_dir": str(data_dir)}})))
    for registry in (ScorerMetrics().registry, ApiMetrics().registry, loop):
        for family in registry.collect():
            names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def unknown_metrics(expression: str, known: set[str]) -> set[str]:
    return set(_METRIC.findall(expression)) - known


def test_prometheus_scrapes_the_compose_services_where_they_serve(
        prometheus: dict[str, Any], services: dict[str, dict[str, Any]], docker_settings) -> None:  # type: ignore[no-untyped-def]
    from mlops.serve.api import create_app

    s = docker_settings
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert {"scorer", "api", "loop"} <= set(jobs)
    scorer = jobs["scorer"]["dns_sd_configs"][0]
    # DNS service discovery: one target per replica of the scaled-out service.
    assert scorer["names"] == ["scorer"] and scorer["type"] == "A" and services["scorer"]["deploy"]["replicas"] >= 2
    assert scorer["port"] == s.scorer.metrics_port
    assert s.scorer.metrics_host == "0.0.0.0", "the scorer's metrics must listen beyond its own container"
    assert jobs["api"]["static_configs"][0]["targets"] == [f"api:{s.api.port}"] and s.api.host == "0.0.0.0"
    # The loop's endpoint is served by `mlops loop run`, which the compose service `monitor` runs.
    assert jobs["loop"]["static_configs"][0]["targets"] == [f"monitor:{s.monitor.metrics_port}"]
    assert services["monitor"]["command"] == ["loop", "run"] and s.monitor.metrics_host == "0.0.0.0"
    routes = {getattr(route, "path", None) for route in create_app(s).routes}
    assert jobs["api"]["metrics_path"] in routes
    spec = services["prometheus"]
    config_flag = next(arg for arg in spec["command"] if arg.startswith("--config.file="))
    assert _mounted_at(spec, config_flag.split("=", 1)[1]).resolve() == PROMETHEUS_FILE.resolve()
    assert {"scorer", "api", "monitor"} <= set(spec["depends_on"])


def test_grafana_data_sources_point_at_prometheus_and_the_loop_database(
        datasources: dict[str, dict[str, Any]], services: dict[str, dict[str, Any]]) -> None:
    grafana = services["grafana"]
    provisioning = _mounted_at(grafana, "/etc/grafana/provisioning")
    assert provisioning.resolve() == (GRAFANA / "provisioning").resolve()

    prom = urlsplit(datasources["prometheus"]["url"])
    assert prom.hostname == "prometheus" and prom.port == 9090 and (9090, 9090) in _ports(services["prometheus"])

    loop_db = datasources["loop-db"]
    database_url = urlsplit(_environment(services["lake-sink"])["MLOPS_DATABASE__URL"])  # what the loop writes to
    host, port = loop_db["url"].split(":")
    assert (host, int(port)) == (database_url.hostname, database_url.port) and host in services
    assert loop_db["jsonData"]["database"] == database_url.path.lstrip("/")
    assert loop_db["user"] == database_url.username
    variable = re.fullmatch(r"\$\{(\w+)\}", loop_db["secureJsonData"]["password"])
    assert variable and _environment(grafana)[variable.group(1)] == database_url.password

    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml").read_text())
    path = providers["providers"][0]["options"]["path"]
    assert _mounted_at(grafana, path).resolve() == DASHBOARD_FILE.parent.resolve()
    home = _environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent == Path(path) and (DASHBOARD_FILE.parent / Path(home).name).exists()


def _ports(spec: dict[str, Any]) -> list[tuple[int, int]]:
    return [tuple(int(part) for part in str(port).split(":")) for port in spec.get("ports", [])]  # type: ignore[misc]


def test_dashboard_has_the_panels_on_a_grid_with_provisioned_sources(
        dashboard: dict[str, Any], datasources: dict[str, dict[str, Any]]) -> None:
    panels = dashboard["panels"]
    titles = {p["title"] for p in panels}
    assert titles >= PANELS, f"missing: {PANELS - titles}"
    assert len({p["id"] for p in panels}) == len(panels) and dashboard["uid"]
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        area = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            uid = target["datasource"]["uid"]
            assert uid == panel["datasource"]["uid"] and uid in datasources, panel["title"]
            assert target["datasource"]["type"] == datasources[uid]["type"], panel["title"]


def test_prometheus_queries_name_metrics_the_code_exports(dashboard: dict[str, Any], tmp_path: Path) -> None:
    known = exported_metric_names(tmp_path)
    assert {"mlops_loop_events_total", "mlops_loop_champion_version", "mlops_loop_realised"} <= known
    assert unknown_metrics("rate(mlops_scorer_event_total[1m])", known) == {"mlops_scorer_event_total"}
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"] if "expr" in t]
    assert len(expressions) >= 8
    for expression in expressions:
        assert _METRIC.search(expression), expression
        assert not unknown_metrics(expression, known), f"{expression}: not exported (known: {sorted(known)})"


def _sqlite_sql(sql: str) -> str:
    """Grafana's macros as SQLite understands them, for the whole time range."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", r"\1 BETWEEN '2000-01-01' AND '2100-01-01'", sql)
    return re.sub(r"\$__timeGroupAlias\((\w+), '[^']+'\)", r"\1 AS time", sql)


def test_sql_panels_run_on_the_loop_tables(dashboard: dict[str, Any], tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import create_engine, text

    from mlops.store import EVENT_KINDS
    from mlops.store.audit import LoopEvent
    from mlops.store.base import Base
    from mlops.store.results import WindowResult, WindowResultRow

    engine = create_engine(f"sqlite:///{tmp_path / 'loop.db'}")
    Base.metadata.create_all(engine)
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)
    window = {"created_at": now, "model_name": "iot-failure", "model_version": "2", "start_time": now,
              "end_time": now, "n_predictions": 100, "source_offsets": {}, "drifted_features": []}
    with engine.begin() as conn:
        conn.execute(WindowResultRow.__table__.insert(), [
            {**window, "kind": "drift", "drift_share": 0.4, "metrics": None},
            {**window, "kind": "performance", "drift_share": None, "metrics": {"f1": 0.75, "recall": 0.8}}])
        conn.execute(LoopEvent.__table__.insert(), [
            {"time": now, "kind": kind, "model_name": "iot-failure", "model_version": "2", "details": {}}
            for kind in ("retrain_finished", "promotion", "window_result")])

    window_kinds = set(get_args(get_type_hints(WindowResult)["kind"]))
    queries = [t["rawSql"] for p in dashboard["panels"] for t in p["targets"] if "rawSql" in t]
    assert len(queries) >= 4
    results = {}
    for sql in queries:
        table = re.search(r"\bFROM (\w+)", sql).group(1)  # type: ignore[union-attr]
        assert table in Base.metadata.tables, sql
        kinds = set(re.findall(r"'(\w+)'", re.sub(r"\$__\w+\([^)]*\)", "", sql))) - {"f1"}
        allowed = EVENT_KINDS if table == "loop_events" else window_kinds
        assert kinds <= allowed, f"{sql}: unknown kinds {kinds - allowed}"
        with engine.connect() as conn:
            results[sql] = [dict(row._mapping) for row in conn.execute(text(_sqlite_sql(sql)))]
    by_panel = {p["title"]: results[t["rawSql"]] for p in dashboard["panels"] for t in p["targets"] if "rawSql" in t}
    assert [(r["value"], r["metric"]) for r in by_panel["Drift share per window"]] == [(0.4, "2")]
    assert [(r["value"], r["metric"]) for r in by_panel["Realised F1 per window"]] == [(0.75, "2")]
    assert sorted((r["metric"], r["value"]) for r in by_panel["Retrainings and promotions"]) == [
        ("promotion", 1), ("retrain_finished", 1)]

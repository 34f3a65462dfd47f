"""The production-like stack in docker/, validated without a Docker engine.

Two layers: the compose file is checked against the Compose Specification's JSON schema with
``check-jsonschema`` (PyPI; it ships the schema vendored from the compose-spec project), and then
against this repository: build contexts, Dockerfile sources, mounted files, `mlops` and `mlflow`
command lines (parsed by the real CLIs), MLOPS_ variables (loaded by the real settings loader),
ports, dependencies and service names in configs/docker.yaml.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.conftest import REPO

DOCKER = REPO / "docker"
COMPOSE_FILE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
# The design's commands (docs/architecture.md) that the compose file may name before their CLI
# module registers them; every command that does exist is parsed with its real options below.
PLANNED_COMMANDS: set[str] = set()
# MLOPS_ variables that steer how settings load (mlops/config.py) or how logs are written
# (mlops/log.py) rather than naming a settings key.
NON_KEY_VARIABLES = {"MLOPS_PROFILE", "MLOPS_CONFIG_DIR", "MLOPS_LOG_LEVEL"}
_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def _interpolate(value: Any) -> Any:
    """Compose's variable substitution with every variable unset: ``${X:-default}`` -> default."""
    if isinstance(value, dict):
        return {key: _interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group(2) is None:
            raise AssertionError(f"${{{match.group(1)}}} has no default: the stack would not start without it")
        return match.group(2)

    return _VARIABLE.sub(substitute, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(_interpolate(yaml.safe_load(COMPOSE_FILE.read_text())))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


@pytest.fixture(scope="module")
def docker_settings():  # type: ignore[no-untyped-def]
    from mlops.config import load_settings

    return load_settings("docker")


def _project_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in services.items() if "build" in spec}


def _environment(spec: dict[str, Any]) -> dict[str, str]:
    env = spec.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _argv(spec: dict[str, Any]) -> list[str]:
    """The process a project-image service runs: image ENTRYPOINT `mlops` + command, or its own."""
    command = spec.get("command", [])
    command = shlex.split(command) if isinstance(command, str) else list(command)
    entrypoint = spec.get("entrypoint")
    if entrypoint is None:
        return ["mlops", *command]
    entrypoint = shlex.split(entrypoint) if isinstance(entrypoint, str) else list(entrypoint)
    if entrypoint[:2] == ["/bin/sh", "-c"]:
        words = shlex.split(entrypoint[2])
        return words[1:] if words[0] == "exec" else words
    return [*entrypoint, *command]


def _bind_mounts(spec: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for volume in spec.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def test_compose_file_follows_the_compose_specification(tmp_path: Path) -> None:
    """The compose-spec JSON schema accepts the file, and rejects it with one key misspelt."""
    def validate(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)],
            capture_output=True, text=True, timeout=120,
        )

    result = validate(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("depends_on:", "depends_upon:", 1))
    assert validate(broken).returncode != 0, "the validator accepted an unknown service key"


def test_every_variable_has_a_default() -> None:
    # _interpolate fails on ${X} without a default; parsing the whole file exercises every one.
    assert _interpolate(yaml.safe_load(COMPOSE_FILE.read_text()))["services"]


def test_the_stack_has_the_designed_services(services: dict[str, dict[str, Any]]) -> None:
    expected = {"kafka", "postgres", "minio", "minio-init", "redis", "mlflow", "bootstrap", "lake-sink",
                "scorer", "api", "monitor", "scheduler"}
    assert expected <= set(services), f"missing: {expected - set(services)}"
    assert services["scorer"]["deploy"]["replicas"] >= 2


def test_build_contexts_and_dockerfiles_exist(services: dict[str, dict[str, Any]]) -> None:
    built = _project_services(services)
    assert built, "no service builds the project image"
    for name, spec in built.items():
        context = (DOCKER / spec["build"]["context"]).resolve()
        assert context == REPO, f"{name}: build context {context} is not the repository root"
        assert (context / spec["build"]["dockerfile"]).resolve() == DOCKERFILE, name
    assert len({spec["image"] for spec in built.values()}) == 1, "project services build different image tags"


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, for top-level names: the last matching pattern decides, `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        bare = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path.rstrip("/"), bare):
            ignored = not negate
    return ignored


def test_dockerfile_copies_files_that_exist_and_reach_the_build_context() -> None:
    ignore_file = DOCKER / "Dockerfile.dockerignore"
    patterns = [line.strip() for line in ignore_file.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copies = [args.split() for op, args in _dockerfile_instructions() if op == "COPY"]
    assert copies
    for args in copies:
        sources = [arg for arg in args[:-1] if not arg.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"Dockerfile COPY {source}: no such file in the repository"
            assert not _ignored(source, patterns), f"COPY {source} is excluded by {ignore_file.name}"
    instructions = dict(_dockerfile_instructions())
    assert instructions["FROM"].startswith("python:3.11-slim")
    assert instructions["ENTRYPOINT"] == '["mlops"]'
    assert instructions["USER"] not in {"root", "0"}


def test_dockerfile_installs_extras_that_exist() -> None:
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installs = [args for op, args in _dockerfile_instructions() if op == "RUN" and "pip install" in args]
    assert installs
    for args in installs:
        for group in re.findall(r"\.\[([^\]]+)\]", args):
            for extra in group.split(","):
                assert extra in extras, f"Dockerfile installs extra {extra!r}, pyproject.toml has {sorted(extras)}"


def test_mounted_files_and_named_volumes_exist(compose: dict[str, Any],
                                               services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes", {}))
    used = set()
    for name, spec in services.items():
        for source, _target in _bind_mounts(spec):
            assert (DOCKER / source).exists(), f"{name}: mounts {source}, which does not exist under docker/"
        for volume in spec.get("volumes", []):
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: named volume {source} is not declared"
                used.add(source)
    assert used == declared, f"declared but unused volumes: {declared - used}"
    # A script run from a mount must be mounted where the command looks for it.
    init = services["minio-init"]
    assert _argv(init)[1] in {target for _source, target in _bind_mounts(init)}


def test_dependencies_exist_and_their_conditions_can_be_met(services: dict[str, dict[str, Any]]) -> None:
    for name, spec in services.items():
        for target, condition in dict(spec.get("depends_on", {})).items():
            assert target in services, f"{name} depends on unknown service {target}"
            kind = condition["condition"]
            if kind == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target} to be healthy; it has no check"
            elif kind == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} is a one-shot job but restarts"
    for name in ("kafka", "postgres", "minio", "redis", "mlflow"):
        assert "healthcheck" in services[name], f"{name} has no healthcheck"


def test_every_mlops_command_exists_with_its_options(services: dict[str, dict[str, Any]]) -> None:
    """Each service's `mlops ...` line, run with --help by the real CLI: the parser rejects an unknown
    command or option before --help (an eager option) ends the run."""
    from typer.testing import CliRunner

    from mlops.cli import app

    runner = CliRunner()
    seen = set()
    for name, spec in _project_services(services).items():
        argv = _argv(spec)
        if argv[0] != "mlops":
            continue
        assert len(argv) > 1, f"{name}: runs `mlops` without a subcommand"
        seen.add(argv[1])
        result = runner.invoke(app, [*argv[1:], "--help"])
        if result.exit_code != 0 and "No such command" in result.output and argv[1] in PLANNED_COMMANDS:
            continue
        assert result.exit_code == 0, f"{name}: `{' '.join(argv)}` is rejected by the CLI:\n{result.output}"
    assert {"score", "api", "loop", "scheduler", "lake-sink"} <= seen
    scorer = _argv(services["scorer"])
    assert "--instance" in scorer, "scorer replicas need distinct --instance ids (transactional.id)"


def test_mlflow_server_runs_what_the_docker_profile_says(services: dict[str, dict[str, Any]],
                                                         docker_settings) -> None:  # type: ignore[no-untyped-def]
    from mlflow.cli import server

    argv = _argv(services["mlflow"])
    assert argv[:2] == ["mlflow", "server"]
    params = server.make_context("server", argv[2:]).params  # fails on an option this MLflow lacks
    assert params["backend_store_uri"] == docker_settings.mlflow.backend_store_uri
    assert params["artifacts_destination"] == docker_settings.mlflow.artifacts_destination
    assert params["port"] == docker_settings.mlflow.port
    assert f"{docker_settings.mlflow.host}:{docker_settings.mlflow.port}" in params["allowed_hosts"].split(",")
    bucket = urlsplit(docker_settings.mlflow.artifacts_destination).netloc
    assert _environment(services["minio-init"])["ARTIFACT_BUCKET"] == bucket
    assert _environment(services["mlflow"])["MLFLOW_S3_ENDPOINT_URL"].startswith("http://minio:")


def _settings_key_exists(variable: str) -> bool:
    from pydantic import BaseModel

    from mlops.config import ENV_DELIMITER, ENV_PREFIX, Settings

    model: Any = Settings
    for part in variable.removeprefix(ENV_PREFIX).lower().split(ENV_DELIMITER):
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return False
        model = model.model_fields[part].annotation
    return True


def test_mlops_variables_name_real_keys_and_load(services: dict[str, dict[str, Any]],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops import log
    from mlops.config import load_settings

    assert "MLOPS_LOG_LEVEL" in Path(log.__file__).read_text()
    workdir = "/"
    for op, args in _dockerfile_instructions():
        if op == "WORKDIR":
            workdir = args
    config_dir_in_image = [f"{workdir.rstrip('/')}/{args.split()[-1].strip('./')}"
                           for op, args in _dockerfile_instructions() if op == "COPY" and args.startswith("configs")]
    for name, spec in _project_services(services).items():
        env = {key: value for key, value in _environment(spec).items() if key.startswith("MLOPS_")}
        if _argv(spec)[0] != "mlops":
            assert not env, f"{name} is not an mlops process but sets {sorted(env)}"
            continue
        for variable in env:
            assert variable in NON_KEY_VARIABLES or _settings_key_exists(variable), \
                f"{name}: {variable} names no settings key"
        assert env["MLOPS_PROFILE"] == "docker"
        assert env["MLOPS_CONFIG_DIR"] in config_dir_in_image, "configs are not where the image copies them"
        with monkeypatch.context() as patch:
            for variable, value in env.items():
                patch.setenv(variable, value)
            patch.setenv("MLOPS_CONFIG_DIR", str(REPO / "configs"))  # the same files, outside the image
            settings = load_settings()
        assert settings.profile == "docker"
        assert settings.database_url == load_settings("docker").database_url, \
            f"{name}: MLOPS_DATABASE__URL differs from configs/docker.yaml"


def _host(address: str) -> str:
    return urlsplit(address if "://" in address else f"//{address}").hostname or ""


def test_docker_profile_points_at_the_compose_services(services: dict[str, dict[str, Any]],
                                                       docker_settings) -> None:  # type: ignore[no-untyped-def]
    s = docker_settings
    assert not s.kafka.managed and not s.mlflow.managed, "compose runs Kafka and MLflow; mlops must not"
    targets = {
        "kafka.bootstrap_servers": _host(s.kafka.bootstrap_servers),
        "mlflow.tracking_uri": _host(s.mlflow.tracking_uri),
        "mlflow.backend_store_uri": _host(s.mlflow.backend_store_uri),
        "database.url": _host(s.database_url),
        "feast.redis_connection_string": _host(s.feast.redis_connection_string),
    }
    for key, host in targets.items():
        assert host in services, f"configs/docker.yaml {key} points at {host!r}, not a compose service"
    assert s.feast.online_store == "redis"
    assert s.mlflow.artifacts_destination.startswith("s3://")
    for url in (s.database_url, s.mlflow.backend_store_uri):
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the image installs psycopg2 (extra `postgres`).
        assert url.startswith("postgresql+psycopg2://"), f"{url}: name the driver the image installs"
    postgres_env = _environment(services["postgres"])
    for url in (s.database_url, s.mlflow.backend_store_uri):
        parts = urlsplit(url)
        assert (parts.username, parts.password) == (postgres_env["POSTGRES_USER"], postgres_env["POSTGRES_PASSWORD"])
    init_sql = (DOCKER / "postgres" / "init-databases.sql").read_text()
    for url in (s.database_url, s.mlflow.backend_store_uri):
        database = urlsplit(url).path.lstrip("/")
        assert database == postgres_env["POSTGRES_DB"] or f"CREATE DATABASE {database};" in init_sql, \
            f"database {database} is created neither by POSTGRES_DB nor by the init script"
    assert s.spark.master, "spark.master must be set"


def _published(spec: dict[str, Any]) -> list[tuple[int, int]]:
    pairs = []
    for port in spec.get("ports", []):
        host, container = str(port).rsplit(":", 1) if ":" in str(port) else (str(port), str(port))
        pairs.append((int(host.rsplit(":", 1)[-1]), int(container.split("/")[0])))
    return pairs


def test_ports_are_unique_and_match_the_docker_profile(services: dict[str, dict[str, Any]],
                                                       docker_settings) -> None:  # type: ignore[no-untyped-def]
    s = docker_settings
    host_ports = [host for spec in services.values() for host, _container in _published(spec)]
    assert len(host_ports) == len(set(host_ports)), f"host ports published twice: {host_ports}"
    assert "ports" not in services["scorer"], "replicas cannot share a published host port"
    assert (s.mlflow.port, s.mlflow.port) in _published(services["mlflow"])
    assert (s.api.port, s.api.port) in _published(services["api"])
    assert s.api.host == "0.0.0.0", "the API must listen on the container's interface to be published"
    kafka_env = _environment(services["kafka"])
    assert f"//{s.kafka.bootstrap_servers}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"], \
        "kafka.bootstrap_servers is not an advertised listener"
    assert f"://:{s.kafka.port}" in kafka_env["KAFKA_LISTENERS"]
    assert f"localhost:{s.scorer.metrics_port}/" in " ".join(services["scorer"]["healthcheck"]["test"])
    assert services["scorer"]["deploy"]["replicas"] <= s.kafka.partitions.readings, \
        "more scorer replicas than readings partitions: the extra ones would idle"


def test_kafka_image_matches_the_local_broker_version(services: dict[str, dict[str, Any]]) -> None:
    from mlops.services.kafka_broker import kafka_version

    assert services["kafka"]["image"] == f"apache/kafka:{kafka_version()}"
    assert "broker,controller" in _environment(services["kafka"])["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper


def _healthcheck_url(spec: dict[str, Any]) -> str:
    match = re.search(r"http://localhost:\d+(/[^'\"]*)", " ".join(spec["healthcheck"]["test"]))
    assert match, "no HTTP healthcheck"
    return match.group(1)


def test_api_healthcheck_asks_a_route_the_app_serves(services: dict[str, dict[str, Any]],
                                                     docker_settings) -> None:  # type: ignore[no-untyped-def]
    from mlops.serve.api import create_app

    routes = {getattr(route, "path", None) for route in create_app(docker_settings).routes}
    path = _healthcheck_url(services["api"])
    assert path in routes, f"the api healthcheck asks {path}; the app serves {sorted(map(str, routes))}"
    assert path != "/readyz", "readiness needs a champion: the container would be unhealthy before the first model"

"""The real broker and MLflow server, started by the session fixture through `mlops services` code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from mlops import kafka
from mlops.mlflow import tracking_client
from mlops.services import manager
from mlops.services.kafka_broker import KafkaBroker
from mlops.services.mlflow_server import MlflowServer
from mlops.testing import free_port

pytestmark = pytest.mark.integration


def test_design_topics_exist_with_configured_partitions(services) -> None:  # type: ignore[no-untyped-def]
    metadata = kafka.admin(services.kafka).list_topics(timeout=10)
    for spec in kafka.design_topics(services.kafka):
        assert spec.name in metadata.topics
        assert len(metadata.topics[spec.name].partitions) == spec.partitions
    assert len(metadata.topics[services.kafka.topics.readings].partitions) >= 4


def test_produce_and_consume_on_a_unique_topic(services, topic_name) -> None:  # type: ignore[no-untyped-def]
    kafka.ensure_topics(services.kafka, [kafka.TopicSpec(topic_name, 3, {})])
    producer = kafka.producer(services.kafka)
    sent = {f"device-{i}": i for i in range(30)}
    for key, value in sent.items():
        producer.produce(topic_name, key=key.encode(), value=json.dumps({"n": value}).encode())
    assert producer.flush(30) == 0
    consumer = kafka.consumer(services.kafka, group_id=f"g-{topic_name}")
    consumer.subscribe([topic_name])
    received: dict[str, int] = {}
    deadline = time.monotonic() + 30
    try:
        while len(received) < len(sent) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                received[message.key().decode()] = json.loads(message.value())["n"]
    finally:
        consumer.close()
    assert received == sent


def test_a_message_from_an_independent_client_is_consumed_back(services) -> None:  # type: ignore[no-untyped-def]
    # The Java console producer shipped with the broker is an independent Kafka client.
    from mlops.services.smoke import kafka_round_trip

    echoed = kafka_round_trip(services)
    assert echoed["topic"] == services.kafka.topics.readings
    assert echoed["device_id"] == "demo-0"


def test_java_client_and_python_client_agree(services, topic_name) -> None:  # type: ignore[no-untyped-def]
    """A record written by Kafka's own Java producer (not librdkafka) is read by our consumer."""
    from mlops.services.kafka_broker import check_java, resolve_jars

    kafka.ensure_topics(services.kafka, [kafka.TopicSpec(topic_name, 1, {})])
    jars = resolve_jars()
    result = subprocess.run(
        [check_java(), "-cp", f"{jars}/*", "org.apache.kafka.tools.ConsoleProducer",
         "--bootstrap-server", services.kafka.bootstrap_servers, "--topic", topic_name],
        input='{"device_id": "java-1"}\n', capture_output=True, text=True, timeout=120, check=False,
    )
    if "ClassNotFoundException" in result.stderr:
        pytest.fail("the broker's jars lack the console producer: " + result.stderr[-500:])
    assert result.returncode == 0, result.stderr[-2000:]
    consumer = kafka.consumer(services.kafka, group_id=f"g-{topic_name}")
    consumer.subscribe([topic_name])
    deadline = time.monotonic() + 30
    value = None
    try:
        while value is None and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                value = json.loads(message.value())
    finally:
        consumer.close()
    assert value == {"device_id": "java-1"}


def test_log_a_run_and_register_a_model_version(services) -> None:  # type: ignore[no-untyped-def]

    from mlops.services.smoke import mlflow_round_trip

    logged = mlflow_round_trip(services)
    client = tracking_client(services)
    run = client.get_run(logged["run_id"])
    assert run.data.params["purpose"] == "services round trip"
    version = client.get_model_version(f"{services.mlflow.registered_model}-smoke", logged["version"])
    assert version.run_id == logged["run_id"]
    # The same run is visible through the server's REST API, which the UI uses.
    response = httpx.get(f"{services.mlflow.tracking_uri}/api/2.0/mlflow/runs/get",
                         params={"run_id": logged["run_id"]}, timeout=10)
    assert response.status_code == 200


def test_services_up_twice_is_idempotent(services) -> None:  # type: ignore[no-untyped-def]
    before = {s.name: s.pid for s in manager.status(services)}
    manager.up(services, report=lambda _line: None)
    after = {s.name: s.pid for s in manager.status(services)}
    assert before == after
    assert all(s.ready for s in manager.status(services))


def test_status_json_from_the_cli(services) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ,
           "MLOPS_PATHS__DATA_DIR": str(services.data_dir),
           "MLOPS_KAFKA__BOOTSTRAP_SERVERS": services.kafka.bootstrap_servers,
           "MLOPS_KAFKA__CONTROLLER_PORT": str(services.kafka.controller_port),
           "MLOPS_MLFLOW__TRACKING_URI": services.mlflow.tracking_uri}
    result = subprocess.run([sys.executable, "-m", "mlops", "services", "status", "--json"],
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["kafka"]["ready"] and status["mlflow"]["ready"]
    assert status["kafka"]["version"].startswith("4.")


def test_port_taken_by_a_stranger_fails_clearly_and_starts_nothing(services, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from mlops.config import load_settings
    from mlops.errors import PortInUseError

    # Kafka's port is free, MLflow's port is the running test server's: MLflow must fail,
    # and the broker this call started must be stopped again.
    settings = load_settings("local", overrides={
        "paths": {"data_dir": str(tmp_path)},
        "kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}", "controller_port": free_port(), "heap": "512m"},
        "mlflow": {"tracking_uri": services.mlflow.tracking_uri},
    })
    with pytest.raises(PortInUseError, match="mlflow"):
        manager.up(settings, report=lambda _line: None)
    assert not KafkaBroker(settings).is_running()
    assert not MlflowServer(settings).is_running()
    assert not kafka.is_ready(settings.kafka, timeout_s=1)


def test_down_leaves_no_process(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import psutil

    from mlops.config import load_settings

    settings = load_settings("local", overrides={
        "paths": {"data_dir": str(tmp_path)},
        "kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}", "controller_port": free_port(), "heap": "512m"},
        "mlflow": {"tracking_uri": f"http://127.0.0.1:{free_port()}"},
    })
    manager.up(settings, report=lambda _line: None)
    pids = [s.pid for s in manager.status(settings)]
    assert all(pids)
    family = []
    for pid in pids:
        proc = psutil.Process(pid)
        family += [proc, *proc.children(recursive=True)]
    assert sorted(manager.down(settings, report=lambda _line: None)) == ["kafka", "mlflow"]
    for proc in family:
        assert not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    assert not kafka.is_ready(settings.kafka, timeout_s=1)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{settings.mlflow.tracking_uri}/health", timeout=2)

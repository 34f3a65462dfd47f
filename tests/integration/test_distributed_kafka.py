"""Exactly-once on a 3-node KRaft cluster (replication factor 3, min.insync.replicas 2), started by the
code behind ``mlops services up``: while readings stream in, the coordinator of the scorer's group
is SIGKILLed, the scorer keeps committing predictions on the two nodes left, and the node is
restarted and rejoins every partition's in-sync replicas. At the end, read with read_committed:
committed predictions = readings, none twice.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mlops import kafka
from mlops.config import Settings, load_settings
from mlops.errors import ServiceError
from mlops.services import manager
from mlops.services.kafka_broker import KafkaBroker, KafkaCluster, cluster_nodes
from mlops.services.process import port_is_free, wait_for
from mlops.testing import CommittedReader, fleet_readings, free_port, register_model, scorer_settings, unique
from tests.integration.processes import _start, _stop, _stream

pytestmark = [pytest.mark.integration, pytest.mark.distributed]

NODES, REPLICAS, MIN_IN_SYNC = 3, 3, 2
DEVICES, CYCLES = 30, 600  # 18,000 readings, 12 s at the streamer's 1,500/s
CLUSTER_SESSION_MS = 30_000
KILL_AT, WHILE_DOWN = 6_000, 3_000  # predictions before the kill; more that must commit while it is down
PARTITIONS, RECORDS = 4, 5_000  # records written before the kill, while the node is down, and after its return


def _controller_ports(count: int, taken: set[int]) -> int:
    """The first of ``count`` consecutive free ports (the nodes' controller listeners)."""
    for _ in range(200):
        base = free_port()
        ports = range(base, base + count)
        if base + count <= 65535 and not taken & set(ports) and all(port_is_free("127.0.0.1", p) for p in ports):
            return base
    raise AssertionError(f"no {count} consecutive free ports found")


@pytest.fixture(scope="module")
def kafka_cluster(services: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Three KRaft nodes on free ports through ``manager.up``; MLflow is the test session's (external here)."""
    ports = {free_port() for _ in range(NODES)}
    settings = load_settings("local", overrides={
        "paths": {"data_dir": str(tmp_path_factory.mktemp("kafka-cluster"))},
        "kafka": {"bootstrap_servers": ",".join(f"127.0.0.1:{p}" for p in sorted(ports)),
                  "controller_port": _controller_ports(NODES, ports), "heap": "384m",
                  "replication_factor": REPLICAS},
        "mlflow": {"tracking_uri": services.mlflow.tracking_uri, "managed": False},
    })
    assert len(ports) == NODES
    manager.up(settings, report=print)
    try:
        yield settings
    finally:
        manager.down(settings, report=print)
        assert not any(broker.is_running() for broker in KafkaCluster(settings).brokers)


def test_node_layout_and_its_errors() -> None:
    settings = load_settings("local", overrides={"kafka": {
        "bootstrap_servers": "127.0.0.1:9092,127.0.0.1:9192,127.0.0.1:9292", "controller_port": 9093}})
    assert [(n.node_id, n.port, n.controller_port) for n in cluster_nodes(settings.kafka)] == [
        (1, 9092, 9093), (2, 9192, 9094), (3, 9292, 9095)]
    clash = settings.kafka.model_copy(update={"controller_port": 9191})
    with pytest.raises(ServiceError, match=r"include the client port\(s\) \[9192\]"):
        cluster_nodes(clash)
    twice = settings.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:9092,localhost:9092"})
    with pytest.raises(ServiceError, match="names a port twice"):
        cluster_nodes(twice)
    with pytest.raises(ServiceError, match="node 4 is not one of the 3"):
        KafkaBroker(settings, node_id=4)


def _partitions(settings: Settings, topics: list[str]) -> list[tuple[str, int, int, list[int], list[int]]]:
    metadata = kafka.admin(settings.kafka).list_topics(timeout=10)
    return [(t, p.id, p.leader, list(p.replicas), list(p.isrs))
            for t in topics for p in metadata.topics[t].partitions.values()]


def _min_insync(settings: Settings, topic: str) -> int:
    from confluent_kafka.admin import ConfigResource

    resource, client = ConfigResource(ConfigResource.Type.TOPIC, topic), kafka.admin(settings.kafka)
    configs = client.describe_configs([resource])[resource].result(timeout=10)
    return int(configs["min.insync.replicas"].value)


def _coordinator(settings: Settings, group: str) -> int:
    client = kafka.admin(settings.kafka)
    description = client.describe_consumer_groups([group])[group].result(timeout=10)
    return int(description.coordinator.id)


def test_scorer_keeps_exactly_once_while_a_broker_is_killed_and_restarted(
        kafka_cluster: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The group session docs/operations.md asks for on a cluster: it must outlast the move of the
    # group's coordinator off the killed node, which takes over 10 s when that node is also the
    # active controller (a new one is elected first, then fences it).
    settings = scorer_settings(kafka_cluster, unique("cluster"), batch_size=500, state_lookback=1000,
                               session_timeout_ms=CLUSTER_SESSION_MS)
    settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update={"replication_factor": REPLICAS})})
    monkeypatch.setenv("MLOPS_KAFKA__REPLICATION_FACTOR", str(REPLICAS))  # the scorer's own settings too
    register_model(settings)
    kafka.ensure_topics(settings.kafka, kafka.design_topics(settings.kafka))
    topics = [settings.kafka.topics.readings, settings.kafka.topics.predictions]
    layout = _partitions(settings, topics)
    assert all(len(replicas) == REPLICAS == len(isrs) for *_, replicas, isrs in layout), layout
    assert all(_min_insync(settings, t) == MIN_IN_SYNC for t in [*topics, settings.kafka.topics.dlq])

    readings = fleet_readings(devices=DEVICES, cycles=range(1, CYCLES + 1))
    values = [(json.dumps(r).encode(), r["device_id"]) for r in readings]
    done, release, publish_errors = threading.Event(), threading.Event(), []
    streamer = threading.Thread(target=_stream, daemon=True,
                                args=(settings, values, int(len(values) * 0.8), release, done, publish_errors))
    log, group = tmp_path / "scorer.log", unique("g")
    out = CommittedReader(settings, settings.kafka.topics.predictions)
    scorer = _start(["score", "--group", group, "--instance", "0"], settings, log)
    figures: dict[str, float] = {}
    try:
        streamer.start()
        alive = lambda: scorer.poll() is None  # noqa: E731
        out.wait_for(KILL_AT, timeout_s=180, alive=alive)
        # The hardest node to lose: the coordinator of the scorer's group (its offsets go through
        # the transactions), which also leads some of its partitions.
        victim = _coordinator(settings, group)
        broker = KafkaBroker(kafka_cluster, node_id=victim)
        process = broker.process.process()
        assert process is not None, f"node {victim} is not running"
        process.kill()
        psutil.wait_procs([process], timeout=30)
        killed_at = len(out.records)
        # Two replicas of three are in sync: transactions go on committing with the node down.
        out.wait_for(killed_at + WHILE_DOWN, timeout_s=180, alive=alive)
        figures["committed_while_down"] = len(out.records) - killed_at
        t0 = time.monotonic()
        assert broker.start(), f"node {victim} did not start again"
        figures["restart_s"] = round(time.monotonic() - t0, 1)
        deadline = time.monotonic() + 180
        while any(len(isrs) < REPLICAS for *_, isrs in _partitions(settings, topics)):
            assert time.monotonic() < deadline, f"node {victim} did not rejoin: {_partitions(settings, topics)}"
            out.poll(0.5)  # the condition is polled; reading predictions meanwhile is useful work
        figures["rejoined_s"] = round(time.monotonic() - t0, 1)
        assert not done.is_set(), "the stream ended before the restart: the fault must land mid-stream"
        release.set()
        streamer.join(300)
        assert done.is_set() and not publish_errors, publish_errors[:3]
        out.wait_for(len(readings), timeout_s=300, alive=alive)
    except AssertionError:
        print(log.read_text()[-5000:])
        raise
    finally:
        release.set()
        _stop(scorer)
    try:
        predictions = out.drain()
    finally:
        out.close()

    by_event = Counter((p["device_id"], p["event_time"]) for p in out.records)
    duplicates = [k for k, n in by_event.items() if n > 1]
    assert not duplicates, f"{len(duplicates)} readings predicted twice, e.g. {duplicates[:3]}"
    assert predictions == len(readings) == len(by_event)
    assert set(by_event) == {(r["device_id"], r["event_time"]) for r in readings}
    print(f"kafka cluster: nodes={NODES} killed=node-{victim} readings={len(readings)} predictions={predictions} "
          f"duplicates={len(duplicates)} " + " ".join(f"{k}={v:g}" for k, v in figures.items()))


def test_writes_survive_a_killed_node_and_it_rejoins(kafka_cluster: Settings) -> None:
    topic = unique("cluster")
    kafka.ensure_topics(kafka_cluster.kafka, [kafka.TopicSpec(topic, PARTITIONS, {})])
    # A new topic reaches every node's metadata a moment after it is created.
    wait_for(lambda: topic in kafka.admin(kafka_cluster.kafka).list_topics(timeout=10).topics, 30,
             f"topic {topic} in the cluster's metadata")
    layout = _partitions(kafka_cluster, [topic])
    assert all(len(replicas) == REPLICAS == len(isrs) for *_, replicas, isrs in layout), layout
    assert _min_insync(kafka_cluster, topic) == MIN_IN_SYNC
    victim = Counter(leader for _, _, leader, _, _ in layout).most_common(1)[0][0]
    broker = KafkaBroker(kafka_cluster, node_id=victim)

    errors: list[str] = []
    producer = kafka.producer(kafka_cluster.kafka)  # idempotent, acks=all

    def write(first: int, count: int) -> None:
        for i in range(first, first + count):
            kafka.produce(producer, topic, json.dumps({"n": i}).encode(), f"key-{i % 50}",
                          on_delivery=lambda err, _msg: errors.append(str(err)) if err else None)
        assert producer.flush(120) == 0 and not errors, errors[:3]

    write(0, RECORDS)
    process = broker.process.process()
    assert process is not None, f"node {victim} is not running"
    process.kill()
    psutil.wait_procs([process], timeout=30)
    write(RECORDS, RECORDS)  # acknowledged by 2 of 3 replicas: min.insync.replicas holds
    down = _partitions(kafka_cluster, [topic])
    assert all(leader != victim for _, _, leader, _, _ in down), down
    assert broker.start(), f"node {victim} did not start again"
    wait_for(lambda: all(len(isrs) == REPLICAS for *_, isrs in _partitions(kafka_cluster, [topic])), 180,
             f"node {victim} back in every partition's in-sync replicas")
    write(2 * RECORDS, RECORDS)

    reader = CommittedReader(kafka_cluster, topic)
    try:
        assert reader.drain() == 3 * RECORDS
    finally:
        reader.close()
    counts = Counter(r["n"] for r in reader.records)
    assert set(counts) == set(range(3 * RECORDS)) and max(counts.values()) == 1

"""A 3-node KRaft cluster (replication factor 3, min.insync.replicas 2), started by the code behind
``mlops services up``: while an idempotent producer writes, the node leading most partitions is
SIGKILLed, writes go on being acknowledged by the two left, and the node is restarted and rejoins
every partition's in-sync replicas. Read back with read_committed: every record once.

The scorer's exactly-once run on this cluster is not here yet: when the killed node is the
coordinator of the scorer's group or transactions, the scorer is fenced or stalls
(docs/operations.md, "The scorer's session on a cluster").
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import psutil
import pytest

from mlops import kafka
from mlops.config import Settings, load_settings
from mlops.errors import ServiceError
from mlops.services import manager
from mlops.services.kafka_broker import KafkaBroker, KafkaCluster, cluster_nodes
from mlops.services.process import port_is_free, wait_for
from mlops.testing import CommittedReader, free_port, unique

pytestmark = [pytest.mark.integration, pytest.mark.distributed]

NODES, REPLICAS, MIN_IN_SYNC = 3, 3, 2
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

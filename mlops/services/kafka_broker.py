"""Real Apache Kafka in KRaft mode, one node or a cluster of several, run from jars resolved through Maven.

Every address in ``kafka.bootstrap_servers`` is one node, broker and controller in one process:
one address is the developer's single broker, three are a quorum of three that keeps working
with one node down (the internal topics get 3 replicas and 2 in sync). Node ``i`` (from 1)
listens for clients on the ``i``-th address and for the quorum on ``kafka.controller_port + i - 1``.

The broker's version is pinned in ``mlops/services/kafka/pom.xml``. Maven copies its runtime jars
from Maven Central into a cache directory once (``~/.cache/mlops-loop/kafka-<version>-<pom digest>`` unless
``MLOPS_KAFKA_JARS_DIR`` says otherwise); every later start reuses them offline.
"""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from mlops.config import KafkaSettings, Settings
from mlops.errors import ServiceError
from mlops.services import maven
from mlops.services.process import LocalService, require_free_port, stop_together, tail, wait_for

__all__ = [
    "MIN_JAVA",
    "KafkaBroker",
    "KafkaCluster",
    "Node",
    "check_java",
    "cluster_nodes",
    "jars_dir",
    "kafka_version",
    "pom_path",
    "resolve_jars",
]

MIN_JAVA = 17
_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="stdout" target="SYSTEM_OUT">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="stdout"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="org.apache.kafka.controller" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
  </Loggers>
</Configuration>
"""


def pom_path() -> Path:
    return maven.pom_path("kafka")


def kafka_version() -> str:
    return maven.pom_property(pom_path(), "kafka.version")


def jars_dir() -> Path:
    return maven.cache_dir(pom_path(), f"kafka-{kafka_version()}")


def resolve_jars() -> Path:
    """Copy the broker's runtime jars into the cache directory once; return it."""
    try:
        return maven.copy_dependencies(pom_path(), jars_dir(), f"Apache Kafka {kafka_version()}")
    except ServiceError as err:
        raise ServiceError(f"kafka: {err}") from err


def check_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ServiceError(
            f"kafka: Java {MIN_JAVA}+ is not installed (Debian: apt-get install openjdk-17-jre-headless)"
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise ServiceError(f"kafka: Java {MIN_JAVA}+ is needed, found: {out.splitlines()[0] if out else java}")
    return java


@dataclass(frozen=True)
class Node:
    """One KRaft node of the configured cluster."""

    node_id: int
    host: str
    port: int
    controller_port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def cluster_nodes(settings: KafkaSettings) -> list[Node]:
    """The nodes ``mlops services`` runs: one per address of ``bootstrap_servers``, numbered from 1."""
    nodes = []
    for index, server in enumerate(settings.bootstrap_servers.split(",")):
        host, _, port = server.strip().rpartition(":")
        nodes.append(Node(index + 1, host, int(port), settings.controller_port + index))
    ports = [n.port for n in nodes]
    if len(set(ports)) < len(ports):
        raise ServiceError(f"kafka: kafka.bootstrap_servers {settings.bootstrap_servers!r} names a port twice; "
                           "each local node needs a port of its own")
    # All nodes run on this machine, so a controller port may clash with any node's client port.
    clash = sorted({n.controller_port for n in nodes} & set(ports))
    if clash or nodes[-1].controller_port > 65535:
        raise ServiceError(
            f"kafka: the nodes' controller ports are kafka.controller_port={settings.controller_port} .. "
            f"{nodes[-1].controller_port}, which "
            + (f"include the client port(s) {clash} of kafka.bootstrap_servers" if clash else "exceeds 65535")
            + "; choose a kafka.controller_port with room for one port per node"
        )
    return nodes


def _data_dir(settings: Settings, node_id: int) -> Path:
    # Siblings, never nested: Kafka reads every directory inside log.dirs as a partition's log.
    return settings.kafka_data_dir if node_id == 1 else settings.data_dir / f"kafka-{node_id}"


def _cluster_id(settings: Settings, nodes: list[Node]) -> str:
    """The id the nodes formatted earlier share, else a new one: every node must be formatted with the same."""
    for node in nodes:
        meta = _data_dir(settings, node.node_id) / "meta.properties"
        if meta.exists():
            match = re.search(r"^cluster\.id=(\S+)$", meta.read_text(), re.MULTILINE)
            if match:
                return match.group(1)
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class KafkaBroker(LocalService):
    """One node (broker and controller) of the local KRaft cluster the settings describe.

    Node 1, the default, is the single developer broker; its files keep the names ``kafka.pid``,
    ``kafka.log`` and ``<data_dir>/kafka``. Node ``i`` > 1 is ``kafka-<i>`` in all of them.
    """

    def __init__(self, settings: Settings, node_id: int = 1) -> None:
        self.nodes = cluster_nodes(settings.kafka)
        if not 1 <= node_id <= len(self.nodes):
            raise ServiceError(f"kafka: node {node_id} is not one of the {len(self.nodes)} configured nodes")
        self.node = self.nodes[node_id - 1]
        self.name = "kafka" if node_id == 1 else f"kafka-{node_id}"
        super().__init__(settings)
        self.config_file = settings.run_dir / f"{self.name}-server.properties"
        self.data_dir = _data_dir(settings, node_id)

    def _properties(self) -> str:
        node, count = self.node, len(self.nodes)
        # Internal topics (offsets, transactions): with 3 nodes or more, 3 replicas of which 2 must
        # acknowledge, so that one node may be down without stopping commits or transactions.
        replicas, in_sync = min(3, count), (2 if count >= 3 else 1)
        voters = ",".join(f"{n.node_id}@{n.host}:{n.controller_port}" for n in self.nodes)
        return "\n".join([
            "process.roles=broker,controller",
            f"node.id={node.node_id}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://{node.host}:{node.port},CONTROLLER://{node.host}:{node.controller_port}",
            f"advertised.listeners=PLAINTEXT://{node.address}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.data_dir}",
            "num.partitions=1",
            # The default for the product's topics (created with kafka.replication_factor replicas).
            f"min.insync.replicas={in_sync}",
            f"offsets.topic.replication.factor={replicas}",
            "offsets.topic.num.partitions=4",
            f"transaction.state.log.replication.factor={replicas}",
            f"transaction.state.log.min.isr={in_sync}",
            "transaction.state.log.num.partitions=4",
            f"share.coordinator.state.topic.replication.factor={replicas}",
            f"share.coordinator.state.topic.min.isr={in_sync}",
            # A local cluster: start consumer groups at once instead of waiting 3 s.
            "group.initial.rebalance.delay.ms=0",
            # A node that stops heartbeating is fenced, and its partitions move, after 5 s (Kafka's
            # default: 9 s). A scorer's group session must outlast the move, or the scorer rejoins
            # and its static member is fenced (docs/operations.md: 30 s on a cluster).
            "broker.heartbeat.interval.ms=1000",
            "broker.session.timeout.ms=5000",
            "auto.create.topics.enable=false",
            "log.retention.hours=168",
            "",
        ])

    def _java_command(self, jars: Path, main: str, *args: str) -> list[str]:
        log4j = self.settings.run_dir / "kafka-log4j2.xml"
        return [
            check_java(),
            f"-Xmx{self.settings.kafka.heap}", f"-Xms{self.settings.kafka.heap}",
            "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp", f"{jars}/*", main, *args,
        ]

    def _format_storage(self, jars: Path) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = _cluster_id(self.settings, self.nodes)
        result = subprocess.run(
            # "--cluster-id=<id>" in one argument: a base64 id may begin with "-".
            self._java_command(jars, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                               "-c", str(self.config_file), "--ignore-formatted"),
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"{self.name}: formatting storage failed:\n{result.stdout}{result.stderr}")

    def prepare(self) -> None:
        """Check this node's ports, write its configuration and format its storage (once)."""
        check_java()  # fail on a missing Java before touching anything
        require_free_port(self.name, self.node.host, self.node.port)
        require_free_port(f"{self.name} controller", self.node.host, self.node.controller_port)
        jars = resolve_jars()
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self._properties())
        (self.settings.run_dir / "kafka-log4j2.xml").write_text(_LOG4J2)
        self._format_storage(jars)

    def spawn(self) -> None:
        """Start the prepared node's process; do not wait for it."""
        self.process.start(self._java_command(resolve_jars(), "kafka.Kafka", str(self.config_file)), self.log_file)

    def serves(self, timeout_s: float = 2.0, client: AdminClient | None = None) -> bool:
        """This node answers a metadata request at its own address and is registered in the cluster."""
        # log_level 0: probing a node that is not up yet fails by design; keep librdkafka quiet about it.
        client = client or AdminClient({**self.settings.kafka.client, "bootstrap.servers": self.node.address,
                                        "log_level": 0})
        try:
            return self.node.node_id in client.list_topics(timeout=timeout_s).brokers
        except KafkaException:
            return False

    def wait_until_ready(self, stop_on_failure: bool = True) -> None:
        """Block until :meth:`serves`; if it does not in ``kafka.ready_timeout_s``, raise with the log's
        last lines (and stop the process if ``stop_on_failure``)."""
        client = AdminClient({**self.settings.kafka.client, "bootstrap.servers": self.node.address, "log_level": 0})

        def alive() -> None:
            if not self.is_running():
                raise ServiceError(f"{self.name} {self.node.address}: broker process exited during start-up")

        try:
            wait_for(lambda: self.serves(client=client), self.settings.kafka.ready_timeout_s,
                     f"{self.name} {self.node.address}", check=alive)
        except ServiceError as err:
            if stop_on_failure:
                self.process.stop()
            raise ServiceError(f"{err}\n--- last lines of {self.log_file} ---\n{tail(self.log_file)}") from err

    def start(self) -> bool:
        """Start this node unless it already runs, and wait until it serves; True if this call started it.

        A node of a cluster becomes ready only once a majority of the quorum runs: start a whole
        cluster with :class:`KafkaCluster`, and single nodes (a restart) once the others run.
        """
        if self.is_running():
            self.wait_until_ready(stop_on_failure=False)
            return False
        self.prepare()
        self.spawn()
        self.wait_until_ready()
        return True


class KafkaCluster:
    """Every node of the configured cluster, started together and stopped together (``mlops services``)."""

    def __init__(self, settings: Settings) -> None:
        self.brokers = [KafkaBroker(settings, n.node_id) for n in cluster_nodes(settings.kafka)]

    def start(self) -> list[KafkaBroker]:
        """Start the nodes that do not run, then wait for every node; return the ones this call started.

        All are spawned before any is waited for: the quorum elects a leader only once a majority
        runs. They are prepared (formatting is a JVM run) before any is spawned, which would slow
        it down. If one fails, the nodes this call started are stopped again.
        """
        started: list[KafkaBroker] = []
        stopped = [broker for broker in self.brokers if not broker.is_running()]
        for broker in stopped:
            broker.prepare()
        try:
            for broker in stopped:
                broker.spawn()
                started.append(broker)
            for broker in self.brokers:
                broker.wait_until_ready(stop_on_failure=False)
        except BaseException:
            for broker in started:
                broker.stop()
            raise
        return started

    def stop(self) -> list[str]:
        """Stop the nodes that run (by pid file), all at once; return their names.

        A node of a cluster may be left waiting for its controlled shutdown once the others have
        gone (no quorum is left to grant it): it is killed after 10 s, and Kafka recovers its log
        on the next start, as after any unclean stop.
        """
        grace_s = 30.0 if len(self.brokers) == 1 else 10.0
        stopped = {m.name for m in stop_together([broker.process for broker in self.brokers], grace_s)}
        return [broker.name for broker in self.brokers if broker.name in stopped]

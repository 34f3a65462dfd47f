"""A real Apache Kafka broker, single node in KRaft mode, run from jars resolved through Maven.

The broker's version is pinned in ``mlops/services/kafka/pom.xml``. Maven copies its runtime jars
from Maven Central into a cache directory once (``~/.cache/mlops-loop/kafka-<version>-<pom digest>`` unless
``MLOPS_KAFKA_JARS_DIR`` says otherwise); every later start reuses them offline.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import uuid
from importlib import resources
from pathlib import Path

from mlops import kafka
from mlops.config import Settings
from mlops.errors import ServiceError
from mlops.services.process import LocalService, require_free_port

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
    return Path(str(resources.files("mlops.services") / "kafka" / "pom.xml"))


def kafka_version() -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom_path().read_text())
    if not match:
        raise ServiceError(f"{pom_path()}: no <kafka.version> property")
    return match.group(1)


def jars_dir() -> Path:
    root = os.environ.get("MLOPS_KAFKA_JARS_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "mlops-loop"
    # The pom's digest is part of the name, so that changing its dependencies re-resolves them.
    digest = hashlib.sha256(pom_path().read_bytes()).hexdigest()[:8]
    return base / f"kafka-{kafka_version()}-{digest}"


def resolve_jars() -> Path:
    """Copy the broker's runtime jars into the cache directory once; return it."""
    target = jars_dir()
    marker = target / ".complete"
    if marker.exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError("kafka: Maven ('mvn') is not installed; it is needed once to fetch the broker's jars")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(pom_path()), "dependency:copy-dependencies",
         f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise ServiceError(
            f"kafka: Maven could not resolve Apache Kafka {kafka_version()} jars:\n{result.stdout[-2000:]}"
        )
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    marker.write_text(kafka_version())
    return target


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


class KafkaBroker(LocalService):
    """Start, check and stop the local single-node KRaft broker described by the settings."""

    name = "kafka"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.config_file = settings.run_dir / "kafka-server.properties"

    def _properties(self) -> str:
        k = self.settings.kafka
        host, port, cport = k.host, k.port, k.controller_port
        return "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{host}:{cport}",
            f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{cport}",
            f"advertised.listeners=PLAINTEXT://{host}:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.settings.kafka_data_dir}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            # A single developer broker: start consumer groups at once instead of waiting 3 s.
            "group.initial.rebalance.delay.ms=0",
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
        if (self.settings.kafka_data_dir / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        result = subprocess.run(
            # "--cluster-id=<id>" in one argument: a base64 id may begin with "-".
            self._java_command(jars, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                               "-c", str(self.config_file), "--ignore-formatted"),
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise ServiceError(f"kafka: formatting storage failed:\n{result.stdout}{result.stderr}")

    def start(self) -> bool:
        """Start the broker unless it already runs; return True if this call started it."""
        k = self.settings.kafka
        if self.is_running():
            kafka.wait_until_ready(k, k.ready_timeout_s, alive=self.is_running)
            return False
        java = check_java()  # fail on a missing Java before touching anything
        require_free_port("kafka", k.host, k.port)
        require_free_port("kafka controller", k.host, k.controller_port)
        jars = resolve_jars()
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        self.settings.kafka_data_dir.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self._properties())
        (self.settings.run_dir / "kafka-log4j2.xml").write_text(_LOG4J2)
        self._format_storage(jars)
        command = self._java_command(jars, "kafka.Kafka", str(self.config_file))
        command[0] = java
        self.launch(command, lambda: kafka.wait_until_ready(k, k.ready_timeout_s, alive=self.is_running))
        return True

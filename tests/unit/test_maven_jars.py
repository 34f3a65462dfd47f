"""Jars from Maven Central (mlops.services.maven): the Spark Kafka connector's pin and the cache's rules."""

from __future__ import annotations

from pathlib import Path

import pyspark
import pytest

from mlops.errors import ServiceError
from mlops.services import kafka_broker, maven, spark_kafka


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:3])


def test_the_connector_is_of_pysparks_major_version_and_not_newer() -> None:
    connector, ours = _version(spark_kafka.connector_version()), _version(pyspark.__version__)
    assert connector[0] == ours[0] and connector <= ours


def test_each_pom_has_a_cache_directory_of_its_own_named_by_version_and_digest() -> None:
    kafka_dir, spark_dir = kafka_broker.jars_dir(), spark_kafka.jars_dir()
    assert kafka_dir != spark_dir
    assert spark_dir.name.startswith(f"spark-kafka-{spark_kafka.connector_version()}-")
    assert kafka_dir.name.startswith(f"kafka-{kafka_broker.kafka_version()}-")


def test_a_complete_cache_is_used_without_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "jars"
    target.mkdir()
    (target / ".complete").write_text("done")
    monkeypatch.setattr(maven.shutil, "which", lambda _name: pytest.fail("Maven was called"))
    assert maven.copy_dependencies(spark_kafka.pom_path(), target, "the connector") == target


def test_without_maven_the_error_says_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maven.shutil, "which", lambda _name: None)
    with pytest.raises(ServiceError, match=r"Maven \('mvn'\) is not installed.*the connector"):
        maven.copy_dependencies(spark_kafka.pom_path(), tmp_path / "jars", "the connector")


def test_a_pom_without_the_property_is_refused(tmp_path: Path) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text("<project><properties/></project>")
    with pytest.raises(ServiceError, match=r"no <spark\.version> property"):
        maven.pom_property(pom, "spark.version")

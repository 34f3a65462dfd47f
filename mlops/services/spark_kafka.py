"""Spark's Kafka source and sink for Structured Streaming jobs, resolved from Maven Central once.

pyspark ships Spark's own jars but not the Kafka connector (``spark-sql-kafka-0-10``). Its version is
pinned in ``mlops/services/spark_kafka/pom.xml``; only the connector and what it needs beyond Spark
(the token provider, ``kafka-clients``, ``commons-pool2``) are copied, so no jar of Spark itself is
loaded twice. Give :func:`spark_jars_conf` to a SparkSession (``spark.jars``). ``mlops services
fetch`` (run by ``make setup``) resolves them next to the broker's.

The connector of pyspark's own version is used when Maven Central has it; when it does not yet
(pyspark 4.3.0 here), the newest release before it, which speaks the same DataSource V2 API.
"""

from __future__ import annotations

from pathlib import Path

from mlops.errors import ServiceError
from mlops.services import maven

__all__ = ["CONNECTOR_ARTIFACTS", "connector_version", "jars_dir", "resolve_jars", "spark_jars_conf"]

CONNECTOR_ARTIFACTS = ("spark-sql-kafka-0-10_2.13", "spark-token-provider-kafka-0-10_2.13", "kafka-clients",
                       "commons-pool2")
"""What the connector needs that pyspark's own jars do not hold."""


def pom_path() -> Path:
    return maven.pom_path("spark_kafka")


def connector_version() -> str:
    return maven.pom_property(pom_path(), "spark.version")


def jars_dir() -> Path:
    return maven.cache_dir(pom_path(), f"spark-kafka-{connector_version()}")


def resolve_jars() -> list[Path]:
    """The connector's jars, copied into the cache directory once."""
    try:
        target = maven.copy_dependencies(pom_path(), jars_dir(), f"Spark's Kafka connector {connector_version()}",
                                         CONNECTOR_ARTIFACTS)
    except ServiceError as err:
        raise ServiceError(f"spark kafka connector: {err}") from err
    jars = sorted(target.glob("*.jar"))
    if len(jars) != len(CONNECTOR_ARTIFACTS):
        raise ServiceError(f"spark kafka connector: expected {len(CONNECTOR_ARTIFACTS)} jars in {target}, "
                           f"found {[j.name for j in jars]}; delete the directory to resolve them again")
    return jars


def spark_jars_conf() -> dict[str, str]:
    """``{"spark.jars": ...}`` for a SparkSession that reads or writes Kafka."""
    return {"spark.jars": ",".join(str(jar) for jar in resolve_jars())}

"""The one place a SparkSession is built, from ``settings.spark`` (features, training, Feast).

``spark.master`` decides where the work runs: ``local[*]`` on one machine, a cluster URL when the
data outgrows it. Python workers run the same interpreter as the driver, so they see this
package and its pinned libraries.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

from mlops.errors import ServiceError
from mlops.log import get_logger

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from mlops.config import Settings

__all__ = ["BASE_CONF", "execution_tags", "spark_session"]

log = get_logger(__name__)

# Defaults every job wants; settings.spark.conf overrides any of them.
BASE_CONF = {
    # Event times are UTC everywhere; Spark must not shift them into the machine's zone.
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Parquet readers outside the JVM (pyarrow, dask, Feast) understand micros, not INT96.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.ui.showConsoleProgress": "false",
    "spark.ui.enabled": "false",
}


def spark_session(settings: Settings, app_name: str | None = None) -> SparkSession:
    """Get or create the SparkSession described by ``settings.spark`` (master, memory, partitions, conf).

    Logs are kept at WARN. The session is shared per process (Spark's getOrCreate); call
    ``.stop()`` when the job ends.
    """
    from pyspark.sql import SparkSession

    cfg = settings.spark
    # Workers must run this interpreter (the venv), not whatever `python3` is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if cfg.master.startswith("local"):
        # In local mode everything stays on loopback: no other interface is needed or reachable.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (
        SparkSession.builder.master(cfg.master)
        .appName(app_name or cfg.app_name)
        .config("spark.driver.memory", cfg.driver_memory)
        .config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
    )
    for key, value in {**BASE_CONF, **cfg.conf}.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as err:  # Py4J/Java errors: no JVM, bad master URL, bad conf value
        raise ServiceError(f"spark: could not start a session with master {cfg.master!r}: {err}") from err
    spark.sparkContext.setLogLevel("WARN")
    log.info("spark session ready", master=cfg.master, app=app_name or cfg.app_name,
             shuffle_partitions=cfg.shuffle_partitions)
    return spark


def execution_tags(spark: SparkSession) -> dict[str, str]:
    """Where a session's tasks ran, as tags for the job's MLflow run.

    ``spark.master``: the master URL. ``spark.executors``: how many executors ran at least one task
    (in local mode the driver runs them all: 0). ``spark.executor_tasks``: JSON, executor id ->
    host:port and tasks run so far, ``driver`` included. Read from Spark's status store, which is
    kept with the web UI off too; a Spark without it leaves the last two tags out.
    """
    context = spark.sparkContext
    tags = {"spark.master": str(context.master)}
    try:
        summaries = context._jsc.sc().statusStore().executorList(True).iterator()  # type: ignore[union-attr]
        tasks: dict[str, dict[str, str | int]] = {}
        while summaries.hasNext():
            summary = summaries.next()
            tasks[str(summary.id())] = {"host": str(summary.hostPort()), "tasks": int(summary.totalTasks())}
    except Exception as err:  # Py4J: a Spark version without this status store API
        log.warning("spark: could not read the executors from the status store", error=str(err))
        return tags
    used = [e for e, info in tasks.items() if e != "driver" and int(info["tasks"]) > 0]
    tags["spark.executors"] = str(len(used))
    tags["spark.executor_tasks"] = json.dumps(dict(sorted(tasks.items())), separators=(",", ":"))
    return tags

"""A Spark Structured Streaming peer of the scorer, for bench/scorer.py (d).

    .venv/bin/python bench/peers/spark_scorer.py [--max-readings N] [--max-per-trigger 10000]
                                                 [--report progress.json]

Reads the readings topic with Spark's Kafka source, groups each micro-batch's records by Kafka
partition and scores them in ``applyInPandasWithState``: the state of a group is the windows of the
devices in that partition (:meth:`DeviceWindows.snapshot`), as the scorer keeps per-partition
windows. Readings are keyed by device, so a device's history is in one partition. (Grouping by
device instead, one state per device, calls Python once per device per micro-batch: with 2,500
readings per trigger it ran at 1,300 readings/s, against 1,700/s by partition.) The features come
from the project's kernel
(:class:`mlops.features.state.DeviceWindows` over :func:`mlops.features.compute.window_features`),
the readings are decoded with the scorer's decoder (:func:`mlops.data.schemas.parse_reading`), the
model is the champion loaded from MLflow as the scorer loads it (:func:`load_champion`, once per
Python worker), and the predictions are the scorer's records (:func:`encode_predictions`), written
to the predictions topic by Spark's Kafka sink. Spark's sink is at-least-once, not exactly-once:
the comparison flatters the peer.

Settings come from the environment as for ``mlops score`` (MLOPS_*). With ``--max-readings`` it
stops once that many readings were processed and writes every micro-batch's progress to
``--report``; without, it runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from pyspark.sql.streaming.state import GroupState

    from mlops.registry.loader import LoadedModel

_LOADED: dict[str, LoadedModel] = {}
"""The champion, loaded once per Python worker (workers are reused across tasks)."""


def _champion() -> LoadedModel:
    if "champion" not in _LOADED:
        from mlops.config import load_settings
        from mlops.registry.loader import load_champion

        _LOADED["champion"] = load_champion(load_settings())
    return _LOADED["champion"]


def score_partition(key: tuple[Any, ...], batches: Iterator[pd.DataFrame], state: GroupState
                    ) -> Iterator[pd.DataFrame]:
    """One partition's readings of one micro-batch -> their predictions (key, value) for the Kafka sink."""
    from mlops.data.schemas import encode_predictions, parse_reading
    from mlops.errors import ValidationError
    from mlops.features.state import DeviceWindows

    model = _champion()
    rows = pd.concat(list(batches)).sort_values("offset")
    windows = DeviceWindows(model.spec)
    if state.exists:
        (snapshot,) = state.get
        windows.restore(json.loads(snapshot))
    readings, sources = [], []
    for value, topic, partition, offset in zip(rows["value"], rows["topic"], rows["partition"], rows["offset"],
                                               strict=True):
        try:
            reading = parse_reading(bytes(value))
        except ValidationError:
            continue  # the scorer dead-letters these; the peer only skips them
        if all(sensor in reading.sensors for sensor in model.spec.sensors):
            readings.append(reading)
            sources.append((str(topic), int(partition), int(offset)))
    if not readings:
        return
    features = windows.update_and_compute([(r.device_id, r.sensors, r.cycle) for r in readings])
    probabilities = model.predict_proba(features)
    payloads = encode_predictions(readings, sources, features, probabilities, model, datetime.now(UTC))
    state.update((json.dumps(windows.snapshot()),))
    yield pd.DataFrame({"key": [r.device_id for r in readings], "value": payloads})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-readings", type=int, default=0, help="stop after this many (0: until SIGTERM)")
    parser.add_argument("--max-per-trigger", type=int, default=10_000, help="most readings per micro-batch")
    parser.add_argument("--report", type=Path, help="where to write the micro-batches' progress (JSON)")
    args = parser.parse_args()

    from pyspark.sql.streaming.state import GroupStateTimeout

    from mlops.config import load_settings
    from mlops.services.spark_kafka import spark_jars_conf
    from mlops.spark import spark_session

    # Imported under its module name, so that Spark's workers (given this file) import score_partition
    # and share its loaded model, rather than receive a copy of __main__'s with every task.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import spark_scorer as peer

    settings = load_settings()
    partitions = settings.kafka.partitions.readings
    settings = load_settings(overrides={"spark": {
        "shuffle_partitions": partitions,  # one state store per readings partition
        "conf": {**settings.spark.conf, **spark_jars_conf(),
                 "spark.sql.streaming.numRecentProgressUpdates": "10000"},
    }})
    spark = spark_session(settings, app_name="bench-spark-peer")
    spark.sparkContext.addPyFile(str(Path(__file__).resolve()))
    kafka_servers = settings.kafka.bootstrap_servers
    topics = settings.kafka.topics
    readings = (spark.readStream.format("kafka")
                .option("kafka.bootstrap.servers", kafka_servers)
                .option("subscribe", topics.readings)
                .option("startingOffsets", "earliest")
                .option("maxOffsetsPerTrigger", args.max_per_trigger)
                .option("failOnDataLoss", "false")
                .load())
    scored = (readings.select("value", "topic", "partition", "offset")
              .groupBy("partition")
              .applyInPandasWithState(peer.score_partition, "key string, value binary", "windows string", "append",
                                      GroupStateTimeout.NoTimeout))
    with tempfile.TemporaryDirectory(prefix="spark-peer-") as checkpoint:
        query = (scored.writeStream.format("kafka")
                 .option("kafka.bootstrap.servers", kafka_servers)
                 .option("topic", topics.predictions)
                 .option("checkpointLocation", checkpoint)
                 .outputMode("append")
                 .start())
        stop = [False]
        signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
        processed = 0
        while not stop[0] and query.isActive:
            query.awaitTermination(1)
            processed = sum(json.loads(p.json)["numInputRows"] for p in query.recentProgress)
            if args.max_readings and processed >= args.max_readings:
                break
        progress = [json.loads(p.json) for p in query.recentProgress]
        query.stop()
    if args.report:
        args.report.write_text(json.dumps(progress))
    print(f"spark peer: {processed} readings in {len(progress)} micro-batches", flush=True)
    spark.stop()


if __name__ == "__main__":
    main()

"""``mlops demo``: show the product working on embedded defaults.

What it runs grows with the product; today: services up, their status, a reading produced to and
consumed back from ``iot.readings`` through the real broker, and a run logged and a model version
registered through the real MLflow server.
"""

from __future__ import annotations

import json
import time
import uuid

from rich.console import Console

from mlops import kafka
from mlops.config import Settings
from mlops.errors import ServiceError
from mlops.services import manager


def kafka_round_trip(settings: Settings, timeout_s: float = 30.0) -> dict[str, object]:
    """Produce one reading to the readings topic and consume it back; return what came back."""
    topic = settings.kafka.topics.readings
    marker = uuid.uuid4().hex
    reading = {"device_id": "demo-0", "marker": marker, "event_time": time.time()}
    producer = kafka.producer(settings.kafka)
    producer.produce(topic, key=b"demo-0", value=json.dumps(reading).encode())
    if producer.flush(timeout_s) != 0:
        raise ServiceError(f"kafka: could not deliver a message to {topic} within {timeout_s}s")
    consumer = kafka.consumer(settings.kafka, group_id=f"mlops-demo-{marker}")
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            value = json.loads(message.value() or b"{}")
            if value.get("marker") == marker:
                return {"topic": topic, "partition": message.partition(), "offset": message.offset(), **value}
    finally:
        consumer.close()
    raise ServiceError(f"kafka: the message produced to {topic} did not come back within {timeout_s}s")


def mlflow_round_trip(settings: Settings) -> dict[str, str]:
    """Log a run and register a tiny model version through the tracking server."""
    import mlflow
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    mlflow.set_experiment(f"{settings.mlflow.experiment}-smoke")
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    model = LogisticRegression().fit(x, [0, 0, 1, 1])
    with mlflow.start_run(run_name="services-smoke") as run:
        mlflow.log_param("purpose", "services round trip")
        mlflow.log_metric("train_accuracy", float(model.score(x, [0, 0, 1, 1])))
        # Explicit requirements: inferring them re-imports the model in a subprocess (~20 s).
        import sklearn

        info = mlflow.sklearn.log_model(model, name="model", input_example=x[:1],
                                        pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
                                        registered_model_name=f"{settings.mlflow.registered_model}-smoke")
    return {"run_id": run.info.run_id, "model_uri": info.model_uri,
            "version": str(info.registered_model_version)}


def run_demo(settings: Settings, keep_running: bool, console: Console) -> None:
    t0 = time.monotonic()
    console.rule("mlops demo")
    try:
        manager.up(settings, report=console.print)
        for row in manager.status(settings):
            console.print(f"{row.name}: {row.address} version {row.version} ready={row.ready}")
        echoed = kafka_round_trip(settings)
        console.print(f"kafka round trip: partition {echoed['partition']} offset {echoed['offset']}")
        logged = mlflow_round_trip(settings)
        console.print(f"mlflow round trip: run {logged['run_id']}, registered version {logged['version']}")
        console.print(f"MLflow UI: {settings.mlflow.tracking_uri}")
    finally:
        if not keep_running:
            manager.down(settings, report=console.print)
    console.rule(f"demo finished in {time.monotonic() - t0:.1f}s")

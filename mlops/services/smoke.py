"""Round trips through the real services: a message through Kafka, a run and a model through MLflow.

Used by ``mlops services check`` and the integration tests to prove that the services work, not
only that they answer.
"""

from __future__ import annotations

import json
import time
import uuid

from mlops import kafka
from mlops.config import Settings
from mlops.errors import ServiceError
from mlops.mlflow import use_tracking_server

__all__ = ["kafka_round_trip", "mlflow_round_trip"]


def kafka_round_trip(settings: Settings, timeout_s: float = 30.0) -> dict[str, object]:
    """Produce one message to the readings topic and consume it back; return what came back."""
    topic = settings.kafka.topics.readings
    marker = uuid.uuid4().hex
    producer = kafka.producer(settings.kafka)
    producer.produce(topic, key=b"demo-0", value=json.dumps({"device_id": "demo-0", "marker": marker}).encode())
    if producer.flush(timeout_s) != 0:
        raise ServiceError(f"kafka: could not deliver a message to {topic} within {timeout_s}s")
    consumer = kafka.consumer(settings.kafka, group_id=f"mlops-roundtrip-{marker}")
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for message in kafka.consume(consumer, 100, 0.5, "services check (kafka round trip)"):
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
    import sklearn
    from sklearn.linear_model import LogisticRegression

    use_tracking_server(settings)
    mlflow.set_experiment(f"{settings.mlflow.experiment}-smoke")
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    model = LogisticRegression().fit(x, [0, 0, 1, 1])
    with mlflow.start_run(run_name="services-smoke") as run:
        mlflow.log_param("purpose", "services round trip")
        mlflow.log_metric("train_accuracy", float(model.score(x, [0, 0, 1, 1])))
        # Explicit requirements: inferring them re-imports the model in a subprocess (~20 s).
        info = mlflow.sklearn.log_model(model, name="model", input_example=x[:1],
                                        pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
                                        registered_model_name=f"{settings.mlflow.registered_model}-smoke")
    return {"run_id": run.info.run_id, "model_uri": info.model_uri,
            "version": str(info.registered_model_version)}

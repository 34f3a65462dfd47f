"""Every message of the loop survives its own encoder and decoder (mlops.data.schemas)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from mlops.data.schemas import (
    MODEL_EVENT_SCHEMA_VERSION,
    PREDICTION_SCHEMA_VERSION,
    SCHEMA_VERSION,
    Label,
    ModelEvent,
    Position,
    Reading,
    encode,
    encode_predictions,
    lake_row,
    parse_label,
    parse_lake_row,
    parse_prediction,
    parse_reading,
)
from mlops.errors import ValidationError
from mlops.features.compute import FeatureSpec
from mlops.registry.loader import LoadedModel

T0 = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
READING = Reading(schema_version=SCHEMA_VERSION, device_id="dev-7", device_type="pump-a", event_time=T0, cycle=41,
                  sensors={"s_2": 642.5, "s_3": -1.25}, settings={"setting_1": 0.5})
FAILURE = Label(schema_version=SCHEMA_VERSION, device_id="dev-7", event_time=T0, kind="failure")
RUL = Label(schema_version=SCHEMA_VERSION, device_id="dev-7", event_time=T0, kind="rul", rul=12.0)


def test_reading_round_trips() -> None:
    assert parse_reading(encode(READING)) == READING


@pytest.mark.parametrize("label", [FAILURE, RUL])
def test_label_round_trips(label: Label) -> None:
    assert parse_label(encode(label)) == label


def test_prediction_round_trips_with_its_version() -> None:
    spec = FeatureSpec(("s_2",), window=3)
    model = LoadedModel("iot-failure", "7", "run", object(), spec, threshold=0.6)
    features = np.array([[1.0, 0.0, 0.25, 1.5, 1.0]])
    raw, = encode_predictions([READING], [("iot.readings", 2, 10)], features, np.array([0.75]), model, T0)
    assert json.loads(raw)["schema_version"] == PREDICTION_SCHEMA_VERSION
    decoded = parse_prediction(raw, Position("iot.predictions", 1, 3))
    assert (decoded.device_id, decoded.event_time, decoded.probability, decoded.decision) == ("dev-7", T0, 0.75, 1)
    assert (decoded.model_name, decoded.model_version) == ("iot-failure", "7")
    assert decoded.features == dict(zip(spec.feature_names(), features[0].tolist(), strict=True))
    assert decoded.source == Position("iot.readings", 2, 10)
    assert decoded.position == Position("iot.predictions", 1, 3)


def test_prediction_of_another_version_is_refused() -> None:
    spec = FeatureSpec(("s_2",), window=3)
    model = LoadedModel("iot-failure", "7", "run", object(), spec, threshold=0.6)
    raw, = encode_predictions([READING], [("r", 0, 0)], np.array([[1.0] * 5]), np.array([0.5]), model, T0)
    newer = {**json.loads(raw), "schema_version": PREDICTION_SCHEMA_VERSION + 1}
    with pytest.raises(ValidationError, match="unknown schema version"):
        parse_prediction(json.dumps(newer).encode())


def test_model_event_round_trips_with_its_version() -> None:
    event = ModelEvent(model="iot-failure", action="rollback", version="6", previous_version="7", actor="alice",
                       reason="worse on last week", time=T0.isoformat())
    assert json.loads(event.encode())["schema_version"] == MODEL_EVENT_SCHEMA_VERSION
    assert ModelEvent.decode(event.encode()) == event


def test_model_event_decode_refuses_other_json() -> None:
    with pytest.raises(ValidationError, match="model event is not valid"):
        ModelEvent.decode(b'{"model": "iot-failure"}')


@pytest.mark.parametrize("event", [READING, FAILURE, RUL])
def test_lake_row_round_trips(event: Reading | Label) -> None:
    row = lake_row(event, "iot.readings", 3, 912)
    assert row["_topic"] == "iot.readings" and row["_partition"] == 3 and row["_offset"] == 912
    decoded, position = parse_lake_row(row)
    assert decoded == event
    assert position == Position("iot.readings", 3, 912)
    assert lake_row(decoded, *(position.topic, position.partition, position.offset)) == row


def test_lake_row_nulls_are_not_measurements() -> None:
    # The union of a file's columns: another device type's sensor and a failure's rul are NaN here.
    row = {**lake_row(READING, "t", 0, 1), "s_9": float("nan")}
    assert parse_lake_row(row)[0] == READING
    assert parse_lake_row({**lake_row(FAILURE, "t", 0, 1), "rul": float("nan")})[0] == FAILURE


def test_lake_row_without_its_position_says_which_column() -> None:
    row = lake_row(READING, "t", 0, 1)
    del row["_offset"]
    with pytest.raises(ValidationError, match="'_offset' is missing"):
        parse_lake_row(row)

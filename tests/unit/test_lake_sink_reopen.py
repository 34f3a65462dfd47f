"""A lake sink fenced by its own rejoin (a static member whose session expired while a broker restarted)
drops what it has not committed and opens a new consumer, once; fenced again, it stops."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from mlops import kafka
from mlops.config import load_settings
from mlops.data.lake_sink import LakeSink, _Pending
from mlops.errors import FatalKafkaError


def _fenced() -> FatalKafkaError:
    return FatalKafkaError("lake sink (group g): fenced", KafkaError.FENCED_INSTANCE_ID, "FENCED_INSTANCE_ID")


def test_a_self_fenced_sink_reads_its_uncommitted_events_again_with_a_new_consumer(tmp_path) -> None:
    # No broker at this address: creating and subscribing a consumer does not need one.
    settings = load_settings("local", overrides={"paths": {"data_dir": str(tmp_path)},
                                                 "kafka": {"bootstrap_servers": "127.0.0.1:1"}})
    sink = LakeSink(settings)
    fenced = sink._open_consumer()
    sink._pending = {("iot.readings", 0): _Pending(first_offset=10, last_offset=14, rows=[{}] * 5)}
    sink._pending_count, sink._oldest_pending = 5, 1.0
    sink._next = {("iot.readings", 0): 15}
    try:
        fresh = sink._reopen(fenced, "fenced", _fenced())
        assert fresh is not fenced and sink._consumer is fresh and sink._abandoned == [fenced]
        # Nothing held back: the new assignment seeks to the lake's last commit, so events 10-14 are read again.
        assert sink._pending == {} and sink._pending_count == 0 and sink._next == {}
        assert sink._oldest_pending is None
        assert {KafkaError.FENCED_INSTANCE_ID, KafkaError._FATAL} <= kafka.SELF_FENCING
        # Fenced again within 10 minutes: a second process with the same instance id, so it stops.
        with pytest.raises(FatalKafkaError, match=r"^fenced again \[lake sink \(group .*\): Kafka clients "
                                                  r"already reopened 1 time\(s\) in 600 s"):
            sink._reopen(fresh, "fenced again", _fenced())
    finally:
        for consumer in [*sink._abandoned, sink._consumer]:
            if consumer is not None:
                consumer.close()

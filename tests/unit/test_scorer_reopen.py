"""The scorer's guard against client calls that never return, and its budget for reopening clients."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from mlops.config import load_settings
from mlops.errors import FatalKafkaError
from mlops.serve import scorer as scorer_module
from mlops.serve.scorer import ClientHung, Scorer


def test_a_call_that_outlasts_the_deadline_raises_and_the_next_call_gets_a_fresh_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scorer_module, "HUNG_CALL_S", 0.2)
    scorer = Scorer(load_settings("local"))
    release = threading.Event()
    started = time.monotonic()
    with pytest.raises(ClientHung, match="did not return within"):
        scorer._bounded(lambda: release.wait(30))
    assert time.monotonic() - started < 5
    # The stuck call still holds the old thread: a new call must not queue behind it.
    assert scorer._bounded(lambda: 41 + 1) == 42
    with pytest.raises(ZeroDivisionError):
        scorer._bounded(lambda: 1 / 0)
    release.set()


def test_more_reopens_than_the_budget_stop_the_scorer_with_the_reason() -> None:
    scorer = Scorer(load_settings("local"))
    now = time.monotonic()
    scorer._reopens.spent.extend([now - 3, now - 2, now - 1])
    with pytest.raises(FatalKafkaError,
                       match=r"^stuck commit \[scorer .*: Kafka clients already reopened 3 time\(s\) in 600 s"):
        scorer._reopen("stuck commit")
    # Reopens older than the window no longer count: the fourth is allowed to go ahead (and here
    # fails only because this scorer never opened clients).
    scorer._reopens.spent.clear()
    scorer._reopens.spent.extend([now - scorer._reopens.window_s - 10] * 3)
    with pytest.raises(AssertionError):
        scorer._reopen("stuck commit")
    assert len(scorer._reopens.spent) == 1


class _RefusingProducer:
    """A transactional producer whose send_offsets fails with ``error``; it records what was called."""

    def __init__(self, error: KafkaError) -> None:
        self.error, self.calls = error, []

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def send_offsets_to_transaction(self, *_args: object) -> None:
        raise KafkaException(self.error)

    def abort_transaction(self, *_args: object) -> None:
        self.calls.append("abort")


class _Consumer:
    def consumer_group_metadata(self) -> object:
        return object()


def _failing_transaction(error: KafkaError, rewind_fails: bool = False) -> tuple[bool, list[str]]:
    scorer = Scorer(load_settings("local"))
    producer = _RefusingProducer(error)
    scorer._producer, scorer._consumer = producer, _Consumer()  # type: ignore[assignment]
    steps: list[str] = []

    def rewind() -> None:
        steps.append("rewind")
        if rewind_fails:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "committed offsets timed out"))

    scorer._reopen = lambda reason, error=None: steps.append("reopen")  # type: ignore[method-assign]
    scorer._replace_producer = lambda: steps.append("new producer")  # type: ignore[method-assign]
    scorer._rewind = rewind  # type: ignore[method-assign]
    committed = scorer._transact([], [], [], {})
    return committed, producer.calls + steps


def test_a_timed_out_transaction_reopens_both_clients_and_never_reuses_the_producer() -> None:
    committed, calls = _failing_transaction(KafkaError(KafkaError._TIMED_OUT, "send_offsets timed out"))
    assert not committed and calls == ["begin", "reopen"]


def test_a_refused_transaction_gets_a_new_producer_and_a_rewind_never_an_abort_on_the_same_producer() -> None:
    refused = KafkaError(KafkaError.ILLEGAL_GENERATION, "stale generation", txn_requires_abort=True)
    committed, calls = _failing_transaction(refused)
    assert not committed and calls == ["begin", "new producer", "rewind"]
    committed, calls = _failing_transaction(refused, rewind_fails=True)
    assert not committed and calls == ["begin", "new producer", "rewind", "reopen"]


def test_a_fatal_transaction_error_stops_the_scorer() -> None:
    with pytest.raises(FatalKafkaError, match="transaction failed fatally"):
        _failing_transaction(KafkaError(KafkaError.PRODUCER_FENCED, "fenced", fatal=True))

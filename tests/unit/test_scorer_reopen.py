"""The scorer's guard against client calls that never return, and its budget for reopening clients."""

from __future__ import annotations

import threading
import time

import pytest

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
    scorer._reopens.extend([now - 3, now - 2, now - 1])
    with pytest.raises(FatalKafkaError, match=r"reopened 3 times .* because: stuck commit"):
        scorer._reopen("stuck commit")
    # Reopens older than the window no longer count: the fourth is allowed to go ahead (and here
    # fails only because this scorer never opened clients).
    scorer._reopens.clear()
    scorer._reopens.extend([now - scorer_module.REOPEN_WINDOW_S - 10] * 3)
    with pytest.raises(AssertionError):
        scorer._reopen("stuck commit")
    assert len(scorer._reopens) == 1

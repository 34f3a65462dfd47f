"""The audit trail and the database lock, on a real SQLite file."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mlops import store
from mlops.errors import ValidationError


@pytest.fixture()
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'mlops.db'}"


def test_record_and_list_round_trip(url: str) -> None:
    first = store.record_event(url, "promotion", model_name="m", model_version=2, previous_version="1",
                            run_id="r2", actor="alice", reason="better", details={"gate": {"f1": 0.9}})
    store.record_event(url, "window_result", model_name="m", details={"drift_share": 0.1})
    store.record_event(url, "promotion", model_name="other", model_version="5")

    events = store.list_events(url, kinds=["promotion"], model_name="m")
    assert [e.id for e in events] == [first]
    event = events[0]
    assert (event.model_version, event.previous_version, event.actor, event.reason) == ("2", "1", "alice", "better")
    assert event.details == {"gate": {"f1": 0.9}}
    assert event.time.tzinfo is not None and abs(event.time - datetime.now(UTC)) < timedelta(minutes=1)
    assert event.to_dict()["time"].endswith("+00:00")
    assert [e.kind for e in store.list_events(url, newest_first=True, limit=2)] == ["promotion", "window_result"]
    assert store.list_events(url, since=datetime.now(UTC) + timedelta(hours=1)) == []


def test_unknown_kind_is_refused_with_the_known_ones(url: str) -> None:
    with pytest.raises(ValidationError, match=r"'promoted' is unknown.*promotion"):
        store.record_event(url, "promoted")


def test_previous_champion_walks_promotions_backwards(url: str) -> None:
    for version, previous in (("2", "1"), ("3", "2")):
        store.record_event(url, "promotion", model_name="m", model_version=version, previous_version=previous,
                        details={"changed": True})
    # Rolled back from 3 to 2: the next rollback must reach 1, not bounce back to 3.
    store.record_event(url, "rollback", model_name="m", model_version="2", previous_version="3")
    assert store.previous_champion(url, "m", "3") == "2"
    assert store.previous_champion(url, "m", "2") == "1"
    assert store.previous_champion(url, "m", "1") is None
    # A promotion that changed nothing (already champion) says nothing about the previous one.
    store.record_event(url, "promotion", model_name="m", model_version="2", previous_version="2",
                    details={"changed": False})
    assert store.previous_champion(url, "m", "2") == "1"


def test_rows_written_under_the_lock_roll_back_with_an_error(url: str) -> None:
    with pytest.raises(RuntimeError), store.locked(url, "champion:m", holder="t") as conn:
        store.record_event(conn, "promotion", model_name="m", model_version="9")
        raise RuntimeError("failed half-way")
    assert store.list_events(url) == []
    with store.locked(url, "champion:m", holder="t") as conn:
        store.record_event(conn, "promotion", model_name="m", model_version="9")
    assert [e.model_version for e in store.list_events(url)] == ["9"]


def test_lock_makes_read_decide_write_serial(url: str) -> None:
    """Each holder reads the latest counter and writes counter + 1: without the lock, values repeat."""
    workers = 8
    errors: list[BaseException] = []

    def bump(worker: int) -> None:
        try:
            with store.locked(url, "counter", holder=f"w{worker}") as conn:
                latest = store.list_events(conn, kinds=["manual_action"], newest_first=True, limit=1)
                value = latest[0].details["n"] + 1 if latest else 1
                store.record_event(conn, "manual_action", actor=f"w{worker}", details={"n": value})
        except BaseException as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=bump, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(e.details["n"] for e in store.list_events(url)) == list(range(1, workers + 1))


def test_second_holder_waits_for_the_first(url: str) -> None:
    inside_first, release_first, inside_second = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with store.locked(url, "champion:m", holder="first"):
            inside_first.set()
            release_first.wait(30)

    def second() -> None:
        with store.locked(url, "champion:m", holder="second"):
            inside_second.set()

    a = threading.Thread(target=first)
    a.start()
    assert inside_first.wait(30)
    b = threading.Thread(target=second)
    b.start()
    assert not inside_second.wait(0.5), "the second holder got the lock while the first held it"
    release_first.set()
    assert inside_second.wait(30)
    a.join(30)
    b.join(30)

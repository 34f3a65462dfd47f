from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine

from mlops.store.lease import Lease

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_only_one_holder_until_the_lease_expires(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    a = Lease(engine, "scheduler", "a", ttl_s=30)
    b = Lease(engine, "scheduler", "b", ttl_s=30)
    assert a.try_acquire(T0)
    assert not b.try_acquire(T0 + timedelta(seconds=5))
    assert a.try_acquire(T0 + timedelta(seconds=20))  # renewal extends to T0+50s
    assert not b.try_acquire(T0 + timedelta(seconds=45))
    assert b.try_acquire(T0 + timedelta(seconds=51))  # a stopped renewing: b takes over
    assert not a.try_acquire(T0 + timedelta(seconds=52))
    holder = b.holder_now()
    assert holder is not None and holder[0] == "b"


def test_release_hands_over_at_once(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    a = Lease(engine, "scheduler", "a", ttl_s=300)
    b = Lease(engine, "scheduler", "b", ttl_s=300)
    assert a.try_acquire(T0)
    a.release()
    assert b.try_acquire(T0 + timedelta(seconds=1))

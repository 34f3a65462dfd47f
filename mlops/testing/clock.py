"""A clock that moves only when told, for code that takes its time as a callable (``now=...``)."""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["ManualClock"]


class ManualClock:
    """``clock()`` is the current time; ``clock.advance(seconds)`` (or ``clock.sleep``) moves it on.

    Pass ``clock`` where code wants ``now: Callable[[], datetime]`` and ``clock.sleep`` where it
    wants ``sleep: Callable[[float], None]``: time then passes only as the test says.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError(f"start {start.isoformat()}: must carry a timezone")
        self._now = start

    def __call__(self) -> datetime:
        return self._now

    def advance(self, by: float | timedelta) -> datetime:
        """Move the clock ``by`` (seconds or a timedelta, not negative) and return the new time."""
        step = by if isinstance(by, timedelta) else timedelta(seconds=by)
        if step < timedelta(0):
            raise ValueError(f"a clock does not go back ({step})")
        self._now += step
        return self._now

    def sleep(self, seconds: float) -> None:
        """What ``time.sleep`` does to a real clock, at once."""
        self.advance(seconds)

    def monotonic(self) -> float:
        """The time as seconds since the epoch, for code that takes ``clock: Callable[[], float]``."""
        return self._now.timestamp()

"""Waiting for a condition with a deadline: the way tests synchronise, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_until"]

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout_s: float, what: str, step: Callable[[], object] | None = None,
               interval_s: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy and return that; fail naming ``what``.

    Between polls ``step`` runs (e.g. a consumer's poll) or, without one, the caller waits ``interval_s``.
    Raises AssertionError after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        if step is not None:
            step()
        else:
            time.sleep(interval_s)
    return value

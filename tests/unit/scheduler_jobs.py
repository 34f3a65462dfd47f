"""Job functions for the scheduler tests (APScheduler stores them by import path)."""

from __future__ import annotations

from datetime import UTC, datetime


def record(path: str, tag: str = "") -> None:
    with open(path, "a") as out:
        out.write(f"{tag} {datetime.now(UTC).isoformat()}\n")

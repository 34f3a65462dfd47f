"""Names and ports no other test or benchmark run uses."""

from __future__ import annotations

import socket
import uuid

__all__ = ["free_port", "unique"]


def unique(prefix: str) -> str:
    """A unique topic or group name, so tests never see each other's data."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

"""What every HTTP request passes through, routed or not: the body-size limit, and the count and
time of each request by route and status."""

from __future__ import annotations

import time

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlops.serve.api.errors import error
from mlops.serve.api.metrics import ApiMetrics

__all__ = ["Edge"]


class Edge:
    """Pure ASGI middleware: refuse oversized bodies (by Content-Length before reading them, while
    reading a chunked one), count and time requests."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, max_body: int) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        length = dict(scope["headers"]).get(b"content-length")
        received = 0

        async def limited() -> Message:
            # Only chunked bodies (no Content-Length) get here: count them as they arrive.
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise HTTPException(413, f"body exceeds the {self.max_body}-byte limit")
            return message

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if length is None:
                await self.app(scope, limited, watch)
            elif not length.isdigit():
                await error(400, f"bad Content-Length {length.decode(errors='replace')!r}")(scope, receive, watch)
            elif int(length) > self.max_body:
                reason = f"body of {int(length)} bytes exceeds the {self.max_body}-byte limit"
                await error(413, reason)(scope, receive, watch)
            else:
                await self.app(scope, receive, watch)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(path, scope["method"], str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)

"""Headless Chromium driven over the DevTools protocol, for tests that look at a web UI as a person would.

Debian's ``chromium`` is started with a fresh profile in a directory the test owns; the protocol's
WebSocket is spoken with the ``websockets`` client. Every wait is a condition polled with a deadline.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

START_TIMEOUT_S = 60.0
POLL_S = 0.25


def chromium_binary() -> str:
    """The Chromium executable (``scripts/bootstrap.sh`` installs Debian's ``chromium``)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("no chromium on PATH: run scripts/bootstrap.sh (it installs Debian's chromium package)")


class Browser:
    """One headless Chromium page: ``with Browser(profile_dir) as page: page.open(url)``."""

    def __init__(self, profile_dir: Path, width: int = 1600, height: int = 1000) -> None:
        self.profile_dir = profile_dir
        self.width, self.height = width, height
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: Any = None
        self._stack = contextlib.ExitStack()
        self._ids = itertools.count(1)

    def __enter__(self) -> Browser:
        from websockets.sync.client import connect

        self.profile_dir.mkdir(parents=True, exist_ok=True)
        log = (self.profile_dir / "chromium.log").open("wb")
        command = [chromium_binary(), "--headless", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                   "--no-default-browser-check", f"--user-data-dir={self.profile_dir}",
                   "--remote-debugging-port=0", f"--window-size={self.width},{self.height}", "about:blank"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.insert(1, "--no-sandbox")  # Chromium refuses to run its sandbox as root
        self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        port_file = self.profile_dir / "DevToolsActivePort"
        port = self._poll(lambda: port_file.exists() and port_file.read_text().split("\n")[0].strip(),
                          START_TIMEOUT_S, "Chromium's DevTools port file")
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t.get("type") == "page")
        self._socket = self._stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None,
                                                         open_timeout=30))
        self.call("Page.enable")
        self.call("Runtime.enable")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stack.close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=20)

    def _poll(self, condition: Any, timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process is not None and self._process.poll() is not None:
                log = (self.profile_dir / "chromium.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"chromium exited with {self._process.returncode} waiting for {what}: {log}")
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} after {timeout_s:.0f} s")
            time.sleep(POLL_S)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools command; its result (events arriving meanwhile are skipped)."""
        ident = next(self._ids)
        self._socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv(timeout=60))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript {expression[:80]!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        """Navigate to ``url`` (the page's scripts then run on their own; wait with :meth:`wait_for`)."""
        self.call("Page.navigate", url=url)

    def text(self) -> str:
        """The page's visible text."""
        return str(self.evaluate("document.body ? document.body.innerText : ''"))

    def wait_for(self, expression: str, timeout_s: float, what: str) -> Any:
        """Poll a JavaScript expression until it is truthy; TimeoutError (with the page's text) at the deadline."""
        try:
            return self._poll(lambda: self.evaluate(expression), timeout_s, what)
        except TimeoutError as err:
            raise TimeoutError(f"{err}; the page shows: {self.text()[:1500]!r}") from err

    def screenshot(self, path: Path) -> Path:
        """A PNG of the page's whole viewport."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

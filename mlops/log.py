"""Structured logs: ``key=value`` pairs after the message, one line per event.

    log = get_logger(__name__)
    log.info("batch scored", topic=topic, partition=3, offset=912, model_version="4")
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

__all__ = ["KeyValueLogger", "configure_logging", "get_logger"]


def _format_value(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or "=" in text or not text) else text


class KeyValueLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger whose methods take keyword fields and render them as key=value."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k not in {"exc_info", "stack_info", "stacklevel", "extra"}}
        if fields:
            msg = f"{msg} " + " ".join(f"{k}={_format_value(v)}" for k, v in fields.items())
        return msg, kwargs


def get_logger(name: str) -> KeyValueLogger:
    return KeyValueLogger(logging.getLogger(name), {})


def configure_logging(level: str | None = None) -> None:
    """Configure the root logger once for a long-running command (level from MLOPS_LOG_LEVEL)."""
    logging.basicConfig(
        level=(level or os.environ.get("MLOPS_LOG_LEVEL", "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )

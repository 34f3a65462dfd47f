"""Model events on ``mlops.model-events`` (compacted, key = registered model name).

    {"schema_version": 1, "model": "iot-failure", "action": "promote", "version": "7",
     "previous_version": "6", "alias": "champion", "time": "2026-11-21T10:00:00+00:00",
     "actor": "loop", "reason": "drift window 42: 0.71 of features drifted"}

action: "promote" | "rollback". Consumers (scorer, API) treat the event as a hint and re-read the
alias from the registry, which stays the source of truth; polling the registry is the fallback.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal

from mlops.errors import ValidationError


@dataclass(frozen=True)
class ModelEvent:
    model: str
    action: Literal["promote", "rollback"]
    version: str
    previous_version: str | None = None
    alias: str = "champion"
    actor: str = "unknown"
    reason: str = ""
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    schema_version: int = 1

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> ModelEvent:
        try:
            data = json.loads(raw or b"")
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as err:
            raise ValidationError(f"model event is not valid: {err}") from err

"""The FastAPI dependencies the routes declare: the model serving now (503 until one is loaded), and
the API key that guards promotion and rollback."""

# No ``from __future__ import annotations``: FastAPI reads these signatures' types at run time, and
# the key's type refers to a local (the header scheme).
import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import HTTPException, Security
from fastapi.security import APIKeyHeader

from mlops.config import Settings
from mlops.serve.api.keeper import ModelKeeper, Serving

__all__ = ["API_KEY_HEADER", "ServingProvider", "api_key_check", "serving_of"]

API_KEY_HEADER = "X-API-Key"

ServingProvider = Callable[[], Awaitable[Serving]]
"""A dependency answering the :class:`Serving` a request uses (``Annotated[Serving, Depends(it)]``)."""


def serving_of(keeper: ModelKeeper) -> ServingProvider:
    """The dependency that reads ``keeper``'s model once per request; 503 while none is loaded."""

    async def serving() -> Serving:  # async: a sync dependency would cost a thread hop per request
        current = keeper.serving
        if current is None:
            raise HTTPException(503, f"no model loaded yet: {keeper.load_error or 'loading'}")
        return current

    return serving


def api_key_check(settings: Settings) -> Callable[[str | None], str]:
    """The dependency that requires header ``X-API-Key`` to be ``settings.api.api_key`` (401 or 403)."""
    key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="settings.api.api_key")

    def require_key(key: Annotated[str | None, Security(key_header)]) -> str:
        if not key:
            raise HTTPException(401, f"missing API key: send header {API_KEY_HEADER}",
                                headers={"WWW-Authenticate": "APIKey"})
        if not secrets.compare_digest(key.encode(), settings.api.api_key.encode()):
            raise HTTPException(403, "wrong API key")
        return key

    return require_key

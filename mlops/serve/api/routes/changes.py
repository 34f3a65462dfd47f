"""Champion changes behind the API key: ``POST /v1/promote`` (the evaluation gate runs unless
forced) and ``POST /v1/rollback``. The registry's errors become 404, 409 or 503 here, and the
keeper re-reads the alias at once after a change."""

# No ``from __future__ import annotations``: FastAPI reads the route parameters' types at run time.
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request

from mlops.config import Settings
from mlops.errors import MlopsError, PolicyError
from mlops.registry import catalog
from mlops.registry.promotion import NoPreviousChampionError, PromotionRejectedError, promote, rollback
from mlops.serve.api import models as m
from mlops.serve.api.deps import api_key_check
from mlops.serve.api.keeper import ModelKeeper

__all__ = ["add_routes"]


def add_routes(app: FastAPI, settings: Settings, keeper: ModelKeeper) -> None:
    """Add the promotion and rollback routes to ``app``; ``keeper`` learns of each change at once."""
    require_key = api_key_check(settings)
    auth = {**m.AUTH, **m.ERRORS}

    @app.post("/v1/promote", response_model=m.ChangeResponse, responses=auth, dependencies=[Depends(require_key)],
              summary="Make a version the champion (the evaluation gate runs unless force)")
    def promote_version(body: m.PromoteRequest, request: Request) -> dict[str, Any]:
        return _change(keeper, lambda actor: promote(settings, body.version, actor=actor, reason=body.reason,
                                                     force=body.force), request)

    @app.post("/v1/rollback", response_model=m.ChangeResponse, responses=auth, dependencies=[Depends(require_key)],
              summary="Back to the previous champion, or to a given version")
    def rollback_version(body: m.RollbackRequest, request: Request) -> dict[str, Any]:
        return _change(keeper, lambda actor: rollback(settings, body.to_version, actor=actor, reason=body.reason),
                       request)


def _change(keeper: ModelKeeper, action: Any, request: Request) -> dict[str, Any]:
    actor = f"api:{request.client.host if request.client else 'unknown'}"
    try:
        result = action(actor)
    except catalog.VersionNotFoundError as err:
        raise HTTPException(404, str(err)) from err
    except (PolicyError, NoPreviousChampionError) as err:
        gate = err.decision.to_dict() if isinstance(err, PromotionRejectedError) and err.decision else None
        raise HTTPException(409, str(err) if gate is None else f"{err} gate={gate}") from err
    except MlopsError as err:
        raise HTTPException(503, str(err)) from err
    keeper.check_now()
    return dict(result.to_dict())

"""The one place the project makes an MLflow client and sets MLflow's process-global tracking URI.

    client = tracking_client(settings)     # runs, artifacts and the model registry on one server
    use_tracking_server(settings)          # for mlflow.start_run and mlflow.<flavor>.load_model
    require_reachable(settings)            # RegistryUnavailableError within seconds if it does not answer

Every client talks to ``mlflow.tracking_uri`` for both tracking and the registry, so a run and the
version registered from it can never land on two servers. A server that does not answer raises
:class:`RegistryUnavailableError` (see :func:`unreachable`), never a "not found": "the server is
down" and "there is no such version" call for different actions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import requests

from mlops.config import Settings
from mlops.errors import RegistryError

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["PROBE_TIMEOUT_S", "RegistryUnavailableError", "require_reachable", "tracking_client", "unavailable",
           "unreachable", "use_tracking_server"]

PROBE_TIMEOUT_S = 5.0
"""How long :func:`require_reachable` waits for the server's health check."""


def tracking_client(settings: Settings) -> MlflowClient:
    """An MlflowClient for the configured tracking server, used as the model registry too."""
    from mlflow import MlflowClient  # heavy

    uri = settings.mlflow.tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def use_tracking_server(settings: Settings) -> None:
    """Point MLflow's fluent API at the configured server.

    ``mlflow.start_run``, ``mlflow.log_*``, ``mlflow.register_model`` and ``mlflow.<flavor>.load_model``
    of a ``models:/`` URI take no client: they read the process-global tracking URI.
    """
    import mlflow  # heavy

    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)


class RegistryUnavailableError(RegistryError):
    """The registry server did not answer; the message names its URL and what to do."""


def unreachable(err: BaseException) -> bool:
    """True if ``err`` (or what it was raised from) is a failure to talk to the server, not its answer.

    MLflow wraps transport errors in a plain MlflowException whose ``__context__`` is the
    ``requests`` error, so the chain is walked rather than the outer type tested.
    """
    transport = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                 requests.exceptions.RetryError, ConnectionError, TimeoutError)
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, transport):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def unavailable(settings: Settings, doing: str, err: BaseException | str) -> RegistryUnavailableError:
    """The error for a registry that did not answer while ``doing`` something."""
    return RegistryUnavailableError(
        f"MLflow registry at {settings.mlflow.tracking_uri} is not reachable ({doing}): {err}. "
        "Start it (`mlops services up`) or point mlflow.tracking_uri at a running server, then try again")


def require_reachable(settings: Settings, doing: str = "health check", timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Raise :class:`RegistryUnavailableError` unless the tracking server answers its health check.

    A client call to a stopped server is retried by MLflow for minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    default 7 with exponential backoff); this probe fails within ``timeout_s`` instead. Non-HTTP
    tracking URIs (a local store) have no server to probe.
    """
    uri = settings.mlflow.tracking_uri
    if not uri.startswith(("http://", "https://")):
        return
    try:
        answer = httpx.get(f"{uri.rstrip('/')}/health", timeout=timeout_s)
    except httpx.HTTPError as err:
        raise unavailable(settings, doing, f"{type(err).__name__}: {err}") from err
    if answer.status_code != 200:
        raise unavailable(settings, doing, f"/health answered HTTP {answer.status_code}")

"""The MLflow tracking server (``mlflow server``) with a SQLite backend store and local artifacts."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from mlops.config import MlflowSettings
from mlops.errors import ServiceError
from mlops.services.process import LocalService, require_free_port, wait_for

__all__ = ["MlflowServer", "is_ready"]


def is_ready(settings: MlflowSettings, timeout_s: float = 2.0) -> bool:
    """True if the tracking server answers its health check."""
    try:
        return httpx.get(f"{settings.tracking_uri.rstrip('/')}/health", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


class MlflowServer(LocalService):
    """Start, check and stop the local MLflow tracking server described by the settings."""

    name = "mlflow"

    def _command(self) -> list[str]:
        m = self.settings.mlflow
        return [
            sys.executable, "-m", "mlflow", "server",
            "--host", m.host, "--port", str(m.port),
            "--backend-store-uri", self.settings.mlflow_backend_store_uri,
            "--artifacts-destination", self.settings.mlflow_artifacts_destination,
            "--serve-artifacts",
            "--workers", str(m.workers),
        ]

    def start(self) -> bool:
        """Start the server unless it already runs; return True if this call started it."""
        m = self.settings.mlflow
        if self.is_running():
            wait_for(lambda: is_ready(m), m.ready_timeout_s, f"mlflow {m.tracking_uri}")
            return False
        require_free_port("mlflow", m.host, m.port)
        uri = self.settings.mlflow_backend_store_uri
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        Path(self.settings.mlflow_artifacts_destination).mkdir(parents=True, exist_ok=True)
        # MLflow reads this on start; without it the server refuses Host headers it does not know.
        env = {
            "MLFLOW_SERVER_ALLOWED_HOSTS": f"{m.host},{m.host}:{m.port},localhost,localhost:{m.port}",
            # The job runner (GenAI evaluation jobs) starts a dozen worker processes we never use.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }

        def ready() -> bool:
            if not self.is_running():
                raise ServiceError("mlflow: server exited during start-up")
            return is_ready(m)

        self.launch(self._command(), lambda: wait_for(ready, m.ready_timeout_s, f"mlflow {m.tracking_uri}"), env=env)
        return True

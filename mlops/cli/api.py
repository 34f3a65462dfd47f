"""`mlops api`: the REST scoring and model-management service (FastAPI on uvicorn)."""

from __future__ import annotations

from typing import Annotated

import typer

from mlops.cli.common import ProfileOption, settings_for


def api_command(
    host: Annotated[str | None, typer.Option("--host", help="Bind address (default: api.host).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default: api.port).")] = None,
    profile: ProfileOption = None,
) -> None:
    """Serve POST /v1/predict, GET /v1/model, promotion and rollback, health and metrics until Ctrl-C."""
    from mlops.log import configure_logging
    from mlops.serve.api import serve

    configure_logging()
    settings = settings_for(profile)
    typer.echo(f"API on http://{host or settings.api.host}:{port or settings.api.port} (docs at /docs)", err=True)
    serve(settings, host=host, port=port)


def register(app: typer.Typer) -> None:
    """Add `api` to the root `mlops` app."""
    app.command("api")(api_command)

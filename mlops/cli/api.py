"""`mlops` commands for this area. Owned by one piece of work; registered by mlops/cli/__init__.py."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands or sub-apps to the root `mlops` app."""

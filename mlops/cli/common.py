"""Options shared by every command."""

from __future__ import annotations

from typing import Annotated

import typer

from mlops.config import Settings, load_settings

ProfileOption = Annotated[
    str | None, typer.Option("--profile", "-p", help="Configuration profile: configs/<profile>.yaml.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def settings_for(profile: str | None) -> Settings:
    return load_settings(profile)

"""The ``mlops`` command: a thin layer that parses arguments and calls the packages.

Each area has its own module here with a Typer sub-app or commands; this module only assembles
them and turns the project's errors into a one-line message and exit code 1.
"""

from __future__ import annotations

import sys

import typer

from mlops import __version__
from mlops.cli import api, data, features, lake, loop, loop_control, models, score, services, status, train
from mlops.errors import MlopsError

app = typer.Typer(
    name="mlops",
    help="Closed retraining loop for models scoring live IoT data.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(services.app, name="services")
app.command("ui")(services.ui)
app.command("demo")(services.demo)
# Every area registers its own commands; keep this list the only place that knows them all.
for _area in (data, lake, features, train, models, score, api, loop, loop_control, status):
    _area.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlops {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Closed retraining loop for models scoring live IoT data."""


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except MlopsError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        sys.exit(1)

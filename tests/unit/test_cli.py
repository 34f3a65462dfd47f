from __future__ import annotations

from typer.testing import CliRunner

from mlops import __version__
from mlops.cli import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_every_command_has_help() -> None:
    import typer.main

    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        result = runner.invoke(app, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Usage" in result.output, name
        for sub in getattr(command, "commands", {}):
            sub_result = runner.invoke(app, [name, sub, "--help"])
            assert sub_result.exit_code == 0, f"{name} {sub}"

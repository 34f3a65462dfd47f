"""Options shared by every command."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from typing import Annotated

import typer

from mlops.config import Settings, load_settings

ProfileOption = Annotated[
    str | None, typer.Option("--profile", "-p", help="Configuration profile: configs/<profile>.yaml.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def settings_for(profile: str | None) -> Settings:
    return load_settings(profile)


@contextlib.contextmanager
def stdout_to_stderr(enabled: bool = True) -> Iterator[None]:
    """Send everything written to stdout inside the block to stderr, so that stdout carries one document.

    Libraries print to stdout (MLflow's "View run ... at" link when a run ends), and so may the child
    processes started inside the block (Spark's JVM and its Python workers inherit the descriptor): the
    redirection is made on file descriptor 1 itself when stdout is the process's own, else (a test
    runner's captured stream) on ``sys.stdout`` only.
    """
    if not enabled:
        yield
        return
    sys.stdout.flush()
    try:
        own_descriptor = sys.stdout.fileno() == 1
    except (io.UnsupportedOperation, AttributeError, ValueError):
        own_descriptor = False
    saved = os.dup(1) if own_descriptor else None
    if saved is not None:
        os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if saved is not None:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)

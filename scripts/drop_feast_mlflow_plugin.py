"""Remove Feast's MLflow request-header plugin from the environment's entry points.

Feast registers an ``mlflow.request_header_provider`` entry point for its own MLflow integration,
which this project does not use. MLflow loads every such plugin the first time any process talks to
a tracking server, and loading Feast's imports most of Feast: 6 s on an idle machine, 30-50 s on a
busy one, in every scorer, monitor, API and CLI process. Idempotent; run by scripts/bootstrap.sh.
"""

from __future__ import annotations

from importlib.metadata import distribution
from pathlib import Path

SECTION = "[mlflow.request_header_provider]"


def main() -> None:
    dist = distribution("feast")
    files = [f for f in dist.files or [] if f.name == "entry_points.txt"]
    for entry in files:
        path = Path(str(dist.locate_file(entry)))
        lines = path.read_text().splitlines()
        kept, skipping = [], False
        for line in lines:
            if line.strip().startswith("["):
                skipping = line.strip() == SECTION
            if not skipping:
                kept.append(line)
        if kept != lines:
            path.write_text("\n".join(kept) + "\n")
            print(f"bootstrap: removed Feast's MLflow header plugin from {path}")


if __name__ == "__main__":
    main()

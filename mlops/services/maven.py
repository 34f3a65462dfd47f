"""Jars from Maven Central, resolved once into a cache directory that later runs reuse offline.

A pom under ``mlops/services/<name>/pom.xml`` pins what is wanted; ``mvn dependency:copy-dependencies``
copies the jars into ``~/.cache/mlops-loop/<name>-<version>-<pom digest>`` (or under
``MLOPS_KAFKA_JARS_DIR``): the digest is in the name so that a changed pom resolves again.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from mlops.errors import ServiceError

__all__ = ["cache_dir", "copy_dependencies", "pom_path", "pom_property"]


def pom_path(name: str) -> Path:
    """The pom of ``name`` (``kafka``, ``spark_kafka``) shipped in this package."""
    return Path(str(resources.files("mlops.services") / name / "pom.xml"))


def pom_property(pom: Path, key: str) -> str:
    match = re.search(rf"<{re.escape(key)}>([^<]+)</{re.escape(key)}>", pom.read_text())
    if not match:
        raise ServiceError(f"{pom}: no <{key}> property")
    return match.group(1)


def cache_dir(pom: Path, stem: str) -> Path:
    root = os.environ.get("MLOPS_KAFKA_JARS_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "mlops-loop"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:8]
    return base / f"{stem}-{digest}"


def copy_dependencies(pom: Path, target: Path, what: str, artifacts: Sequence[str] = ()) -> Path:
    """Copy the runtime jars of ``pom`` (only ``artifacts``, by artifact id, when given) into ``target`` once.

    ``what`` names them in errors ("Apache Kafka 4.3.1"). Raises ServiceError when Maven is missing
    or cannot resolve them, with the end of Maven's output."""
    marker = target / ".complete"
    if marker.exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError(f"Maven ('mvn') is not installed; it is needed once to fetch the jars of {what}")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    command = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
               f"-DoutputDirectory={staging}", "-DincludeScope=runtime"]
    if artifacts:
        command.append(f"-DincludeArtifactIds={','.join(artifacts)}")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServiceError(f"Maven could not resolve the jars of {what}:\n{result.stdout[-2000:]}")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    marker.write_text(what)
    return target

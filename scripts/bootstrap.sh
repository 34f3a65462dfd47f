#!/usr/bin/env bash
# Installs everything `make setup` needs on a fresh Debian machine, then the Python environment.
# Idempotent: every step checks first and does nothing when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
command -v python3.11 >/dev/null 2>&1 || need_apt+=(python3.11 python3.11-venv)
# PostgreSQL server binaries, for the integration test that runs the loop's state on PostgreSQL.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# Headless Chromium, for the integration test that renders the MLflow experiment page.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${need_apt[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

PY=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv with $PY"
  "$PY" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "bootstrap: installing the locked Python set (constraints.txt) and the project"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -c constraints.txt -e '.[dev,postgres]'
  touch "$stamp"
fi

.venv/bin/python scripts/drop_feast_mlflow_plugin.py

echo "bootstrap: resolving the Apache Kafka broker's jars and Spark's Kafka connector (once, then cached)"
.venv/bin/mlops services fetch

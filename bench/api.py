"""Benchmark: our REST API against `mlflow models serve` on the same registered model, same machine.

    .venv/bin/python bench/api.py [--seconds 8] [--clients 4]

Registers a small model (model ``bench-api`` in the configured MLflow), serves it with
``mlflow models serve --env-manager local`` and with ``mlops api``, and load-generates on loopback
from a few threaded httpx clients: single readings, then batches of 100. MLflow gets the feature
rows (it cannot compute features); our API gets raw readings and computes the features itself.
Prints requests/s and p50/p99 latency side by side. Bounded in time; both servers are stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np

from mlops.config import Settings, load_settings
from mlops.features.compute import FeatureSpec
from mlops.features.state import DeviceWindows

SPEC = FeatureSpec(sensors=("s_2", "s_3", "s_4", "s_7", "s_11"), window=10)
MODEL = "bench-api"


def register(settings: Settings) -> str:
    import mlflow
    import mlflow.sklearn
    import pandas as pd
    from mlflow import MlflowClient
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(2000, len(SPEC.feature_names()))), columns=SPEC.feature_names())
    y = (x.iloc[:, 0] + rng.normal(scale=0.5, size=len(x)) > 0).astype(int)
    model = HistGradientBoostingClassifier(max_iter=50).fit(x, y)
    mlflow.set_tracking_uri(settings.mlflow.tracking_uri)
    mlflow.set_experiment("bench")
    tags = {"feature_spec": json.dumps(SPEC.to_dict()), "decision_threshold": "0.5", "trigger": "manual",
            "reason": "benchmark"}
    with mlflow.start_run():
        mlflow.set_tags(tags)
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=MODEL,
                                        pip_requirements=["scikit-learn"], serialization_format="pickle")
    version = str(info.registered_model_version)
    client = MlflowClient(tracking_uri=settings.mlflow.tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(MODEL, version, key, value)
    client.set_registered_model_alias(MODEL, "champion", version)
    return version


def readings(devices: int, cycles: int) -> list[dict[str, Any]]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rng = np.random.default_rng(1)
    return [{"schema_version": 1, "device_id": f"dev-{d}", "device_type": "engine",
             "event_time": (t0 + timedelta(minutes=c)).isoformat(), "cycle": c,
             "sensors": {s: float(rng.normal()) for s in SPEC.sensors}} for c in range(cycles) for d in range(devices)]


def feature_rows(batch: list[dict[str, Any]]) -> dict[str, Any]:
    windows = DeviceWindows(SPEC)
    features = windows.update_and_compute((r["device_id"], r["sensors"]) for r in batch)
    return {"dataframe_split": {"columns": SPEC.feature_names(), "data": np.nan_to_num(features).tolist()}}


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server for {url} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready after {timeout_s}s")


def load(url: str, body: bytes, seconds: float, clients: int) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, errors) for ``clients`` threads posting ``body`` for ``seconds``."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def worker() -> None:
        own: list[float] = []
        with httpx.Client(timeout=10, headers={"content-type": "application/json"}) as http:
            while time.monotonic() < end:
                start = time.perf_counter()
                status = http.post(url, content=body).status_code
                own.append(time.perf_counter() - start)
                if status != 200:
                    errors[0] += 1
        with lock:
            latencies.extend(own)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    ms = np.asarray(latencies) * 1000
    return len(ms) / elapsed, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), errors[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="load time per scenario and server")
    parser.add_argument("--clients", type=int, default=4, help="concurrent client threads")
    args = parser.parse_args()
    settings = load_settings(overrides={"mlflow": {"registered_model": MODEL}})
    version = register(settings)
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.mlflow.tracking_uri,
           "MLOPS_MLFLOW__REGISTERED_MODEL": MODEL, "MLOPS_LOG_LEVEL": "WARNING"}
    bin_dir = os.path.dirname(sys.executable)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")  # mlflow serve execs `uvicorn` from PATH
    ours_port, mlflow_port = 18431, 18432
    servers = [
        subprocess.Popen([os.path.join(bin_dir, "mlops"), "api", "--port", str(ours_port)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True),
        subprocess.Popen([os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", f"models:/{MODEL}/{version}",
                          "--env-manager", "local", "-p", str(mlflow_port), "--host", "127.0.0.1"], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True),
    ]
    try:
        wait_ready(f"http://127.0.0.1:{ours_port}/readyz", servers[0])
        wait_ready(f"http://127.0.0.1:{mlflow_port}/ping", servers[1])
        single, batch = readings(1, 1), readings(10, 10)
        scenarios = {"single reading": single, "batch of 100": batch}
        print(f"model {MODEL} v{version}; {args.clients} clients x {args.seconds:g}s per cell; loopback")
        print(f"{'scenario':16} {'server':22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
        for name, rows in scenarios.items():
            ours_body = json.dumps(rows[0] if len(rows) == 1 else rows).encode()
            mlflow_body = json.dumps(feature_rows(rows)).encode()
            results = {
                "mlflow models serve": load(f"http://127.0.0.1:{mlflow_port}/invocations", mlflow_body,
                                            args.seconds, args.clients),
                "mlops api": load(f"http://127.0.0.1:{ours_port}/v1/predict", ours_body, args.seconds, args.clients),
            }
            for server, (rps, p50, p99, errors) in results.items():
                print(f"{name:16} {server:22} {rps:8.0f} {p50:8.2f} {p99:8.2f} {errors:6d}")
            ratio = results["mlops api"][0] / results["mlflow models serve"][0]
            print(f"{name:16} {'ratio (ours/mlflow)':22} {ratio:8.2f}")
    finally:
        # Each server runs in a session of its own: stop it with its worker children.
        for server in servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
        for server in servers:
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(10)


if __name__ == "__main__":
    main()

"""Benchmark: our REST API against `mlflow models serve` on the same registered model, same machine.

    .venv/bin/python bench/api.py [--seconds 5] [--repeats 3] [--connections 4] [--max-iter 100]

Registers a model of the product's family (``build_pipeline("hist_gradient_boosting")``: imputer,
scaler, calibrated gradient boosting; registered model ``bench-api``, logged so that MLflow's pyfunc
calls ``predict_proba`` like we do), serves that version with ``mlflow models serve --env-manager
local`` and with ``mlops api``, and checks that both return the same probability. Both servers run
one uvicorn worker with the same environment, including ``OMP_NUM_THREADS=1`` (on a shared 2-core
machine a second OpenMP thread per prediction costs far more than it saves; our API limits itself
to one thread anyway, so this spares MLflow that penalty).

The load generator runs in a separate process: asyncio (uvloop when installed) over raw keep-alive
HTTP/1.1 connections, each sending one request at a time, bounded by ``--seconds`` and
``--max-requests`` per run. MLflow gets the feature rows (it cannot compute features); our API gets
the raw readings and computes the features itself. For single readings and for batches of 100,
the servers take turns, ``--repeats`` runs each after a warm-up; the table shows the medians of
requests/s and p50/p99 latency, and the ratio of the medians (ours / mlflow). Both servers are
stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np

from mlops.config import Settings, load_settings
from mlops.features.compute import FeatureSpec
from mlops.features.state import DeviceWindows
from mlops.mlflow import tracking_client, use_tracking_server

SPEC = FeatureSpec(sensors=("s_2", "s_3", "s_4", "s_7", "s_11", "s_12", "s_15", "s_20", "s_21"), window=10)
MODEL = "bench-api"
OURS, THEIRS = "mlops api", "mlflow models serve"


# ------------------------------------------------------------------------------------- the model

def fit_model(max_iter: int) -> Any:
    """A product-family pipeline (imputer, scaler, calibrated gradient boosting) fitted on synthetic features."""
    import pandas as pd

    from mlops.train.model import build_pipeline

    rng = np.random.default_rng(0)
    x = pd.DataFrame(rng.normal(size=(5000, len(SPEC.feature_names()))), columns=SPEC.feature_names())
    y = (x.iloc[:, 0] + rng.normal(scale=0.5, size=len(x)) > 1).astype(int).to_numpy()
    return build_pipeline("hist_gradient_boosting", {"max_iter": max_iter, "max_depth": 5}, seed=0).fit(x, y)


def register(settings: Settings, max_iter: int) -> str:
    """Train the benchmark's model (:func:`fit_model`), register it, make it champion."""
    import mlflow
    import mlflow.sklearn

    model = fit_model(max_iter)
    use_tracking_server(settings)
    mlflow.set_experiment("bench")
    tags = {"feature_spec": json.dumps(SPEC.to_dict()), "decision_threshold": "0.5", "trigger": "manual",
            "reason": "benchmark"}
    with mlflow.start_run():
        mlflow.set_tags(tags)
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=MODEL,
                                        pip_requirements=["scikit-learn"], serialization_format="pickle",
                                        pyfunc_predict_fn="predict_proba")
    version = str(info.registered_model_version)
    client = tracking_client(settings)
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
    """MLflow's body: the features our API computes from ``batch`` (same kernel, same order)."""
    features = DeviceWindows(SPEC).update_and_compute((r["device_id"], r["sensors"]) for r in batch)
    assert np.isfinite(features).all()
    return {"dataframe_split": {"columns": SPEC.feature_names(), "data": features.tolist()}}


# ---------------------------------------------------------------------------- the load generator

def run_load(port: int, path: str, body: bytes, connections: int, seconds: float, max_requests: int,
             ) -> dict[str, float]:
    """Runs in the load-generator process: ``connections`` keep-alive connections, one request in
    flight on each, until ``seconds`` pass or ``max_requests`` are sent."""
    try:
        import uvloop

        return uvloop.run(_load(port, path, body, connections, seconds, max_requests))
    except ImportError:
        return asyncio.run(_load(port, path, body, connections, seconds, max_requests))


async def _load(port: int, path: str, body: bytes, connections: int, seconds: float, max_requests: int,
                ) -> dict[str, float]:
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    latencies: list[int] = []
    errors = 0
    budget = max_requests
    deadline = time.monotonic() + seconds

    async def connection() -> None:
        nonlocal budget, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while budget > 0 and time.monotonic() < deadline:
                budget -= 1
                start = time.perf_counter_ns()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if match is None:
                    raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
                await reader.readexactly(int(match.group(1)))
                latencies.append(time.perf_counter_ns() - start)
                errors += head[9:12] != b"200"
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    ms = sorted(ns / 1e6 for ns in latencies)
    return {"rps": len(ms) / elapsed, "p50": ms[len(ms) // 2], "p99": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
            "requests": len(ms), "errors": errors}


# --------------------------------------------------------------------------------------- servers

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_servers(settings: Settings, version: str) -> tuple[dict[str, int], list[subprocess.Popen[bytes]]]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.mlflow.tracking_uri, "MLOPS_MLFLOW__REGISTERED_MODEL": MODEL,
           "MLOPS_LOG_LEVEL": "WARNING", "OMP_NUM_THREADS": "1"}
    bin_dir = os.path.dirname(sys.executable)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")  # mlflow serve execs `uvicorn` from PATH
    ports = {OURS: free_port(), THEIRS: free_port()}
    commands = {
        OURS: [os.path.join(bin_dir, "mlops"), "api", "--port", str(ports[OURS])],
        THEIRS: [os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", f"models:/{MODEL}/{version}",
                 "--env-manager", "local", "-p", str(ports[THEIRS]), "--host", "127.0.0.1"],
    }
    # Each server in a session of its own: stopped with its worker children.
    servers = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True) for command in commands.values()]
    return ports, servers


def stop_servers(servers: list[subprocess.Popen[bytes]]) -> None:
    for server in servers:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
    for server in servers:
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)


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


def same_answer(ports: dict[str, int], ours_body: bytes, theirs_body: bytes) -> float:
    """Both servers' probability for the same input; they must agree (same model, same features)."""
    headers = {"content-type": "application/json"}
    ours = httpx.post(f"http://127.0.0.1:{ports[OURS]}/v1/predict", content=ours_body, headers=headers).json()
    theirs = httpx.post(f"http://127.0.0.1:{ports[THEIRS]}/invocations", content=theirs_body, headers=headers).json()
    ours_p = [p["probability"] for p in ours["predictions"]]
    theirs_p = [row[1] for row in theirs["predictions"]]
    np.testing.assert_allclose(ours_p, theirs_p, rtol=1e-9)
    return float(np.max(np.abs(np.subtract(ours_p, theirs_p))))


def model_calls(port: int) -> tuple[float, float]:
    """(rows, calls) our API has sent to the model so far, from its Prometheus metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    found = dict(re.findall(r"^mlops_api_model_call_rows_(sum|count) (\S+)$", text, re.MULTILINE))
    return float(found.get("sum", 0)), float(found.get("count", 0))


# ------------------------------------------------------------------------------------------ main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per scenario and server (medians reported)")
    parser.add_argument("--connections", type=int, default=4, help="concurrent connections of the load generator")
    parser.add_argument("--max-requests", type=int, default=50_000, help="most requests in one run")
    parser.add_argument("--max-iter", type=int, default=100, help="boosting iterations of the benchmark model")
    args = parser.parse_args()
    settings = load_settings(overrides={"mlflow": {"registered_model": MODEL}})
    version = register(settings, args.max_iter)
    ports, servers = start_servers(settings, version)
    load = multiprocessing.get_context("spawn").Pool(1)  # the load generator: its own process and core
    try:
        wait_ready(f"http://127.0.0.1:{ports[OURS]}/readyz", servers[0])
        wait_ready(f"http://127.0.0.1:{ports[THEIRS]}/ping", servers[1])
        scenarios = {"single reading": readings(1, 1), "batch of 100": readings(10, 10)}
        print(f"model {MODEL} v{version} (calibrated gradient boosting, max_iter {args.max_iter}); "
              f"{args.connections} connections; {args.repeats} x {args.seconds:g}s runs per cell; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"{'scenario':16} {'server':22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for name, rows in scenarios.items():
            bodies = {OURS: json.dumps(rows[0] if len(rows) == 1 else rows).encode(),
                      THEIRS: json.dumps(feature_rows(rows)).encode()}
            same_answer(ports, bodies[OURS], bodies[THEIRS])
            paths = {OURS: "/v1/predict", THEIRS: "/invocations"}
            runs: dict[str, list[dict[str, float]]] = {OURS: [], THEIRS: []}
            rows_before = model_calls(ports[OURS])
            for repeat in range(-1, args.repeats):  # repeat -1: warm-up, not counted
                order = (THEIRS, OURS) if repeat % 2 else (OURS, THEIRS)
                for server in order:
                    seconds = min(1.0, args.seconds) if repeat < 0 else args.seconds
                    result = load.apply(run_load, (ports[server], paths[server], bodies[server], args.connections,
                                                   seconds, args.max_requests))
                    if repeat >= 0:
                        runs[server].append(result)
            rows_after = model_calls(ports[OURS])
            medians = {server: {key: statistics.median(r[key] for r in results) for key in ("rps", "p50", "p99")}
                       for server, results in runs.items()}
            for server in (THEIRS, OURS):
                m, errors = medians[server], sum(int(r["errors"]) for r in runs[server])
                print(f"{name:16} {server:22} {m['rps']:8.0f} {m['p50']:8.2f} {m['p99']:8.2f} {errors:7d}")
            calls = rows_after[1] - rows_before[1]
            per_call = (rows_after[0] - rows_before[0]) / calls if calls else float("nan")
            print(f"{name:16} {'ratio ours/mlflow':22} {medians[OURS]['rps'] / medians[THEIRS]['rps']:8.2f}"
                  f"   (our API: {per_call:.1f} rows per model call)")
    finally:
        load.terminate()
        stop_servers(servers)


if __name__ == "__main__":
    main()

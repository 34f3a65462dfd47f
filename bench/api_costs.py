"""Benchmark: what one batch request costs the API, step by step, in one process (no HTTP, no services).

    .venv/bin/python bench/api_costs.py [--max-iter 100] [--requests-per-call 15] [--repeats 3]

The batch path of ``POST /v1/predict`` with the product's own functions on ``bench/api.py``'s model
and body (100 devices, one reading each): the fast decoder, the event-time order and sensor check,
the feature kernel (:func:`mlops.serve.batcher._feature_rows`), the model call
(:meth:`mlops.registry.loader.LoadedModel.predict_proba`) and the answer's encoding. Under load the
API scores the rows of several queued requests in one call (``bench/api.py`` prints about 15 at 16
connections), so the features and the model are timed on that many requests' rows together and
divided per request. Prints the median per request and per reading of each step, their sum, and
the requests per second one core could serve at that sum: the ceiling that HTTP, the event loop
and the batching come on top of.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
from api import SPEC, fit_model, readings

from mlops.data.schemas import fast_readings
from mlops.registry.loader import LoadedModel
from mlops.serve.api.routes.scoring import _answer, _history_order, _json
from mlops.serve.batcher import _feature_rows

ROWS = 100


def per_call_us(step: Callable[[], object], seconds: float = 1.0) -> float:
    """Mean microseconds of one call of ``step`` over about ``seconds`` (after one warm-up call)."""
    step()
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        calls += 1
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-iter", type=int, default=100, help="boosting iterations of the benchmark model")
    parser.add_argument("--requests-per-call", type=int, default=15, help="requests whose rows share a model call")
    parser.add_argument("--repeats", type=int, default=3, help="timings per step (medians reported)")
    args = parser.parse_args()

    model = LoadedModel("bench-api", "1", None, fit_model(args.max_iter), SPEC, 0.5)
    body = json.dumps(readings(ROWS, 1)).encode()
    batch = fast_readings(body, 1000)
    assert batch is not None and len(batch) == ROWS, "the fast decoder refused the benchmark's body"
    together = args.requests_per_call
    features = _feature_rows(model, [batch] * together)
    rows = np.concatenate(features)
    probabilities = model.predict_proba(rows)[:ROWS]
    steps: dict[str, Callable[[], object]] = {
        "decode (msgspec)": lambda: fast_readings(body, 1000),
        "order + sensor check": lambda: _history_order(model, batch),
        "features": lambda: _feature_rows(model, [batch] * together),
        "model call": lambda: model.predict_proba(rows),
        "answer + encode": lambda: _json(_answer(model, batch, probabilities)),
    }
    shared = {"features", "model call"}  # timed on `together` requests' rows: divided per request
    print(f"model: calibrated gradient boosting, max_iter {args.max_iter}; a batch of {ROWS} readings; "
          f"features and model on {together} requests' rows ({len(rows)}) per call; medians of {args.repeats}")
    print(f"{'step':22s} {'us/request':>11s} {'us/reading':>11s}")
    total = 0.0
    for name, step in steps.items():
        us = statistics.median(per_call_us(step) for _ in range(args.repeats)) / (together if name in shared else 1)
        total += us
        print(f"{name:22s} {us:11.1f} {us / ROWS:11.2f}")
    print(f"{'sum':22s} {total:11.1f} {total / ROWS:11.2f}   -> at most {1e6 / total:.0f} requests/s "
          f"({1e6 / total * ROWS:.0f} readings/s) on one core")


if __name__ == "__main__":
    main()

"""Benchmark: the hyperparameter search of K candidates distributed over Spark tasks vs sequential.

    .venv/bin/python bench/train_search.py [--candidates 4] [--rows 6000] [--repeats 3] [--master local[2]]

Both sides run the same task function (mlops.train.search.train_and_score) on the same data and
candidates; Spark's side includes broadcasting the data and collecting the results, not starting
the session (done once, before timing). Prints medians and the ratio; never pass/fail.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from mlops.config import load_settings
from mlops.spark import spark_session
from mlops.train.search import SearchData, distributed_search, sample_candidates, sequential_search


def synthetic(rows: int, features: int, seed: int) -> SearchData:
    """Rare positives driven by a few features, like wear before a failure."""
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(size=(rows, features)), columns=[f"f{i}" for i in range(features)])
    score = x["f0"] + 0.5 * x["f1"] - 0.5 * x["f2"] + rng.normal(scale=0.7, size=rows)
    y = (score > np.quantile(score, 0.85)).astype(np.int64).to_numpy()
    cut = int(rows * 0.75)
    return SearchData(x[:cut], y[:cut], x[cut:].reset_index(drop=True), y[cut:], seed=seed,
                      calibration="sigmoid", folds=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--features", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    settings = load_settings(overrides={"spark": {"master": args.master, "shuffle_partitions": 2}})
    data = synthetic(args.rows, args.features, seed=settings.train.seed)
    candidates = sample_candidates(settings.train.search_space, args.candidates, settings.train.seed)
    spark = spark_session(settings, app_name="bench-train-search")
    try:
        distributed_search(spark, candidates[:1], data)  # warm up the Python workers once
        spark_times, local_times = [], []
        for repeat in range(args.repeats):
            started = time.perf_counter()
            distributed = distributed_search(spark, candidates, data)
            spark_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            sequential = sequential_search(candidates, data)
            local_times.append(time.perf_counter() - started)
            same = [r.metrics for r in distributed] == [r.metrics for r in sequential]
            print(f"repeat {repeat + 1}: spark {spark_times[-1]:.1f}s, sequential {local_times[-1]:.1f}s, "
                  f"identical metrics: {same}")
    finally:
        spark.stop()
    spark_median, local_median = statistics.median(spark_times), statistics.median(local_times)
    print(f"{len(candidates)} candidates ({', '.join(c.family for c in candidates)}), {args.rows} rows, "
          f"{args.features} features, master {args.master}")
    print(f"median spark {spark_median:.1f}s  median sequential {local_median:.1f}s  "
          f"speed-up {local_median / spark_median:.2f}x")


if __name__ == "__main__":
    main()

"""Benchmark: what the labels known h hours after the onset allow, against the hindsight oracle.

    .venv/bin/python bench/loop_ceiling.py [--scenario cmapss_fd002] [--seeds 1,2,3] [--cuts 2,4,6,8,12]
                                           [--hours-after-onset 24] [--labels-only] [--out bench/out/ceiling]

``bench/loop.py`` asks the loop to reach 90 % of the oracle's f1 within 6 h of the onset. This
measures whether the data allows it. For each cut (onset + h), on the loop benchmark's stream:

* the failures published since the onset (of devices that joined after it: FD002's engines) and the
  labelled rows a retraining at the cut would see: every reading up to the cut, labelled by the
  product's rule (:func:`mlops.features.labels.label_readings`) from the labels published by then;
  a reading whose outcome is not known yet is left out, as the training job leaves it out;
* the product's search on them, as a drift retraining runs it (:func:`mlops.train.regimes.regime_split`
  at the onset, ``train.drift_training_rows``, :func:`mlops.train.search.sample_candidates`, the best
  candidate by validation f1), fitted in this process instead of on Spark;
* its served f1 on every later reading whose outcome is known, against the oracle's on the same
  readings: the same search on the whole post-onset regime with all its labels (``bench/loop.py``'s
  oracle, which serves the readings it was trained on).

The retraining at the cut is assumed to serve at once: no gate and no wait for fresh labels, which
the loop needs. So the ratio bounds any policy that trains at the cut on what it has seen.
``--labels-only`` prints what is known at each cut (devices failed since the onset, labelled rows,
positives) without fitting anything: seconds instead of an hour of CPU.
Writes ``<out>/ceiling.json``; prints one table per seed and the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from detection import make_stream, usable_features
from loop_stream import Stream
from threadpoolctl import threadpool_limits

from mlops.config import Settings, load_settings
from mlops.data.schemas import Label
from mlops.errors import TrainingError
from mlops.evaluation.metrics import evaluate
from mlops.features.labels import label_readings
from mlops.train.model import Fitted, fit_and_score
from mlops.train.regimes import regime_split
from mlops.train.search import SearchData, choose_best, on_windows, sample_candidates, sequential_search
from mlops.train.split import LABEL


def known_rows(settings: Settings, stream: Stream, cut: datetime) -> pd.DataFrame:
    """Features and labels of the readings up to ``cut`` whose outcome is known from the labels published by then."""
    times = stream.readings["event_time"]
    upto = (times <= pd.Timestamp(cut)).to_numpy()
    labels = pd.DataFrame([e.to_row() for e in stream.events if isinstance(e, Label) and e.event_time <= cut],
                          columns=["device_id", "event_time", "kind", "rul"])
    labels["event_time"] = pd.to_datetime(labels["event_time"], utc=True)
    rows = pd.concat([stream.readings.loc[upto, ["device_id", "event_time"]], stream.features.loc[upto]], axis=1)
    return label_readings(rows, labels, settings.features.horizon_cycles, settings.features.cycle_seconds)


def search(settings: Settings, frame: pd.DataFrame, names: list[str], regime_since: datetime) -> Fitted:
    """The training job's search and refit on ``frame`` (its steps, in this process)."""
    cfg = settings.train
    gap = timedelta(seconds=settings.features.horizon_cycles * settings.features.cycle_seconds)
    windows = regime_split(frame, regime_since, cfg.validation_fraction, gap, min_positives=cfg.min_positives,
                           training_rows=cfg.drift_training_rows)
    split = windows.split
    data = SearchData(split.train[names], split.train[LABEL].to_numpy(dtype=np.int64), split.validation[names],
                      split.validation[LABEL].to_numpy(dtype=np.int64), cfg.seed, cfg.calibration,
                      cfg.calibration_folds, windows.weights)
    candidates = on_windows(sample_candidates(cfg.search_space, cfg.candidates, cfg.seed), list(windows.weights))
    best = choose_best(sequential_search(candidates, data), settings.policy.primary_metric)
    return fit_and_score(best.candidate.family, best.candidate.params, data.x_train, data.y_train, data.x_val,
                         data.y_val, seed=cfg.seed, calibration=cfg.calibration, folds=cfg.calibration_folds,
                         sample_weight=data.weights[best.candidate.rows])


def served_f1(model: Fitted, stream: Stream, names: list[str], rows: np.ndarray) -> float:
    probability = model.pipeline.predict_proba(stream.features.loc[rows, names])[:, 1]
    return float(evaluate(stream.truth[rows], probability, model.threshold)["f1"])


def run_one(settings: Settings, scenario: str, seed: int, hours: float, cuts: list[float],
            fit: bool = True) -> dict[str, object]:
    stream = make_stream(settings, scenario, seed, hours)
    if stream.onset is None:
        raise SystemExit(f"{scenario} has no onset: nothing to measure")
    onset = stream.onset.event_time
    history = stream.features.iloc[: stream.history_readings]
    names = usable_features(settings, stream, history)
    times = stream.readings["event_time"]
    labelled = stream.truth >= 0
    post = stream.readings.index[(times >= pd.Timestamp(onset)).to_numpy() & labelled].to_numpy()
    everything = pd.concat([stream.readings[["device_id", "event_time"]], stream.features], axis=1).loc[post]
    oracle = search(settings, everything.assign(label=stream.truth[post]), names, onset) if fit else None
    first_seen = stream.readings.groupby("device_id")["event_time"].min()
    new = set(first_seen.index[first_seen >= pd.Timestamp(onset)])  # FD002's engines, in the FD001 -> FD002 stream
    failures = [(e.event_time, e.device_id in new) for e in stream.events
                if isinstance(e, Label) and e.kind == "failure" and e.event_time >= onset]
    results: list[dict[str, object]] = []
    for h in cuts:
        cut = onset + timedelta(hours=h)
        later = stream.readings.index[(times > pd.Timestamp(cut)).to_numpy() & labelled].to_numpy()
        if len(later) == 0:
            break
        frame = known_rows(settings, stream, cut)
        regime = frame[frame["event_time"] >= pd.Timestamp(onset)]
        row: dict[str, object] = {"hours": h, "failures_since_onset": sum(t <= cut for t, _ in failures),
                                  "failures_of_new_devices": sum(t <= cut and is_new for t, is_new in failures),
                                  "known_rows": len(frame), "known_since_onset": len(regime),
                                  "positives_since_onset": int(regime[LABEL].sum()), "scored": len(later)}
        results.append(row)
        if oracle is None:
            continue
        row["oracle_f1"] = served_f1(oracle, stream, names, later)
        try:
            row["f1"] = served_f1(search(settings, frame, names, onset), stream, names, later)
        except TrainingError as err:
            row["f1"], row["error"] = None, str(err).splitlines()[0]
    return {"scenario": stream.name, "seed": seed, "onset": onset.isoformat(), "cuts": results}


def ratio(row: dict[str, object]) -> float | None:
    f1, oracle = row.get("f1"), row.get("oracle_f1")
    return None if f1 is None or not oracle else float(f1) / float(oracle)  # type: ignore[arg-type]


def table(result: dict[str, object]) -> list[str]:
    lines = [f"{result['scenario']} seed {result['seed']} (onset {result['onset']})",
             "cut h  failures since onset (of devices new since)  rows known  since onset  positives since onset  "
             "f1 after cut  oracle f1  of oracle"]
    for row in result["cuts"]:  # type: ignore[attr-defined]
        share = ratio(row)
        f1 = "-" if "f1" not in row else "failed" if row["f1"] is None else f"{row['f1']:.3f}"
        oracle = f"{row['oracle_f1']:.3f}" if "oracle_f1" in row else "-"
        failed = f"{row['failures_since_onset']} ({row['failures_of_new_devices']})"
        lines.append(f"{row['hours']:5g}  {failed:>45s}  {row['known_rows']:10d}  "
                     f"{row['known_since_onset']:11d}  {row['positives_since_onset']:21d}  {f1:>12s}  "
                     f"{oracle:>9s}  {'-' if share is None else f'{share:.3f}':>9s}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="cmapss_fd002")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--cuts", default="2,4,6,8,12", help="hours after the onset, comma-separated")
    parser.add_argument("--hours-after-onset", type=float, default=24.0)
    parser.add_argument("--labels-only", action="store_true", help="what is known at each cut; no fitting")
    parser.add_argument("--out", type=Path, default=Path("bench/out/ceiling"))
    args = parser.parse_args()
    settings = load_settings("local")
    cuts = [float(c) for c in args.cuts.split(",") if c.strip()]
    t0 = time.perf_counter()
    results = []
    with threadpool_limits(1):  # one thread per fit: OpenMP on a shared 2-core machine thrashes
        for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
            result = run_one(settings, args.scenario, seed, args.hours_after_onset, cuts, fit=not args.labels_only)
            results.append(result)
            print(f"[{time.perf_counter() - t0:5.0f}s]", "\n".join(table(result)), sep="\n", flush=True)
    if len(results) > 1:
        print(f"medians over seeds {args.seeds}: fraction of the oracle's f1 after each cut")
        for h in cuts:
            shares = [s for r in results for row in r["cuts"] if row["hours"] == h  # type: ignore[attr-defined]
                      if (s := ratio(row)) is not None]
            if shares:
                print(f"  +{h:g} h: {statistics.median(shares):.3f} (min {min(shares):.3f}, {len(shares)} seeds)")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ceiling.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()

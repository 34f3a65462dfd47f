"""Benchmark: drift detection on every scenario and seed, the product's calibrated rule against common rules.

    .venv/bin/python bench/detection.py [--seeds 1,2,3,4,5] [--stationary-hours 72] [--hours-after-onset 8]
        [--scenarios stationary,recalibration,gradual_drift,fault_mode,cmapss,cmapss_fd002] [--out DIR]

No training and no services: what is measured is detection alone, on the loop benchmark's streams
(:mod:`loop_stream`, :mod:`loop_cmapss`). Per scenario and seed:

* the model's training rows are the first three quarters of the history (the job's time split), its
  reference a seeded sample of ``train.reference_rows`` of them, and its calibration
  :func:`mlops.monitor.calibration.calibrate_for_policy` of those rows: what ``mlops train`` logs;
* the live stream after the history goes through the monitor's :class:`~mlops.monitor.windows.WindowBuilder`
  (sliding windows, as configured), each window is judged by :func:`mlops.monitor.judge.judge_drift`
  and fed to the loop's :class:`~mlops.monitor.loop.LoopCore`; its ``trigger`` notes are the detections
  (after one, a fresh core goes on, as if retraining had been instant: false alarms are not hidden
  by a cooldown).

The same windows are judged by three common rules, each counted as a trigger after
``policy.drift_consecutive_windows`` flagged windows in a row, like the product's:

* ``evidently-default``: Evidently's default data-drift rule for windows of up to 1,000 rows, a
  two-sample KS test per feature at p < 0.05, the dataset drifted when half the features are;
* ``ks-bonferroni``: any feature's KS p-value below 0.05 / number of features;
* ``p99-distance``: the largest per-feature normed Wasserstein distance at or above the 99th
  percentile of the same over the calibration's held-out null windows.

Prints, per rule: flagged windows and triggers per stationary day (median over seeds), and per
drift scenario the detection delay in event hours (median and worst over seeds, ``miss`` when no
trigger came) and the false triggers before the onset. Writes ``<out>/detection.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from loop_stream import Stream, simulated_stream
from scipy import stats

from mlops.config import Settings, load_settings
from mlops.data.schemas import Prediction
from mlops.features.compute import FeatureSpec, infer_sensors
from mlops.monitor import judge, statistic
from mlops.monitor.calibration import DriftCalibration, calibrate_for_policy, null_windows
from mlops.monitor.loop import LoopCore
from mlops.monitor.windows import WindowBuilder, predictions_frame

SIMULATED = ("stationary", "recalibration", "gradual_drift", "fault_mode")
RULES = ("product", "evidently-default", "ks-bonferroni", "p99-distance")
EVIDENTLY_P, EVIDENTLY_SHARE = 0.05, 0.5


@dataclass
class Counts:
    """One rule on one stream."""

    flagged: int = 0
    triggers: list[datetime] = field(default_factory=list)
    streak: int = 0

    def observe(self, bad: bool, end: datetime, needed: int) -> None:
        self.flagged += bad
        self.streak = self.streak + 1 if bad else 0
        if self.streak == needed:
            self.triggers.append(end)
            self.streak = 0


def make_stream(settings: Settings, scenario: str, seed: int, hours: float) -> Stream:
    if scenario in SIMULATED:
        demo = settings.demo
        return simulated_stream(settings, scenario, demo.devices, seed, demo.history_readings, hours)
    from loop_cmapss import STREAMS

    return STREAMS[scenario](settings, hours_after_onset=hours, seed=seed)


def usable_features(settings: Settings, stream: Stream, training: pd.DataFrame) -> list[str]:
    """The features of the sensors training would use: no gaps, some variation (mlops/train/dataset.py `_sensors`)."""
    sensors = infer_sensors(list(stream.readings.columns))
    history = stream.readings.iloc[:len(training)]
    usable = tuple(s for s in sensors if history[s].notna().all() and float(history[s].std(ddof=0)) > 1e-12)
    return FeatureSpec(usable, settings.features.window).feature_names()


def run_one(settings: Settings, scenario: str, seed: int, hours: float) -> dict[str, object]:
    policy, train = settings.policy, settings.train
    stream = make_stream(settings, scenario, seed, hours)
    rows = stream.features.assign(event_time=stream.readings["event_time"])
    training = rows.iloc[: stream.history_readings * 3 // 4]
    features = usable_features(settings, stream, training)
    reference = training[features].sample(n=min(train.reference_rows, len(training)),
                                          random_state=train.seed).sort_index()
    calibration = calibrate_for_policy(training[[*features, "event_time"]], features, policy,
                                       reference_rows=len(reference), seed=train.seed)
    p99 = p99_distance(training[[*features, "event_time"]], features, calibration, len(reference), train.seed)
    model_ref = judge.ModelReference(reference, calibration)

    builder = WindowBuilder(policy.window_mode, policy.window_size, policy.window_seconds,
                            settings.monitor.window_grace_s, settings.monitor.min_window)
    core = LoopCore(policy, champion="1")
    counts = {rule: Counts() for rule in RULES}
    live = rows.iloc[stream.history_readings:]
    device_ids = stream.readings["device_id"].iloc[stream.history_readings:].tolist()
    values = live[features].to_numpy(dtype=float)
    times = [t.to_pydatetime() for t in live["event_time"]]
    window_id = 0
    for i in range(len(live)):
        prediction = Prediction(device_ids[i], times[i], 0.0, 0, "bench", "1",
                                dict(zip(features, values[i], strict=True)))
        for window in builder.add(prediction):
            window_id += 1
            result = replace(judge.judge_drift(window, model_ref, policy).result, window_id=window_id)
            end = result.end_time
            assert end is not None
            notes = [c for c in core.on_window(result) if getattr(c, "kind", None) == "trigger"]
            if notes:
                counts["product"].triggers.append(end)
                core = LoopCore(policy, champion="1")
            counts["product"].flagged += bool(result.drifted)
            frame = predictions_frame(window.predictions)[features]
            for rule, bad in baseline_verdicts(frame, reference, features, p99).items():
                counts[rule].observe(bad, end, policy.drift_consecutive_windows)
    start, stop = times[0], times[-1]
    onset = stream.onset.event_time if stream.onset else None
    out: dict[str, object] = {"scenario": scenario, "seed": seed, "windows": window_id,
                              "live_hours": (stop - start).total_seconds() / 3600,
                              "threshold": calibration.threshold, "null_windows": len(calibration.null_scores),
                              "features": len(features), "onset": onset.isoformat() if onset else None}
    for rule, c in counts.items():
        before = [t for t in c.triggers if onset is None or t <= onset]
        after = [t for t in c.triggers if onset is not None and t > onset]
        out[rule] = {"flagged": c.flagged, "false_triggers": len(before),
                     "delay_h": (after[0] - onset).total_seconds() / 3600 if after and onset else None}
    return out


def p99_distance(rows: pd.DataFrame, features: list[str], calibration: DriftCalibration, reference_rows: int,
                 seed: int) -> float:
    """The 99th percentile of the largest per-feature distance over the calibration's own null windows."""
    nulls = null_windows(rows.reset_index(drop=True), features, calibration.window_size, calibration.hop,
                         reference_rows, seed, statistic.drift_score)
    return float(np.percentile(nulls.max(axis=1), 99))


def baseline_verdicts(window: pd.DataFrame, reference: pd.DataFrame, features: list[str],
                      p99: float) -> dict[str, bool]:
    pvalues = np.array([stats.ks_2samp(reference[f], window[f]).pvalue for f in features])
    distance = max(statistic.drift_score(reference[f], window[f]) for f in features)
    return {"evidently-default": float(np.mean(pvalues < EVIDENTLY_P)) >= EVIDENTLY_SHARE,
            "ks-bonferroni": bool(np.any(pvalues < 0.05 / len(features))),
            "p99-distance": distance >= p99}


def fmt(values: list[float | None]) -> str:
    if not values:
        return "-"
    hit = [v for v in values if v is not None]
    misses = len(values) - len(hit)
    if not hit:
        return f"miss x{misses}"
    text = f"{statistics.median(hit):.2f} (max {max(hit):.2f})"
    return text + (f", miss x{misses}" if misses else "")


def table(results: list[dict[str, object]], report: Callable[[str], None]) -> None:
    stationary = [r for r in results if r["onset"] is None]
    if stationary:
        report("stationary fleet: flagged windows / triggers per day (median over seeds; worst seed's triggers)")
        for rule in RULES:
            days = [float(r["live_hours"]) / 24 for r in stationary]  # type: ignore[arg-type]
            flagged = [r[rule]["flagged"] / d for r, d in zip(stationary, days, strict=True)]  # type: ignore[index]
            trig = [r[rule]["false_triggers"] / d for r, d in zip(stationary, days, strict=True)]  # type: ignore[index]
            report(f"  {rule:18s} {statistics.median(flagged):6.2f} windows/day  {statistics.median(trig):5.2f} "
                   f"triggers/day  (worst {max(trig):.2f}; {len(stationary)} seeds x {statistics.median(days):.1f} d)")
    for scenario in dict.fromkeys(str(r["scenario"]) for r in results if r["onset"] is not None):
        rows = [r for r in results if r["scenario"] == scenario]
        report(f"{scenario}: detection delay after the onset in event hours, median (max) over {len(rows)} seeds; "
               f"false triggers before the onset")
        for rule in RULES:
            delays = [r[rule]["delay_h"] for r in rows]  # type: ignore[index]
            false = sum(r[rule]["false_triggers"] for r in rows)  # type: ignore[index,misc]
            report(f"  {rule:18s} {fmt(delays):28s} false triggers {false}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join((*SIMULATED, "cmapss", "cmapss_fd002")))
    parser.add_argument("--seeds", default="1,2,3,4,5",
                        help="seeds: simulated fleets, or C-MAPSS fleets of the same engines in another order")
    parser.add_argument("--stationary-hours", type=float, default=72.0)
    parser.add_argument("--hours-after-onset", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=Path("bench/out/detection"))
    args = parser.parse_args()
    settings = load_settings("local")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results: list[dict[str, object]] = []
    t0 = time.perf_counter()
    for scenario in [s.strip() for s in args.scenarios.split(",") if s.strip()]:
        hours = args.stationary_hours if scenario == "stationary" else args.hours_after_onset
        for seed in seeds:
            result = run_one(settings, scenario, seed, hours)
            results.append(result)
            product = result["product"]
            print(f"[{time.perf_counter() - t0:5.0f}s] {scenario} seed {seed}: {result['windows']} windows, "
                  f"threshold {result['threshold']:.2f} ({result['null_windows']} null windows, "
                  f"{result['features']} features), product {product}", flush=True)
    lines: list[str] = []
    table(results, lambda line: (print(line), lines.append(line)))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "detection.json").write_text(json.dumps(results, indent=1, default=str))
    (args.out / "table.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

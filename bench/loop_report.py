"""The loop benchmark's figures: the per-policy table, the accuracy-over-time curve and its plot.

Every figure is computed from the true label of each live reading (the complete ground truth of
the run, censored readings left out) and the decision the policy's serving model made for it.
"of oracle" divides a policy's post-onset figure by the hindsight oracle's on the same readings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from loop_policies import Oracle, Policy, Static
from loop_stream import Stream
from sklearn.metrics import f1_score

BUCKET = timedelta(hours=1)
MIN_PLOTTED = 200
"""Fewest labelled readings an hour needs to be drawn."""


@dataclass(frozen=True)
class Row:
    """One policy's line of the table."""

    policy: str
    f1_before: float
    f1_after: float
    f1_of_oracle: float | None
    """Post-onset f1 / the oracle's."""
    accuracy_after: float
    accuracy_of_oracle: float | None
    onset_to_better_h: float | None
    """Event time from the drift onset until a model better than the static one (f1) served."""
    onset_to_oracle_h: float | None
    """Event time from the onset until the policy's f1 on every later reading is at least
    :data:`ORACLE_SHARE` of the oracle's on the same readings (None: never, or no oracle)."""
    retrainings: int
    promotions: int
    train_cpu_s: float
    train_wall_s: float
    monitor_cpu_s: float


def _scores(truth: np.ndarray, decision: np.ndarray) -> tuple[float, float]:
    if len(truth) == 0:
        return float("nan"), float("nan")
    return float(np.mean(truth == decision)), float(f1_score(truth, decision, zero_division=0))


def live_mask(stream: Stream) -> np.ndarray:
    """Live (not history) readings whose outcome is known."""
    mask = stream.truth >= 0
    mask[: stream.history_readings] = False
    return mask


def accuracy_curve(stream: Stream, policy: Policy, bucket: timedelta = BUCKET) -> pd.DataFrame:
    """Accuracy and f1 per ``bucket`` of event time over the live stream."""
    mask = live_mask(stream)
    times = stream.time_ns[mask]
    start = stream.time_ns[stream.history_readings]
    index = (times - start) // int(bucket.total_seconds() * 1e9)
    frame = pd.DataFrame({"bucket": index, "truth": stream.truth[mask], "decision": policy.decision[mask],
                          "time": times})
    rows = []
    for b, group in frame.groupby("bucket", sort=True):
        accuracy, f1 = _scores(group["truth"].to_numpy(), group["decision"].to_numpy())
        hours = (group["time"].max() - group["time"].min()) / 3.6e12 + stream.cycle_seconds / 3600
        rows.append({"start": pd.Timestamp(start + int(b) * int(bucket.total_seconds() * 1e9), tz="UTC"),
                     "accuracy": accuracy, "f1": f1, "n": len(group), "hours": min(hours, bucket / timedelta(hours=1))})
    return pd.DataFrame(rows)


def onset_to_better(stream: Stream, policy: Policy, static: Policy, margin: float) -> tuple[float | None, int | None]:
    """Event time (h) and readings from the onset until the first served model that beats the static one on f1
    by at least ``margin`` (the gate's promotion margin) over the post-onset readings it served."""
    if stream.onset is None:
        return None, None
    onset = stream.onset.reading
    mask = live_mask(stream)
    initial = static.served[0].version
    ends = [s.first for s in policy.served[1:]] + [len(stream.readings)]
    for serving, end in zip(policy.served, ends, strict=True):
        first = max(serving.first, onset)
        if serving.version == initial or first >= end:
            continue
        rows = np.flatnonzero(mask[first:end]) + first
        if len(rows) == 0:
            continue
        _, mine = _scores(stream.truth[rows], policy.decision[rows])
        _, theirs = _scores(stream.truth[rows], static.decision[rows])
        if mine >= theirs + margin:
            hours = (stream.time_ns[first] - stream.time_ns[onset]) / 3.6e12
            return hours, first - onset
    return None, None


ORACLE_SHARE = 0.9


def onset_to_oracle(stream: Stream, policy: Policy, oracle: Policy | None, share: float = ORACLE_SHARE) -> float | None:
    """Event time (h) from the onset until the first serving change (or the onset itself) from which the
    policy's f1 over all later post-onset readings reaches ``share`` of the oracle's over the same readings."""
    if stream.onset is None or oracle is None:
        return None
    onset = stream.onset.reading
    mask = live_mask(stream)
    starts = sorted({onset, *(s.first for s in policy.served if s.first > onset)})
    for first in starts:
        rows = np.flatnonzero(mask[first:]) + first
        if len(rows) == 0:
            continue
        _, mine = _scores(stream.truth[rows], policy.decision[rows])
        _, best = _scores(stream.truth[rows], oracle.decision[rows])
        if mine >= share * best:
            return (stream.time_ns[first] - stream.time_ns[onset]) / 3.6e12
    return None


def detection(stream: Stream, window_log: list[dict[str, object]]) -> str:
    """The loop's detection delay: its first detection (not a follow-up retraining) after the onset."""
    if stream.onset is None:
        return "no drift onset in this stream"
    onset = stream.onset.event_time
    triggers = [pd.Timestamp(str(w["end"])) for w in window_log if w["trigger"] and w["kind"] != "follow-up"]
    after = [t for t in triggers if t >= onset]
    before = len(triggers) - len(after)
    if not after:
        return f"loop: no trigger after the onset ({before} before it)"
    first = after[0]
    readings = int(np.count_nonzero((stream.time_ns >= pd.Timestamp(onset).value) & (stream.time_ns <= first.value)))
    return (f"loop: first trigger {(first - pd.Timestamp(onset)) / pd.Timedelta(hours=1):.2f} h of event time "
            f"({readings} readings) after the onset; {before} trigger(s) before the onset (false alarms)")


def table(stream: Stream, policies: list[Policy], margin: float) -> list[Row]:
    """One row per policy; "better" means an f1 at least ``margin`` above the static model's."""
    mask = live_mask(stream)
    onset = stream.onset.reading if stream.onset is not None else len(stream.readings)
    before, after = mask.copy(), mask.copy()
    before[onset:] = False
    after[:onset] = False
    static = next(p for p in policies if isinstance(p, Static))
    oracle = next((p for p in policies if isinstance(p, Oracle)), None)
    oracle_acc, oracle_f1 = _scores(stream.truth[after], oracle.decision[after]) if oracle else (None, None)
    rows = []
    for policy in policies:
        _, f1_before = _scores(stream.truth[before], policy.decision[before])
        acc_after, f1_after = _scores(stream.truth[after], policy.decision[after])
        hours, _readings = onset_to_better(stream, policy, static, margin)
        rows.append(Row(
            policy=policy.name, f1_before=f1_before, f1_after=f1_after,
            f1_of_oracle=f1_after / oracle_f1 if oracle_f1 else None, accuracy_after=acc_after,
            accuracy_of_oracle=acc_after / oracle_acc if oracle_acc else None, onset_to_better_h=hours,
            onset_to_oracle_h=onset_to_oracle(stream, policy, oracle),
            retrainings=len(policy.trainings), promotions=sum(t.promoted for t in policy.trainings),
            train_cpu_s=sum(t.cpu_s for t in policy.trainings), train_wall_s=sum(t.wall_s for t in policy.trainings),
            monitor_cpu_s=policy.monitor_cpu_s,
        ))
    return rows


NEVER_IS_NONE = ("onset_to_better_h", "onset_to_oracle_h")
"""Columns where a missing figure means "never": it counts as later than any other in a median."""


def medians(runs: list[list[Row]]) -> list[Row]:
    """Per policy (in the first run's order), the median of every figure over the runs that have one;
    a time that never came counts as infinitely late (a median that falls on it prints "-")."""
    names = [row.policy for row in runs[0]]
    out = []
    for name in names:
        rows = [row for run in runs for row in run if row.policy == name]
        values: dict[str, object] = {"policy": name}
        for key, first in asdict(rows[0]).items():
            if key == "policy":
                continue
            present = [getattr(r, key) for r in rows if getattr(r, key) is not None]
            if key in NEVER_IS_NONE:
                present += [np.inf] * (len(rows) - len(present))
            median = float(np.median(present)) if present else None
            if median is not None and np.isinf(median):
                median = None
            values[key] = round(median) if isinstance(first, int) and median is not None else median
        out.append(Row(**values))  # type: ignore[arg-type]
    return out


HEADER = ("policy", "f1 before", "f1 after", "f1 of oracle", "acc after", "acc of oracle", "onset->better h",
          f"onset->{ORACLE_SHARE:.0%} oracle h", "retrains", "promoted", "train CPU s", "train wall s", "monitor CPU s")


def format_table(rows: list[Row]) -> str:
    def cell(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return "nan" if np.isnan(value) else f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
        return str(value)

    lines = [[cell(v) for v in asdict(row).values()] for row in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(HEADER)]
    out = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(HEADER, widths, strict=True)))]
    out += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
            for line in lines]
    return "\n".join(out)


COLOURS = {"static": "tab:gray", "loop": "tab:green", "oracle": "black"}
"""Fixed colours; the schedules take the next ones of matplotlib's cycle."""


LEVEL_SHOWN = 3.0
"""Highest drift level drawn: far past the threshold only says "drifted"."""


def drift_level(window: dict[str, object], drift_threshold: float) -> float | None:
    """A drift window's statistic over the threshold it was judged at: the calibrated score over the model's
    own threshold, or (a model without a calibration) the drift share over ``policy.drift_threshold``."""
    score, threshold, share = window.get("drift_score"), window.get("drift_threshold"), window.get("drift_share")
    if isinstance(score, float) and isinstance(threshold, float) and threshold > 0:
        return score / threshold
    if isinstance(share, float) and drift_threshold > 0:
        return share / drift_threshold
    return None


def plot(stream: Stream, policies: list[Policy], drift_windows: list[dict[str, object]], drift_threshold: float,
         path: Path, title: str) -> None:
    """Accuracy over event time per policy, onset, retrainings (x) and promotions (^); the loop's drift level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    others = iter(["tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive"])
    for lane, policy in enumerate(policies):
        colour = COLOURS.get(policy.name) or next(others, "tab:cyan")
        curve = accuracy_curve(stream, policy)
        curve = curve[curve["n"] >= MIN_PLOTTED]  # a stub hour at the end says nothing
        top.plot(curve["start"] + BUCKET / 2, curve["accuracy"], marker=".", color=colour, label=policy.name)
        y = 0.02 + 0.03 * lane
        for training in policy.trainings:
            top.scatter([training.started], [y], marker="x", color=colour, s=30)
            if training.promoted and training.decided is not None:
                top.scatter([training.decided], [y], marker="^", color=colour, s=50)
                top.axvline(training.decided, color=colour, linestyle=":", linewidth=1)
    if stream.onset is not None:
        for axis in (top, bottom):
            axis.axvline(stream.onset.event_time, color="tab:red", linestyle="--", linewidth=1.5)
        top.annotate("drift onset", (stream.onset.event_time, 0.97), color="tab:red", fontsize=9,
                     xytext=(4, 0), textcoords="offset points", va="top")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy per hour")
    top.set_title(title + "\nx = retraining started, ^ = promoted (dotted line)", fontsize=10)
    top.legend(loc="lower right")
    top.grid(alpha=0.3)
    levels = [(pd.Timestamp(str(w["end"])), level) for w in drift_windows
              if w["kind"] == "drift" and (level := drift_level(w, drift_threshold)) is not None]
    if levels:
        bottom.plot([t for t, _ in levels], [min(level, LEVEL_SHOWN) for _, level in levels], marker=".",
                    color=COLOURS["loop"], label=f"loop: drift per window, in units of its threshold "
                                                 f"(cut at {LEVEL_SHOWN:g})")
    bottom.axhline(1.0, color="black", linestyle=":", linewidth=1, label="threshold")
    bottom.set_ylabel("drift / threshold")
    bottom.set_xlabel("event time (UTC)")
    bottom.set_ylim(0, LEVEL_SHOWN)
    bottom.legend(loc="upper left", fontsize=8)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

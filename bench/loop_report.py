"""The loop benchmark's figures: the per-policy table, the accuracy-over-time curve and its plot.

Every figure is computed from the true label of each live reading (the complete ground truth of
the run, censored readings left out) and the decision the policy's serving model made for it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from loop_policies import Policy, Static
from loop_stream import Stream
from sklearn.metrics import f1_score

BUCKET = timedelta(hours=1)
MIN_PLOTTED = 200
"""Fewest labelled readings an hour needs to be drawn."""


@dataclass(frozen=True)
class Row:
    """One policy's line of the table."""

    policy: str
    accuracy_before: float
    accuracy_after: float
    f1_before: float
    f1_after: float
    auc_accuracy_h: float
    """Area under the hourly accuracy curve over the live stream, in accuracy x hours."""
    retrainings: int
    promotions: int
    train_wall_s: float
    train_cpu_s: float
    monitor_cpu_s: float
    onset_to_better_h: float | None
    """Event time from the drift onset until a model better than the static one (f1) served."""
    onset_to_better_readings: int | None
    gain_per_retraining: float | None
    """(accuracy after drift - the static model's) / retrainings."""


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


def detection(stream: Stream, window_log: list[dict[str, object]]) -> str:
    """The drift loop's detection delay: its first trigger after the onset, in event time and readings."""
    if stream.onset is None:
        return "no drift onset in this stream"
    onset = stream.onset.event_time
    triggers = [pd.Timestamp(str(w["end"])) for w in window_log if w["trigger"]]
    after = [t for t in triggers if t >= onset]
    before = len(triggers) - len(after)
    if not after:
        return f"drift loop: no trigger after the onset ({before} before it)"
    first = after[0]
    readings = int(np.count_nonzero((stream.time_ns >= pd.Timestamp(onset).value) & (stream.time_ns <= first.value)))
    return (f"drift loop: first trigger {(first - pd.Timestamp(onset)) / pd.Timedelta(hours=1):.2f} h of event time "
            f"({readings} readings) after the onset; {before} trigger(s) before the onset (false alarms)")


def table(stream: Stream, policies: list[Policy], margin: float) -> list[Row]:
    """One row per policy; "better" means an f1 at least ``margin`` above the static model's."""
    mask = live_mask(stream)
    onset = stream.onset.reading if stream.onset is not None else len(stream.readings)
    before, after = mask.copy(), mask.copy()
    before[onset:] = False
    after[:onset] = False
    static = next(p for p in policies if isinstance(p, Static))
    static_after, _ = _scores(stream.truth[after], static.decision[after])
    rows = []
    for policy in policies:
        acc_before, f1_before = _scores(stream.truth[before], policy.decision[before])
        acc_after, f1_after = _scores(stream.truth[after], policy.decision[after])
        curve = accuracy_curve(stream, policy)
        retrainings = len(policy.trainings)
        hours, readings = onset_to_better(stream, policy, static, margin)
        rows.append(Row(
            policy=policy.name, accuracy_before=acc_before, accuracy_after=acc_after, f1_before=f1_before,
            f1_after=f1_after, auc_accuracy_h=float((curve["accuracy"] * curve["hours"]).sum()),
            retrainings=retrainings, promotions=sum(t.promoted for t in policy.trainings),
            train_wall_s=sum(t.wall_s for t in policy.trainings), train_cpu_s=sum(t.cpu_s for t in policy.trainings),
            monitor_cpu_s=policy.monitor_cpu_s, onset_to_better_h=hours, onset_to_better_readings=readings,
            gain_per_retraining=(acc_after - static_after) / retrainings if retrainings else None,
        ))
    return rows


HEADER = ("policy", "acc before", "acc after", "f1 before", "f1 after", "AUC acc*h", "retrains", "promoted",
          "train wall s", "train CPU s", "monitor CPU s", "onset->better h", "(readings)", "gain/retrain")


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


COLOURS = {"static": "tab:gray", "schedule": "tab:blue", "drift loop": "tab:green"}


def plot(stream: Stream, policies: list[Policy], drift_windows: list[dict[str, object]], drift_threshold: float,
         path: Path, title: str) -> None:
    """Accuracy over event time per policy, onset, retrainings (x) and promotions (^); the loop's drift share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for lane, policy in enumerate(policies):
        colour = COLOURS.get(policy.name, "black")
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
    shares = [w for w in drift_windows if w["kind"] == "drift" and w["drift_share"] is not None]
    if shares:
        bottom.plot([pd.Timestamp(str(w["end"])) for w in shares], [w["drift_share"] for w in shares],
                    marker=".", color=COLOURS["drift loop"], label="drift loop: drift share per window")
    bottom.axhline(drift_threshold, color="black", linestyle=":", linewidth=1, label="drift threshold")
    bottom.set_ylabel("drift share")
    bottom.set_xlabel("event time (UTC)")
    bottom.set_ylim(0, 1)
    bottom.legend(loc="upper left", fontsize=8)
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

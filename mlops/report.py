"""The loop report: what the monitor saw and what the loop did, as PNG plots in one HTML page.

Reads only what the running system recorded: the monitor's ``window_results``, the audit trail
``loop_events`` and the model registry. Loop events carry wall-clock times; they are placed on the
event-time axis at the end of the newest window the monitor had saved by then.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mlops import db
from mlops.config import Settings

MARKED_EVENTS = {"trigger": ("tab:orange", "trigger"), "retrain_started": ("tab:purple", "retraining"),
                 "promotion": ("tab:green", "promotion"), "rejection": ("tab:red", "rejection"),
                 "rollback": ("tab:brown", "rollback")}


@dataclass(frozen=True)
class LoopSummary:
    """The figures a person asks first about one drift episode."""

    onset_time: datetime | None
    detection_time: datetime | None
    """End of the first drift window at or after the onset that the policy counted as bad."""
    detection_delay_s: float | None
    detection_delay_predictions: int | None
    false_alarms_before_onset: int
    promotion_time: datetime | None
    """Event time at which the first loop promotion after the onset was in place."""
    onset_to_promotion_s: float | None
    f1_before_drift: float | None
    f1_after_drift_old_model: float | None
    f1_after_promotion: float | None
    retrainings: int

    def as_rows(self) -> list[tuple[str, str]]:
        def fmt(value: Any) -> str:
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return "-"
            if isinstance(value, float):
                return f"{value:.3f}"
            return str(value)

        return [(name.replace("_", " "), fmt(value)) for name, value in self.__dict__.items()]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _event_time_of(wall: datetime, windows: list[Any]) -> datetime | None:
    """Event time the stream had reached at wall time ``wall`` (end of the newest saved window)."""
    before = [w for w in windows if w.created_at is not None and w.created_at <= wall]
    return max(w.end_time for w in before) if before else None


def summarise(settings: Settings, onset: datetime | None, initial_version: str | None = None) -> LoopSummary:
    from mlops.monitor.results import engine_for, list_results

    windows = list_results(engine_for(settings))
    drift = [w for w in windows if w.kind == "drift"]
    perf = [w for w in windows if w.kind == "performance"]
    events = db.list_events(settings)
    threshold = settings.policy.drift_threshold
    bad = [w for w in drift if w.drift_share is not None and w.drift_share >= threshold]
    before = [w for w in bad if onset is not None and w.end_time < onset]
    after = [w for w in bad if onset is None or w.end_time >= onset]
    detection = after[0] if after else None
    delay_predictions = None
    if detection is not None and onset is not None:
        delay_predictions = sum(w.n_predictions for w in drift if onset <= w.end_time <= detection.end_time)
    promotions = [e for e in events if e.kind == "promotion" and e.actor == "loop"]
    promotion_time = _event_time_of(promotions[0].time, windows) if promotions else None
    first_new = promotions[0].model_version if promotions else None
    initial = initial_version or (perf[0].model_version if perf else None)
    f1 = settings.policy.primary_metric

    def metric(rows: list[Any]) -> float | None:
        return _mean([r.metrics[f1] for r in rows if r.metrics and f1 in r.metrics and not math.isnan(r.metrics[f1])])

    return LoopSummary(
        onset_time=onset,
        detection_time=detection.end_time if detection else None,
        detection_delay_s=(detection.end_time - onset).total_seconds() if detection and onset else None,
        detection_delay_predictions=delay_predictions,
        false_alarms_before_onset=len(before),
        promotion_time=promotion_time,
        onset_to_promotion_s=(promotion_time - onset).total_seconds() if promotion_time and onset else None,
        f1_before_drift=metric([w for w in perf if w.model_version == initial and onset and w.end_time < onset]),
        f1_after_drift_old_model=metric([w for w in perf if w.model_version == initial and onset
                                         and w.start_time >= onset]),
        f1_after_promotion=metric([w for w in perf if first_new and w.model_version == first_new]),
        retrainings=sum(1 for e in events if e.kind == "retrain_started"),
    )


def plot_timeline(settings: Settings, onset: datetime | None, path: Path) -> Path:
    """Drift share and realised primary metric per window over event time, with loop events marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlops.monitor.results import engine_for, list_results

    windows = list_results(engine_for(settings))
    drift = [w for w in windows if w.kind == "drift" and w.drift_share is not None]
    perf = [w for w in windows if w.kind == "performance" and w.metrics]
    metric = settings.policy.primary_metric
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    for version in sorted({w.model_version for w in windows}, key=lambda v: int(v) if v.isdigit() else 0):
        d = [w for w in drift if w.model_version == version]
        p = [(w.end_time, w.metrics or {}) for w in perf if w.model_version == version and metric in (w.metrics or {})]
        top.plot([w.end_time for w in d], [w.drift_share for w in d], "o-", ms=3, label=f"v{version}")
        bottom.plot([t for t, _ in p], [m[metric] for _, m in p], "o-", ms=3, label=f"v{version} {metric}")
        bottom.plot([t for t, _ in p], [m.get("accuracy", float("nan")) for _, m in p], "x:", ms=3,
                    alpha=0.6, label=f"v{version} accuracy")
    top.axhline(settings.policy.drift_threshold, color="grey", ls=":", lw=1, label="drift threshold")
    marked: set[str] = set()
    for event in db.list_events(settings):
        if event.kind not in MARKED_EVENTS:
            continue
        at = _event_time_of(event.time, windows)
        if at is None:
            continue
        colour, name = MARKED_EVENTS[event.kind]
        for axis in (top, bottom):
            axis.axvline(at, color=colour, ls="--", lw=1, label=None if name in marked else name)
        marked.add(name)
    if onset is not None:
        for axis in (top, bottom):
            axis.axvline(onset, color="black", lw=1.5, label="drift onset" if axis is top else None)
    top.set_ylabel("share of drifted features")
    top.set_title("Input drift per monitor window (Evidently)")
    bottom.set_ylabel("realised performance")
    bottom.set_title("Realised performance once labels arrived")
    bottom.set_xlabel("event time")
    top.legend(fontsize=7, ncol=4, loc="upper left")
    bottom.legend(fontsize=7, ncol=3, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _versions_table(settings: Settings) -> str:
    from mlops.errors import MlopsError
    from mlops.registry.catalog import list_versions

    try:
        versions = list_versions(settings)
    except MlopsError as err:
        return f"<p>model registry unavailable: {html.escape(str(err))}</p>"
    rows = []
    for v in versions:
        link = f"{settings.mlflow.tracking_uri}/#/experiments/0/runs/{v.run_id}" if v.run_id else ""
        metrics = ", ".join(f"{k} {val:.3f}" for k, val in sorted(v.metrics.items()))
        lineage = ", ".join(f"{k.removeprefix('lineage.')}={html.escape(val[:60])}" for k, val in sorted(v.tags.items())
                            if k.startswith("lineage.") and k.split(".")[-1] in
                            ("rows", "time_min", "time_max", "data_since", "data_until", "digest", "files"))
        rows.append(f"<tr><td>{v.version}</td><td>{', '.join(v.aliases)}</td><td>{html.escape(v.trigger or '')}</td>"
                    f"<td>{html.escape((v.reason or '')[:120])}</td><td>{metrics}</td><td>{lineage}</td>"
                    f"<td>{f'<a href={chr(34)}{link}{chr(34)}>run</a>' if link else ''}</td></tr>")
    return ("<table><tr><th>version</th><th>aliases</th><th>trigger</th><th>reason</th><th>validation</th>"
            "<th>lineage</th><th>MLflow</th></tr>" + "".join(rows) + "</table>")


def write_report(settings: Settings, outcome: Any) -> Path:
    """Write ``<reports_dir>/loop-<time>/index.html`` with its plots; return the HTML path."""
    from mlops.monitor.results import engine_for, list_results

    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    out = settings.reports_dir / f"loop-{stamp}"
    timeline = plot_timeline(settings, outcome.onset_time, out / "timeline.png")
    summary = summarise(settings, outcome.onset_time, outcome.initial_version)
    events = [e for e in db.list_events(settings) if e.kind not in ("window_result", "not_triggered")]
    windows = [w for w in list_results(engine_for(settings)) if w.report_html]
    promoted = ", ".join("v" + v for v in outcome.promoted_versions) or "none"
    summary_rows = "".join(f"<tr><td>{k}</td><td>{html.escape(v)}</td></tr>" for k, v in summary.as_rows())
    event_rows = "".join(
        f"<tr><td>{e.time:%H:%M:%S}</td><td>{e.kind}</td><td>{e.model_version or ''}</td><td>{e.actor or ''}</td>"
        f"<td>{html.escape((e.reason or '')[:200])}</td></tr>" for e in events)
    report_links = " ".join(f'<a href="file://{w.report_html}">{w.window_id}</a>' for w in windows[-60:])
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>mlops loop report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}}</style></head><body>
<h1>Closed loop: scenario '{html.escape(outcome.scenario)}'</h1>
<p>{outcome.readings_published} readings streamed in {outcome.duration_s:.0f}s;
initial model v{outcome.initial_version}, promoted by the loop: {promoted}; serving now:
v{outcome.serving_version}. MLflow UI: <a href="{settings.mlflow.tracking_uri}">{settings.mlflow.tracking_uri}</a>.</p>
<h2>Summary</h2><table>{summary_rows}</table>
<h2>Drift and performance over time</h2><img src="{timeline.name}" width="1100">
<h2>Model versions and lineage</h2>{_versions_table(settings)}
<h2>Loop events</h2><table><tr><th>time</th><th>event</th><th>version</th><th>actor</th><th>reason</th></tr>
{event_rows}</table>
<h2>Evidently reports per window</h2><p>{report_links or 'none'}</p>
</body></html>"""
    index = out / "index.html"
    index.write_text(page)
    return index

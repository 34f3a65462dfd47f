"""The loop report: what the monitor saw and what the loop did, as PNG plots and tables in one HTML page.

Reads only what the running system recorded: the monitor's ``window_results``, the audit trail
``loop_events`` and the model registry. Loop events carry wall-clock times; they are placed on the
event-time axis at the end of the newest window the monitor had saved by then. The tables of
windows (each linking its Evidently report by a relative path) and of the versions' realised metrics
side by side are built by :mod:`mlops.demo.window_tables`.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mlops import store
from mlops.clock import as_utc
from mlops.config import Settings
from mlops.demo.window_tables import realised_table, version_key, windows_table
from mlops.errors import MlopsError
from mlops.mlflow import tracking_client
from mlops.registry.catalog import list_versions
from mlops.store.results import engine_for, list_results

__all__ = ["LoopSummary", "plot_timeline", "plot_versions", "summarise", "write_report"]

REALISED_CAPTION = (
    "Realised metrics on live labels, one row per performance window, one column group per model version. "
    "The served version's figures are those of its own decisions. In the windows after a change of champion the "
    "monitor also scores the replaced model on the same events, so both stand in the same row; the replaced "
    "version is the one the audit trail's promotion of the served version names. Elsewhere the store records "
    "only the served version, so each version's columns are filled in the windows it served, aligned by event "
    "time. '-': not computed (a window with fewer than {positives} positive labels is not judged).")

MARKED_EVENTS = {"trigger": ("darkorange", "trigger"), "retrain_started": ("tab:purple", "retraining started"),
                 "promotion": ("tab:green", "promotion"), "rejection": ("tab:red", "rejection"),
                 "rollback": ("tab:brown", "rollback")}
VERSION_COLOURS = ["tab:blue", "tab:cyan", "tab:olive", "tab:pink", "tab:gray"]
"""One colour per model version, none of them an event's colour."""


@dataclass(frozen=True)
class LoopSummary:
    """The figures a person asks first about one drift episode (or one stationary run).

    Event times are the stream's; "wall" durations are real seconds on this machine.
    """

    onset_time: datetime | None
    detection_time: datetime | None
    """End of the first drift window at or after the onset that the policy counted as bad."""
    detection_delay_s: float | None
    detection_delay_predictions: int | None
    """Predictions in the drift windows from the onset to the detecting window, that one included."""
    false_alarms: int
    """Retrainings triggered before the onset (every one, on a stationary stream)."""
    serving_time: datetime | None
    """Event time of the first prediction stamped with the first version the loop promoted."""
    onset_to_serving_s: float | None
    trigger_to_serving_wall_s: float | None
    f1_before_drift: float | None
    f1_after_drift_old_model: float | None
    f1_after_promotion: float | None
    f1_old_model_same_events: float | None
    """The replaced model's f1 on the events the new champion scored (the monitor scores both)."""
    accuracy_before_drift: float | None
    accuracy_after_drift_old_model: float | None
    accuracy_after_promotion: float | None
    retrainings: int

    def as_rows(self) -> list[tuple[str, str]]:
        def fmt(value: Any) -> str:
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return "-"
            if isinstance(value, datetime):
                return f"{value:%Y-%m-%d %H:%M}"
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
    """What the running system recorded about one run, for drift onset ``onset`` (None: no drift)."""
    windows = list_results(engine_for(settings))
    by_id = {w.window_id: w for w in windows}
    drift = [w for w in windows if w.kind == "drift"]
    perf = [w for w in windows if w.kind == "performance"]
    events = store.list_events(settings)
    threshold = settings.policy.drift_threshold
    bad_after = [w for w in drift if onset is not None and w.end_time >= onset
                 and (w.drift_level(threshold) or 0.0) >= 1.0]
    detection = bad_after[0] if bad_after else None
    delay_predictions = None
    if detection is not None and onset is not None:
        delay_predictions = sum(w.n_predictions for w in drift if onset <= w.end_time <= detection.end_time)

    def before_onset(trigger: Any) -> bool:
        window_id = str(trigger.details.get("window_id", ""))
        window = by_id.get(int(window_id)) if window_id.isdigit() else None
        return onset is None or (window is not None and window.end_time < onset)

    triggers = [e for e in events if e.kind == "trigger"]
    false_alarms = [e for e in triggers if before_onset(e)]
    promotions = [e for e in events if e.kind == "promotion" and e.actor == "loop"]
    first_new = promotions[0].model_version if promotions else None
    new_windows = [w for w in windows if first_new and w.model_version == first_new]
    serving_time = min((w.start_time for w in new_windows), default=None)
    first_served_wall = min((w.created_at for w in new_windows if w.created_at is not None), default=None)
    detecting_triggers = [e for e in triggers if e not in false_alarms]
    initial = initial_version or (perf[0].model_version if perf else None)

    def metric(rows: list[Any], name: str) -> float | None:
        return _mean([r.metrics[name] for r in rows
                      if r.metrics and name in r.metrics and not math.isnan(r.metrics[name])])

    before = [w for w in perf if w.model_version == initial and (onset is None or w.end_time < onset)]
    after_old = [w for w in perf if w.model_version == initial and onset is not None and w.start_time >= onset]
    after_new = [w for w in perf if first_new and w.model_version == first_new]
    return LoopSummary(
        onset_time=onset,
        detection_time=detection.end_time if detection else None,
        detection_delay_s=(detection.end_time - onset).total_seconds() if detection and onset else None,
        detection_delay_predictions=delay_predictions,
        false_alarms=len(false_alarms),
        serving_time=serving_time,
        onset_to_serving_s=(serving_time - onset).total_seconds() if serving_time and onset else None,
        trigger_to_serving_wall_s=((as_utc(first_served_wall) - as_utc(detecting_triggers[0].time)).total_seconds()
                                   if first_served_wall and detecting_triggers else None),
        f1_before_drift=metric(before, "f1"),
        f1_after_drift_old_model=metric(after_old, "f1"),
        f1_after_promotion=metric(after_new, "f1"),
        f1_old_model_same_events=metric(after_new, "previous_f1"),
        accuracy_before_drift=metric(before, "accuracy"),
        accuracy_after_drift_old_model=metric(after_old, "accuracy"),
        accuracy_after_promotion=metric(after_new, "accuracy"),
        retrainings=sum(1 for e in events if e.kind == "retrain_started"),
    )


def _pyplot() -> Any:
    import matplotlib  # heavy

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def plot_timeline(settings: Settings, onset: datetime | None, path: Path) -> Path:
    """Drift level (statistic over its threshold) and realised f1 / accuracy per window over event time,
    with the onset and loop events marked."""
    plt = _pyplot()
    windows = list_results(engine_for(settings))
    threshold = settings.policy.drift_threshold
    drift = [w for w in windows if w.kind == "drift" and w.drift_level(threshold) is not None]
    perf = [w for w in windows if w.kind == "performance" and w.metrics]
    metric = settings.policy.primary_metric
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
    versions = sorted({w.model_version for w in windows}, key=version_key)
    for colour, version in zip(VERSION_COLOURS * 4, versions, strict=False):
        d = [w for w in drift if w.model_version == version]
        p = [(w.end_time, w.metrics or {}) for w in perf if w.model_version == version and metric in (w.metrics or {})]
        top.plot([w.end_time for w in d], [w.drift_level(threshold) for w in d], "o-", ms=3, color=colour,
                 label=f"v{version}")
        bottom.plot([t for t, _ in p], [m[metric] for _, m in p], "o-", ms=3, color=colour,
                    label=f"v{version} {metric}")
        bottom.plot([t for t, _ in p], [m.get("accuracy", float("nan")) for _, m in p], "x:", ms=3, color=colour,
                    alpha=0.7, label=f"v{version} accuracy")
    top.axhline(1.0, color="grey", ls=":", lw=1, label="drift threshold")
    marked: set[str] = set()
    for event in store.list_events(settings):
        if event.kind not in MARKED_EVENTS:
            continue
        at = _event_time_of(event.time, windows)
        if at is None:
            continue
        colour, name = MARKED_EVENTS[event.kind]
        for axis in (top, bottom):
            axis.axvline(at, color=colour, ls="--", lw=1.2, label=None if name in marked or axis is bottom else name)
        marked.add(name)
    if onset is not None:
        for axis in (top, bottom):
            axis.axvline(onset, color="black", lw=1.5, label="drift onset" if axis is top else None)
    top.set_ylabel("drift statistic / threshold")
    top.set_title(f"Input drift per monitor window (Evidently, normed Wasserstein >= "
                  f"{settings.policy.feature_drift_threshold:g} per feature)")
    bottom.set_ylabel(f"{metric} (solid), accuracy (dotted)")
    bottom.set_title("Realised performance once labels arrived; events: loop actions (event time)")
    bottom.set_xlabel("event time")
    bottom.set_ylim(0, 1)
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(plt, fig, path)


def _save(plt: Any, fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _tag_time(tags: dict[str, str], key: str) -> datetime | None:
    try:
        return as_utc(datetime.fromisoformat(tags[key]))
    except (KeyError, ValueError):
        return None


def plot_versions(settings: Settings, versions: list[Any], path: Path) -> Path:
    """Lineage over event time: per model version the data it was trained on and when it served."""
    plt = _pyplot()
    windows = list_results(engine_for(settings))
    ordered = sorted(versions, key=lambda v: version_key(v.version))
    fig, axis = plt.subplots(figsize=(12, 1.2 + 0.7 * max(1, len(ordered))))
    labels = []
    for row, (colour, info) in enumerate(zip(VERSION_COLOURS * 4, ordered, strict=False)):
        since, until = _tag_time(info.tags, "lineage.since"), _tag_time(info.tags, "lineage.until")
        if since and until:
            axis.barh(row, until - since, left=since, height=0.35, color=colour, alpha=0.35,
                      label="trained on" if row == 0 else None)
        served = [w for w in windows if w.model_version == info.version]
        if served:
            first, last = min(w.start_time for w in served), max(w.end_time for w in served)
            axis.plot([first, last], [row, row], "-", lw=6, color=colour, solid_capstyle="butt",
                      label="served (its predictions)" if row == 0 else None)
        labels.append(f"v{info.version} ({info.trigger or '?'})")
    axis.set_yticks(range(len(ordered)), labels)
    axis.invert_yaxis()
    axis.set_xlabel("event time")
    axis.set_title("Model versions: training data window (light bar) and serving period (dark line)")
    axis.grid(alpha=0.3, axis="x")
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(plt, fig, path)


def _run_link(settings: Settings, run_id: str | None, experiments: dict[str, str]) -> str:
    """The MLflow UI page of a run (its experiment looked up once per run), or "" when unknown."""
    if not run_id:
        return ""
    if run_id not in experiments:
        try:
            experiments[run_id] = tracking_client(settings).get_run(run_id).info.experiment_id
        except Exception:  # MLflow down or run deleted: the link is a convenience
            return ""
    return f"{settings.mlflow.tracking_uri}/#/experiments/{experiments[run_id]}/runs/{run_id}"


def _versions_table(settings: Settings, versions: list[Any], experiments: dict[str, str]) -> str:
    rows = []
    for v in versions:
        run = _run_link(settings, v.run_id, experiments)
        model = f"{settings.mlflow.tracking_uri}/#/models/{settings.mlflow.registered_model}/versions/{v.version}"
        metrics = ", ".join(f"{k} {val:.3f}" for k, val in sorted(v.metrics.items()) if k.startswith("val_"))
        lineage = ", ".join(f"{k.removeprefix('lineage.')}={html.escape(val[:40])}" for k, val in sorted(v.tags.items())
                            if k in ("lineage.since", "lineage.until", "lineage.split.train_rows",
                                     "lineage.split.validation_rows", "lineage.family", "lineage.compared_with"))
        links = f'<a href="{model}">version</a>' + (f' <a href="{run}">training run</a>' if run else "")
        rows.append(f"<tr><td>{v.version}</td><td>{', '.join(v.aliases)}</td><td>{html.escape(v.trigger or '')}</td>"
                    f"<td>{html.escape((v.reason or '')[:120])}</td><td>{metrics}</td><td>{lineage}</td>"
                    f"<td>{links}</td></tr>")
    return ("<table><tr><th>version</th><th>aliases</th><th>trigger</th><th>reason</th><th>validation</th>"
            "<th>lineage</th><th>MLflow</th></tr>" + "".join(rows) + "</table>")


def write_report(settings: Settings, outcome: Any) -> Path:
    """Write ``<reports_dir>/loop-<time>/index.html`` with its PNG plots; return the HTML path.

    Call it while MLflow still runs: the versions' lineage and the links come from the registry.
    """
    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    out = settings.reports_dir / f"loop-{stamp}"
    timeline = plot_timeline(settings, outcome.onset_time, out / "timeline.png")
    experiments: dict[str, str] = {}
    try:
        versions = list_versions(settings)
        lineage = (f'<img src="{plot_versions(settings, versions, out / "versions.png").name}" width="1100">'
                   + _versions_table(settings, versions, experiments))
    except MlopsError as err:
        lineage = f"<p>model registry unavailable: {html.escape(str(err))}</p>"
    summary = summarise(settings, outcome.onset_time, outcome.initial_version)
    events = [e for e in store.list_events(settings) if e.kind not in ("window_result", "not_triggered")]
    windows = list_results(engine_for(settings))
    promoted = ", ".join("v" + v for v in outcome.promoted_versions) or "none"
    summary_rows = "".join(f"<tr><td>{k}</td><td>{html.escape(v)}</td></tr>" for k, v in summary.as_rows())
    event_rows = "".join(
        f"<tr><td>{e.time:%H:%M:%S}</td><td>{html.escape(e.kind)}</td><td>{html.escape(e.model_version or '')}</td>"
        f"<td>{html.escape(e.actor or '')}</td>"
        f"<td>{html.escape((e.reason or '')[:200])}</td>"
        f"<td>{_link(_run_link(settings, e.run_id, experiments), 'run')}</td></tr>" for e in events)
    policy = settings.policy
    window_rows = windows_table(windows, out, policy.drift_threshold, policy.primary_metric)
    realised = realised_table(windows, events, policy.primary_metric)  # it reads the promotions among them
    monitor_runs = " ".join(_link(_run_link(settings, run_id, experiments), run_id[:8])
                            for run_id in dict.fromkeys(w.session_run_id for w in windows if w.session_run_id))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>mlops loop report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1250px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}}</style></head><body>
<h1>Closed loop: scenario '{html.escape(outcome.scenario)}'</h1>
<p>{outcome.readings_published} readings streamed in {outcome.duration_s:.0f}s;
initial model v{outcome.initial_version}, promoted by the loop: {promoted}; serving now:
v{outcome.serving_version}. MLflow UI: <a href="{settings.mlflow.tracking_uri}">{settings.mlflow.tracking_uri}</a>.</p>
<h2>Summary</h2><table>{summary_rows}</table>
<h2>Drift and performance over time</h2><img src="{timeline.name}" width="1100">
<h2>Model versions and lineage</h2>{lineage}
<h2>Loop events</h2><table>
<tr><th>time</th><th>event</th><th>version</th><th>actor</th><th>reason</th><th>MLflow</th></tr>
{event_rows}</table>
<h2>Realised metrics per model version</h2>
<p>{html.escape(REALISED_CAPTION.format(positives=policy.min_window_positives))}</p>{realised}
<h2>Monitor windows and their Evidently reports</h2><p>Monitor runs in MLflow (metrics per window, reports as
artifacts): {monitor_runs or 'none'}</p>{window_rows}
</body></html>"""
    index = out / "index.html"
    index.write_text(page)
    return index


def _link(url: str, text: str) -> str:
    return f'<a href="{url}">{html.escape(text)}</a>' if url else ""

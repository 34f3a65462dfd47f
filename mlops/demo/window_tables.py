"""The loop report's two tables of monitor windows, as HTML built from the results store.

- :func:`windows_table`: every window with its kind, version, span, verdict and a link to its
  Evidently report, relative to the loop report's folder so that the folder opens from disk;
- :func:`realised_table`: per performance window, the realised metrics of each model version
  evaluated in it, one column group per version. The store holds the served version's metrics and,
  after a change of champion, the replaced model's on the same events (``previous_<metric>``); the
  replaced version's number comes from the audit trail's promotion of the served one.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import quote

from mlops.store.audit import EventRecord
from mlops.store.results import WindowResult

__all__ = ["REALISED_COLUMNS", "realised_table", "replaced_versions", "report_href", "version_key", "windows_table"]

REALISED_COLUMNS = ("f1", "precision", "recall")
"""Shown per version, with the primary metric first when it is another one
(:data:`mlops.evaluation.names.REALISED_METRIC_NAMES` are those the monitor computes)."""
UNKNOWN_REPLACED = "replaced"
"""Column group of a replaced model whose version no promotion names."""


def version_key(version: str) -> tuple[int, str]:
    """Numeric versions in numeric order, anything else after them."""
    return (int(version), "") if version.isdigit() else (1 << 62, version)


def _number(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def _span(window: WindowResult) -> str:
    return f"{window.start_time:%Y-%m-%d %H:%M} - {window.end_time:%H:%M}"


def report_href(report_html: str, index_dir: Path) -> str:
    """The link from a page in ``index_dir`` to a window's report file: a relative, URL-quoted path."""
    return quote(Path(os.path.relpath(report_html, index_dir)).as_posix())


def _verdict(window: WindowResult, share_threshold: float, primary: str) -> str:
    if window.kind == "drift":
        level = window.drift_level(share_threshold)
        return "-" if level is None else f"drift {level:.2f} x threshold" + (" (drifted)" if level >= 1.0 else "")
    value = (window.metrics or {}).get(primary)
    return f"{primary} {_number(value)}"


def windows_table(windows: Sequence[WindowResult], index_dir: Path, share_threshold: float, primary: str) -> str:
    """One row per window, oldest first, each with its Evidently report's link or "no report"."""
    rows = []
    for w in windows:
        report = "no report"
        if w.report_html:
            href, name = report_href(w.report_html, index_dir), Path(w.report_html).name
            report = f'<a href="{html.escape(href)}">{html.escape(name)}</a>'
        cells = (str(w.window_id), w.kind, f"v{w.model_version}", _span(w), str(w.n_predictions),
                 _verdict(w, share_threshold, primary))
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + f"<td>{report}</td></tr>")
    return ("<table><tr><th>window</th><th>kind</th><th>version</th><th>event time</th><th>predictions</th>"
            "<th>verdict</th><th>Evidently report</th></tr>" + "".join(rows) + "</table>")


def replaced_versions(events: Iterable[EventRecord]) -> dict[tuple[str, str], str]:
    """``(model, version) -> the version it replaced``, from each version's first promotion."""
    replaced: dict[tuple[str, str], str] = {}
    for e in events:
        if e.kind == "promotion" and e.model_name and e.model_version and e.previous_version:
            replaced.setdefault((e.model_name, e.model_version), e.previous_version)
    return replaced


def _realised(window: WindowResult, replaced: dict[tuple[str, str], str],
              names: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """``version -> metric -> value`` recorded for one performance window: the served version and the replaced."""
    metrics = window.metrics or {}
    found = {window.model_version: {n: metrics.get(n) for n in names}}
    if any(f"previous_{n}" in metrics for n in names):
        previous = replaced.get((window.model_name, window.model_version), UNKNOWN_REPLACED)
        found[previous] = {n: metrics.get(f"previous_{n}") for n in names}
    return found


def realised_table(windows: Sequence[WindowResult], events: Iterable[EventRecord], primary: str) -> str:
    """Realised metrics per performance window, one column group per model version evaluated in it."""
    names = tuple(dict.fromkeys((primary, *REALISED_COLUMNS)))
    replaced = replaced_versions(events)
    perf = [w for w in windows if w.kind == "performance" and w.metrics]
    per_window = [(w, _realised(w, replaced, names)) for w in perf]
    versions = sorted({v for _, found in per_window for v in found}, key=version_key)
    if not versions:
        return "<p>no performance window yet (no labels joined)</p>"
    head = ("<tr><th rowspan=2>window</th><th rowspan=2>event time</th><th rowspan=2>labelled</th>"
            "<th rowspan=2>served</th>"
            + "".join(f"<th colspan={len(names)}>{html.escape(_group_name(v))}</th>" for v in versions) + "</tr><tr>"
            + "".join(f"<th>{html.escape(n)}</th>" for _ in versions for n in names) + "</tr>")
    rows = []
    for w, found in per_window:
        labelled = (w.metrics or {}).get("n_labelled")
        cells = [str(w.window_id), _span(w), "-" if labelled is None else f"{labelled:.0f}", f"v{w.model_version}"]
        cells += [_number(found[v][n]) if v in found else "" for v in versions for n in names]
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return "<table>" + head + "".join(rows) + "</table>"


def _group_name(version: str) -> str:
    return "replaced model (version unknown)" if version == UNKNOWN_REPLACED else f"v{version}"

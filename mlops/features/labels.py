"""The label "fails within H" for readings, from late ground truth (docs/contracts.md).

For a reading of device d at event time t, with ``span = H * cycle_seconds``:

- positive if a ``failure`` of d has time f with t < f <= t + span;
- positive if a ``rul`` label of d at time u >= t in the same life gives
  rul + (u - t) / cycle_seconds <= H;
- negative if d is seen alive (any later reading or label of d) at a time >= t + span and no
  failure came in between (the first failure after t, if any, is then later than t + span, and is
  itself such a sighting);
- otherwise censored: the outcome is not known yet, the row is dropped.

A ``failure`` or ``maintenance`` label ends a life; the life of an event at time x is the number
of such labels strictly before x, so a reading at the same time as the failure belongs to the life
that failure ends. Times are compared as integer nanoseconds, so the boundaries are exact.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlops.errors import ValidationError

__all__ = ["END_OF_LIFE", "LABEL_COLUMNS", "label_readings"]

LABEL_COLUMNS = ("device_id", "event_time", "kind", "rul")
END_OF_LIFE = ("failure", "maintenance")


def _nanos(times: pd.Series, what: str) -> np.ndarray:
    try:
        return pd.to_datetime(times, utc=True).dt.as_unit("ns").astype("int64").to_numpy()
    except (ValueError, TypeError) as err:
        raise ValidationError(f"{what}.event_time: not a timestamp column ({err})") from err


def label_readings(
    readings: pd.DataFrame, labels: pd.DataFrame, horizon_cycles: int, cycle_seconds: float
) -> pd.DataFrame:
    """``readings`` with an int ``label`` column (1 fails within H, 0 does not); censored rows dropped.

    ``readings`` needs ``device_id`` and ``event_time``; ``labels`` needs ``device_id``,
    ``event_time``, ``kind`` (failure | maintenance | rul) and ``rul`` (cycles, for kind rul).
    The result keeps the readings' columns and index order.
    """
    required = ((readings, "readings", ("device_id", "event_time")), (labels, "labels", LABEL_COLUMNS))
    for frame, what, columns in required:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValidationError(f"{what}: missing column(s) {missing}")
    unknown = sorted(set(labels["kind"].dropna()) - {"failure", "maintenance", "rul"})
    if unknown or labels["kind"].isna().any():
        raise ValidationError(f"labels.kind: unknown kind(s) {unknown or ['<missing>']}")
    if (labels["kind"].eq("rul") & labels["rul"].isna()).any():
        raise ValidationError("labels.rul: a label of kind 'rul' has no rul value")
    if horizon_cycles < 1 or cycle_seconds <= 0:
        raise ValidationError(f"horizon_cycles {horizon_cycles} and cycle_seconds {cycle_seconds} must be positive")

    span = round(horizon_cycles * cycle_seconds * 1e9)
    reading_ns = _nanos(readings["event_time"], "readings")
    label_ns = _nanos(labels["event_time"], "labels")
    label = np.full(len(readings), -1, dtype=np.int64)  # -1: censored
    label_groups = labels.assign(_ns=label_ns).groupby("device_id", sort=False)
    device_labels = {device: group for device, group in label_groups}
    reading_device = readings["device_id"].to_numpy()
    for device in pd.unique(reading_device):
        rows = np.flatnonzero(reading_device == device)
        group = device_labels.get(device)
        label[rows] = _device_labels(reading_ns[rows], group, span, cycle_seconds)
    return readings.assign(label=label)[label >= 0].astype({"label": np.int64})


def _device_labels(t: np.ndarray, labels: pd.DataFrame | None, span: int, cycle_seconds: float) -> np.ndarray:
    """Labels (1, 0, or -1 censored) of one device's reading times ``t`` (int ns)."""
    if labels is None:
        labels = pd.DataFrame({"kind": pd.Series(dtype=object), "rul": pd.Series(dtype=float),
                               "_ns": pd.Series(dtype=np.int64)})
    kinds = labels["kind"].to_numpy()
    at = labels["_ns"].to_numpy(dtype=np.int64)
    out = np.full(len(t), -1, dtype=np.int64)

    # Negative: seen alive at or after t + span. Positives below override it.
    last_seen = max(int(t.max()), int(at.max()) if len(at) else int(t.max()))
    out[t + span <= last_seen] = 0

    # Positive by failure: the first failure strictly after t is no later than t + span.
    failures = np.sort(at[kinds == "failure"])
    if len(failures):
        nxt = np.searchsorted(failures, t, side="right")
        has_next = nxt < len(failures)
        first_failure = failures[np.minimum(nxt, len(failures) - 1)]
        out[has_next & (first_failure <= t + span)] = 1

    # Positive by rul: some rul label at u >= t in t's life has u + rul * cycle_seconds <= t + span.
    is_rul = kinds == "rul"
    if is_rul.any():
        ends = np.sort(at[np.isin(kinds, END_OF_LIFE)])
        u = at[is_rul]
        due = u + np.round(labels["rul"].to_numpy(dtype=np.float64)[is_rul] * cycle_seconds * 1e9).astype(np.int64)
        order = np.argsort(u, kind="stable")
        u, due = u[order], due[order]
        u_life = np.searchsorted(ends, u, side="left")  # end labels strictly before u
        # Earliest due time among the rul labels from position j to the end of j's life.
        suffix_min = pd.Series(due[::-1]).groupby(u_life[::-1]).cummin().to_numpy()[::-1]
        j = np.searchsorted(u, t, side="left")  # first rul label with u >= t
        inside = j < len(u)
        jj = np.minimum(j, len(u) - 1)
        t_life = np.searchsorted(ends, t, side="left")
        same_life = inside & (u_life[jj] == t_life)
        out[same_life & (suffix_min[jj] <= t + span)] = 1
    return out

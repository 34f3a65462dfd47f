"""Replay a recorded time series (CSV, whitespace-separated text, Parquet) as readings and labels.

A column-mapping YAML (e.g. ``configs/replay/cmapss_fd001.yaml``, ``configs/replay/ai4i2020.yaml``)
says which columns are the device id (or one device for the whole file), the cycle, the sensors and
the settings (a list of columns, or ``{name: column}`` to rename them), how event time follows from
the data (a timestamp column, or start + a counting column · cycle_seconds), the device type, how a
device's record splits into lives, and where labels come from (``labels.default``):

* ``failure``: every life's last reading is its failure (run-to-failure data such as the C-MAPSS
  train files); the label's event time is that reading's event time;
* ``flag``: a failure label at every row whose ``labels.flag.column`` is non-zero (a per-row
  failure flag such as AI4I 2020's ``Machine failure``), at that row's event time;
* ``failure_time``: ``labels.failure_time.column`` holds the time the device failed (on some or all
  of its rows); one failure label per distinct time per device;
* ``rul``: a file gives the remaining useful life (cycles) after every device's last reading, one
  line per device in ascending device order (the C-MAPSS test files with ``RUL_FD001.txt``): a
  ``rul`` label at the last reading's event time;
* ``rul_column``: ``labels.rul_column.column`` holds each row's remaining useful life (cycles): a
  ``rul`` label at every life's last reading with that row's value;
* ``none``: readings only.

Lives: without ``lives`` a device's whole record is one life. With ``lives.counter`` (a column that
grows during a life and resets, e.g. tool wear that drops at each tool change) a new life starts
where the counter drops; a life whose last reading is not a failure gets a ``maintenance`` label
there (``lives.end: maintenance``; ``none`` leaves it unlabelled): the part was replaced before it
failed, and the label rule never counts a reading of one life towards the next life's failure.
A mapping without ``cycle`` numbers the readings of each life from 0.

:func:`replay_events` yields all of it in event-time order across devices (a reading's label right
after it), ready for :func:`mlops.data.publish.publish`. Constant columns are valid sensors and are
replayed as they are. :func:`load_mapping` rejects a bad mapping before any data is read, naming
the key.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from mlops.config import describe_file_errors, read_yaml_mapping
from mlops.data.schemas import SCHEMA_VERSION, Label, Reading
from mlops.errors import ConfigError, ValidationError

__all__ = [
    "LABEL_SOURCES",
    "ColumnLabels",
    "Columns",
    "EventTime",
    "LabelRules",
    "LabelSource",
    "Lives",
    "Mapping",
    "RulLabels",
    "label_rows",
    "load_mapping",
    "prepare",
    "read_table",
    "replay_events",
    "rul_values",
]

LabelSource = Literal["failure", "flag", "failure_time", "rul", "rul_column", "none"]
LABEL_SOURCES: tuple[str, ...] = LabelSource.__args__  # type: ignore[attr-defined]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventTime(_Strict):
    column: str | None = None
    """A timestamp column (naive values are UTC). If absent: start + steps · cycle_seconds."""
    steps: str | None = None
    """A column counting cycles since ``start`` (e.g. a row number); default: the mapping's ``cycle``,
    or, without one, each reading's position among its device's rows."""
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    cycle_seconds: float | None = Field(None, gt=0)
    """None: the product's ``features.cycle_seconds``."""

    @field_validator("start")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a timezone (e.g. 2026-01-01T00:00:00Z)")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _one_clock(self) -> EventTime:
        if self.column and self.steps:
            raise ValueError("give 'column' (a timestamp) or 'steps' (a counter), not both")
        return self


class RulLabels(_Strict):
    file: str
    """Path of the RUL file; relative paths resolve against the replayed file's directory.
    ``{stem_suffix}`` is replaced by the replayed file's name after its first ``_`` (test_FD001 -> FD001)."""


class ColumnLabels(_Strict):
    column: str = Field(min_length=1)


class LabelRules(_Strict):
    default: LabelSource = "failure"
    rul: RulLabels | None = None
    flag: ColumnLabels | None = None
    """A per-row failure flag: non-zero (or true) marks a failure at that row."""
    failure_time: ColumnLabels | None = None
    """A column holding the device's failure time (naive values are UTC)."""
    rul_column: ColumnLabels | None = None
    """A column holding each row's remaining useful life in cycles."""

    @model_validator(mode="after")
    def _default_is_configured(self) -> LabelRules:
        if self.default in ("flag", "failure_time", "rul_column") and getattr(self, self.default) is None:
            raise ValueError(f"'default' is {self.default!r} but '{self.default}.column' is not set")
        return self

    def column(self, source: str) -> str | None:
        """The file column a label source reads (None for failure, rul and none)."""
        rule = getattr(self, source, None) if source in ("flag", "failure_time", "rul_column") else None
        return rule.column if rule is not None else None


class Lives(_Strict):
    counter: str = Field(min_length=1)
    """A column that grows during a life and drops when a new one starts (e.g. tool wear)."""
    end: Literal["maintenance", "none"] = "maintenance"
    """The label of a life that ends without a failure label."""


Columns = list[str] | dict[str, str]


class Mapping(_Strict):
    format: Literal["auto", "csv", "whitespace", "parquet"] = "auto"
    columns: list[str] | None = None
    """Column names for a file without a header row (whitespace text); None: the file's header."""
    device_id: str | None = None
    """The device id column; None: the whole file is one device (``device_id_template`` names it)."""
    device_id_template: str = "{value}"
    """Formats the id: ``{value}`` is the column's value, ``{file_stem}`` the file's name without suffix."""
    cycle: str | None = None
    """The cycle column (a whole number); None: each life's readings are numbered from 0."""
    sensors: Columns = Field(min_length=1)
    """Sensor columns, or ``{sensor name: column}``."""
    settings: Columns = []
    device_type: str | None = None
    """A constant device type, or use ``device_type_column``."""
    device_type_column: str | None = None
    event_time: EventTime = EventTime()
    lives: Lives | None = None
    labels: LabelRules = LabelRules()

    @model_validator(mode="after")
    def _consistent(self) -> Mapping:
        if (self.device_type is None) == (self.device_type_column is None):
            raise ValueError("set exactly one of 'device_type' and 'device_type_column'")
        if self.device_id is None and "{value" in self.device_id_template:
            raise ValueError("'device_id_template' uses {value} but no 'device_id' column is set "
                             "(one device for the file: name it, e.g. \"{file_stem}\")")
        names = [*self.sensor_columns(), *self.setting_columns()]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"'sensors' and 'settings' name {repeated} more than once")
        return self

    def sensor_columns(self) -> dict[str, str]:
        """``{sensor name: file column}``."""
        return _named(self.sensors)

    def setting_columns(self) -> dict[str, str]:
        return _named(self.settings)


def _named(columns: Columns) -> dict[str, str]:
    return dict(columns) if isinstance(columns, dict) else {c: c for c in columns}


def load_mapping(path: str | Path) -> Mapping:
    """Read and strictly validate a column-mapping YAML: a bad or unknown key fails here, named with the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"mapping {path}: no such file")
    data = read_yaml_mapping(path)
    try:
        return Mapping.model_validate(data)
    except PydanticValidationError as err:
        raise ConfigError(describe_file_errors(err, path)) from err


def read_table(path: Path, mapping: Mapping, labels_from: str | None = None) -> pd.DataFrame:
    """The recorded file as a frame with the mapping's columns checked."""
    if not path.exists():
        raise ConfigError(f"replay: no such file {path}")
    fmt: str = mapping.format
    if fmt == "auto":
        fmt = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}.get(path.suffix.lower(), "whitespace")
    header = None if mapping.columns else "infer"
    if fmt == "parquet":
        frame = pd.read_parquet(path)
    elif fmt == "csv":
        frame = pd.read_csv(path, header=header, names=mapping.columns)
    else:
        frame = pd.read_csv(path, sep=r"\s+", header=header, names=mapping.columns)
    if mapping.columns and fmt == "parquet":
        raise ConfigError(f"replay {path}: 'columns' renames headerless text files; Parquet has names")
    source = labels_from or mapping.labels.default
    wanted = [*mapping.sensor_columns().values(), *mapping.setting_columns().values()]
    wanted += [c for c in (mapping.device_id, mapping.cycle, mapping.device_type_column, mapping.event_time.column,
                           mapping.event_time.steps, mapping.lives.counter if mapping.lives else None,
                           mapping.labels.column(source)) if c]
    missing = [c for c in dict.fromkeys(wanted) if c not in frame.columns]
    if missing:
        raise ConfigError(f"replay {path}: mapping names column(s) {missing} the file does not have "
                          f"(it has {list(frame.columns)})")
    if frame.empty:
        raise ConfigError(f"replay {path}: the file holds no rows")
    return frame


def _device_ids(values: pd.Series, template: str, stem: str) -> pd.Series:
    def one(value: object) -> str:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # 1.0 -> "1": text files often store ids as floats
        return template.format(value=value, file_stem=stem)

    return values.map(one)


def prepare(path: Path, mapping: Mapping, cycle_seconds: float, labels_from: str | None = None) -> pd.DataFrame:
    """The file as rows with ``_device_id``, ``_life``, ``_cycle``, ``_event_time``, ``_device_type``,
    sorted by event time (``_life`` counts each device's lives from 0)."""
    frame = read_table(path, mapping, labels_from)
    if mapping.device_id is None:
        frame["_device_id"] = mapping.device_id_template.format(file_stem=path.stem)
    else:
        frame["_device_id"] = _device_ids(frame[mapping.device_id], mapping.device_id_template, path.stem)
    by_device = frame.groupby("_device_id", sort=False)
    if mapping.lives is not None:
        # File order within a device: a new life where the counter drops below the row before.
        counter = pd.to_numeric(frame[mapping.lives.counter], errors="raise")
        drops = (counter < by_device[mapping.lives.counter].shift()).astype(int)
        frame["_life"] = drops.groupby(frame["_device_id"], sort=False).cumsum()
    else:
        frame["_life"] = 0
    position = frame.groupby(["_device_id", "_life"], sort=False).cumcount()
    frame["_cycle"] = frame[mapping.cycle] if mapping.cycle else position
    if mapping.event_time.column:
        frame["_event_time"] = pd.to_datetime(frame[mapping.event_time.column], utc=True)
    else:
        steps = (frame[mapping.event_time.steps] if mapping.event_time.steps
                 else frame[mapping.cycle] if mapping.cycle else by_device.cumcount())
        step = mapping.event_time.cycle_seconds or cycle_seconds
        frame["_event_time"] = pd.Timestamp(mapping.event_time.start) + pd.to_timedelta(
            steps.astype(float) * step, unit="s")
    frame["_device_type"] = (frame[mapping.device_type_column].astype(str) if mapping.device_type_column
                             else mapping.device_type)
    # Stable sort: within one event time, devices keep the file's order.
    return frame.sort_values(["_event_time", "_device_id"], kind="stable").reset_index(drop=True)


def rul_values(path: Path, mapping: Mapping, devices: list[str], rul_file: Path | None) -> dict[str, float]:
    """Remaining useful life per device from the RUL file (one line per device, ascending device order)."""
    if rul_file is None:
        if mapping.labels.rul is None:
            raise ConfigError("replay --labels-from rul: the mapping has no labels.rul.file and no --rul-file given")
        stem_suffix = path.stem.split("_", 1)[-1]
        rul_file = Path(mapping.labels.rul.file.format(stem_suffix=stem_suffix))
        if not rul_file.is_absolute():
            rul_file = path.parent / rul_file
    if not rul_file.exists():
        raise ConfigError(f"replay: RUL file {rul_file} does not exist")
    values = [float(line.split()[0]) for line in rul_file.read_text().splitlines() if line.strip()]
    if len(values) != len(devices):
        raise ConfigError(f"replay: RUL file {rul_file} has {len(values)} values for {len(devices)} devices "
                          f"in {path}")
    return dict(zip(devices, values, strict=True))


def label_rows(path: Path, frame: pd.DataFrame, mapping: Mapping, source: str,
               rul_file: Path | None = None) -> pd.DataFrame:
    """The labels of a prepared frame: ``_row`` (the reading a label follows), ``kind``, ``rul``, ``event_time``.

    A label goes right after the reading it belongs to; a failure time between readings follows
    the device's last reading before it.
    """
    last_of_life = ~frame.duplicated(["_device_id", "_life"], keep="last")
    rows: list[tuple[int, str, float | None, pd.Timestamp]] = []
    if source == "failure":
        rows += [(i, "failure", None, frame.at[i, "_event_time"]) for i in _positions(last_of_life)]
    elif source == "flag":
        column = mapping.labels.column("flag")
        raw = frame[column]
        flags = pd.to_numeric(raw.astype(int) if raw.dtype == bool else raw, errors="coerce")
        if flags.isna().any():
            bad = int(_positions(flags.isna().to_numpy())[0])
            raise ValidationError(f"replay {path}: labels.flag column {column!r} holds "
                                  f"{frame.at[bad, column]!r}, not 0/1")
        rows += [(i, "failure", None, frame.at[i, "_event_time"]) for i in _positions(flags.to_numpy() != 0)]
    elif source == "failure_time":
        rows += _failure_times(path, frame, str(mapping.labels.column("failure_time")))
    elif source == "rul":
        # Devices in ascending order of the raw id column: the order RUL files use.
        order = frame.drop_duplicates("_device_id")
        if mapping.device_id is not None:
            order = order.sort_values(mapping.device_id, kind="stable")
        rul = rul_values(path, mapping, order["_device_id"].tolist(), rul_file)
        last = ~frame.duplicated("_device_id", keep="last")
        rows += [(i, "rul", rul[frame.at[i, "_device_id"]], frame.at[i, "_event_time"]) for i in _positions(last)]
    elif source == "rul_column":
        column = str(mapping.labels.column("rul_column"))
        values = pd.to_numeric(frame[column], errors="coerce")
        for i in _positions(last_of_life):
            if not np.isfinite(values.iat[i]) or values.iat[i] < 0:
                raise ValidationError(f"replay {path} row {i}: labels.rul_column {column!r} is "
                                      f"{frame.at[i, column]!r}, not a remaining life in cycles (>= 0)")
            rows.append((i, "rul", float(values.iat[i]), frame.at[i, "_event_time"]))
    if mapping.lives is not None and mapping.lives.end == "maintenance" and source != "none":
        # The counter reset after a reading that did not fail: the part was replaced before it failed.
        failed = {i for i, kind, _, _ in rows if kind == "failure"}
        restarted = last_of_life & (frame["_life"] < frame.groupby("_device_id")["_life"].transform("max"))
        rows += [(i, "maintenance", None, frame.at[i, "_event_time"]) for i in _positions(restarted) if i not in failed]
    labels = pd.DataFrame(rows, columns=["_row", "kind", "rul", "event_time"])
    return labels.sort_values(["_row", "event_time"], kind="stable").reset_index(drop=True)


def _positions(mask: pd.Series | np.ndarray) -> list[int]:
    return [int(i) for i in np.flatnonzero(np.asarray(mask))]


def _failure_times(path: Path, frame: pd.DataFrame, column: str) -> list[tuple[int, str, float | None, pd.Timestamp]]:
    try:
        when = pd.to_datetime(frame[column], utc=True)
    except (ValueError, TypeError) as err:
        raise ValidationError(f"replay {path}: labels.failure_time column {column!r}: {err}") from err
    rows: list[tuple[int, str, float | None, pd.Timestamp]] = []
    failures = frame.assign(_failed_at=when).dropna(subset=["_failed_at"]).drop_duplicates(["_device_id", "_failed_at"])
    for device, failed_at in zip(failures["_device_id"], failures["_failed_at"], strict=True):
        device_rows = frame.index[(frame["_device_id"] == device) & (frame["_event_time"] <= failed_at)]
        if len(device_rows) == 0:
            raise ValidationError(f"replay {path}: device {device} fails at {failed_at.isoformat()}, before its "
                                  "first reading")
        rows.append((int(device_rows.max()), "failure", None, failed_at))
    return rows


def replay_events(path: str | Path, mapping: Mapping, cycle_seconds: float,
                  labels_from: LabelSource | None = None, rul_file: Path | None = None
                  ) -> Iterator[Reading | Label]:
    """Readings (and labels) of a recorded file in event-time order across devices.

    Raises :class:`ConfigError` when the mapping does not fit the file and :class:`ValidationError`
    naming the row when a value is not a valid reading or label.
    """
    path = Path(path)
    source = labels_from or mapping.labels.default
    if source not in LABEL_SOURCES:
        raise ConfigError(f"labels from {source!r}: expected one of {', '.join(LABEL_SOURCES)}")
    column = mapping.labels.column(source) if source in ("flag", "failure_time", "rul_column") else ""
    if column is None:
        raise ConfigError(f"replay --labels-from {source}: the mapping sets no labels.{source}.column")
    frame = prepare(path, mapping, cycle_seconds, source)
    labels = label_rows(path, frame, mapping, source, rul_file)
    sensor_names, setting_names = list(mapping.sensor_columns()), list(mapping.setting_columns())
    sensors = frame[list(mapping.sensor_columns().values())].to_numpy(dtype=float)
    settings = frame[list(mapping.setting_columns().values())].to_numpy(dtype=float)
    cycles = frame["_cycle"].to_numpy()
    following = labels.groupby("_row", sort=False)
    pending = {int(row): group for row, group in following}
    for i, (device, when, dtype) in enumerate(zip(frame["_device_id"], frame["_event_time"], frame["_device_type"],
                                                  strict=True)):
        try:
            yield Reading(schema_version=SCHEMA_VERSION, device_id=device, device_type=dtype,
                          event_time=when.to_pydatetime(), cycle=_cycle(cycles[i]),
                          sensors=dict(zip(sensor_names, sensors[i].tolist(), strict=True)),
                          settings=dict(zip(setting_names, settings[i].tolist(), strict=True)))
        except (PydanticValidationError, ValueError) as err:
            raise ValidationError(f"replay {path} row {i} (device {device}): {err}") from err
        if i in pending:
            for kind, rul, at in pending[i][["kind", "rul", "event_time"]].itertuples(index=False):
                yield Label(schema_version=SCHEMA_VERSION, device_id=device, event_time=at.to_pydatetime(),
                            kind=kind, rul=None if kind != "rul" else float(rul))


def _cycle(value: object) -> int:
    number = float(value)  # type: ignore[arg-type]
    if not np.isfinite(number) or not number.is_integer():
        raise ValueError(f"cycle {value!r} is not a whole number")
    return int(number)

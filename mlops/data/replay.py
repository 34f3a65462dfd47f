"""Replay a recorded time series (CSV, whitespace-separated text, Parquet) as readings and labels.

A column-mapping YAML (e.g. ``configs/replay/cmapss_fd001.yaml``) says which columns are the
device id, the cycle, the sensors and the settings, how event time follows from the cycle (or
which column holds it), the device type, and how labels are derived:

* ``failure``: every device's last reading is its failure (run-to-failure data such as the
  C-MAPSS train files); the label's event time is that reading's event time;
* ``rul``: a file gives the remaining useful life (cycles) after every device's last reading, one
  line per device in ascending device order (the C-MAPSS test files with ``RUL_FD001.txt``): a
  ``rul`` label at the last reading's event time;
* ``none``: readings only.

:func:`replay_events` yields all of it in event-time order across devices (a device's label right
after its last reading), ready for :func:`mlops.data.publish.publish`. Constant columns are valid
sensors and are replayed as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from mlops.config import describe_file_errors, read_yaml_mapping
from mlops.data.schemas import SCHEMA_VERSION, Label, Reading
from mlops.errors import ConfigError, ValidationError

LabelSource = Literal["failure", "rul", "none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventTime(_Strict):
    column: str | None = None
    """A timestamp column (naive values are UTC). If absent: start + cycle · cycle_seconds."""
    start: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    cycle_seconds: float | None = Field(None, gt=0)
    """None: the product's ``features.cycle_seconds``."""

    @field_validator("start")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a timezone (e.g. 2026-01-01T00:00:00Z)")
        return value.astimezone(UTC)


class RulLabels(_Strict):
    file: str
    """Path of the RUL file; relative paths resolve against the replayed file's directory.
    ``{stem_suffix}`` is replaced by the replayed file's name after its first ``_`` (test_FD001 -> FD001)."""


class LabelRules(_Strict):
    default: LabelSource = "failure"
    rul: RulLabels | None = None


class Mapping(_Strict):
    format: Literal["auto", "csv", "whitespace", "parquet"] = "auto"
    columns: list[str] | None = None
    """Column names for a file without a header row (whitespace text); None: the file's header."""
    device_id: str
    device_id_template: str = "{value}"
    """Formats the id: ``{value}`` is the column's value, ``{file_stem}`` the file's name without suffix."""
    cycle: str
    sensors: list[str] = Field(min_length=1)
    settings: list[str] = []
    device_type: str | None = None
    """A constant device type, or use ``device_type_column``."""
    device_type_column: str | None = None
    event_time: EventTime = EventTime()
    labels: LabelRules = LabelRules()


def load_mapping(path: str | Path) -> Mapping:
    """Read and strictly validate a column-mapping YAML (unknown keys name the key and the file)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"mapping {path}: no such file")
    data = read_yaml_mapping(path)
    try:
        mapping = Mapping.model_validate(data)
    except PydanticValidationError as err:
        raise ConfigError(describe_file_errors(err, path)) from err
    if (mapping.device_type is None) == (mapping.device_type_column is None):
        raise ConfigError(f"{path}: set exactly one of 'device_type' and 'device_type_column'")
    return mapping


def read_table(path: Path, mapping: Mapping) -> pd.DataFrame:
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
    wanted = [mapping.device_id, mapping.cycle, *mapping.sensors, *mapping.settings]
    wanted += [c for c in (mapping.device_type_column, mapping.event_time.column) if c]
    missing = [c for c in wanted if c not in frame.columns]
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


def prepare(path: Path, mapping: Mapping, cycle_seconds: float) -> pd.DataFrame:
    """The file as rows with ``_device_id``, ``_event_time``, ``_device_type``, sorted by event time."""
    frame = read_table(path, mapping)
    frame["_device_id"] = _device_ids(frame[mapping.device_id], mapping.device_id_template, path.stem)
    if mapping.event_time.column:
        frame["_event_time"] = pd.to_datetime(frame[mapping.event_time.column], utc=True)
    else:
        step = mapping.event_time.cycle_seconds or cycle_seconds
        frame["_event_time"] = pd.Timestamp(mapping.event_time.start) + pd.to_timedelta(
            frame[mapping.cycle].astype(float) * step, unit="s")
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


def replay_events(path: str | Path, mapping: Mapping, cycle_seconds: float,
                  labels_from: LabelSource | None = None, rul_file: Path | None = None
                  ) -> Iterator[Reading | Label]:
    """Readings (and labels) of a recorded file in event-time order across devices.

    Raises :class:`ValidationError` naming the row when a value is not a valid reading.
    """
    path = Path(path)
    source = labels_from or mapping.labels.default
    frame = prepare(path, mapping, cycle_seconds)
    last_row = frame.groupby("_device_id", sort=False)["_event_time"].transform("max") == frame["_event_time"]
    last_row &= ~frame.duplicated(["_device_id", "_event_time"], keep="last")
    rul: dict[str, float] = {}
    if source == "rul":
        # Devices in ascending order of the raw id column: the order RUL files use.
        order = frame.drop_duplicates("_device_id").sort_values(mapping.device_id, kind="stable")
        rul = rul_values(path, mapping, order["_device_id"].tolist(), rul_file)

    sensors = frame[mapping.sensors].to_numpy(dtype=float)
    settings = frame[mapping.settings].to_numpy(dtype=float)
    cycles = frame[mapping.cycle].to_numpy()
    for i, (device, when, dtype, last) in enumerate(zip(frame["_device_id"], frame["_event_time"],
                                                        frame["_device_type"], last_row, strict=True)):
        event_time = when.to_pydatetime()
        try:
            yield Reading(schema_version=SCHEMA_VERSION, device_id=device, device_type=dtype,
                          event_time=event_time, cycle=_cycle(cycles[i]),
                          sensors=dict(zip(mapping.sensors, sensors[i].tolist(), strict=True)),
                          settings=dict(zip(mapping.settings, settings[i].tolist(), strict=True)))
        except (PydanticValidationError, ValueError) as err:
            raise ValidationError(f"replay {path} row {i} (device {device}): {err}") from err
        if last and source == "failure":
            yield Label(schema_version=SCHEMA_VERSION, device_id=device, event_time=event_time, kind="failure")
        elif last and source == "rul":
            yield Label(schema_version=SCHEMA_VERSION, device_id=device, event_time=event_time, kind="rul",
                        rul=rul[device])


def _cycle(value: object) -> int:
    number = float(value)  # type: ignore[arg-type]
    if not np.isfinite(number) or not number.is_integer():
        raise ValueError(f"cycle {value!r} is not a whole number")
    return int(number)

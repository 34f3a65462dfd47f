"""Simulator scenarios: the fleet's physics and the drift it undergoes, read from YAML.

A scenario file (``configs/scenarios/<name>.yaml``) overrides the defaults below; every mapping
forbids unknown keys so a typo fails with the key and the file named. The fleet model:

* every device has a type (``device_types``, chosen by share) and operating settings
  (``load`` in [0.4, 1.0], slowly wandering; ``ambient`` temperature with a daily cycle);
* a sensor reads ``base + type offset + load·load_coef + ambient·ambient_coef + signature·wear² + noise``;
* wear grows every cycle by ``wear.rate`` (times a per-life log-normal factor and the load), and the
  per-cycle failure probability is ``hazard.base + hazard.scale·wear^hazard.power``; a device past
  ``maintenance.threshold`` may get preventive maintenance instead. Both end the life: the device
  is down for ``repair_cycles`` and starts again at wear 0, cycle 0.

``drift`` (absent for a stationary fleet) switches a share of the devices, each at a time spread
over ``[onset_cycle, onset_cycle + ramp_cycles]``, to a new regime: a different wear rate, a
different degradation signature (which sensors move as wear grows: a new fault mode), a sensor
recalibration (offset/scale: input drift, in full at once or growing linearly over
``recalibration_ramp_cycles``: sensors whose calibration drifts), or a new device type name.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from mlops.config import config_dir, describe_file_errors, read_yaml_mapping
from mlops.errors import ConfigError

__all__ = ["DeviceType", "Drift", "Hazard", "LabelTiming", "Maintenance", "Recalibration", "Scenario", "SensorModel",
           "Wear", "available_scenarios", "load_scenario", "scenario_dir"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SensorModel(_Strict):
    base: float
    noise: float = Field(ge=0)
    load: float = 0.0
    """Shift per unit of the ``load`` setting."""
    ambient: float = 0.0
    """Shift per degree of ambient temperature above 20."""


class DeviceType(_Strict):
    share: float = Field(gt=0)
    offsets: dict[str, float] = {}
    """Per-sensor shift of this type's baseline."""


class Hazard(_Strict):
    base: float = Field(0.0002, ge=0, le=1)
    scale: float = Field(0.08, ge=0)
    power: float = Field(4.0, gt=0)


class Maintenance(_Strict):
    threshold: float = Field(0.95, ge=0)
    """Wear above which preventive maintenance may happen."""
    probability: float = Field(0.02, ge=0, le=1)
    """Per-cycle chance of maintenance once above the threshold."""


class Wear(_Strict):
    rate: float = Field(0.005, gt=0)
    """Mean wear per cycle: a life reaches wear 1 after about 1/rate cycles."""
    rate_spread: float = Field(0.25, ge=0)
    """Sigma of the log-normal per-life factor on the rate: some parts wear faster."""
    load_factor: float = Field(1.0, ge=0)
    """Wear rate multiplier is 1 + load_factor·(load - 0.7)."""
    hazard: Hazard = Hazard()
    maintenance: Maintenance = Maintenance()
    repair_cycles: int = Field(1, ge=1)
    """Cycles a device emits nothing after a failure or maintenance (at least 1, so that no reading
    of the new life shares the event time of the label that ended the old one)."""


class Recalibration(_Strict):
    offset: float = 0.0
    scale: float = 1.0


class LabelTiming(_Strict):
    delay_cycles: float = Field(10.0, ge=0)
    """Labels are published this many cycles of event time after their own event time."""


class Drift(_Strict):
    kind: Literal["recalibration", "gradual_drift", "fault_mode", "wear_regime"]
    onset_cycle: int = Field(ge=0)
    """Cycles of event time after the start at which the new regime begins (the recorded onset)."""
    ramp_cycles: int = Field(0, ge=0)
    """0: every affected device switches at the onset; else switch times spread over the ramp."""
    share: float = Field(1.0, gt=0, le=1)
    """Share of the devices that switch."""
    takes_effect: Literal["immediately", "next_life"] = "immediately"
    """Whether a switched device changes mid-life or from its next life on."""
    wear_rate_factor: float = Field(1.0, gt=0)
    signature: dict[str, float] | None = None
    """Replaces the degradation signature (sensor shift at wear 1) of switched devices."""
    recalibration: dict[str, Recalibration] = {}
    recalibration_ramp_cycles: int = Field(0, ge=0)
    """0: a switched device reads with the full recalibration from its switch on; else the offset and
    the scale's departure from 1 grow linearly from nothing to full over this many cycles after it."""
    device_type: str | None = None
    """Switched devices report this device type from their switch on."""


def _default_sensors() -> dict[str, SensorModel]:
    return {
        "temperature": SensorModel(base=60.0, noise=0.8, load=12.0, ambient=0.4),
        "vibration": SensorModel(base=0.25, noise=0.025, load=0.08),
        "pressure": SensorModel(base=6.0, noise=0.06, load=1.0),
        "rpm": SensorModel(base=1450.0, noise=4.0, load=40.0),
        "current": SensorModel(base=10.0, noise=0.2, load=5.0),
    }


def _default_signature() -> dict[str, float]:
    return {"temperature": 12.0, "vibration": 0.35, "pressure": -0.3, "rpm": -8.0, "current": 0.6}


class Scenario(_Strict):
    name: str
    description: str = ""
    start_time: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    """Event time of the fleet's first tick (``--start`` overrides it)."""
    sensors: dict[str, SensorModel] = Field(default_factory=_default_sensors, min_length=1)
    device_types: dict[str, DeviceType] = {"pump-a": DeviceType(share=0.6),
                                           "pump-b": DeviceType(share=0.4, offsets={"temperature": 3.0,
                                                                                    "rpm": -30.0})}
    signature: dict[str, float] = Field(default_factory=_default_signature)
    """Sensor shift at wear 1 (scaled by wear²): how degradation shows."""
    wear: Wear = Wear()
    labels: LabelTiming = LabelTiming()
    drift: Drift | None = None

    @field_validator("start_time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a timezone (e.g. 2026-01-01T00:00:00Z)")
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _known_sensors(self) -> Scenario:
        known = set(self.sensors)
        named: list[tuple[str, dict[str, Any]]] = [("signature", self.signature)]
        named += [(f"device_types.{name}.offsets", t.offsets) for name, t in self.device_types.items()]
        if self.drift is not None:
            named += [("drift.signature", self.drift.signature or {}),
                      ("drift.recalibration", dict(self.drift.recalibration))]
        for where, mapping in named:
            unknown = sorted(set(mapping) - known)
            if unknown:
                raise ValueError(f"{where} names unknown sensor(s) {unknown}; sensors are {sorted(known)}")
        return self


def scenario_dir() -> Path:
    """``configs/scenarios`` next to the active profile files (``MLOPS_CONFIG_DIR``)."""
    return config_dir() / "scenarios"


def available_scenarios() -> list[str]:
    """Names of the scenario files shipped in the scenario directory."""
    return sorted(path.stem for path in scenario_dir().glob("*.yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a scenario by name (``configs/scenarios/<name>.yaml``) or path; strict validation.

    Raises :class:`ConfigError` naming the file and every bad key.
    """
    path = Path(name_or_path)
    if path.suffix not in {".yaml", ".yml"}:
        path = scenario_dir() / f"{name_or_path}.yaml"
    if not path.exists():
        raise ConfigError(f"scenario {name_or_path!r}: no file {path} (available: {available_scenarios()})")
    data = read_yaml_mapping(path)
    data.setdefault("name", path.stem)
    try:
        return Scenario.model_validate(data)
    except PydanticValidationError as err:
        raise ConfigError(describe_file_errors(err, path)) from err

"""The rawlab noise-profile JSON (schema ``rawlab.noise/1``), shared by ``synth``'s truth and ``noise-fit``.

Parameters are in normalised units per channel R, G1, G2, B: ``Var[x] = a * E[x] + b``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from ..bayer import CHANNELS
from ..errors import RawlabError

__all__ = ["SCHEMA", "ISOProfile", "NoiseProfileSet", "SensorProfile", "load_profiles", "save_profiles"]

SCHEMA = "rawlab.noise/1"


def _four(name: str, values) -> list[float]:
    out = [float(v) for v in values]
    if len(out) != 4:
        raise RawlabError(f"noise profile field {name!r} needs 4 values (R, G1, G2, B), got {len(out)}")
    return out


@dataclass
class ISOProfile:
    """Noise parameters of one sensor at one ISO, per channel R, G1, G2, B (normalised units)."""

    iso: float
    a: list[float]
    b: list[float]
    a_stderr: list[float] = field(default_factory=lambda: [0.0] * 4)
    b_stderr: list[float] = field(default_factory=lambda: [0.0] * 4)
    n_frames: int = 0
    n_pixels: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("a", "b", "a_stderr", "b_stderr"):
            setattr(self, name, _four(name, getattr(self, name)))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        d["iso"] = int(self.iso) if float(self.iso).is_integer() else self.iso
        d.update(extra)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ISOProfile:
        known = {"iso", "a", "b", "a_stderr", "b_stderr", "n_frames", "n_pixels"}
        missing = {"iso", "a", "b"} - d.keys()
        if missing:
            raise RawlabError(f"noise profile entry lacks {sorted(missing)}: {d}")
        return cls(**{k: d[k] for k in known if k in d}, extra={k: v for k, v in d.items() if k not in known})


@dataclass
class SensorProfile:
    """All ISO profiles of one sensor, plus the fitted law over ISO."""

    sensor: str
    method: str
    profiles: list[ISOProfile]
    iso_model: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def at_iso(self, iso: float) -> ISOProfile:
        """The profile measured at exactly ``iso``."""
        for p in self.profiles:
            if math.isclose(p.iso, iso):
                return p
        isos = ", ".join(f"{p.iso:g}" for p in self.profiles)
        raise RawlabError(f"sensor {self.sensor!r} has no profile at ISO {iso:g}; available ISOs: {isos}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "sensor": self.sensor,
            "method": self.method,
            **self.extra,
            "profiles": [p.to_dict() for p in sorted(self.profiles, key=lambda p: p.iso)],
            "iso_model": self.iso_model,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SensorProfile:
        try:
            return cls(
                sensor=d["sensor"],
                method=d.get("method", "unknown"),
                profiles=[ISOProfile.from_dict(p) for p in d["profiles"]],
                iso_model=d.get("iso_model", {}),
                extra={k: v for k, v in d.items() if k not in {"sensor", "method", "profiles", "iso_model"}},
            )
        except KeyError as e:
            raise RawlabError(f"noise profile for a sensor lacks the field {e.args[0]!r}") from None


@dataclass
class NoiseProfileSet:
    """A whole profile file: several sensors."""

    sensors: list[SensorProfile]
    extra: dict[str, Any] = field(default_factory=dict)

    def sensor(self, name: str) -> SensorProfile:
        for s in self.sensors:
            if s.sensor == name:
                return s
        names = ", ".join(repr(s.sensor) for s in self.sensors) or "none"
        raise RawlabError(f"no noise profile for sensor {name!r}; sensors in this file: {names}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "units": "normalized",
            "channels": list(CHANNELS),
            **self.extra,
            "sensors": [s.to_dict() for s in self.sensors],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NoiseProfileSet:
        if d.get("schema") != SCHEMA:
            raise RawlabError(
                f"not a rawlab noise profile: schema is {d.get('schema')!r}, expected {SCHEMA!r}"
            )
        if list(d.get("channels", CHANNELS)) != list(CHANNELS):
            raise RawlabError(f"unexpected channel order {d.get('channels')}; rawlab uses {list(CHANNELS)}")
        reserved = {"schema", "units", "channels", "sensors"}
        return cls(
            sensors=[SensorProfile.from_dict(s) for s in d.get("sensors", [])],
            extra={k: v for k, v in d.items() if k not in reserved},
        )


def save_profiles(profiles: NoiseProfileSet, path: str | os.PathLike[str]) -> None:
    """Write ``profiles`` as rawlab JSON (schema ``rawlab.noise/1``)."""
    with open(path, "w") as f:
        json.dump(profiles.to_dict(), f, indent=2)
        f.write("\n")


def load_profiles(path: str | os.PathLike[str]) -> NoiseProfileSet:
    """Read a rawlab noise-profile JSON file.

    Raises
    ------
    RawlabError
        If the file is missing, not JSON, or not in the ``rawlab.noise/1`` schema.
    """
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise RawlabError(f"noise profile {os.fspath(path)!r} does not exist") from None
    except json.JSONDecodeError as e:
        raise RawlabError(f"noise profile {os.fspath(path)!r} is not valid JSON: {e}") from None
    return NoiseProfileSet.from_dict(data)

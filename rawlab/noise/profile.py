"""The rawlab noise-profile JSON (schema ``rawlab.noise/1``), shared by ``synth``'s truth and ``noise-fit``.

Parameters are in normalised units per channel R, G1, G2, B: ``Var[x] = a * E[x] + b``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..bayer import CHANNELS
from ..errors import RawlabError

__all__ = [
    "OUTSIDE_RULES",
    "SCHEMA",
    "ISOProfile",
    "NoiseParams",
    "NoiseProfileSet",
    "SensorProfile",
    "load_profiles",
    "save_profiles",
]

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


OUTSIDE_RULES = ("law", "nearest", "none")


@dataclass(frozen=True)
class NoiseParams:
    """``(a, b)`` of a sensor at one ISO (normalised units, each ``(4,)`` float64 in R, G1, G2, B) and how
    they were decided: ``basis`` is ``"measured"``, ``"law"``, ``"extrapolated"`` or ``"nearest"``."""

    a: np.ndarray
    b: np.ndarray
    basis: str
    iso: float

    def __iter__(self):  # ``a, b = params`` keeps working where only the values matter
        return iter((self.a, self.b))


def usable(a, b) -> bool:
    """Whether ``(a, b)`` can drive a noise model: 4 finite values each and every ``a`` positive."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return (
        a.shape == (4,)
        and b.shape == (4,)
        and bool(np.isfinite(a).all() and (a > 0).all() and np.isfinite(b).all())
    )


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

    def noise_at(self, iso: float, *, law=None, outside: str = "law") -> NoiseParams | None:
        """``(a, b)`` at ``iso``: rawlab's one rule for the noise of a sensor at an ISO.

        Precedence (docs/architecture.md, "Noise parameters"):

        1. **measured**: a profile at exactly ``iso`` with usable values (a fit can leave an ISO undetermined);
        2. **law**: inside the profiled ISO range, the law over ISO (``law``, else the profile's ``iso_model``);
        3. outside that range, by ``outside``: ``"law"`` extrapolates the law (``basis="extrapolated"``; the
           laws are physical, ``a`` grows with gain), ``"nearest"`` uses the nearest end of the range, ``"none"``
           returns ``None``;
        4. **nearest**: with no law (or one that gives unusable values), the nearest usable profiled ISO in
           log ISO, inside the range or outside it (unless ``outside="none"``).

        ``b`` is floored at 0 (a fit or a law may dip below; a variance cannot). ``None`` when no profile has
        usable values.
        """
        if outside not in OUTSIDE_RULES:
            raise ValueError(f"outside must be one of {OUTSIDE_RULES}, not {outside!r}")
        iso = float(iso)
        good = sorted((p for p in self.profiles if usable(p.a, p.b)), key=lambda p: p.iso)
        if not good or not iso > 0:
            return None

        def result(a, b, basis):
            a, b = np.asarray(a, np.float64), np.maximum(np.asarray(b, np.float64), 0.0)
            return NoiseParams(a, b, basis, iso) if usable(a, b) else None

        for p in good:
            if math.isclose(p.iso, iso):
                return result(p.a, p.b, "measured")
        lo, hi = good[0].iso, good[-1].iso
        inside = lo <= iso <= hi
        if not inside and outside == "none":
            return None
        if law is None and self.iso_model.get("segments"):
            from .isolaw import ISOLaw

            law = ISOLaw.from_dict(self.iso_model)
        if law is not None and (inside or outside == "law"):
            got = result(*law.predict(iso), "law" if inside else "extrapolated")
            if got is not None:
                return got
        target = iso if inside or outside == "law" else min(max(iso, lo), hi)
        near = min(good, key=lambda p: abs(math.log(p.iso / target)))
        return result(near.a, near.b, "nearest")

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

    def noise_at(self, sensor: str, iso: float, *, outside: str = "law") -> NoiseParams | None:
        """:meth:`SensorProfile.noise_at` of ``sensor``; ``None`` for a sensor this set does not know (the
        caller decides: evaluation fits the store, ``denoise`` estimates from the image, training refuses)."""
        for s in self.sensors:
            if s.sensor == sensor:
                return s.noise_at(iso, outside=outside)
        return None

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

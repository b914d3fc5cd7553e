"""Physics-based noise from a sensor calibration (``rawlab.calibration/1``; issue #15, part 3).

The Poisson-Gaussian law ``Var = a x + b`` (:mod:`rawlab.noise.model`) keeps only the variance of a sensor's
noise. The low-light denoisers that train best (ELD: Wei et al., CVPR 2020 / TPAMI 2021) draw the noise from
its physical components instead, as a calibration measures them. :class:`PhysicsNoise` reads them from
``calibration.json`` (``rawlab calibrate``; read as data, per sensor, ISO and channel ``R, G1, G2, B``, DN
above the declared black level) and draws, per frame:

- **shot noise**: Poisson photo-electrons ``N ~ P(x * R / K * (1 + p) + D t)`` times the system gain ``K``
  (DN per electron, EMVA 1288), with ``x`` the clean normalised signal and ``R = white - black``;
- **PRNU** ``p``: a relative gain per pixel, Gaussian with ``std(p) = prnu_percent / 100``;
- **dark current** ``D`` electrons/s (``dark_current_dn_per_s / K``) over the exposure time ``t``;
- **read noise**: Tukey-lambda with the calibrated shape ``tukey_lambda`` scaled to ``read_noise_dn``
  (heavy tails for lambda below ~0.14; ELD);
- **row noise**: one Gaussian offset per mosaic row, ``row_noise_dn`` (channels on one mosaic row share it);
- **DSNU**: a fixed offset per pixel, Gaussian with ``dsnu_dn`` (its column part cannot be told apart from
  the figures, so it is drawn per pixel);
- **black level**: the calibrated ``black_offset_dn`` plus one Gaussian drift per frame (``black_drift_dn``);
- **quantisation**: rounding to whole DN and clipping to ``[0, white]``, as the sensor records.

The fixed patterns (DSNU, PRNU) are drawn **per frame**, not per sensor: a calibration gives their spread,
not the sensor's own maps, and a convolutional denoiser sees a crop, never where it lies on the sensor, so a
fresh pattern with the calibrated spread is what it meets in the sensor's frames.

Between calibrated ISOs the figures are interpolated as their physics says: ``K`` linearly in ISO, the noise
variances (read, row, DSNU, drift) linearly in ``ISO**2`` (a pre-gain part ``~ ISO**2`` plus a post-gain part,
the two-term law of :mod:`rawlab.noise.isolaw`), lambda linearly in log ISO, the rest linearly in ISO; outside
the calibrated range there is nothing to interpolate and the sampler refuses.

:func:`equivalent_profiles` gives each sensor's Poisson-Gaussian law with the same variance (``a = K / R``,
``b = (read^2 + row^2 + DSNU^2 + drift^2 + 1/12) / R^2``; PRNU's ``(p x)^2`` has no place in ``a x + b``
and is left out): the noise map a model trained on physics noise is given, as ``rawlab.noise/1``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..bayer import CHANNELS, channel_offsets
from ..errors import RawlabError
from .profile import ISOProfile, NoiseProfileSet, SensorProfile

__all__ = [
    "CALIBRATION_SCHEMA",
    "PhysicsNoise",
    "PhysicsParams",
    "equivalent_profiles",
    "load_calibration",
    "physics_noise",
    "tukey_lambda_noise",
]

CALIBRATION_SCHEMA = "rawlab.calibration/1"  # written by rawlab.calibrate (a sibling: read here as data)
# The figures the sampler draws from; every one is per channel R, G1, G2, B.
NEEDED = ("system_gain_dn_per_e", "read_noise_dn", "tukey_lambda", "row_noise_dn", "dsnu_dn",
          "prnu_percent", "dark_current_dn_per_s", "black_offset_dn", "black_drift_dn")  # fmt: skip
LAMBDA_MIN = -0.45  # Tukey lambda's variance is finite only above -1/2 (and huge near it)


# -- Tukey-lambda read noise ----------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _tukey_sd(lam: float) -> float:
    """The standard deviation of the standard Tukey-lambda distribution."""
    from scipy import stats

    return float(np.sqrt(stats.tukeylambda(lam).var()))


def _tukey_quantile(u: np.ndarray, lam: float) -> np.ndarray:
    return np.log(u / (1 - u)) if abs(lam) < 1e-9 else (u**lam - (1 - u) ** lam) / lam


def tukey_lambda_noise(rng: np.random.Generator, lam: float, shape) -> np.ndarray:
    """Tukey-lambda draws of shape ``lam`` scaled to unit variance (inverse-CDF sampling)."""
    u = np.clip(rng.uniform(size=shape), 1e-12, 1 - 1e-12)
    return _tukey_quantile(u, lam) / _tukey_sd(float(lam))


# -- the calibration, as data ---------------------------------------------------------------------------------


def load_calibration(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A ``rawlab.calibration/1`` document (``rawlab calibrate ... --out DIR``: ``DIR/calibration.json``).

    ``path`` may be the file or the folder holding it.

    Raises
    ------
    RawlabError
        The file is missing, not JSON, or not a ``rawlab.calibration/1`` document.
    """
    p = os.fspath(path)
    if os.path.isdir(p):
        p = os.path.join(p, "calibration.json")
    try:
        with open(p) as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise RawlabError(
            f"calibration {p!r} does not exist; make one with `rawlab calibrate DARKS FLATS --out DIR` and "
            f"give DIR/calibration.json"
        ) from None
    except (OSError, ValueError) as e:
        raise RawlabError(f"cannot read the calibration {p!r}: {e}") from None
    if not isinstance(doc, dict) or doc.get("schema") != CALIBRATION_SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        raise RawlabError(
            f"{p!r} is not a sensor calibration (schema {got!r}, expected {CALIBRATION_SCHEMA!r}); "
            f"`rawlab calibrate` writes one"
        )
    return doc


@dataclass(frozen=True)
class PhysicsParams:
    """The noise components of one sensor at one ISO, per channel R, G1, G2, B (each ``(4,)`` float64)."""

    iso: float
    gain: np.ndarray  # K, DN per electron
    read: np.ndarray  # DN (standard deviation)
    tukey_lambda: np.ndarray
    row: np.ndarray  # DN
    dsnu: np.ndarray  # DN
    prnu: np.ndarray  # fraction
    dark_current: np.ndarray  # electrons / s
    black_offset: np.ndarray  # DN
    black_drift: np.ndarray  # DN

    def equivalent(self, span, exposure_time: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """The Poisson-Gaussian ``(a, b)`` with the same variance (normalised by ``span = white - black``)."""
        span = np.asarray(span, np.float64)
        var = self.read**2 + self.row**2 + self.dsnu**2 + self.black_drift**2 + 1.0 / 12.0
        var = var + self.gain**2 * self.dark_current * exposure_time
        return self.gain / span, var / span**2


def _figure(iso_entry: dict, name: str, sensor: str) -> np.ndarray:
    try:
        v = np.asarray(iso_entry["figures"][name]["value"], np.float64)
    except (KeyError, TypeError):
        raise RawlabError(
            f"the calibration of {sensor!r} at ISO {iso_entry.get('iso')} has no figure {name!r}; "
            f"re-run `rawlab calibrate` (this rawlab needs {', '.join(NEEDED)})"
        ) from None
    if v.shape != (4,):
        raise RawlabError(f"the calibration of {sensor!r}: {name} must have 4 values (R, G1, G2, B), got {v}")
    return v


class PhysicsNoise:
    """The physics noise of one calibrated sensor at any ISO in its calibrated range (module docstring).

    Parameters
    ----------
    entry
        One ``sensors[]`` entry of a ``rawlab.calibration/1`` document.

    Raises
    ------
    RawlabError
        A figure is missing or unusable (a non-positive gain, a lambda at or below -0.45).
    """

    def __init__(self, entry: dict[str, Any]):
        self.sensor = str(entry["sensor"])
        self.cfa = str(entry["cfa"]).upper()
        self.black_level = np.asarray(entry["black_level"], np.float64)
        self.white_level = float(entry["white_level"])
        isos = sorted(entry["isos"], key=lambda e: float(e["iso"]))
        if not isos:
            raise RawlabError(f"the calibration of {self.sensor!r} has no ISO")
        self.isos = np.array([float(e["iso"]) for e in isos])
        f = {n: np.stack([_figure(e, n, self.sensor) for e in isos]) for n in NEEDED}  # (n_iso, 4) each
        bad = ~(np.isfinite(f["system_gain_dn_per_e"]) & (f["system_gain_dn_per_e"] > 0))
        if bad.any():
            raise RawlabError(
                f"the calibration of {self.sensor!r} has no usable system gain at ISO "
                f"{self.isos[bad.any(axis=1)][0]:g} (K must be positive); re-calibrate with more flat levels"
            )
        if (f["tukey_lambda"] <= LAMBDA_MIN).any():
            raise RawlabError(
                f"the calibration of {self.sensor!r} gives a Tukey lambda of {f['tukey_lambda'].min():.3f}: its "
                f"read noise would have an infinite or enormous variance (lambda must be above {LAMBDA_MIN}); "
                "check the darks for hot pixels or a light leak"
            )
        for n in NEEDED:  # NaN (a figure a calibration could not measure) counts as none of that component
            f[n] = np.nan_to_num(f[n], nan=0.0)
        self._f = f
        self.iso_range = (float(self.isos[0]), float(self.isos[-1]))

    @classmethod
    def from_calibration(cls, doc: dict[str, Any], sensor: str, *, source: str = "the calibration"):
        """The sensor ``sensor`` of the calibration document ``doc``.

        Raises
        ------
        RawlabError
            ``doc`` has no entry for ``sensor``.
        """
        for entry in doc.get("sensors", []):
            if entry.get("sensor") == sensor:
                return cls(entry)
        have = ", ".join(repr(e.get("sensor")) for e in doc.get("sensors", [])) or "none"
        raise RawlabError(
            f"{source} has no calibration of sensor {sensor!r} (it has {have}); calibrate it with "
            f"`rawlab calibrate DARKS FLATS --out DIR --sensor {sensor!r}`"
        )

    @property
    def span(self) -> np.ndarray:
        return self.white_level - self.black_level

    def params(self, iso: float) -> PhysicsParams:
        """The components at ``iso``, interpolated between calibrated ISOs (module docstring).

        Raises
        ------
        RawlabError
            ``iso`` lies outside the calibrated range.
        """
        lo, hi = self.iso_range
        if not lo * (1 - 1e-9) <= iso <= hi * (1 + 1e-9):
            raise RawlabError(
                f"ISO {iso:g} is outside the calibrated ISOs of {self.sensor!r} ({', '.join(f'{i:g}' for i in self.isos)}); "
                f"calibrate that ISO, or choose one from {lo:g} to {hi:g}"
            )
        iso = float(min(max(iso, lo), hi))
        f = self._f

        def lin(name, x=self.isos, at=iso):
            return np.array([np.interp(at, x, f[name][:, c]) for c in range(4)])

        def sd(name):  # variances linear in ISO^2 between calibrated ISOs
            v = f[name] ** 2
            return np.sqrt([np.interp(iso**2, self.isos**2, v[:, c]) for c in range(4)])

        gain = lin("system_gain_dn_per_e")
        dark_e = np.clip(f["dark_current_dn_per_s"] / f["system_gain_dn_per_e"], 0, None)
        return PhysicsParams(
            iso=iso,
            gain=gain,
            read=sd("read_noise_dn"),
            tukey_lambda=lin("tukey_lambda", np.log(self.isos), math.log(iso)),
            row=sd("row_noise_dn"),
            dsnu=sd("dsnu_dn"),
            prnu=np.clip(lin("prnu_percent"), 0, None) / 100.0,
            dark_current=np.array([np.interp(iso, self.isos, dark_e[:, c]) for c in range(4)]),
            black_offset=lin("black_offset_dn"),
            black_drift=sd("black_drift_dn"),
        )

    def sample_iso(self, rng: np.random.Generator) -> float:
        """An ISO drawn log-uniformly over the calibrated range."""
        lo, hi = self.iso_range
        return lo if lo == hi else float(math.exp(rng.uniform(math.log(lo), math.log(hi))))

    def sample(
        self,
        clean,
        iso: float,
        rng: np.random.Generator,
        *,
        exposure_time: float = 0.0,
        black_level=None,
        white_level: float | None = None,
        channel_axis: int = 0,
    ) -> np.ndarray:
        """What the sensor records of the clean normalised planes ``clean`` at ``iso``: DN as float64.

        Parameters
        ----------
        clean
            Noise-free packed planes, normalised (``x = (DN - black) / (white - black)``), channels R, G1, G2,
            B on ``channel_axis`` (0: ``(4, h, w)``; -1: ``(h, w, 4)``), rows on the first spatial axis.
        iso
            ISO, inside the calibrated range.
        exposure_time
            Seconds, for the dark current.
        black_level, white_level
            The levels the frame declares (DN); default: the calibration's. The gain is in DN, so the range
            ``white - black`` turns normalised signal into electrons.

        Returns
        -------
        numpy.ndarray
            Whole DN in ``[0, white]`` (black included), the shape of ``clean``.
        """
        x = np.moveaxis(np.asarray(clean, np.float64), channel_axis, 0)
        if x.shape[0] != 4 or x.ndim != 3:
            raise ValueError(
                f"clean must be packed planes with 4 channels on axis {channel_axis}, got {x.shape}"
            )
        black = self.black_level if black_level is None else np.asarray(black_level, np.float64)
        white = self.white_level if white_level is None else float(white_level)
        p = self.params(iso)
        h = x.shape[1]

        def per(v):
            return np.asarray(v, np.float64)[:, None, None]

        k = per(p.gain)
        prnu = 1.0 + rng.standard_normal(x.shape) * per(p.prnu)
        electrons = np.clip(x, 0, None) * per(white - black) / k * prnu + per(p.dark_current) * exposure_time
        signal = rng.poisson(electrons) * k
        u = np.clip(rng.uniform(size=x.shape), 1e-12, 1 - 1e-12)
        read = np.stack([_tukey_quantile(u[c], p.tukey_lambda[c]) / _tukey_sd(float(p.tukey_lambda[c]))
                         for c in range(4)]) * per(p.read)  # fmt: skip
        z = rng.standard_normal((2, h))  # one offset per mosaic row: channels on one row share it
        row = np.stack([z[dy] for dy, _ in channel_offsets(self.cfa)])[:, :, None] * per(p.row)
        dsnu = rng.standard_normal(x.shape) * per(p.dsnu)
        offset = per(p.black_offset) + rng.standard_normal() * per(p.black_drift)
        dn = np.clip(np.rint(per(black) + signal + read + row + dsnu + offset), 0.0, white)
        return np.moveaxis(dn, 0, channel_axis)


def physics_noise(
    doc: dict[str, Any], sensors, *, source: str = "the calibration"
) -> dict[str, PhysicsNoise]:
    """``{sensor: PhysicsNoise}`` for every sensor in ``sensors`` (each must be calibrated in ``doc``)."""
    return {s: PhysicsNoise.from_calibration(doc, s, source=source) for s in sorted(set(sensors))}


def equivalent_profiles(doc: dict[str, Any]) -> NoiseProfileSet:
    """Every calibrated sensor's Poisson-Gaussian law with the physics model's variance, as ``rawlab.noise/1``.

    Per calibrated ISO ``(a, b)`` from :meth:`PhysicsParams.equivalent` (no exposure: dark current is left out),
    and a law over ISO that the one rule (:meth:`SensorProfile.noise_at`) reads between them: ``a = ga * ISO``
    (``ga`` the least-squares slope through the origin) and ``b`` linear in ``ISO**2`` between neighbouring
    calibrated ISOs (one segment each), as the sampler interpolates it.
    """
    out = []
    for entry in doc.get("sensors", []):
        noise = PhysicsNoise(entry)
        pars = [noise.params(iso) for iso in noise.isos]
        ab = [p.equivalent(noise.span) for p in pars]
        profiles = [
            ISOProfile(float(iso), a.tolist(), b.tolist()) for iso, (a, b) in zip(noise.isos, ab, strict=True)
        ]
        a = np.stack([v[0] for v in ab])
        b = np.stack([v[1] for v in ab])
        ga = (a * noise.isos[:, None]).sum(axis=0) / (noise.isos**2).sum()
        segments = []
        for i in range(max(1, len(noise.isos) - 1)):
            j = min(i + 1, len(noise.isos) - 1)
            i0, i1 = noise.isos[i] ** 2, noise.isos[j] ** 2
            b1 = (b[j] - b[i]) / (i1 - i0) if j != i else np.zeros(4)
            segments.append({
                "iso_min": 0 if i == 0 else float(noise.isos[i]),
                "iso_max_exclusive": float(noise.isos[j]) if j < len(noise.isos) - 1 else None,
                "b0": (b[i] - b1 * i0).tolist(), "b1": b1.tolist(),
            })  # fmt: skip
        law = {"form": "a = ga * iso; b = b0 + b1 * iso^2 (per conversion-gain segment)", "ga": ga.tolist(),
               "segments": segments}  # fmt: skip
        extra = {"make": entry.get("make"), "model": entry.get("model"), "cfa": noise.cfa,
                 "black_level": noise.black_level.tolist(), "white_level": noise.white_level,
                 "channels": list(CHANNELS)}  # fmt: skip
        out.append(SensorProfile(noise.sensor, "calibration", profiles, law, extra))
    return NoiseProfileSet(out, {"source": CALIBRATION_SCHEMA, "law": "physics-equivalent Poisson-Gaussian"})

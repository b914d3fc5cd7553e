"""Calibration sets with known truth: dark frames and flat fields from virtual sensors with the noise
components that sensor engineers calibrate (``rawlab synth --calibration``; issue #15).

A :class:`CalibrationSensor` is a :class:`~rawlab.synth.sensors.VirtualSensor` (CFA, bit depth, black level,
full well, ISO ladder, per-channel gain) plus the components that a Poisson-Gaussian law leaves out:

- **read noise** with a Tukey-lambda shape ``tukey_lambda`` (heavy tails below ~0.14, Gaussian-like at 0.14;
  Wei et al., ELD, CVPR 2020), sigma ``sqrt((read_pre * K)**2 + read_post**2)`` DN;
- **row noise**: one Gaussian offset per mosaic row and frame, sigma ``sqrt((row_pre * K)**2 + row_post**2)``;
- **DSNU**: a fixed offset per pixel (``dsnu_pixel`` electrons, so it scales with the gain) plus one per
  mosaic column (``dsnu_column`` DN, column fixed-pattern noise);
- **PRNU**: a fixed relative gain ``1 + p`` per pixel on the photo-signal (``std(p) = prnu``);
- **dark current** ``dark_current`` electrons per second (Poisson), and a **black-level drift**: one Gaussian
  offset per frame (``black_drift`` DN);
- a slight **non-linearity near white**: above ``knee`` of the range the response bends down quadratically,
  losing ``nonlinearity`` of the range at the white level; then rounding to integer DN and clipping.

``K = (white - black) / full_well * ISO / base_ISO * channel_gain`` is EMVA 1288's system gain in DN per
electron. The fixed patterns are drawn once per sensor and seed; the truth records the *realised* spatial
spread of each (``dsnu_dn``, ``prnu_percent``), which is what the sensor in the files has.

Layout::

    OUT/<sensor>/darks/iso<ISO>/dark_iso<ISO>_<t>ms_<k>.dng   # exposure times DARK_TIMES, DARK_FRAMES each
    OUT/<sensor>/flats/iso<ISO>/flat_iso<ISO>_<lvl>_<k>.dng   # FLAT_LEVELS of the range, FLAT_FRAMES each
    OUT/truth.json   # rawlab.noise/1 (a, b per ISO) with the calibration truth per ISO under "calibration"

The default dataset (``rawlab synth`` without ``--calibration``) is untouched by this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._version import __version__
from ..bayer import CHANNELS, channel_offsets, unpack
from ..calibrate.fit import linearity_error
from ..errors import RawlabError
from ..noise.physics import tukey_lambda_noise
from ..noise.profile import ISOProfile, NoiseProfileSet, SensorProfile, save_profiles
from .sensors import VirtualSensor

__all__ = [
    "CALIBRATION_SENSORS",
    "DARK_FRAMES",
    "DARK_TIMES",
    "FLAT_FRAMES",
    "FLAT_LEVELS",
    "FLAT_SPATIAL",
    "CalibrationSensor",
    "CalibrationSummary",
    "plan_calibration",
    "simulate_calibration_frame",
    "truth_figures",
    "write_calibration_set",
]

DARK_TIMES: tuple[float, ...] = (0.001, 4.0, 16.0, 32.0)  # s
DARK_FRAMES: tuple[int, ...] = (8, 3, 3, 3)  # the first (shortest) series is EMVA's averaged dark
# Fractions of the range at the nominal gain. The last clips about half the pixels: a fully clipped frame is a
# constant image, which rawio rejects as holding no pixel data.
FLAT_LEVELS: tuple[float, ...] = (0.04, 0.16, 0.28, 0.40, 0.52, 0.64, 0.76, 0.88, 0.96, 1.04)
FLAT_FRAMES = 2  # a pair per level: EMVA's temporal pair
FLAT_SPATIAL = (0.52, 8)  # EMVA's spatial series: more frames at the level nearest 50% of saturation
FLAT_SATURATION_TIME = 0.04  # s: the exposure that reaches the white level (level 1.0)


@dataclass(frozen=True)
class CalibrationSensor:
    """A virtual sensor with the components of a calibration (module docstring); units in the names."""

    base: VirtualSensor
    tukey_lambda: float
    row_pre: float  # electrons
    row_post: float  # DN
    dsnu_pixel: float  # electrons
    dsnu_column: float  # DN
    prnu: float  # fraction
    dark_current: float  # electrons / s
    black_drift: float  # DN
    knee: float = 0.8  # fraction of the range where the response starts to bend
    nonlinearity: float = 0.03  # fraction of the range lost at the white level

    @property
    def name(self) -> str:
        return self.base.name

    def gain(self, iso: float) -> np.ndarray:
        """System gain K per channel R, G1, G2, B in DN per electron."""
        b = self.base
        return b.dn_range / b.full_well * (iso / b.base_iso) * np.asarray(b.channel_gain)

    def read_sigma(self, iso: float) -> np.ndarray:
        return np.hypot(self.base.read_noise_pre(iso) * self.gain(iso), self.base.read_post)

    def row_sigma(self, iso: float) -> np.ndarray:
        return np.hypot(self.row_pre * self.gain(iso), self.row_post)

    def response(self, s: np.ndarray, rng_dn: np.ndarray) -> np.ndarray:
        """Mean response (DN above black) to a linear signal ``s`` (DN above black), before clipping."""
        knee = self.knee * rng_dn
        over = np.clip(s - knee, 0, None)
        return s - self.nonlinearity * rng_dn * (over / ((1 - self.knee) * rng_dn)) ** 2

    def patterns(self, seed: int, h: int, w: int) -> dict[str, np.ndarray]:
        """The fixed patterns in packed planes (4, h, w): DSNU unit pixel draws, the column DSNU in DN, PRNU."""
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0xCA11B, *map(ord, self.name)]))
        pix = rng.standard_normal((4, h, w))
        cols = rng.standard_normal((2, w)) * self.dsnu_column  # per mosaic column (two per packed column)
        col = np.stack([cols[dx] for _, dx in channel_offsets(self.base.cfa)])[:, None, :]
        prnu = rng.standard_normal((4, h, w)) * self.prnu
        return {"dsnu_pixel": pix, "dsnu_column": np.broadcast_to(col, (4, h, w)), "prnu": prnu}

    def offsets(self, patterns: dict[str, np.ndarray], iso: float) -> np.ndarray:
        """The DSNU offsets (DN) at ``iso``."""
        k = self.gain(iso)[:, None, None]
        return patterns["dsnu_pixel"] * self.dsnu_pixel * k + patterns["dsnu_column"]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["base"] = {k: v for k, v in d["base"].items() if k != "extra"}
        return d


def _cal(model, cfa, bits, black, full_well, isos, read_pre, read_post, gains=(1.0, 1.0, 1.0, 1.0), **kw):
    base = VirtualSensor(
        "SynthCam", model, cfa, bits, black, full_well, isos, ((0, read_pre),), read_post, gains
    )
    return CalibrationSensor(base, **kw)


CALIBRATION_SENSORS: tuple[CalibrationSensor, ...] = (
    # 12-bit, near-logistic read noise, moderate row noise.
    _cal("CAL-1", "RGGB", 12, (256,) * 4, 15000.0, (100, 400, 1600), 2.0, 1.5,
         tukey_lambda=-0.05, row_pre=0.5, row_post=0.4, dsnu_pixel=1.0, dsnu_column=0.8, prnu=0.010,
         dark_current=0.4, black_drift=0.1),
    # 14-bit, heavy-tailed read noise and strong row noise (the ELD case), per-channel gain.
    _cal("CAL-2", "BGGR", 14, (1024,) * 4, 40000.0, (100, 800, 3200), 1.5, 3.0, (1.02, 1.0, 0.99, 1.03),
         tukey_lambda=-0.15, row_pre=0.8, row_post=1.0, dsnu_pixel=0.8, dsnu_column=2.0, prnu=0.006,
         dark_current=0.3, black_drift=0.2),
)  # fmt: skip


@dataclass(frozen=True)
class CalFrame:
    """One calibration DNG to write."""

    sensor_index: int
    kind: str  # "dark" or "flat"
    iso: int
    exposure_time: float
    level: float  # flats: fraction of the range at the nominal gain; darks: 0
    index: int
    relpath: str


@dataclass(frozen=True)
class CalibrationSummary:
    out: Path
    n_files: int
    n_sensors: int
    truth_path: Path
    nbytes: int


def plan_calibration(sensors) -> list[CalFrame]:
    """Every dark and flat frame of every sensor and ISO, in a fixed order."""
    plans = []
    for si, s in enumerate(sensors):
        d = s.name.replace(" ", "_")
        for iso in s.base.iso_ladder:
            for t, n in zip(DARK_TIMES, DARK_FRAMES, strict=True):
                for k in range(n):
                    rel = f"{d}/darks/iso{iso}/dark_iso{iso}_{t * 1000:g}ms_{k}.dng"
                    plans.append(CalFrame(si, "dark", iso, t, 0.0, k, rel))
            for lvl in FLAT_LEVELS:
                for k in range(FLAT_SPATIAL[1] if lvl == FLAT_SPATIAL[0] else FLAT_FRAMES):
                    rel = f"{d}/flats/iso{iso}/flat_iso{iso}_{round(lvl * 100):03d}_{k}.dng"
                    plans.append(CalFrame(si, "flat", iso, lvl * FLAT_SATURATION_TIME, lvl, k, rel))
    return plans


def _photon_rate(s: CalibrationSensor, iso: float) -> float:
    """Electrons per second of the flat light: level 1.0 reaches the range at the nominal gain."""
    b = s.base
    k_nominal = float(np.mean(b.dn_range)) / b.full_well * iso / b.base_iso
    return float(np.mean(b.dn_range)) / k_nominal / FLAT_SATURATION_TIME


def simulate_calibration_frame(
    s: CalibrationSensor,
    patterns: dict,
    iso: float,
    kind: str,
    t: float,
    rng: np.random.Generator,
    scene: np.ndarray | None = None,
) -> np.ndarray:
    """Packed planes (4, h, w) uint16 DN of one dark or flat frame, or (``kind="scene"``) of the noise-free
    normalised planes ``scene`` (4, h, w) as this sensor records them at ``iso`` (every component above)."""
    b = s.base
    shape = patterns["prnu"].shape
    k = s.gain(iso)[:, None, None]
    rng_dn = b.dn_range[:, None, None]
    mean_e = np.full(shape, s.dark_current * t)
    if kind == "flat":
        mean_e = mean_e + _photon_rate(s, iso) * t * (1.0 + patterns["prnu"])
    elif kind == "scene":
        mean_e = mean_e + np.clip(scene, 0, None) * rng_dn / k * (1.0 + patterns["prnu"])
    signal = s.response(k * rng.poisson(mean_e).astype(np.float64), rng_dn)
    read = tukey_lambda_noise(rng, s.tukey_lambda, shape) * s.read_sigma(iso)[:, None, None]
    z = rng.standard_normal((2, shape[1]))  # one offset per mosaic row
    row = np.stack([z[dy] for dy, _ in channel_offsets(b.cfa)])[:, :, None] * s.row_sigma(iso)[:, None, None]
    drift = rng.standard_normal() * s.black_drift
    black = np.asarray(b.black_level, dtype=np.float64)[:, None, None]
    dn = np.rint(black + signal + read + row + s.offsets(patterns, iso) + drift)
    return np.clip(dn, 0, b.white_level).astype(np.uint16)


def truth_figures(s: CalibrationSensor, patterns: dict, iso: float) -> dict[str, list[float]]:
    """The calibration truth at ``iso`` per channel R, G1, G2, B (the figures of ``rawlab.calibration/1``)."""
    k = s.gain(iso)
    rng_dn = s.base.dn_range
    offsets = s.offsets(patterns, iso)
    gain_pattern = 1.0 + patterns["prnu"]
    # Saturation and linearity by EMVA's definitions on the noise-free response at each flat level: the mean,
    # and the shot-noise variance through the response's slope (0 where a pixel clips); saturation is the mean
    # where that variance peaks.
    rate = _photon_rate(s, iso)
    times = np.asarray(FLAT_LEVELS) * FLAT_SATURATION_TIME
    sat, le = [], []
    for c in range(4):
        lin = k[c] * rate * times[:, None] * gain_pattern[c].reshape(1, -1)
        resp = s.response(lin, rng_dn[c])
        slope = 1 - 2 * s.nonlinearity * np.clip(lin - s.knee * rng_dn[c], 0, None) / (
            (1 - s.knee) ** 2 * rng_dn[c]
        )
        var = np.where(resp < rng_dn[c], slope**2 * k[c] * lin, 0.0).mean(axis=1)
        means = np.minimum(resp, rng_dn[c]).mean(axis=1)
        sat.append(float(means[int(np.argmax(var))]))
        le.append(linearity_error(times, means, sat[-1]))
    return {
        "system_gain_dn_per_e": k.tolist(),
        "read_noise_dn": s.read_sigma(iso).tolist(),
        "tukey_lambda": [s.tukey_lambda] * 4,
        "row_noise_dn": s.row_sigma(iso).tolist(),
        "dsnu_dn": offsets.reshape(4, -1).std(axis=1).tolist(),
        "prnu_percent": (
            100 * gain_pattern.reshape(4, -1).std(axis=1) / gain_pattern.reshape(4, -1).mean(axis=1)
        ).tolist(),
        "dark_current_dn_per_s": (k * s.dark_current).tolist(),
        "black_drift_dn": [s.black_drift] * 4,
        "saturation_dn": sat,
        "linearity_error_percent": le,
    }


def _truth(sensors, seed, width, height) -> NoiseProfileSet:
    out = []
    for s in sensors:
        pats = s.patterns(seed, height // 2, width // 2)
        rng_dn = s.base.dn_range
        profiles = []
        for iso in s.base.iso_ladder:
            k = s.gain(iso)
            a = k / rng_dn
            b = (s.read_sigma(iso) ** 2 + s.row_sigma(iso) ** 2 + 1 / 12) / rng_dn**2
            extra = {"calibration": truth_figures(s, pats, iso)}
            profiles.append(ISOProfile(iso, a.tolist(), b.tolist(), extra=extra))
        a0 = s.gain(s.base.base_iso) / rng_dn / s.base.base_iso  # a per ISO
        law = {
            "form": "a = ga * iso; b = b0 + b1 * iso^2 (per conversion-gain segment)",
            "ga": a0.tolist(),
            "segments": [
                {
                    "iso_min": 0,
                    "iso_max_exclusive": None,
                    "b0": ((s.base.read_post**2 + s.row_post**2 + 1 / 12) / rng_dn**2).tolist(),
                    "b1": ((s.base.read_noise_pre(0) ** 2 + s.row_pre**2) * a0**2).tolist(),
                }
            ],
        }
        extra = {
            "make": s.base.make,
            "model": s.base.model,
            "cfa": s.base.cfa,
            "black_level": list(s.base.black_level),
            "white_level": s.base.white_level,
            "base_iso": s.base.base_iso,
            "full_well_electrons": s.base.full_well,
            "calibration_model": s.to_dict(),
            "channels": list(CHANNELS),
        }
        out.append(SensorProfile(s.name, "truth", profiles, law, extra))
    meta = {
        "generator": {
            "rawlab_version": __version__,
            "seed": seed,
            "size": [width, height],
            "kind": "calibration",
        },
        "dark_times_s": list(DARK_TIMES),
        "dark_frames": list(DARK_FRAMES),
        "flat_levels": list(FLAT_LEVELS),
        "flat_frames": FLAT_FRAMES,
        "flat_spatial": list(FLAT_SPATIAL),
    }
    return NoiseProfileSet(out, meta)


def write_calibration_set(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    size: tuple[int, int] = (512, 384),
    n_sensors: int = 2,
    sensors: tuple[CalibrationSensor, ...] | None = None,
    progress: Callable[[int], None] | None = None,
) -> CalibrationSummary:
    """Write dark and flat DNGs of ``n_sensors`` calibration sensors (or the given ``sensors``) and the truth.

    Raises
    ------
    RawlabError
        If ``out`` cannot be written, or ``n_sensors`` is outside 1..len(CALIBRATION_SENSORS).
    """
    from ..outputs import output_folder
    from .generate import check_size, frame_tags, write_frame

    width, height = size
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"--size must be even and at least 16x16, got {width}x{height}")
    if sensors is None:
        if not 1 <= n_sensors <= len(CALIBRATION_SENSORS):
            raise RawlabError(
                f"--sensors {n_sensors} with --calibration: there are {len(CALIBRATION_SENSORS)} calibration "
                f"sensors; choose 1 to {len(CALIBRATION_SENSORS)}"
            )
        sensors = CALIBRATION_SENSORS[:n_sensors]
    check_size(width, height)
    out = output_folder(out, "OUT")
    plans = plan_calibration(sensors)
    pats = [s.patterns(seed, height // 2, width // 2) for s in sensors]
    nbytes = 0
    for i, p in enumerate(plans):
        s = sensors[p.sensor_index]
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0xCA1, p.sensor_index, i]))
        planes = simulate_calibration_frame(s, pats[p.sensor_index], p.iso, p.kind, p.exposure_time, rng)
        path = out / p.relpath
        tags = frame_tags(s.base, p.iso, p.exposure_time, noise_profile=False)
        write_frame(path, unpack(planes, s.base.cfa), **tags)
        nbytes += path.stat().st_size
        if progress is not None:
            progress(1)
    truth_path = out / "truth.json"
    save_profiles(_truth(sensors, seed, width, height), truth_path)
    return CalibrationSummary(out, len(plans), len(sensors), truth_path, nbytes)

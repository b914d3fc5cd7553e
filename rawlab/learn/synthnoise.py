"""Noise parameters per example, and synthetic noise drawn on clean crops from a sensor's fitted noise law.

Real pairs get ``(a, b)`` from the profile at the noisy frame's ISO. Synthetic examples follow PMRID (Wang et
al., ECCV 2020) and Unprocessing (Brooks et al., CVPR 2019): an ISO drawn log-uniformly over the sensor's
profiled range, ``(a, b)`` from its ISO law, and Poisson-Gaussian noise drawn on a clean crop
(:func:`rawlab.noise.sample_poisson_gaussian`), then rounded to DN and clipped to ``[0, white]`` as the sensor
records it (the clipping matters in the shadows of sensors that clip black in-camera). The clean reference
carries its own base-ISO noise, which the synthetic noise adds to; at base ISO ``a`` is 10-60x below the ISOs
denoisers are trained for, so it is left as is (PMRID does the same).

With ``noise.kind = "physics"`` (and ``noise.calibration``, a ``rawlab calibrate`` output) the synthetic noise is
drawn from the sensor's calibrated components instead (:class:`rawlab.noise.physics.PhysicsNoise`: shot noise
through the system gain, Tukey-lambda read noise, row noise, DSNU and PRNU drawn per frame, dark current over
an exposure time drawn log-uniformly over :data:`EXPOSURE_S`, quantisation), at an ISO drawn log-uniformly over
the calibrated range. The noise map ``(a, b)`` stays the profile's at that ISO, as for every other example and
as the model is given at inference; train with the calibration's own law
(:func:`rawlab.noise.physics.equivalent_profiles`) so that it is the physics noise's variance.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import numpy as np

from ..errors import RawlabError
from ..noise.model import sample_poisson_gaussian
from ..noise.profile import NoiseProfileSet, SensorProfile, usable

__all__ = ["KINDS", "SensorNoise", "sensor_noise", "synthesize"]

KINDS = ("poisson_gaussian", "physics")  # noise.kind: the synthetic noise's model
EXPOSURE_S = (1e-3, 1.0)  # physics noise: exposure times (s) drawn log-uniformly, for the dark current


class SensorNoise:
    """``(a, b)`` of one sensor at any ISO (normalised units, per channel R, G1, G2, B), and synthetic ISOs.

    ``(a, b)`` follow rawlab's one rule (:meth:`rawlab.noise.profile.SensorProfile.noise_at`, extrapolating the
    law outside the profiled range). With an ISO law (``iso_model`` with segments) synthetic ISOs are drawn
    log-uniformly over the profiled range; without one, among the profiled ISOs. With ``physics`` (a
    :class:`rawlab.noise.physics.PhysicsNoise`) synthetic noise is drawn from it, at ISOs over its calibrated
    range.
    """

    def __init__(self, profile: SensorProfile, physics=None):
        from ..noise.isolaw import ISOLaw

        self.sensor = profile.sensor
        self.profile = profile
        self.profiles = sorted((p for p in profile.profiles if usable(p.a, p.b)), key=lambda p: p.iso)
        if not self.profiles:
            raise RawlabError(f"the noise profile of {self.sensor!r} has no ISO with usable a and b")
        self.law = ISOLaw.from_dict(profile.iso_model) if profile.iso_model.get("segments") else None
        self.iso_range = (float(self.profiles[0].iso), float(self.profiles[-1].iso))
        self.physics = physics

    def params(self, iso: float) -> tuple[np.ndarray, np.ndarray]:
        """``(a, b)``, each ``(4,)`` float64, at ``iso``; ``b`` floored at 0 (a fit may dip below)."""
        got = self.profile.noise_at(iso, law=self.law, outside="law")
        if got is None:
            raise RawlabError(
                f"the noise profile of {self.sensor!r} gives no usable a, b at ISO {iso:g} (a must be positive "
                f"and finite): refit it with `rawlab noise-fit`"
            )
        return got.a, got.b

    def sample_iso(self, rng: np.random.Generator) -> float:
        """A synthetic ISO: log-uniform over the profiled range (law), or one of the profiled ISOs; with physics
        noise, log-uniform over the calibrated range."""
        if self.physics is not None:
            return self.physics.sample_iso(rng)
        lo, hi = self.iso_range
        if self.law is None or lo == hi:
            return float(self.profiles[int(rng.integers(len(self.profiles)))].iso)
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))

    def draw(
        self, clean: np.ndarray, iso: float, a, b, rng: np.random.Generator, *, black_level, white_level
    ):
        """Synthetic noise on channels-last clean planes ``(h, w, 4)`` at ``iso`` (normalised float32): physics
        noise when the sensor has it, else Poisson-Gaussian with ``(a, b)`` (:func:`synthesize`)."""
        if self.physics is None:
            return synthesize(clean, a, b, rng, black_level=black_level, white_level=white_level)
        t = math.exp(rng.uniform(*np.log(EXPOSURE_S)))
        dn = self.physics.sample(clean, iso, rng, exposure_time=t, black_level=black_level,
                                 white_level=white_level, channel_axis=-1)  # fmt: skip
        black = np.asarray(black_level, np.float64).reshape(1, 1, 4)
        return ((dn - black) / (float(white_level) - black)).astype(np.float32)


def sensor_noise(
    profiles: NoiseProfileSet,
    sensors: Iterable[str],
    source: str | os.PathLike[str],
    *,
    kind: str = "poisson_gaussian",
    calibration: str | os.PathLike[str] | None = None,
):
    """``{sensor: SensorNoise}`` for every sensor to train on, checked at both ends of its ISO range.

    ``kind`` is the synthetic noise's model (:data:`KINDS`); ``"physics"`` draws it from ``calibration`` (a
    ``rawlab.calibration/1`` file, or the folder holding it), which must calibrate every sensor.

    Raises
    ------
    RawlabError
        If a sensor has no profile in ``profiles`` (read from ``source``), or its parameters are unusable; with
        physics noise, no calibration, or none for a sensor.
    """
    sensors = set(sensors)
    if kind not in KINDS:
        raise RawlabError(f"noise.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    physics = {}
    if kind == "physics":
        from ..noise.physics import load_calibration, physics_noise

        if not calibration:
            raise RawlabError(
                "noise.kind 'physics' needs noise.calibration: a calibration.json from `rawlab calibrate`"
            )
        physics = physics_noise(load_calibration(calibration), sensors, source=os.fspath(calibration))
    out = {}
    for s in sorted(set(sensors)):
        try:
            prof = profiles.sensor(s)
        except RawlabError:
            have = ", ".join(repr(p.sensor) for p in profiles.sensors) or "none"
            raise RawlabError(
                f"the noise profile {os.fspath(source)!r} has no entry for sensor {s!r} (it has {have}); fit "
                f"one with `rawlab noise-fit STORE --sensor all --out noise.json`, or leave the profile out "
                f"and training fits it from the store"
            ) from None
        noise = SensorNoise(prof, physics.get(s))
        for iso in noise.iso_range:
            noise.params(iso)
        out[s] = noise
    return out


def synthesize(
    clean: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    rng: np.random.Generator,
    *,
    black_level,
    white_level: float,
) -> np.ndarray:
    """A noisy observation of channels-last clean planes ``(h, w, 4)`` (normalised), float32.

    Poisson-Gaussian with ``Var = a * x + b`` (``a``, ``b`` per channel), then rounded to the sensor's DN grid
    and clipped to ``[0, white]`` DN, so it is what the sensor would have recorded.
    """
    a = np.asarray(a, np.float64).reshape(1, 1, 4)
    b = np.asarray(b, np.float64).reshape(1, 1, 4)
    noisy = sample_poisson_gaussian(clean, a, b, rng)
    black = np.asarray(black_level, np.float64).reshape(1, 1, 4)
    span = float(white_level) - black
    dn = np.clip(np.rint(black + noisy * span), 0.0, float(white_level))
    return ((dn - black) / span).astype(np.float32)

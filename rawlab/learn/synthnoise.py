"""Noise parameters per example, and synthetic noise drawn on clean crops from a sensor's fitted noise law.

Real pairs get ``(a, b)`` from the profile at the noisy frame's ISO. Synthetic examples follow PMRID (Wang et
al., ECCV 2020) and Unprocessing (Brooks et al., CVPR 2019): an ISO drawn log-uniformly over the sensor's
profiled range, ``(a, b)`` from its ISO law, and Poisson-Gaussian noise drawn on a clean crop
(:func:`rawlab.noise.sample_poisson_gaussian`), then rounded to DN and clipped to ``[0, white]`` as the sensor
records it (the clipping matters in the shadows of sensors that clip black in-camera). The clean reference
carries its own base-ISO noise, which the synthetic noise adds to; at base ISO ``a`` is 10-60x below the ISOs
denoisers are trained for, so it is left as is (PMRID does the same).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

import numpy as np

from ..errors import RawlabError
from ..noise.model import sample_poisson_gaussian
from ..noise.profile import NoiseProfileSet, SensorProfile, usable

__all__ = ["SensorNoise", "sensor_noise", "synthesize"]


class SensorNoise:
    """``(a, b)`` of one sensor at any ISO (normalised units, per channel R, G1, G2, B), and synthetic ISOs.

    ``(a, b)`` follow rawlab's one rule (:meth:`rawlab.noise.profile.SensorProfile.noise_at`, extrapolating the
    law outside the profiled range). With an ISO law (``iso_model`` with segments) synthetic ISOs are drawn
    log-uniformly over the profiled range; without one, among the profiled ISOs.
    """

    def __init__(self, profile: SensorProfile):
        from ..noise.isolaw import ISOLaw

        self.sensor = profile.sensor
        self.profile = profile
        self.profiles = sorted((p for p in profile.profiles if usable(p.a, p.b)), key=lambda p: p.iso)
        if not self.profiles:
            raise RawlabError(f"the noise profile of {self.sensor!r} has no ISO with usable a and b")
        self.law = ISOLaw.from_dict(profile.iso_model) if profile.iso_model.get("segments") else None
        self.iso_range = (float(self.profiles[0].iso), float(self.profiles[-1].iso))

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
        """A synthetic ISO: log-uniform over the profiled range (law), or one of the profiled ISOs."""
        lo, hi = self.iso_range
        if self.law is None or lo == hi:
            return float(self.profiles[int(rng.integers(len(self.profiles)))].iso)
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def sensor_noise(profiles: NoiseProfileSet, sensors: Iterable[str], source: str | os.PathLike[str]):
    """``{sensor: SensorNoise}`` for every sensor to train on, checked at both ends of its ISO range.

    Raises
    ------
    RawlabError
        If a sensor has no profile in ``profiles`` (read from ``source``), or its parameters are unusable.
    """
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
        noise = SensorNoise(prof)
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

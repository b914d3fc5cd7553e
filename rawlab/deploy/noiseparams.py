"""The noise parameters ``(a, b)`` of one raw file, for the network's input normalisation.

Order of preference (:func:`noise_for_frame`), and the ``source`` each reports:

1. ``"model law"``: the model's own noise profiles (the profile set it was trained with) for the file's sensor
   at its ISO, decided by rawlab's one rule (:meth:`rawlab.noise.profile.NoiseProfileSet.noise_at`: measured
   at that ISO, else the law, extrapolated outside the profiled range) -- the calibrated answer, when the
   model knows the sensor;
2. ``"DNG NoiseProfile"``: the DNG ``NoiseProfile`` tag (``Var = S x + O`` per colour plane, the same
   convention as rawlab's), when the file is a DNG that carries one;
3. ``"single-image"``: an estimate from the image alone (:func:`single_image_noise`): the green quincunx
   (:mod:`rawlab.noise.quincunx`: greens predicted from their diagonal green neighbours, fitted with the
   clipped Poisson-Gaussian model of Foi et al. 2008, with a read-noise prior), else a signal-independent
   ``b``. Where the file keeps the sensor's optically masked pixels (:attr:`rawlab.rawio.RawInfo.masked`) and
   they are not clipped past telling, ``b`` is theirs instead (:func:`masked_read_noise`: no light reaches
   them, so they hold the read noise alone, rounding included, as ``b`` does); the quincunx's ``a`` is kept.
   A photograph measures ``b`` only where it has smooth signal near black; the masked pixels always do. On the
   eight Canon PowerShot S40 CRWs in ``../shared/raw-samples/bayer`` (one camera, ISO 50) the image-alone ``b``
   spread from 0.85e-7 to 7.0e-7 over the frames, the masked pixels' (G1) from 5.3e-7 to 6.2e-7. Refitting ``a``
   with that ``b`` held was no better on the ten sensors the estimator is tuned on (a one-off check in stop 39
   on ``benchmarks/noise_estimate.py --sensors tune``'s frames: the noise variance at the frames' pixels off by
   a median 28.0 % against 27.9 % with the fit's ``a`` kept, 90th percentile 37 % against 34 %; ``|da|/a``
   28.4 % against 28.2 %), so the refit is not in the code.

``a`` is clamped to at least 1e-12 and ``b`` to at least 0: the network's noise map needs a real standard
deviation, and a fitted read term can come out slightly negative.

:func:`residual_profile` gives the NoiseProfile written into a denoised DNG (see its docstring).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import RawlabError

__all__ = [
    "NoiseEstimate",
    "masked_read_noise",
    "model_noise",
    "noise_for_frame",
    "residual_profile",
    "single_image_noise",
]

SOURCES = ("model law", "DNG NoiseProfile", "single-image")


@dataclass(frozen=True)
class NoiseEstimate:
    """``(a, b)`` per channel R, G1, G2, B (normalised units) and where they came from."""

    a: np.ndarray
    b: np.ndarray
    source: str
    detail: str = ""

    def describe(self) -> str:
        g = f"a={self.a[1]:.2e}, b={self.b[1]:.2e} (G1)"
        return f"{self.source}{f' ({self.detail})' if self.detail else ''}: {g}"


def _clamped(a, b) -> tuple[np.ndarray, np.ndarray]:
    a = np.maximum(np.asarray(a, np.float64).reshape(4), 1e-12)
    b = np.maximum(np.asarray(b, np.float64).reshape(4), 0.0)
    return a, b


def model_noise(config, sensor: str, iso: float | None):
    """The :class:`~rawlab.noise.profile.NoiseParams` ``(a, b)`` of ``sensor`` at ``iso`` from a model's
    config (``config["noise"]``, a ``rawlab.noise/1`` profile set), by
    :meth:`~rawlab.noise.profile.NoiseProfileSet.noise_at` (outside the profiled ISOs the law is
    extrapolated); ``None`` when the model carries no profiles, does not know ``sensor``, or ``iso`` is unknown.
    """
    from ..noise.profile import NoiseProfileSet

    noise = (config or {}).get("noise")
    try:
        iso = float(iso) if iso is not None else math.nan
    except (TypeError, ValueError):
        iso = math.nan
    if not noise or not (math.isfinite(iso) and iso > 0):
        return None
    return NoiseProfileSet.from_dict(noise).noise_at(sensor, iso)


def masked_read_noise(info) -> tuple[np.ndarray | None, str]:
    """:func:`rawlab.noise.masked.masked_read_noise` of a decoded file's :class:`rawlab.rawio.RawInfo`: ``b`` per
    channel from its masked border, or None and why not."""
    from ..noise.masked import masked_read_noise as from_moments

    return from_moments(getattr(info, "masked", None), info.black_level, info.white_level)


def single_image_noise(
    planes: np.ndarray, black_level, white_level, iso=None, *, read_noise=None
) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` per channel estimated from one frame's normalised packed planes ``(4, h, w)``.

    The green quincunx (:func:`rawlab.noise.quincunx.estimate_noise`: green pixels predicted from their
    diagonal green neighbours, which texture does not fool; red and blue carried over through the
    normalisation; a read-noise prior decides ``b`` where the frame cannot). When the green cannot be fitted
    (e.g. the signal spans too narrow a range to separate ``a`` from ``b``), the noise is taken as
    signal-independent: ``a = 0`` and ``b`` the variance of the diagonal Haar detail (its median over 2x2
    blocks, which ignores edges, divided by 0.4549, the median of chi-square(1)). ``read_noise``: ``b`` per
    channel (or one for all) measured elsewhere (:func:`masked_read_noise`), which replaces the fit's (its
    ``a`` is kept).

    Raises
    ------
    RawlabError
        If not even that can be measured (an image with no pixels that vary).
    """
    from ..noise.quincunx import estimate_noise

    green = estimate_noise(planes, black_level, white_level)
    if green.ok:
        if read_noise is not None:
            return green.a, np.broadcast_to(np.asarray(read_noise, np.float64), (4,)).copy()
        return green.a, green.b
    b = _detail_energy(planes) / 0.4549
    if not np.all(np.isfinite(b)) or not np.any(b > 0):
        reasons = "; ".join(green.flags) or "no smooth region to measure"
        raise RawlabError(f"the noise could not be estimated from the image alone ({reasons})")
    return np.zeros(4), b


def _dng_profile(pairs) -> tuple[np.ndarray, np.ndarray] | None:
    """NoiseProfile ``[(S, O)]``: one pair for all planes, or one per CFA plane colour R, G, B."""
    if not pairs:
        return None
    if len(pairs) == 1:
        ((s, o),) = pairs
        return np.full(4, s), np.full(4, o)
    if len(pairs) == 3:
        (sr, orr), (sg, og), (sb, ob) = pairs
        return np.array([sr, sg, sg, sb]), np.array([orr, og, og, ob])
    return None


def noise_for_frame(model, info, planes: np.ndarray) -> NoiseEstimate:
    """``(a, b)`` for a decoded raw: the model's law, else the DNG NoiseProfile, else a single-image fit.

    Parameters
    ----------
    model
        Anything with the model's ``config`` (a denoiser or a :class:`rawlab.learn.TrainedModel`); its noise
        profiles give ``(a, b)`` through :func:`model_noise`.
    info
        The file's :class:`rawlab.rawio.RawInfo`.
    planes
        Its normalised packed planes ``(4, h, w)`` (for the single-image estimate).
    """
    why = []
    if info.iso:
        law = model_noise(getattr(model, "config", None), info.sensor, info.iso)
        if law is not None:
            detail = f"{info.sensor}, ISO {info.iso:g}, {law.basis}"
            return NoiseEstimate(*_clamped(law.a, law.b), SOURCES[0], detail)
        known = (getattr(model, "config", None) or {}).get("noise")
        why.append(
            f"the model's noise law does not know {info.sensor!r}" if known else "the model has no noise law"
        )
    else:
        why.append("the file has no ISO")
    if info.raw_format == "DNG":
        from ..dng import read_dng_tags

        try:
            profile = _dng_profile(read_dng_tags(info.path).get("noise_profile"))
        except (ValueError, OSError):
            profile = None
        if profile is not None:
            return NoiseEstimate(*_clamped(*profile), SOURCES[1])
        why.append("no DNG NoiseProfile")
    read_noise, masked = masked_read_noise(info)
    if masked:
        why.append(masked)
    a, b = single_image_noise(planes, info.black_level, info.white_level, info.iso, read_noise=read_noise)
    if not np.any(a):
        why.append("fit failed, signal-independent estimate")
    return NoiseEstimate(*_clamped(a, b), SOURCES[2], "; ".join(why))


def _detail_energy(planes: np.ndarray) -> np.ndarray:
    """Per channel, the median over 2x2 blocks of the squared diagonal Haar detail (a noise-variance proxy)."""
    p = np.asarray(planes, np.float32)
    h, w = p.shape[1] // 2 * 2, p.shape[2] // 2 * 2
    q = p[:, :h, :w]
    d = (q[:, 0::2, 0::2] - q[:, 0::2, 1::2] - q[:, 1::2, 0::2] + q[:, 1::2, 1::2]) * 0.5
    return np.median((d * d).reshape(4, -1), axis=1)


def residual_profile(
    noisy: np.ndarray, denoised: np.ndarray, a, b
) -> tuple[list[tuple[float, float]], float]:
    """The DNG NoiseProfile of a denoised frame: the input's ``(a, b)`` scaled by the measured noise drop.

    The drop ``k`` is the ratio, output over input, of the median squared diagonal Haar detail of the packed
    planes ``(4, h, w)`` (the detail cancels smooth signal, and the median over blocks ignores edges), taken
    over all channels and clipped to ``[1e-4, 1]``. The residual noise of a denoiser is neither white nor
    Poisson-Gaussian, so ``(k a, k b)`` is a rough guide for raw processors (e.g. to turn their own denoising
    down), not a calibrated fit. Returns ``([(S, O)] for R, G, B, k)``.
    """
    e_in, e_out = _detail_energy(noisy), _detail_energy(denoised)
    k = float(np.clip(np.sum(e_out) / max(float(np.sum(e_in)), 1e-30), 1e-4, 1.0))
    a, b = _clamped(a, b)
    s = k * np.array([a[0], 0.5 * (a[1] + a[2]), a[3]])
    o = k * np.array([b[0], 0.5 * (b[1] + b[2]), b[3]])
    return [(float(si), float(oi)) for si, oi in zip(s, o, strict=True)], k

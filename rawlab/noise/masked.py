"""The read noise from a sensor's optically masked pixels: the border of the sensor that no light reaches, which
many raws keep (:attr:`rawlab.rawio.RawInfo.masked`). It holds the read noise alone, rounding included, as the
law's ``b`` does, so where no profile knows the sensor ``b`` can come from it instead of from the image
(``rawlab denoise``: :func:`rawlab.deploy.noiseparams.noise_for_frame`; ``rawlab noise-fit --method single``,
from the catalog's ``masked_*`` columns: :func:`rawlab.noise.pipeline.fit_store`)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MASKED_CLIPPED_MAX", "MASKED_FLOOR", "MASKED_MIN", "masked_read_noise"]

MASKED_MIN = 4096  # masked pixels needed for their variance (its relative sd is then at most 2.2 %)
MASKED_FLOOR = 0.01  # above this share of them at their lowest value, they are taken as clipped there
MASKED_CLIPPED_MAX = 0.9  # ... and above this share, too clipped to tell the read noise


def masked_read_noise(m, black_level, white_level) -> tuple[np.ndarray | None, str]:
    """``b`` per channel R, G1, G2, B (normalised) from the file's optically masked pixels, and what was done.

    ``b`` is the read noise in DN^2 over each channel's span ``(white - black_c)^2``: each channel's variance
    in the masked pixels (where the file says which pixel is which channel; else theirs together), or, where
    more than ``MASKED_FLOOR`` of them sit at their lowest value (a camera that clipped its data at black, as
    many do at 0 DN), the ``sigma^2`` of the clipped, quantised normal whose moments theirs together are
    (:func:`rawlab.noise.fit.clipped_normal`, its mean fitted too). ``None`` and the reason where they cannot
    stand for the read noise: none in the file, fewer than ``MASKED_MIN``, more than ``MASKED_CLIPPED_MAX`` of
    them clipped, or a level that is not the file's black (each pixel's channel's; further from it than 2 sd and
    1 DN: not masked, or a different offset). ``m``: the masked pixels' moments
    (:class:`rawlab.rawio.MaskedPixels`, or None: none in the file); the levels in DN, black per channel."""
    if m is None:
        return None, ""
    black_level = np.broadcast_to(np.asarray(black_level, np.float64), (4,))
    black, white = float(black_level[1]), float(white_level)
    span = white - black_level
    if m.count < MASKED_MIN:
        return None, f"{m.count} masked pixels, too few for the read noise"
    if not m.variance > 0:
        return None, "masked pixels without noise"
    if m.floor_share > MASKED_CLIPPED_MAX:
        return None, f"masked pixels clipped ({100 * m.floor_share:.0f}% at {m.floor:g} DN)"
    offset, var, how = m.offset, np.full(4, m.variance), ""
    if m.floor_share > MASKED_FLOOR:
        level, pooled = _unclipped(m, white)
        offset, var = level - black, np.full(4, pooled)
        how = f", {100 * m.floor_share:.0f}% clipped at {m.floor:g} DN"
    elif m.channel_variance is not None and np.all(np.isfinite(m.channel_variance)):
        var = np.asarray(m.channel_variance, np.float64)
    if abs(offset) > max(2.0 * math.sqrt(float(np.mean(var))), 1.0):
        return None, f"masked pixels {offset:+.1f} DN from the black level {black:g}"
    return var / span**2, f"b from {m.count} masked pixels{how}"


def _unclipped(m, white: float) -> tuple[float, float]:
    """``(mu, sigma^2)`` in DN of the quantised normal that, clipped at ``m.floor`` (and white), has the masked
    pixels' mean and variance: least squares on the two moments, each in units of its sampling sd."""
    from scipy.optimize import least_squares

    from .fit import clipped_normal

    sd, n = math.sqrt(m.variance), m.count

    def res(q):
        (mean, var, _), _ = clipped_normal(q[0], math.exp(q[1]), m.floor, white, 1.0, kept=False)
        return [(mean - m.mean) / (sd / math.sqrt(n)), (var - m.variance) / (m.variance * math.sqrt(2.0 / n))]

    q = least_squares(res, [m.floor, math.log(2.0 * sd)]).x
    return float(q[0]), float(math.exp(2.0 * q[1]))

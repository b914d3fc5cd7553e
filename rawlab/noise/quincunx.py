"""Single-image noise estimate from the green quincunx, which texture does not fool.

On a Bayer sensor the two greens ``G1`` and ``G2`` sample one colour on a quincunx lattice: each green pixel
has four green neighbours on the diagonals, one mosaic pixel away in each direction. A prediction of a green
pixel from its four diagonal neighbours removes the scene at a much finer scale than any single packed plane
can (there, the nearest same-colour neighbour is two mosaic pixels away), so what is left is mostly noise,
even on photographs whose texture a per-plane estimator (:mod:`rawlab.noise.single`) reads as noise.

The sample (per green pair ``G1[i, j]``, ``G2[i, j]``: diagonal neighbours in the mosaic)::

    e = (G1 - mean of G1's 4 green neighbours) + (G2 - mean of G2's 4 green neighbours)

The two residuals are each exact on a locally linear scene; their sum also cancels a **green imbalance**
(``G1`` a percent or so more sensitive than ``G2``, as on many real sensors: measured 1.2 % on a Canon
PowerShot S40), which would otherwise add ``(0.01 x)^2`` to the variance, more than the shot noise at base
ISO. ``e`` weighs eight pixels (3/4 twice, 1/4 six times; the sum of squares is 1.5), so
``Var[e / sqrt(1.5)] = a x + b`` on white noise. The sample's signal is the mean of the four neighbours of
``G1``; it is binned by the mean signal, and its texture class is the octave of the mean ``e^2``, of the 40
samples two and three packed pixels away (whose pixels are not its own: binning and selecting on them does not
bias its statistics). Forty neighbours measure the local level tightly enough to keep only classes up to 1.5
times the model's variance (``kappa``), which rejects texture that a looser threshold lets through. The partial
sums have the layout of :func:`rawlab.noise.single.single_moments` in the green channel.

:func:`fit_green` fits them: per signal bin the samples of the classes compatible with noise alone, first
against a low quantile of the bin's own levels, then against the model (iterated); the model is the clipped
Poisson-Gaussian (Foi et al. 2008, :func:`rawlab.noise.fit.clipped_normal`, quantisation included) on every bin
where at least a quarter of the pixels is unclipped, so the bins next to black, which carry ``b``, count (a
4-sigma-inside start, as in :mod:`rawlab.noise.fit`, leaves them out, and leaves nothing at all on frames of
``a`` a few 1e-2); the loss is on the log-ratio of observed to modelled variance in units of its sampling
sd, least squares below the model and Cauchy above it (texture only adds variance: the fit follows the lower
envelope of the bins).

Red and blue have no same-colour neighbour closer than two pixels, so their ``(a, b)`` are the green ones
carried over through the normalisation: one electron is ``a_c = a_G span_G / span_c`` in channel ``c`` (span
``white - black_c`` in DN) and the read noise in DN is shared, ``b_c = b_G (span_G / span_c)^2``. That is
exact when the channels share one conversion gain (the usual case: raw data is not white-balanced, and a DNG
``NoiseProfile`` usually has one pair for all planes); sensors with per-channel analog gain differ from it by
that gain (a few per cent on some phones).

The CFA fixes where ``G2`` sits against ``G1`` (one of four diagonal offsets); without it the offset is the
one that leaves the least residual (the three wrong stencils are not exact on gradients).

Measured (``benchmarks/noise_estimate.py``, 178 frames, 384x512 mosaic): on eight photographs and three real
raw crops recorded by eight sensors none of this was tuned on (``a`` 1.3e-5 to 3.9e-2, 146 frames), median
``|da|/a`` 14.0 % (Foi per plane: 100 %, it fails on most frames and falls back to ``a = 0``), 13.5 % where
the added ``a`` is at least ten times the photograph's own grain; real crops 12.3 %. ``|db|/b`` 69.8 %: ``b``
is read from signal near black, which many photographs lack (where the fit cannot tell ``b`` from 0 it
reports the rounding floor ``step^2 / 12``) or show only in textured shadows (read as ``b``: chelsea,
stereo_motorcycle, immunohistochemistry, up to 1000x); on the 42 frames whose Cramer-Rao bound for ``b`` is
at most 10 %, 15.2 %. Dead-leaves texture still fools ``a`` (median 100 %).
"""

from __future__ import annotations

import math

import numpy as np

from ..bayer import channel_offsets
from .fit import clipped_normal
from .moments import BIN_EDGES, bin_cells, binned_sums, clip_bounds
from .single import _Q0, _Q0_CHI2, N_SINGLE_STATS, N_TEXTURE, _quantile_level, _texture_upper, texture_class

__all__ = ["GREEN_OFFSETS", "QuincunxEstimate", "estimate_noise", "fit_green", "green_moments", "green_offset"]  # fmt: skip

#: Mosaic offset (rows, cols) of G2 from G1 for each diagonal the CFA can put it on.
GREEN_OFFSETS: tuple[tuple[int, int], ...] = ((1, -1), (-1, 1), (1, 1), (-1, -1))
_NORM = math.sqrt(1.5)  # sqrt of the sum of the squared weights of e
_R = 3  # the ring: the 40 sites 2 or 3 packed pixels away (Chebyshev), none sharing a pixel with the centre
_RING = tuple((u, v) for u in range(-_R, _R + 1) for v in range(-_R, _R + 1) if max(abs(u), abs(v)) >= 2)
_MARGIN = 1 + _R  # packed pixels lost at each border: 1 for the stencil, _R for the ring


def green_offset(cfa: str) -> tuple[int, int]:
    """Mosaic offset (rows, cols) of G2 from G1 in ``cfa`` (e.g. ``(1, -1)`` for RGGB)."""
    off = channel_offsets(cfa)
    return off[2][0] - off[1][0], off[2][1] - off[1][1]


def _residual(g1: np.ndarray, g2: np.ndarray, offset) -> tuple[np.ndarray, np.ndarray]:
    """``e / sqrt(1.5)`` and the signal (mean of G1's green neighbours) on the planes less a 1-pixel border."""
    sy, sx = offset
    h, w = g1.shape

    def at(p, u, v):  # p[i + u, j + v] for i in 1..h-2, j in 1..w-2
        return p[1 + u : h - 1 + u, 1 + v : w - 1 + v]

    # G1[i, j]'s green neighbours are G2 at rows i, i - sy and columns j, j - sx; G2[i, j]'s are G1 at
    # rows i, i + sy and columns j, j + sx.
    n1 = at(g2, 0, 0) + at(g2, -sy, 0) + at(g2, 0, -sx) + at(g2, -sy, -sx)
    n2 = at(g1, 0, 0) + at(g1, sy, 0) + at(g1, 0, sx) + at(g1, sy, sx)
    e = (at(g1, 0, 0) + at(g2, 0, 0) - 0.25 * (n1 + n2)) * (1.0 / _NORM)
    return e, 0.25 * n1


def detect_offset(g1: np.ndarray, g2: np.ndarray) -> tuple[int, int]:
    """The diagonal offset of G2 from G1 that leaves the smallest median ``|e|`` (the true one is exact on
    gradients; the others are not)."""
    g1, g2 = g1[:512, :512].astype(np.float32), g2[:512, :512].astype(np.float32)  # plenty to decide
    scores = [float(np.median(np.abs(_residual(g1, g2, off)[0]))) for off in GREEN_OFFSETS]
    return GREEN_OFFSETS[int(np.argmin(scores))]


def green_moments(planes, *, offset=None, edges: np.ndarray = BIN_EDGES) -> np.ndarray:
    """Binned partial sums of the green quincunx samples of one frame or chunk.

    Parameters
    ----------
    planes
        Normalised packed planes ``(4, h, w)`` (R, G1, G2, B).
    offset
        Mosaic offset of G2 from G1 (:func:`green_offset` of the CFA); ``None`` finds it from the data.
    edges
        Bin edges over the signal (normalised).

    Returns
    -------
    numpy.ndarray
        ``(4, n_bins, N_TEXTURE, N_SINGLE_STATS)`` float64 sums, the layout of
        :func:`rawlab.noise.single.single_moments`, with the samples in channel G1 (the other channels zero).
        Add with ``+``.
    """
    p = np.asarray(planes)
    if p.ndim != 3 or p.shape[0] != 4:
        raise ValueError(f"planes must be packed planes (4, h, w), got shape {p.shape}")
    g1, g2 = p[1].astype(np.float32), p[2].astype(np.float32)
    if offset is None:
        offset = detect_offset(g1, g2)
    n_bins = len(edges) - 1
    out = np.zeros((4, n_bins, N_TEXTURE, N_SINGLE_STATS))
    if min(g1.shape) <= 2 * _MARGIN:
        return out
    e, m = _residual(g1, g2, offset)
    e2 = e * e
    h, w = e.shape

    def ring_mean(q):  # mean of q at the 8 sites two pixels away, on the planes less the margin
        r = _R
        s = sum(q[r + u : h - r + u, r + v : w - r + v] for u, v in _RING)
        return s * np.float32(1.0 / len(_RING))

    level, around = ring_mean(e2), ring_mean(m)
    e, m = e[_R:-_R, _R:-_R], m[_R:-_R, _R:-_R]
    keep = np.isfinite(e) & np.isfinite(m) & np.isfinite(level) & np.isfinite(around)
    cells = bin_cells(around, keep, edges) * N_TEXTURE + texture_class(level)
    out[1] = binned_sums(cells, n_bins * N_TEXTURE, [m, e]).reshape(n_bins, N_TEXTURE, N_SINGLE_STATS)
    return out


class QuincunxEstimate:
    """``(a, b)`` per channel R, G1, G2, B (normalised) from :func:`estimate_noise`; ``flags`` say why not
    (NaN) when the green channel could not be fitted."""

    def __init__(self, a: np.ndarray, b: np.ndarray, flags: list[str], offset: tuple[int, int]):
        self.a, self.b, self.flags, self.offset = a, b, flags, offset

    @property
    def ok(self) -> bool:
        return bool(np.all(np.isfinite(self.a) & np.isfinite(self.b)) and np.all(self.a + self.b > 0))


def estimate_noise(
    planes, black_level, white_level, *, cfa: str | None = None, min_pixels: int = 4000, kappa: float = 1.5
) -> QuincunxEstimate:
    """``(a, b)`` per channel of one frame from its green quincunx (see the module docstring).

    Parameters
    ----------
    planes
        Normalised packed planes ``(4, h, w)``.
    black_level, white_level
        In DN (black one value or 4), as the planes were normalised with.
    cfa
        The mosaic's pattern, if known (else the green offset is found from the data).
    min_pixels, kappa
        As in :func:`fit_green`.

    Returns
    -------
    QuincunxEstimate
        NaN ``a``/``b`` (and the reason in ``flags``) when the green channel cannot be fitted.
    """
    p = np.asarray(planes)
    offset = green_offset(cfa) if cfa else detect_offset(p[1], p[2])
    lower, upper, step = clip_bounds(black_level, white_level)
    a, b, flags = fit_green(
        green_moments(p, offset=offset), float(lower[1]), float(upper[1]), float(step[1]), kappa=kappa,
        min_pixels=min_pixels,
    )  # fmt: skip
    # The green fit carried over to every channel through its span (one electron, one read noise in DN).
    ratio = step / step[1]
    if math.isfinite(a):
        b = max(b, float(step[1]) ** 2 / 12.0)  # never below the rounding to whole DN
    return QuincunxEstimate(a * ratio, b * ratio**2, flags, offset)


# -- the fit ---------------------------------------------------------------------------------------------------

_ROUNDS = 4
_MIN_BIN = 16  # samples a bin needs to count
_ROBUST = 2.0  # a bin this many sd above the model starts losing its pull (Cauchy above, least squares below)


def _clipped(x, a: float, b: float, lo: float, hi: float, step: float):
    """Mean and variance of one clipped, quantised pixel at signal ``x`` (Foi et al. 2008,
    :func:`rawlab.noise.fit.clipped_normal`), and the probability it is not clipped."""
    sd = np.sqrt(np.maximum(a * np.maximum(x, 0.0) + b, 1e-30))
    (mean, var, inside), _ = clipped_normal(x, sd, lo, hi, step, kept=False)
    return mean, var, inside


def _model(xm: np.ndarray, a: float, b: float, lo: float, hi: float, step: float, inside: bool = False):
    """The variance of ``e / sqrt(1.5)`` in bins whose neighbour mean is ``xm``: ``a x + b`` at the signal
    ``x`` whose clipped mean is ``xm`` (found by Newton), clipped near the bounds. Each pixel of ``e`` is
    clipped alone; on a locally flat signal the weighted sum keeps the single pixel's clipped variance.
    ``inside``: also return the probability that a pixel is not clipped."""
    x = np.clip(xm, lo, hi)
    for _ in range(12):
        mean, _, p_in = _clipped(x, a, b, lo, hi, step)
        dx = (mean - xm) / np.maximum(p_in, 0.05)
        x = np.clip(x - dx, lo - 1.0, hi + 1.0)
        if np.all(np.abs(dx) < 1e-7):
            break
    _, var, p_in = _clipped(x, a, b, lo, hi, step)
    return (var, p_in) if inside else var


def _envelope(z: np.ndarray) -> np.ndarray:
    """Residuals whose sum of squares is the lower-envelope loss: Cauchy above the model (texture only adds
    variance: a bin's pull fades as it rises), least squares below."""
    up = np.maximum(z, 0.0)
    return np.where(z > 0, _ROBUST * np.sqrt(np.log1p((up / _ROBUST) ** 2)), z)


def _solve(xm, v, n, a0, b0, lo, hi, step) -> tuple[float, float]:
    """``(a, b) >= 0`` minimising the lower-envelope loss of the log-ratios of observed to modelled bin
    variance, each in units of its sampling sd (``sqrt(2 / n)``)."""
    from scipy.optimize import least_squares

    sa, sb = max(a0, 1e-9), max(b0, 1e-12)
    # Bins mostly clipped (a saturated sky, a black-clipped shadow) say little and depend on the tail of the
    # model: left out, as in rawlab.noise.fit (fewer than a quarter of the pixels unclipped).
    use = _model(xm, a0, b0, lo, hi, step, inside=True)[1] >= 0.25
    xm, v, n = xm[use], v[use], n[use]

    def res(q):
        model = np.maximum(_model(xm, q[0] * sa, q[1] * sb, lo, hi, step), 1e-30)
        return _envelope(np.sqrt(n / 2.0) * np.log(v / model))

    q = least_squares(res, [a0 / sa, b0 / sb], bounds=([0.0, 0.0], [np.inf, np.inf])).x
    return float(q[0] * sa), float(q[1] * sb)


def fit_green(moments: np.ndarray, lower: float, upper: float, step: float, *, kappa: float = 1.5,
              min_pixels: int = 4000, edges: np.ndarray = BIN_EDGES) -> tuple[float, float, list[str]]:  # fmt: skip
    """``(a, b)`` of the green channel from :func:`green_moments` (channel G1), and why not (NaN) if not.

    Per signal bin the samples are summed over the texture classes compatible with noise alone: first those
    up to ``kappa`` times a low quantile of the bin's own levels, then up to ``kappa`` times the model's
    variance (iterated). The model is fitted to the bins' mean ``e^2 / 1.5`` with the clipped Poisson-Gaussian
    model everywhere (Foi et al. 2008), bins next to black and white included: they carry ``b``. The fit
    follows the lower envelope of the bins (texture only adds variance).
    """
    g = np.asarray(moments, np.float64)[1]  # (bins, classes, stats)
    counts = g[:, :, 0]
    upper_edge = _texture_upper(np.arange(N_TEXTURE))[None, :]
    limit = kappa * _quantile_level(counts, _Q0) / _Q0_CHI2
    a = b = math.nan
    for _ in range(_ROUNDS):
        sel = (g * (upper_edge <= limit[:, None])[..., None]).sum(axis=1)
        n = sel[:, 0]
        ok = (n >= _MIN_BIN) & (sel[:, 4] > 0)
        if 4 * n[ok].sum() < min_pixels or ok.sum() < 3:
            why = f"too little smooth green signal: {4 * int(n[ok].sum())} usable pixels (< {min_pixels})"
            return math.nan, math.nan, [why]
        xm, v, nk = sel[ok, 1] / n[ok], sel[ok, 4] / n[ok], n[ok]
        if not np.isfinite(a):  # start: a line through the bins' lower envelope, far from the bounds
            a, b = _start(xm, v, nk, lower, upper)
        a, b = _solve(xm, v, nk, a, b, lower, upper, step)
        if not a + b > 0:
            return math.nan, math.nan, ["the green fit found no noise"]
        centre = np.clip(0.5 * (edges[:-1] + edges[1:]), lower, upper)
        limit = kappa * np.maximum(_model(centre, a, b, lower, upper, step), 1e-30)
    if np.ptp(xm) <= 0:
        return math.nan, math.nan, ["the green signal spans one bin: a cannot be told from b"]
    return a, b, []


def _start(xm, v, n, lo, hi) -> tuple[float, float]:
    """A starting ``(a, b)``: weighted least squares of ``v`` on ``x`` over the bins in the middle of the range
    (least clipped), then the lower quartile of the ratios ``v / (a x + b)`` scales it onto the envelope."""
    mid = (xm > lo + 0.1 * (hi - lo)) & (xm < hi - 0.2 * (hi - lo))
    if mid.sum() < 3:
        mid = np.ones_like(xm, dtype=bool)
    d = np.stack([np.maximum(xm[mid], 0.0), np.ones(mid.sum())], axis=1)
    w = n[mid] / np.maximum(v[mid], 1e-30) ** 2
    theta = np.linalg.lstsq(d * w[:, None] ** 0.5, v[mid] * w**0.5, rcond=None)[0]
    a, b = max(theta[0], 0.0), max(theta[1], 0.0)
    if a <= 0:
        a = float(np.median(v[mid] / np.maximum(xm[mid], 1e-3)))
    if b <= 0:
        b = 1e-3 * a
    r = np.quantile(v[mid] / (a * np.maximum(xm[mid], 0.0) + b), 0.25)
    return a * r, b * r

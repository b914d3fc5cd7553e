"""Single-image noise estimate from the green quincunx, which texture does not fool.

On a Bayer sensor the two greens ``G1`` and ``G2`` sample one colour on a quincunx lattice: each green pixel
has four green neighbours on the diagonals, one mosaic pixel away in each direction. A prediction of a green
pixel from its four diagonal neighbours removes the scene at a much finer scale than any single packed plane
can (there, the nearest same-colour neighbour is two mosaic pixels away), so what is left is mostly noise,
even on photographs whose texture a per-plane estimator (Foi et al. per packed plane, rawlab's before #12)
reads as noise.

The sample (per green pair ``G1[i, j]``, ``G2[i, j]``: diagonal neighbours in the mosaic)::

    e = (G1 - mean of G1's 4 green neighbours) + (G2 - mean of G2's 4 green neighbours)

The two residuals are each exact on a locally linear scene; their sum also cancels a **green imbalance**
(``G1`` a percent or so more sensitive than ``G2``, as on many real sensors: measured 1.2 % on a Canon
PowerShot S40), which would otherwise add ``(0.01 x)^2`` to the variance, more than the shot noise at base
ISO. ``e`` weighs eight pixels (3/4 twice, 1/4 six times; the sum of squares is 1.5), so
``Var[e / sqrt(1.5)] = a x + b`` on white noise. The sample's signal is the mean of the four neighbours of
``G1``; it is binned by the mean signal, and its texture class is the half-octave of the mean ``e^2``, of the 40
samples two and three packed pixels away (whose pixels are not its own: binning and selecting on them does not
bias its statistics). Forty neighbours measure the local level tightly enough to keep only classes up to
``kappa`` = 1.15 times the model's variance, which rejects texture that a looser threshold lets through (a
frame that is texture nearly everywhere gets a looser one, up to 8 times, rather than nothing). The partial
sums per channel, signal bin and texture class (count, sum and sum of squares of the signal and of ``e``) are
in the green channel of a 4-channel array, and add across chunks and frames.

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
that gain (a few per cent on some phones). The same tie lets red and blue help measure ``b``: they are the
darker planes of a raw, so they have more signal near black; their own samples (each pixel less its four
same-colour neighbours, :func:`_plane_moments`) join the fit of ``b`` in the bins where the read term
dominates (:func:`_with_planes`; ``a`` stays the green's).

Where a frame has no signal near black, nothing in it measures ``b``: the read-noise prior of
:mod:`rawlab.noise.prior` (the read noise in electrons of real cameras against their gain; Wei et al. 2020)
joins the loss as one more residual, so ``b`` comes out at the prior's mean there (it used to drop to the
rounding floor, -100 %) and where the bins do measure it the prior moves it by under 1 %.

The CFA fixes where ``G2`` sits against ``G1`` (one of four diagonal offsets); without it the offset is the
one that leaves the least residual (the three wrong stencils are not exact on gradients).

:func:`estimate_noise` fits one frame (``rawlab denoise`` with no profile); :func:`fit_frames` fits the summed
moments of several frames at one ISO, with standard errors from a bootstrap over frames (``rawlab noise-fit
--method single``).

Measured (``benchmarks/noise_estimate.py``, 384x512 mosaic): on eight photographs and three real raw crops
recorded by eight sensors none of this was tuned on (``a`` 1.3e-5 to 3.9e-2, 146 frames), median ``|da|/a``
10.3 % (real crops 9.7 %) and ``|db|/b`` 49.4 % (the estimator before the prior, half-octave classes and the
red and blue: 14.0 % and 69.8 %; with the earlier prior of the five ELD cameras: 12.6 % and 51.5 %). ``b`` is
identifiable only where the frame has smooth signal near black: on the 42 frames whose Cramer-Rao bound for
``b`` is at most 10 %, ``|db|/b`` is 12.1 %; beyond that the frame cannot say and the error is the prior's (a
factor of a few) or texture in the shadows read as ``b``. ``kappa`` was chosen on the same photographs recorded by ten other random
sensors (``--sensors tune``). A star field (hubble_deep_field) and dead-leaves texture still fool ``a``.
"""

from __future__ import annotations

import math

import numpy as np

from ..bayer import channel_offsets
from ..errors import RawlabError
from .fit import ISOFit, clipped_normal
from .moments import BIN_EDGES, bin_cells, binned_sums, clip_bounds
from .prior import prior_residual

__all__ = [
    "GREEN_OFFSETS", "N_STATS", "N_TEXTURE", "QuincunxEstimate", "estimate_noise", "fit_frames", "fit_green",
    "green_moments", "green_offset", "texture_class",
]  # fmt: skip

#: Partial sums per (channel, bin, texture class): count, sum and sum of squares of the signal, sum and sum
#: of squares of the sample ``e``.
STAT_NAMES: tuple[str, ...] = ("n", "m", "m2", "d", "d2")
N_STATS: int = len(STAT_NAMES)
_TEX_LOW = -36  # the classes start at 2**-36 (class 0 also below) and end at 2**0 (the last also above)
N_TEXTURE: int = 2 * 37  # two per octave: [2**e, 1.5 * 2**e) and [1.5 * 2**e, 2**(e + 1))
_Q0, _Q0_CHI2 = 0.2, 0.335  # first pass: the 20 % quantile of a bin's levels, over that quantile of chi2(3)/3
KAPPA = 1.15  # texture threshold (chosen on photographs recorded by sensors the benchmark does not use)

#: Mosaic offset (rows, cols) of G2 from G1 for each diagonal the CFA can put it on.
GREEN_OFFSETS: tuple[tuple[int, int], ...] = ((1, -1), (-1, 1), (1, 1), (-1, -1))
_NORM = math.sqrt(1.5)  # sqrt of the sum of the squared weights of e
_R = 3  # the ring: the 40 sites 2 or 3 packed pixels away (Chebyshev), none sharing a pixel with the centre
_RING = tuple((u, v) for u in range(-_R, _R + 1) for v in range(-_R, _R + 1) if max(abs(u), abs(v)) >= 2)
_MARGIN = 1 + _R  # packed pixels lost at each border: 1 for the stencil, _R for the ring
_R_PLANE = 3  # red and blue: the ring of 24 samples 3 packed pixels away
_RING_PLANE = tuple(
    (u, v)
    for u in range(-_R_PLANE, _R_PLANE + 1)
    for v in range(-_R_PLANE, _R_PLANE + 1)
    if max(abs(u), abs(v)) == 3
)


def _texture_upper(t: np.ndarray) -> np.ndarray:
    """Upper edge of texture class ``t`` (normalised variance units)."""
    t = np.asarray(t)
    return np.ldexp(np.where(t % 2 == 0, 0.75, 1.0), t // 2 + _TEX_LOW + 1)


def _texture_lower(t: np.ndarray) -> np.ndarray:
    """Lower edge of texture class ``t``."""
    t = np.asarray(t)
    return np.ldexp(np.where(t % 2 == 0, 0.5, 0.75), t // 2 + _TEX_LOW + 1)


def texture_class(level: np.ndarray) -> np.ndarray:
    """Texture class of float32 neighbour levels (normalised variance): the octave, and whether the mantissa
    is at least 1.5 (half-octave classes: the selection's threshold is at most 1.5 times too strict, where
    whole octaves made it up to 2), from the exponent and first mantissa bits, clamped to the classes."""
    with np.errstate(invalid="ignore"):
        tex = (np.maximum(level, np.float32(0.0)).view(np.int32) >> 22) - 2 * (127 + _TEX_LOW)
    np.clip(tex, 0, N_TEXTURE - 1, out=tex)
    return tex


def _quantile_level(counts: np.ndarray, q: float) -> np.ndarray:
    """Per bin, the ``q`` quantile of the neighbour level, from the class histogram (log-interpolated)."""
    cum = np.cumsum(counts, axis=1)
    target = cum[:, -1:] * q
    t = np.argmax(cum >= target, axis=1)
    below = np.where(t > 0, np.take_along_axis(cum, np.maximum(t - 1, 0)[:, None], axis=1)[:, 0], 0.0)
    inside = np.maximum(np.take_along_axis(counts, t[:, None], axis=1)[:, 0], 1e-300)
    frac = np.clip((target[:, 0] - below) / inside, 0.0, 1.0)
    lo, hi = _texture_lower(t), _texture_upper(t)
    return lo * (hi / lo) ** frac


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
        ``(4, n_bins, N_TEXTURE, N_STATS)`` float64 sums (:data:`STAT_NAMES`), with the samples in channel
        G1 (the other channels zero).
        Add with ``+``.
    """
    p = np.asarray(planes)
    if p.ndim != 3 or p.shape[0] != 4:
        raise ValueError(f"planes must be packed planes (4, h, w), got shape {p.shape}")
    g1, g2 = p[1].astype(np.float32), p[2].astype(np.float32)
    if offset is None:
        offset = detect_offset(g1, g2)
    n_bins = len(edges) - 1
    out = np.zeros((4, n_bins, N_TEXTURE, N_STATS))
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
    out[1] = binned_sums(cells, n_bins * N_TEXTURE, [m, e]).reshape(n_bins, N_TEXTURE, N_STATS)
    for c in (0, 3):
        out[c] = _plane_moments(p[c].astype(np.float32), edges)
    return out


def _plane_moments(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Red or blue: each pixel less the mean of its 4 same-colour neighbours (two mosaic pixels away; weights
    1 and 1/4 four times, so ``Var[e / sqrt(1.25)] = a x + b`` on white noise), binned by that mean; texture
    class from the 24 samples three packed pixels away (Chebyshev), which share no pixel with the sample.
    Coarser than the quincunx (texture leaks more), so the fit uses these only near black, where the read
    term ``b`` dominates and texture, which scales with the signal, is faint."""
    n_bins = len(edges) - 1
    h, w = x.shape
    if min(h, w) <= 2 * (1 + _R_PLANE):
        return np.zeros((n_bins, N_TEXTURE, N_STATS))
    m = 0.25 * (x[:-2, 1:-1] + x[2:, 1:-1] + x[1:-1, :-2] + x[1:-1, 2:])
    e = (x[1:-1, 1:-1] - m) * np.float32(1.0 / math.sqrt(1.25))
    e2 = e * e
    hh, ww = e.shape
    r = _R_PLANE
    scale = np.float32(1.0 / len(_RING_PLANE))
    level = sum(e2[r + u : hh - r + u, r + v : ww - r + v] for u, v in _RING_PLANE) * scale
    around = sum(m[r + u : hh - r + u, r + v : ww - r + v] for u, v in _RING_PLANE) * scale
    e, m = e[r:-r, r:-r], m[r:-r, r:-r]
    keep = np.isfinite(e) & np.isfinite(m) & np.isfinite(level) & np.isfinite(around)
    cells = bin_cells(around, keep, edges) * N_TEXTURE + texture_class(level)
    return binned_sums(cells, n_bins * N_TEXTURE, [m, e]).reshape(n_bins, N_TEXTURE, N_STATS)


class QuincunxEstimate:
    """``(a, b)`` per channel R, G1, G2, B (normalised) from :func:`estimate_noise`; ``flags`` say why not
    (NaN) when the green channel could not be fitted."""

    def __init__(self, a: np.ndarray, b: np.ndarray, flags: list[str], offset: tuple[int, int]):
        self.a, self.b, self.flags, self.offset = a, b, flags, offset

    @property
    def ok(self) -> bool:
        return bool(np.all(np.isfinite(self.a) & np.isfinite(self.b)) and np.all(self.a + self.b > 0))


def estimate_noise(
    planes,
    black_level,
    white_level,
    *,
    cfa: str | None = None,
    min_pixels: int = 4000,
    kappa: float = KAPPA,
    prior: bool = True,
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
    min_pixels, kappa, prior
        As in :func:`fit_green`.

    Returns
    -------
    QuincunxEstimate
        NaN ``a``/``b`` (and the reason in ``flags``) when the green channel cannot be fitted.
    """
    p = np.asarray(planes)
    offset = green_offset(cfa) if cfa else detect_offset(p[1], p[2])
    lower, upper, step = clip_bounds(black_level, white_level)
    fit = _fit(green_moments(p, offset=offset), float(lower[1]), float(upper[1]), float(step[1]), kappa=kappa,
               planes=(lower, step),
               min_pixels=min_pixels, prior=prior)  # fmt: skip
    a, b = _carry(fit.a, fit.b, step)
    return QuincunxEstimate(a, b, fit.flags, offset)


def _carry(a: float, b: float, step: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The green ``(a, b)`` carried over to every channel through its span (one electron and one read noise
    in DN for all), ``b`` never below the rounding to whole DN (``step^2 / 12``)."""
    ratio = step / step[1]
    if math.isfinite(a):
        b = max(b, float(step[1]) ** 2 / 12.0)
    return a * ratio, b * ratio**2


def fit_frames(
    parts: list[np.ndarray], *, lower, upper, dn_step, iso: float = math.nan, bootstrap: int = 200, seed: int = 0,
    kappa: float = KAPPA, min_pixels: int = 20_000, prior: bool = True, edges: np.ndarray = BIN_EDGES,
) -> ISOFit:  # fmt: skip
    """``(a, b)`` per channel at one ISO from the green quincunx moments of several frames (``noise-fit
    --method single``): one fit of their summed moments (:func:`fit_green`), carried over to red and blue as
    :func:`estimate_noise` does.

    Parameters
    ----------
    parts
        :func:`green_moments` of each frame; frames are the bootstrap units.
    lower, upper, dn_step
        Per channel (4,), from :func:`rawlab.noise.moments.clip_bounds` of the frames' levels.
    iso
        Reported in the result.
    bootstrap, seed
        Resamples of the frames for the standard errors (with 3 frames or more; otherwise, and when
        ``bootstrap`` is 0, the fit's own: the Gauss-Newton covariance of its loss, prior included).
    kappa, min_pixels, prior, edges
        As in :func:`fit_green`.

    Returns
    -------
    ISOFit
        ``method = "single"``; too little signal is flagged (NaN), never raised.

    Raises
    ------
    RawlabError
        No parts, or parts of the wrong shape.
    """
    if not parts:
        raise RawlabError("fit_frames got no frames: nothing to fit")
    arr = np.stack([np.asarray(p, dtype=np.float64) for p in parts])
    if arr.ndim != 5 or arr.shape[1] != 4 or arr.shape[3:] != (N_TEXTURE, N_STATS):
        raise RawlabError(
            f"green quincunx moments must have shape (4, n_bins, {N_TEXTURE}, {N_STATS}) as green_moments "
            f"returns, got {arr.shape[1:]}"
        )
    lo, hi, step = (np.broadcast_to(np.asarray(v, np.float64), (4,)) for v in (lower, upper, dn_step))
    n_parts = len(arr)
    result = ISOFit.empty(float(iso), n_parts, "single")
    args = (float(lo[1]), float(hi[1]), float(step[1]))
    fit = _fit(
        arr.sum(axis=0),
        *args,
        kappa=kappa,
        min_pixels=min_pixels,
        prior=prior,
        edges=edges,
        planes=(lo, step),
    )
    for f in fit.flags:
        result.flag(f)
    if not math.isfinite(fit.a):
        return result
    result.a, result.b = _carry(fit.a, fit.b, step)
    ratio = step / step[1]
    se_fit = np.array([fit.a_sd, fit.b_sd])
    se = se_fit
    if n_parts >= 3 and bootstrap > 0:
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(bootstrap):  # the selection of the full fit, one round from its (a, b): fast
            pick = arr[rng.integers(n_parts, size=n_parts)].sum(axis=0)
            f = _fit(
                pick,
                *args,
                kappa=kappa,
                min_pixels=min_pixels,
                prior=prior,
                edges=edges,
                start=fit,
                planes=(lo, step),
            )
            if math.isfinite(f.a):
                draws.append((f.a, max(f.b, float(step[1]) ** 2 / 12.0)))
        if len(draws) >= 2:
            se = np.std(np.array(draws), axis=0, ddof=1)
            result.extra["a_stderr_bootstrap"] = (se[0] * ratio).tolist()
            result.extra["b_stderr_bootstrap"] = (se[1] * ratio**2).tolist()
    elif bootstrap > 0:
        result.flag(
            "fewer than 3 frames: standard errors from the fit's covariance (bootstrap not meaningful)"
        )
    result.a_stderr, result.b_stderr = se[0] * ratio, se[1] * ratio**2
    result.extra["a_stderr_wls"] = (se_fit[0] * ratio).tolist()
    result.extra["b_stderr_wls"] = (se_fit[1] * ratio**2).tolist()
    result.extra["n_pixels_channel"] = [2 * int(fit.n)] * 4  # a sample: one G1 and one G2 pixel
    result.n_pixels = 2 * int(fit.n)
    return result


# -- the fit ---------------------------------------------------------------------------------------------------

_ROUNDS = 4
_RELAX = (
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    8.0,
)  # texture thresholds tried in turn, times kappa, while too few samples pass
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


def _solve(groups, a0, b0, prior: bool, fix_a: bool = False) -> tuple[float, float, float, float]:
    """``(a, b) >= 0`` minimising the lower-envelope loss of the log-ratios of observed to modelled bin
    variance, each in units of its sampling sd (``sqrt(2 / n)``), plus the read-noise prior's term
    (:func:`rawlab.noise.prior.prior_residual`) if ``prior``; and the sd of ``a`` and ``b`` from the loss's
    Gauss-Newton curvature. ``groups``: ``(xm, v, n, ratio, lo, hi, step)`` per channel, whose ``(a, b)`` are
    the green's times ``(ratio, ratio^2)``."""
    from scipy.optimize import least_squares

    sa, sb = max(a0, 1e-9), max(b0, 1e-12)
    used = []
    for xm, v, n, r, lo, hi, step in groups:
        # Bins mostly clipped (a saturated sky, a black-clipped shadow) say little and depend on the tail of
        # the model: left out, as in rawlab.noise.fit (fewer than a quarter of the pixels unclipped).
        keep = _model(xm, a0 * r, b0 * r * r, lo, hi, step, inside=True)[1] >= 0.25
        used.append((xm[keep], v[keep], n[keep], r, lo, hi, step))

    def res(q):
        if fix_a:
            q = (a0 / sa, q[0])
        out = []
        for xm, v, n, r, lo, hi, step in used:
            model = np.maximum(_model(xm, q[0] * sa * r, q[1] * sb * r * r, lo, hi, step), 1e-30)
            out.append(_envelope(np.sqrt(n / 2.0) * np.log(v / model)))
        if prior:
            out.append([prior_residual(q[0] * sa, q[1] * sb)])
        return np.concatenate(out)

    if fix_a:
        fit = least_squares(res, [b0 / sb], bounds=([0.0], [np.inf]))
        q = np.array([a0 / sa, fit.x[0]])
        sd = np.array([math.nan, math.sqrt(max(np.linalg.pinv(fit.jac.T @ fit.jac)[0, 0], 0.0))])
        return float(q[0] * sa), float(q[1] * sb), float(sd[0]), float(sd[1] * sb)
    fit = least_squares(res, [a0 / sa, b0 / sb], bounds=([0.0, 0.0], [np.inf, np.inf]))
    q = fit.x
    cov = np.linalg.pinv(fit.jac.T @ fit.jac)
    sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
    return float(q[0] * sa), float(q[1] * sb), float(sd[0] * sa), float(sd[1] * sb)


class _GreenFit:
    """What :func:`_fit` found: ``(a, b)`` of the green channel, their sd, the samples used, the selection
    limit per bin, and why not (NaN) if not."""

    def __init__(self, a=math.nan, b=math.nan, a_sd=math.nan, b_sd=math.nan, n=0, limit=None, flags=()):
        self.a, self.b, self.a_sd, self.b_sd, self.n, self.limit = a, b, a_sd, b_sd, n, limit
        self.flags = list(flags)


def fit_green(moments: np.ndarray, lower: float, upper: float, step: float, *, kappa: float = KAPPA,
              min_pixels: int = 4000, edges: np.ndarray = BIN_EDGES, prior: bool = True,
              ) -> tuple[float, float, list[str]]:  # fmt: skip
    """``(a, b)`` of the green channel from :func:`green_moments` (channel G1), and why not (NaN) if not.

    Per signal bin the samples are summed over the texture classes compatible with noise alone: first those
    up to ``kappa`` times a low quantile of the bin's own levels, then up to ``kappa`` times the model's
    variance (iterated). The model is fitted to the bins' mean ``e^2 / 1.5`` with the clipped Poisson-Gaussian
    model everywhere (Foi et al. 2008), bins next to black and white included: they carry ``b``. The fit
    follows the lower envelope of the bins (texture only adds variance). With ``prior``, the read-noise prior
    of :mod:`rawlab.noise.prior` joins the loss: it decides ``b`` where the bins cannot.
    """
    fit = _fit(moments, lower, upper, step, kappa=kappa, min_pixels=min_pixels, edges=edges, prior=prior)
    return fit.a, fit.b, fit.flags


def _fit(moments, lower, upper, step, *, kappa, min_pixels, prior, edges=BIN_EDGES, start=None,
         planes=None) -> _GreenFit:  # fmt: skip
    """:func:`fit_green`'s work. Where too few samples pass the texture threshold (a frame that is texture
    nearly everywhere), the threshold is relaxed (``kappa`` times 1.5 up to 8) before giving up: a looser
    selection lets some texture in, but says more than nothing. ``start``: a previous :class:`_GreenFit`
    whose selection and ``(a, b)`` are reused for one round (the bootstrap of :func:`fit_frames`).
    ``planes``: ``(lower, step)`` per channel (4,), to add the red and blue samples near black
    (:func:`_with_planes`); ``None``: green only."""
    kw = dict(min_pixels=min_pixels, prior=prior, edges=edges, planes=planes)
    if start is not None:
        return _fit_once(moments, lower, upper, step, kappa=kappa, start=start, **kw)
    for relax in _RELAX:
        fit = _fit_once(moments, lower, upper, step, kappa=kappa * relax, **kw)
        if math.isfinite(fit.a) or not fit.flags[0].startswith("too little"):
            return fit
    return fit


def _fit_once(
    moments, lower, upper, step, *, kappa, min_pixels, prior, edges, planes, start=None
) -> _GreenFit:
    m = np.asarray(moments, np.float64)
    g = m[1]  # (bins, classes, stats)
    counts = g[:, :, 0]
    upper_edge = _texture_upper(np.arange(N_TEXTURE))[None, :]
    if start is None:
        limit = kappa * _quantile_level(counts, _Q0) / _Q0_CHI2
        a = b = math.nan
        rounds = _ROUNDS
    else:
        limit, a, b, rounds = start.limit, start.a, start.b, 1
    for _ in range(rounds):
        sel = (g * (upper_edge <= limit[:, None])[..., None]).sum(axis=1)
        n = sel[:, 0]
        ok = (n >= _MIN_BIN) & (sel[:, 4] > 0)
        if 4 * n[ok].sum() < min_pixels or ok.sum() < 3:
            why = f"too little smooth green signal: {4 * int(n[ok].sum())} usable pixels (< {min_pixels})"
            return _GreenFit(flags=[why])
        xm, v, nk = sel[ok, 1] / n[ok], sel[ok, 4] / n[ok], n[ok]
        if not np.isfinite(a):  # start: a line through the bins' lower envelope, far from the bounds
            a, b = _start(xm, v, nk, lower, upper)
        green = [(xm, v, nk, 1.0, lower, upper, step)]
        a, b, a_sd, b_sd = _solve(green, a, b, prior)
        if not a + b > 0:
            return _GreenFit(flags=["the green fit found no noise"])
        if start is None:
            centre = np.clip(0.5 * (edges[:-1] + edges[1:]), lower, upper)
            limit = kappa * np.maximum(_model(centre, a, b, lower, upper, step), 1e-30)
    if np.ptp(xm) <= 0:
        return _GreenFit(flags=["the green signal spans one bin: a cannot be told from b"])
    if planes is not None and (m[0, ..., 0].any() or m[3, ..., 0].any()):
        b, b_sd = _with_planes(m, green, a, b, b_sd, kappa, prior, planes, edges, 1 if start else 2)
    return _GreenFit(a, b, a_sd, b_sd, int(nk.sum()), limit)


def _with_planes(m, green, a, b, b_sd, kappa, prior, planes, edges, rounds):
    """Refit ``b`` (``a`` kept: the green measures it best) with the red and blue bins near black added to the
    green ones: bins where the model's read term is at least its shot term (``a_c x <= b_c``), of the
    texture classes up to ``kappa`` times the model. (A threshold from the bins' own levels, which would let
    them correct a green ``b`` far too low, also lets dark texture in: on the tuning sensors it doubled the
    median ``|db|/b``.) Red and blue are darker than green in a raw (not white-balanced), so they add signal near black,
    where ``b`` is measured; their ``(a, b)`` are the green's carried over by span, as :func:`estimate_noise`
    reports them."""
    lower4, step4 = (np.broadcast_to(np.asarray(v, np.float64), (4,)) for v in planes)
    ratio = step4 / step4[1]
    upper_edge = _texture_upper(np.arange(N_TEXTURE))[None, :]
    centre = 0.5 * (edges[:-1] + edges[1:])
    for _ in range(rounds):
        groups = list(green)
        for c in (0, 3):
            r, lo, st = float(ratio[c]), float(lower4[c]), float(step4[c])
            model = _model(np.clip(centre, lo, 1.0), a * r, b * r * r, lo, 1.0, st)
            sel = (m[c] * (upper_edge <= kappa * np.maximum(model, 1e-30)[:, None])[..., None]).sum(axis=1)
            n = sel[:, 0]
            xm = sel[:, 1] / np.maximum(n, 1.0)
            v = sel[:, 4] / np.maximum(n, 1.0)
            ok = (
                (n >= _MIN_BIN) & (v > 0) & (a * r * np.maximum(xm, 0.0) <= b * r * r)
            )  # the read term dominates
            if ok.any():
                groups.append((xm[ok], v[ok], n[ok], r, lo, 1.0, st))
        if len(groups) == 1:
            break
        _, b, _, b_sd = _solve(groups, a, b, prior, fix_a=True)
    return b, b_sd


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

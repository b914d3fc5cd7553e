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
times the model's variance (``kappa``), which rejects texture that a looser threshold lets through. The partial sums have the layout of :func:`rawlab.noise.single.single_moments` in the green
channel, and :func:`rawlab.noise.single.fit_channel` fits them the same way (texture classes compatible with
the model, lower-envelope fit, clipped model near the bounds).

Red and blue have no same-colour neighbour closer than two pixels, so their ``(a, b)`` are the green ones
carried over through the normalisation: one electron is ``a_c = a_G span_G / span_c`` in channel ``c`` (span
``white - black_c`` in DN) and the read noise in DN is shared, ``b_c = b_G (span_G / span_c)^2``. That is
exact when the channels share one conversion gain (the usual case: raw data is not white-balanced, and a DNG
``NoiseProfile`` usually has one pair for all planes); sensors with per-channel analog gain differ from it by
that gain (a few per cent on some phones).

The CFA fixes where ``G2`` sits against ``G1`` (one of four diagonal offsets); without it the offset is the
one that leaves the least residual (the three wrong stencils are not exact on gradients).

Measured (``benchmarks/noise_estimate.py``, 178 frames, 384x512 mosaic): on eight photographs and three real
raw crops recorded by eight sensors none of this was tuned on (``a`` 1.3e-5 to 3.9e-2), median ``|da|/a``
17.9 % (Foi per plane: 100 %, it fails on most frames and falls back to ``a = 0``) and 13.3 % where the added
``a`` is at least ten times the photograph's own grain; ``|db|/b`` about 100 % (``b`` is read in the deep
shadows, which few photographs have: where the fit cannot tell ``b`` from 0 it reports the rounding floor
``step^2 / 12``). Real crops: 15.0 % / 35.0 %. Frames too close to a clipping bound for the linear stage
(a night sky, ``a`` of a few 1e-2) are not fitted and fall back (:func:`rawlab.deploy.noiseparams.single_image_noise`).
"""

from __future__ import annotations

import math

import numpy as np

from ..bayer import channel_offsets
from .fit import ISOFit
from .moments import BIN_EDGES, bin_cells, binned_sums, clip_bounds
from .single import N_SINGLE_STATS, N_TEXTURE, fit_channel, texture_class

__all__ = ["GREEN_OFFSETS", "QuincunxEstimate", "estimate_noise", "green_moments", "green_offset"]

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
    """``(a, b)`` per channel R, G1, G2, B (normalised) from :func:`estimate_noise`, and the green fit."""

    def __init__(self, a: np.ndarray, b: np.ndarray, fit: ISOFit, offset: tuple[int, int]):
        self.a, self.b, self.fit, self.offset = a, b, fit, offset

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
        As in :func:`rawlab.noise.single.fit_single`.

    Returns
    -------
    QuincunxEstimate
        NaN ``a``/``b`` (and the reason in ``fit.flags``) when the green channel cannot be fitted.
    """
    p = np.asarray(planes)
    offset = green_offset(cfa) if cfa else detect_offset(p[1], p[2])
    lower, upper, step = clip_bounds(black_level, white_level)
    arr = green_moments(p, offset=offset)[None]
    lo, hi, st = (np.asarray(v, np.float64)[None] for v in (lower, upper, step))
    fit = ISOFit.empty(math.nan, 1, "single")
    fit_channel(
        fit, arr, 1, lo, hi, st, np.random.default_rng(0), bootstrap=0, min_pixels=min_pixels, min_bin_count=16,
        clipping="model", kappa=kappa, max_rel_stderr=math.inf, edges=BIN_EDGES,
    )  # fmt: skip
    # A term the fit cannot tell from zero (b under shot noise, a under read noise) is still its best value.
    # The green fit carried over to every channel through its span (one electron, one read noise in DN).
    ratio = step / np.mean(step[1:3])
    # (store_channel leaves a term at exactly 0 unreported: it is 0 when the other one was fitted.)
    a, b = float(fit.a[1]), float(fit.b[1])
    if math.isfinite(a) or math.isfinite(b):
        a, b = (max(v, 0.0) if math.isfinite(v) else 0.0 for v in (a, b))
        b = max(b, float(np.mean(step[1:3])) ** 2 / 12.0)  # never below the rounding to whole DN
    return QuincunxEstimate(a * ratio, b * ratio**2, fit, offset)

"""Single-image noise estimation for unpaired frames (Foi et al. 2008, "Practical Poissonian-Gaussian noise
modeling and fitting for single-image raw-data", IEEE TIP 17(10)).

Foi's method takes, in smooth parts of one image, local estimates of the signal (a smoothed value) and of the
noise (a wavelet detail, scaled to unit gain on white noise), groups them by signal level, and fits the
clipped Poisson-Gaussian model to the per-level statistics. Here, per chunk and packed plane, on 4x4 blocks
split into four 2x2 sub-blocks:

- the **noise sample** of a sub-block is its diagonal Haar detail ``d = (p00 - p01 - p10 + p11) / 2``:
  ``Var[d] = Var[noise]`` for white noise (orthonormal), and any locally bilinear signal (flat, gradients)
  cancels exactly, so only curvature and texture leak into it;
- its **signal** is the sub-block mean;
- it is **binned** by the mean of the other twelve pixels of the block, and its **texture class** is the
  octave of the mean of the other three sub-blocks' ``d^2`` (a local noise-plus-texture level that ignores
  gradients). Both come from pixels other than the sample's own, so grouping and selecting by them does not
  bias the sample's statistics (binning by the sample's own mean would: Foi et al. need a correction for it).

The partial sums (count, sum and sum of squares of the sub-block mean and of ``d``) per channel, signal bin and
texture class add across chunks and frames. :func:`fit_single` keeps, per signal bin, the texture classes
compatible with noise alone: first against a low quantile of the bin's own levels, then against the fitted
model (iterated): samples whose neighbours' detail exceeds ``kappa`` times the model variance are texture.
Texture that the neighbours do not show still inflates some bins; the fit follows the lower envelope of the
bins (a loss that lets bins above the model lose their pull, :func:`rawlab.noise.fit.solve_channel` with
``robust``) and uses the clipped model of :mod:`rawlab.noise.fit` near the bounds.

Measured bias (``tests/test_noise_fit.py``, 384x512 synthetic frames, SynthCam PG-1 and MP-2): on the chart
alone ``a`` is within a few % (slightly low, -1 to -3 %: the envelope fit); with the three photographs added,
``a`` is high by about 6-9 % (median over ISOs and channels), worst 13-18 %, most at low ISO where texture is
large against the noise; ``b`` within about 3-5 % (median). Real frames are larger (more smooth samples per
bin), which helps both.

On single photographs (``benchmarks/noise_estimate.py``, #12: 384x512 frames, eight sensors from ``a`` 1e-5
to 4e-2), one frame is too little for this method: on most frames no channel is fitted (too few smooth bins
survive the texture selection), and where it is, texture reads as noise (``coffee`` at ``a = 5e-4``: +25 to
+45 %). ``rawlab denoise`` therefore estimates from the green quincunx first
(:mod:`rawlab.noise.quincunx`, median ``|da|/a`` 14 % on the same frames) and uses this method only when
that fails; ``noise-fit --method single``, with many frames and chunks, still uses this one.
"""

from __future__ import annotations

import math

import numpy as np

from ..bayer import CHANNELS
from ..errors import RawlabError
from .fit import Bins, ISOFit, TooLittleSignal, bootstrap_stderr, solve_channel, store_channel
from .moments import BIN_EDGES, _block_sum, bin_cells, binned_sums

__all__ = [
    "N_SINGLE_STATS", "N_TEXTURE", "SINGLE_STAT_NAMES", "fit_channel", "fit_single", "single_moments", "texture_class",
]  # fmt: skip

#: Partial sums per (channel, bin, texture class): count, sum and sum of squares of the sub-block mean and
#: of its diagonal detail.
SINGLE_STAT_NAMES: tuple[str, ...] = ("n", "m", "m2", "d", "d2")
N_SINGLE_STATS: int = len(SINGLE_STAT_NAMES)
_TEX_LOW = (
    -36
)  # texture class t holds neighbour detail levels in [2**(t - 36), 2**(t - 35)); class 0 also below
N_TEXTURE: int = 37  # ... up to 2**0 (and above, in the last class)
_Q0, _Q0_CHI2 = 0.2, 0.335
_ROUNDS = 3


def _texture_upper(t: np.ndarray) -> np.ndarray:
    """Upper edge of texture class ``t`` (normalised variance units)."""
    return np.ldexp(1.0, np.asarray(t) + _TEX_LOW + 1)


def single_moments(planes, *, lower, upper, edges: np.ndarray = BIN_EDGES) -> np.ndarray:
    """Binned partial sums of one chunk of an unpaired frame, for :func:`fit_single`.

    Parameters
    ----------
    planes
        Normalised packed planes ``(4, h, w)``, float32 or float64. Rows and columns past a multiple of 4
        are ignored (the statistics work on 4x4 blocks; store chunks are multiples of 4).
    lower, upper
        Per channel (4,), normalised values of 0 DN and of white. Kept for symmetry with
        :func:`rawlab.noise.moments.pair_moments` and checked; the clipped values stay in (the fit models
        them as censored).
    edges
        Bin edges over the signal (normalised), default :data:`rawlab.noise.moments.BIN_EDGES`.

    Returns
    -------
    numpy.ndarray
        ``(4, n_bins, N_TEXTURE, N_SINGLE_STATS)`` float64 sums (see the module docstring); add with ``+``.
    """
    p = np.asarray(planes)
    if p.ndim != 3 or p.shape[0] != 4:
        raise ValueError(f"planes must be packed planes (4, h, w), got shape {p.shape}")
    for name, v in (("lower", lower), ("upper", upper)):
        if np.shape(np.ravel(v)) not in ((1,), (4,)):
            raise ValueError(f"{name} needs one value per channel R, G1, G2, B")
    if p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float64)
    n_bins = len(edges) - 1
    h4, w4 = p.shape[1] - p.shape[1] % 4, p.shape[2] - p.shape[2] % 4
    out = np.zeros((4, n_bins, N_TEXTURE, N_SINGLE_STATS))
    if h4 and w4:
        for c in range(4):  # channel by channel: the temporaries stay in cache
            out[c] = _single_plane(p[c, :h4, :w4], edges)
    return out


def _single_plane(plane: np.ndarray, edges: np.ndarray) -> np.ndarray:
    n_bins = len(edges) - 1
    h, w = plane.shape
    # (block row, sub-block row, pixel row, block col, sub-block col, pixel col)
    q = plane.reshape(h // 4, 2, 2, w // 4, 2, 2)
    p00, p01 = q[:, :, 0, :, :, 0], q[:, :, 0, :, :, 1]
    p10, p11 = q[:, :, 1, :, :, 0], q[:, :, 1, :, :, 1]
    sub = p00 + p01 + p10 + p11  # (H, 2, W, 2): sub-block sums
    detail = (p00 - p01 - p10 + p11) * 0.5
    others = (_block_sum(sub) - sub) * (1.0 / 12.0)
    d2 = (detail * detail).astype(np.float32)
    level = (_block_sum(d2) - d2) * np.float32(1.0 / 3.0)
    tex = texture_class(level)
    keep = np.isfinite(sub) & np.isfinite(detail)
    cells = bin_cells(others.astype(np.float32, copy=False), keep, edges) * N_TEXTURE + tex  # dump clamped
    sums = binned_sums(cells, n_bins * N_TEXTURE, [sub * 0.25, detail])
    return sums.reshape(n_bins, N_TEXTURE, N_SINGLE_STATS)


def texture_class(level: np.ndarray) -> np.ndarray:
    """Texture class of float32 neighbour detail levels (normalised variance): the octave, from the exponent
    bits, offset so that class ``t`` holds ``[2**(t - 36), 2**(t - 35))``, clamped to the classes."""
    with np.errstate(invalid="ignore"):
        tex = (np.maximum(level, np.float32(0.0)).view(np.int32) >> 23) - (127 + _TEX_LOW)
    np.clip(tex, 0, N_TEXTURE - 1, out=tex)
    return tex


def _select(total: np.ndarray, limit: np.ndarray) -> np.ndarray:
    """Mask (n_bins, N_TEXTURE): classes whose upper edge is at most ``limit`` (per bin)."""
    return _texture_upper(np.arange(N_TEXTURE))[None, :] <= limit[:, None]


def _quantile_level(counts: np.ndarray, q: float) -> np.ndarray:
    """Per bin, the ``q`` quantile of the neighbour detail level, from the class histogram (log-interpolated)."""
    cum = np.cumsum(counts, axis=1)
    target = cum[:, -1:] * q
    t = np.argmax(cum >= target, axis=1)
    below = np.where(t > 0, np.take_along_axis(cum, np.maximum(t - 1, 0)[:, None], axis=1)[:, 0], 0.0)
    inside = np.maximum(np.take_along_axis(counts, t[:, None], axis=1)[:, 0], 1e-300)
    frac = np.clip((target[:, 0] - below) / inside, 0.0, 1.0)
    return _texture_upper(t) * 2.0 ** (frac - 1.0)


def _bins(parts: np.ndarray, c: int, mask: np.ndarray, lower, upper, step, min_bin_count: int) -> Bins:
    """Single-image bins of channel ``c`` for every part (frame), summing the selected texture classes."""
    st = (parts[:, c] * mask[None, :, :, None]).sum(axis=2)  # (parts, bins, stats)
    n = st[..., 0]
    ok = n >= max(min_bin_count, 2)
    nn = np.where(ok, n, 1.0)
    xm = st[..., 1] / nn
    xv = np.maximum(st[..., 2] / nn - xm**2, 0.0) * nn / np.maximum(nn - 1, 1)
    v = st[..., 4] / nn  # mean square of a zero-mean detail
    frame = np.broadcast_to(np.arange(len(parts))[:, None], n.shape)
    size = int(ok.sum())
    lo = np.broadcast_to(lower[:, c][:, None], n.shape)[ok]
    hi = np.broadcast_to(upper[:, c][:, None], n.shape)[ok]
    zeros, ones = np.zeros(size, dtype=int), np.ones(size)
    return Bins(
        frame=frame[ok], n=n[ok], xm=xm[ok], xv=xv[ok], v=v[ok], g=ones, k=ones, lo=lo, hi=hi,
        step=np.broadcast_to(step[:, c][:, None], n.shape)[ok], pi=zeros, pj=zeros, tj=0.0 * ones, kind="single",
    )  # fmt: skip


def _per_part(values, n_parts: int, default: float) -> np.ndarray:
    if values is None:
        return np.full((n_parts, 4), default)
    v = np.asarray(values, dtype=np.float64)
    v = np.broadcast_to(v.reshape(-1, 4) if v.size % 4 == 0 else v, (n_parts, 4))
    return np.array(v)


def fit_channel(
    result: ISOFit, arr: np.ndarray, c: int, lo, hi, step, rng, *, bootstrap: int, min_pixels: int,
    min_bin_count: int, clipping: str, kappa: float, max_rel_stderr: float, edges: np.ndarray,
) -> None:  # fmt: skip
    """Fit channel ``c`` of stacked single-image moments ``arr`` ``(n_parts, 4, n_bins, N_TEXTURE,
    N_SINGLE_STATS)`` into ``result`` (see :func:`fit_single`; ``lo``, ``hi``, ``step`` per part and channel).
    Shared with :mod:`rawlab.noise.quincunx`, whose moments have the same layout."""
    cname = CHANNELS[c]
    n_parts = len(arr)
    total = arr.sum(axis=0)
    counts = total[c, :, :, 0]
    # First pass: a low quantile of the bin's neighbour level stands for its noise (the 20 % quantile of
    # chi2 with 3 dof over 3 is 0.335): right as long as a fifth of the bin is smooth.
    mask = _select(total[c], kappa * _quantile_level(counts, _Q0) / _Q0_CHI2)
    fit = None
    for _ in range(_ROUNDS):
        bins = _bins(arr, c, mask, lo, hi, step, min_bin_count)
        if 4 * bins.n.sum() < min_pixels:  # a sample is a 2x2 sub-block: 4 pixels
            break
        try:
            fit = solve_channel(bins, bins, 1, clipping, robust=True)
        except (TooLittleSignal, np.linalg.LinAlgError) as exc:
            result.flag(f"channel {cname} not fitted: {exc}")
            fit = None
            break
        # Re-select against the model's variance at each bin's signal (bin centre).
        x = np.maximum(0.5 * (edges[:-1] + edges[1:]), 0.0)
        mask = _select(total[c], kappa * np.maximum(fit.theta[0] * x + fit.theta[1], 1e-30))
    if fit is None:
        if not any(f"channel {cname}" in f for f in result.flags):
            n = 4 * int(bins.n.sum())
            result.flag(f"too little signal in channel {cname}: {n} usable pixels (< {min_pixels})")
        return
    se_boot = bootstrap_stderr(fit, [np.arange(n_parts)], n_parts, bootstrap, rng)
    se_wls = np.sqrt(np.maximum(np.diag(fit.cov), 0.0))
    store_channel(result, c, fit, 0, 1, se_boot, se_wls, max_rel_stderr)
    result.extra["n_pixels_channel"][c] *= 4


def fit_single(
    parts: list[np.ndarray],
    *,
    lower=0.0,
    upper=1.0,
    iso: float = math.nan,
    dn_step=None,
    bootstrap: int = 200,
    seed: int = 0,
    min_pixels: int = 20_000,
    min_bin_count: int = 16,
    clipping: str = "model",
    kappa: float = 2.0,
    max_rel_stderr: float = 0.5,
    edges: np.ndarray = BIN_EDGES,
) -> ISOFit:
    """Fit ``a, b`` per channel at one ISO from single-image moments (one part per frame).

    Parameters
    ----------
    parts
        :func:`single_moments` of each frame (summed over its chunks); frames are the bootstrap units.
    lower, upper
        Normalised clipping bounds, per channel (4,) or per part and channel (n_parts, 4).
    iso
        Reported in the result.
    dn_step
        One DN in normalised units, ``1 / (white - black_c)``, per channel (optional; enables the
        quantisation terms of the clipped model).
    bootstrap, seed, min_pixels, min_bin_count, clipping, max_rel_stderr
        As in :func:`rawlab.noise.fit.fit_pairs`.
    edges
        The bin edges the moments were made with.
    kappa
        Texture threshold: a sample is kept when its neighbours' detail level is below ``kappa`` times the
        noise variance at its signal level (2 keeps most, 80-90 %, of the samples of a flat region).

    Returns
    -------
    ISOFit
        ``method = "single"``. Too little signal is flagged (NaN), never raised.

    Raises
    ------
    RawlabError
        No parts, or parts of the wrong shape.
    """
    if not parts:
        raise RawlabError("fit_single got no frames: nothing to fit")
    arr = np.stack([np.asarray(p, dtype=np.float64) for p in parts])
    if arr.ndim != 5 or arr.shape[1] != 4 or arr.shape[3:] != (N_TEXTURE, N_SINGLE_STATS):
        raise RawlabError(
            f"single-image moments must have shape (4, n_bins, {N_TEXTURE}, {N_SINGLE_STATS}) as single_moments "
            f"returns, got {arr.shape[1:]}"
        )
    n_parts = len(arr)
    lo, hi = _per_part(lower, n_parts, 0.0), _per_part(upper, n_parts, 1.0)
    step = _per_part(dn_step, n_parts, 0.0)
    result = ISOFit.empty(float(iso), n_parts, "single")
    rng = np.random.default_rng(seed)
    for c in range(4):
        fit_channel(result, arr, c, lo, hi, step, rng, bootstrap=bootstrap, min_pixels=min_pixels,
                    min_bin_count=min_bin_count, clipping=clipping, kappa=kappa, max_rel_stderr=max_rel_stderr,
                    edges=edges)  # fmt: skip
    if n_parts < 3 and bootstrap > 0:
        result.flag("fewer than 3 frames: standard errors from the WLS covariance (bootstrap not meaningful)")
    result.n_pixels = int(sum(result.extra["n_pixels_channel"]))
    return result

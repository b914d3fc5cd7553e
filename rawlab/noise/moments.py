"""Per-chunk partial sums of paired noisy/reference statistics, binned by signal level.

The paired noise fit (:mod:`rawlab.noise.fit`) needs, per CFA channel and signal bin, the mean signal and the
variance of the residual ``r = noisy - gain * ref``. Both come from sums (count, sum, sum of squares) that
add across chunks, so a store of any size is characterised in one pass: map :func:`pair_moments` over aligned
chunks of a pair and reduce with ``+`` (:func:`reduce_moments`), as STYLE.md asks for noise statistics.

Which signal a pixel is binned by
---------------------------------
The bin variable must not share noise with the residual it bins: binning by the noisy value (or by the
pixel's own reference value) selects on the noise and biases the per-bin variance. Here a pixel is binned by
``s``, gain times the mean of the *other* 15 reference pixels of its 4x4 block in the packed plane. ``s`` is
independent of the pixel's own noise in both frames, so, given the bin, ``E[r] = 0`` and
``Var[r] = E[Var(r | x)]``, linear in ``E[x | bin]``, which the bin mean of ``gain * ref`` at the pixel itself
estimates without bias. That holds for any scene (flat chart patches or texture) and any reference noise:
the bin variable only groups pixels (averaging 15 keeps each bin's signal spread small, which the clipped
model near the bounds needs). Blocks never straddle a chunk boundary: the sums of a frame split at
multiples of 4 add up to those of the whole frame exactly (up to rounding).

The same independence makes a selection free of bias: a pixel counts as *flat* when its block-mates'
references vary less than their residuals (texture below the noise) and it is not an isolated outlier among
them. The fit uses the flat pixels near the clipping bounds, where it needs homogeneous bins.

Pixels whose reference is clipped (0 DN or white) carry no usable signal estimate and are dropped; the fit
models the truncation this leaves on the reference and the censoring of the noisy frame (Foi et al. 2008).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = [
    "BIN_EDGES",
    "FLAT_KAPPA",
    "N_BINS",
    "N_STATS",
    "OUTLIER_K",
    "STAT_NAMES",
    "bin_cells",
    "bin_index",
    "binned_sums",
    "clip_bounds",
    "pair_moments",
    "reduce_moments",
]

# -- bin edges ------------------------------------------------------------------------------------------------
# Signal axis in normalised units. Below the knee the edges are uniform in asinh(x / X0): linear with a width
# of about 1.3e-4 (half a 12-bit DN) within +-1e-3 of black, where read noise dominates, black clipping acts
# and values go slightly negative; log-spaced (about 14 % per bin) above a few 1e-3, where shot noise grows
# with the signal. Above the knee they are linear again, about 0.0125 wide up to 1.05, so that the bins in
# which white clipping acts (within a few sigma of 1.0 at high ISO) are narrow enough for the clipped model to
# be evaluated at the bin mean, and bins past white (reference saturated) stay visible. 96 bins in all.
#
# Binning is a table look-up on the float32 bit pattern of ``s + _OFFSET`` (positive floats order like their
# bits, and the top bits are a piecewise-linear log2): one shift and one gather per sample instead of a
# search. The edges are snapped to that table's buckets (relative step 2**-10 of the value plus offset, i.e.
# 1e-5 near black and 1e-3 near white), so BIN_EDGES below are exactly the edges applied, up to the float32
# rounding of the bin variable.
_X0 = 1e-3
_XMIN = -0.005
_KNEE = 0.8
_XMAX = 1.05
_N_ASINH = 76
_N_LINEAR = 20
_OFFSET = np.float32(0.0051)  # makes every binned value positive, so its bits order like its value
_SHIFT = 13  # keep 10 mantissa bits


def _target_edges() -> np.ndarray:
    u0 = np.arcsinh(_XMIN / _X0)
    u = np.linspace(u0, np.arcsinh(_KNEE / _X0), _N_ASINH + 1)
    return np.concatenate([_X0 * np.sinh(u), np.linspace(_KNEE, _XMAX, _N_LINEAR + 1)[1:]])


def _bucket(values) -> np.ndarray:
    """Table bucket of normalised values: top bits of float32(value + offset)."""
    v = np.asarray(values, dtype=np.float32) + _OFFSET
    return v.view(np.int32) >> _SHIFT


def _bucket_start(bucket) -> np.ndarray:
    return (np.asarray(bucket, dtype=np.int32) << _SHIFT).view(np.float32).astype(np.float64) - float(_OFFSET)


def _build_table() -> tuple[np.ndarray, np.ndarray, int]:
    """Snapped edges, and the look-up table bucket -> bin (``n_bins`` = outside), first table bucket."""
    target = _target_edges()
    b = _bucket(target)
    lo, hi = _bucket_start(b), _bucket_start(b + 1)
    b = np.where(np.abs(hi - target) < np.abs(target - lo), b + 1, b)  # nearest bucket boundary
    n_bins = len(b) - 1
    first = int(b[0]) - 1  # entry 0: everything below the first edge; last entry: at or above the last
    table = np.full(int(b[-1]) - first + 1, n_bins, dtype=np.int32)
    for k in range(n_bins):
        table[b[k] - first : b[k + 1] - first] = k
    return _bucket_start(b), table, first


BIN_EDGES, _TABLE, _FIRST_BUCKET = _build_table()
BIN_EDGES.flags.writeable = False
N_BINS: int = len(BIN_EDGES) - 1

#: Partial sums per (channel, bin), in this order along the last axis of :func:`pair_moments`: count, sum and
#: sum of squares of ``gain * ref`` and of the residual, over all kept pixels, then the same over the pixels of
#: flat blocks only (``f_`` prefix; see :func:`pair_moments`).
STAT_NAMES: tuple[str, ...] = ("n", "gc", "gc2", "r", "r2", "f_n", "f_gc", "f_gc2", "f_r", "f_r2")
N_STATS: int = len(STAT_NAMES)
FLAT_KAPPA: float = 2.0  # flat block: spread of the other references <= FLAT_KAPPA x that of their residuals
OUTLIER_K: float = 3.0
_BLOCK = 4  # pixels are binned by the mean of the other 15 reference pixels of their 4x4 block


def _table_index(values) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        b = _bucket(values)
    b -= _FIRST_BUCKET
    return np.clip(b, 0, len(_TABLE) - 1, out=b)  # negatives, NaN and out-of-range land on "outside" entries


def bin_index(values, edges: np.ndarray = BIN_EDGES) -> np.ndarray:
    """Bin of each value (``edges[k] <= v < edges[k + 1]`` -> ``k``); ``-1`` outside the edges or non-finite."""
    if edges is BIN_EDGES:
        k = _TABLE[_table_index(values)]
        return np.where(k < N_BINS, k, -1).astype(np.intp)
    edges = np.asarray(edges, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    k = np.searchsorted(edges, v, side="right") - 1
    return np.where((k >= 0) & (k < len(edges) - 1), k, -1).astype(np.intp)


def _per_channel(values, name: str, dtype) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 1:
        v = np.repeat(v, 4)
    if v.shape != (4,):
        raise ValueError(f"{name} needs one value per channel R, G1, G2, B, got shape {np.shape(values)}")
    return v.astype(dtype)[:, None, None]


def _planes(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 3 or a.shape[0] != 4:
        raise ValueError(f"{name} must be packed planes (4, h, w), got shape {a.shape}")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    return a


def binned_sums(cells: np.ndarray, n_cells: int, columns: list[np.ndarray]) -> np.ndarray:
    """Per cell: count, and the sum and sum of squares of each column (float64), in one scatter-add pass.

    ``cells`` holds a cell index per sample, ``n_cells`` (one past the last) meaning "dropped". A sparse
    one-hot matrix times the stacked columns is a single C loop over the samples, about three times faster
    than one ``np.bincount`` per statistic. Squares are taken in float64.
    """
    from scipy.sparse import csc_matrix

    n = cells.size
    stacked = np.empty((n, 2 * len(columns) + 1))
    stacked[:, 0] = 1.0
    for j, col in enumerate(columns):
        stacked[:, 2 * j + 1] = col.ravel()
        np.square(stacked[:, 2 * j + 1], out=stacked[:, 2 * j + 2])
    # Clamp into range: scipy does not check the indices, and one past the end would corrupt memory.
    rows = np.minimum(cells.ravel(), n_cells).astype(np.int32, copy=False)
    onehot = csc_matrix(
        (np.ones(n), rows, np.arange(n + 1, dtype=np.int32)),
        shape=(n_cells + 1, n),
    )
    return np.asarray(onehot @ stacked)[:n_cells]


def bin_cells(values: np.ndarray, keep: np.ndarray, edges: np.ndarray = BIN_EDGES) -> np.ndarray:
    """Bin of each value, or ``n_bins`` (one past the last) where ``keep`` is false or the value is outside
    ``edges`` or not finite: the cell index :func:`binned_sums` expects."""
    if edges is BIN_EDGES:
        b = _table_index(values)
        b *= keep  # rejected -> table entry 0, which is "outside"
        return _TABLE[b]
    k = bin_index(values, edges)
    return np.where(keep & (k >= 0), k, len(edges) - 1)


def _block_sum(q: np.ndarray) -> np.ndarray:
    """Sum over each block of ``q`` shaped ``(H, B, W, B)``, broadcastable back onto it.

    Written as slice additions: numpy's reduction over two short strided axes is about eight times slower.
    """
    part = q[..., 0] + q[..., 1]
    for k in range(2, q.shape[-1]):
        part += q[..., k]
    out = part[:, 0] + part[:, 1]
    for k in range(2, q.shape[1]):
        out += part[:, k]
    return out[:, None, :, None]


def _deviations(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Deviation ``d`` of each value from its block mean, and the others' sum of squared deviations.

    For a block of ``N`` values with sum of squared deviations ``D2``, the other ``N - 1`` values of a pixel
    have ``D2 - d^2 N / (N - 1)`` about their own mean (from deviations: no cancellation in float32).
    """
    n = q.shape[1] * q.shape[3]
    d = q - _block_sum(q) * np.float32(1.0 / n)
    d2 = d * d
    others = np.multiply(d2, np.float32(-n / (n - 1.0)))
    others += _block_sum(d2)
    return d, others


def pair_moments(noisy, ref, *, gain, lower, upper, edges: np.ndarray = BIN_EDGES) -> np.ndarray:
    """Binned partial sums of one aligned chunk of a noisy/reference pair.

    Parameters
    ----------
    noisy, ref
        Normalised packed planes ``(4, h, w)`` of the same chunk of both frames (float32 or float64). Rows
        and columns past a multiple of 4 are ignored (the statistics work on 4x4 blocks; store chunks are
        256x256).
    gain
        Exposure ratio noisy / reference per channel (4,), dimensionless (catalog QA ``gain_r`` ... ``gain_b``):
        ``gain * ref`` matches the noisy frame's brightness.
    lower, upper
        Per channel (4,), the normalised values of 0 DN (``-black_c / (white - black_c)``) and of white
        (1.0): the clipping bounds. Reference pixels at either bound are dropped.
    edges
        Bin edges over ``gain * ref`` in normalised units; default :data:`BIN_EDGES`.

    Returns
    -------
    numpy.ndarray
        ``(4, n_bins, N_STATS)`` float64 sums in :data:`STAT_NAMES` order: count; sum and sum of squares of
        the reference signal ``gain * ref`` at the pixel; sum and sum of squares of the residual
        ``r = noisy - gain * ref``; then the same five over the flat pixels only. Pixels are binned by ``s``,
        gain times the mean of the other 15 reference pixels of their 4x4 block. A pixel is flat when the
        variance of its 15 block-mates' ``gain * ref`` is at most :data:`FLAT_KAPPA` times that of their
        residuals and its own ``gain * ref`` lies within :data:`OUTLIER_K` of their residual sigmas from their
        mean (see the module docstring). Add chunks with ``+``.
    """
    noisy = _planes(noisy, "noisy")
    ref = _planes(ref, "ref")
    if noisy.shape != ref.shape:
        raise ValueError(f"noisy and ref chunks differ in shape: {noisy.shape} vs {ref.shape}")
    dt = np.result_type(noisy.dtype, ref.dtype)
    g = _per_channel(gain, "gain", dt)
    lo = _per_channel(lower, "lower", np.float64)
    hi = _per_channel(upper, "upper", np.float64)
    n_bins = len(edges) - 1
    _, h, w = noisy.shape
    h2, w2 = h - h % _BLOCK, w - w % _BLOCK
    if h2 == 0 or w2 == 0:
        return np.zeros((4, n_bins, N_STATS))
    noisy = noisy[:, :h2, :w2]
    ref = ref[:, :h2, :w2]

    # Clipped reference: within a millionth of the range of a bound (a DN step is >= 1.5e-5 of it).
    tol = 1e-6 * (hi - lo)
    keep = (ref > (lo + tol).astype(dt)) & (ref < (hi - tol).astype(dt))
    keep &= np.isfinite(noisy)

    # Channel by channel: the temporaries of one plane chunk stay in cache (about twice as fast).
    out = np.empty((4, n_bins, N_STATS))
    for c in range(4):
        out[c] = _pair_plane(noisy[c], ref[c], keep[c], g[c, 0, 0], edges)
    return out


def _pair_plane(noisy: np.ndarray, ref: np.ndarray, keep: np.ndarray, g, edges: np.ndarray) -> np.ndarray:
    """:func:`pair_moments` of one channel's plane ``(h, w)`` (multiples of the block side)."""
    h, w = ref.shape
    n_bins = len(edges) - 1
    gc = ref * g
    r = noisy - gc
    shape4 = (h // _BLOCK, _BLOCK, w // _BLOCK, _BLOCK)
    nb = _BLOCK * _BLOCK
    q = gc.reshape(shape4).astype(np.float32, copy=False)
    d, q_ss = _deviations(q)
    # Bin variable: mean of the other nb - 1 references of the block, in float32 (it only picks the bin).
    # With m the block mean, it is m - d / (nb - 1).
    s = q - d * np.float32(nb / (nb - 1.0))
    _, r_ss = _deviations(r.reshape(shape4).astype(np.float32, copy=False))
    flat = q_ss <= np.float32(FLAT_KAPPA) * r_ss
    # ... and the pixel itself within OUTLIER_K local residual sigmas of the others' mean (pixel - others'
    # mean = d * nb / (nb - 1)): an isolated pixel unlike its flat block-mates (a star, a glint) is not flat.
    # The pixel's own reference noise enters this test only far in its tail (its sigma is at most 0.7 of the
    # residual's), so the selection costs no measurable bias.
    d *= np.float32(nb / (nb - 1.0))
    d *= d
    flat &= d <= np.float32(OUTLIER_K**2 / (nb - 2.0)) * r_ss
    cells = 2 * bin_cells(s.reshape(h, w), keep, edges) + flat.reshape(h, w)  # dump: 2 n_bins (+1 clamped)
    sums = binned_sums(cells, 2 * n_bins, [gc, r]).reshape(n_bins, 2, N_STATS // 2)
    return np.concatenate([sums.sum(axis=1), sums[:, 1]], axis=-1)


def clip_bounds(black_level, white_level) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised clipping bounds and DN step per channel: ``(lower, upper, dn_step)``.

    ``lower = -black_c / (white - black_c)`` (0 DN), ``upper = 1`` (white), ``dn_step = 1 / (white - black_c)``;
    the arguments in DN (``black_level`` one value or 4). Pass all three to the fits
    (:class:`rawlab.noise.fit.FrameMoments`, :func:`rawlab.noise.quincunx.fit_frames`).
    """
    black = np.broadcast_to(np.asarray(black_level, dtype=np.float64), (4,))
    span = float(white_level) - black
    return -black / span, np.ones(4), 1.0 / span


def reduce_moments(parts: Iterable[np.ndarray]) -> np.ndarray:
    """Sum partial moments (of chunks, or of frames): they are additive by construction."""
    total = None
    for p in parts:
        total = np.array(p, dtype=np.float64) if total is None else total + p
    if total is None:
        raise ValueError("reduce_moments needs at least one partial sum")
    return total

"""Per-group statistics of dark and flat frames: what one Dask task computes from the frames it reads.

A group is the frames of one sensor, ISO and exposure time. The task reads each frame once, tells darks from
flats by level and uniformity (:func:`classify_frame`), and returns small per-channel statistics for the
whole plane and for :data:`BANDS` horizontal bands of it (the bands give every figure's standard error: the
figure is computed per band and its spread over bands, divided by ``sqrt(BANDS)``, is the error of the
whole-plane value). All values are DN above the black level the file declares.

Statistics (EMVA 1288 notation, ``L`` frames ``y_i``, per channel):

- ``means``: each frame's spatial mean;
- ``temporal``: the temporal variance ``mean_x var_i(y_i(x))`` minus the variance of the frame means (EMVA's
  pair formula for ``L = 2``: a frame-wide offset such as black-level drift is not temporal pixel noise);
- ``spatial``: the spatial variance of the averaged image ``mean_i y_i`` (still holding ``temporal / L``);
- ``row``: the variance of the row means of ``y_i - mean_j y_j`` (frame mean removed), scaled back by
  ``L / (L - 1)``: row noise plus ``1 / columns`` of the pixel noise;
- ``clipped``: the fraction of pixels at the white level;
- darks with ``L >= 4``: the Tukey-lambda shape of the pixel noise (:func:`tukey_shape`).

They are computed streaming (:class:`GroupAccumulator`), one frame in memory at a time: each frame gives
per-row sums (:func:`frame_sums`: of ``y`` in four column blocks, and of ``y**2``) and its values at a fixed
set of sampled pixels; the group keeps the per-pixel sum ``S = sum_i y_i``, and at its end takes the row
sums of ``S**2``. Every view's figure then comes from row sums (a band is a range of rows): the temporal
variance from ``sum_x sum_i (y_i - S/L)**2 = sum_rows sum_i y_i**2 - sum_x S**2 / L``, the averaged image's
spatial variance from the sums of ``S`` and ``S**2``, the row means of ``y_i - S/L`` from the frames' row
sums, the Tukey-lambda residual at the sampled pixels only. The DN are integers, so these sums are integers,
held exactly in float64 per row (below 2**53 for 16-bit data up to 16 frames of 4750 columns; beyond, the
rounding is 1e-16 of the sum) and added up as Python integers: the subtractions lose nothing to cancellation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BANDS",
    "DARK_MAX",
    "FrameSums",
    "GroupAccumulator",
    "as_planes",
    "classify_frame",
    "frame_sums",
    "group_stats",
    "sample_positions",
    "tukey_shape",
]

BANDS = 8
DARK_MAX = 0.02  # a frame whose mean is at most this fraction of the range above black is a dark
_FLAT_SPREAD = 0.05  # a flat's block means may spread this much (relative): illumination fall-off
_PPCC_SAMPLES = 60000


def _views(h: int) -> list[slice]:
    edges = np.linspace(0, h, BANDS + 1).astype(int)
    return [slice(0, h)] + [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def sample_positions(h: int, w: int, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` of the pixels whose values feed the Tukey-lambda fit: about ``60000 / n_frames``
    evenly spaced along the plane in reading order (so every band holds its share), all when fewer."""
    m = min(h * w, -(-_PPCC_SAMPLES // max(n_frames, 1)))
    flat = np.unique(np.linspace(0, h * w - 1, m).round().astype(np.int64))
    return flat // w, flat % w


@dataclass
class FrameSums:
    """One frame's per-row sums (exact: integers in float64), DN as stored (black not subtracted).

    ``blocks`` (4, h, 4): row sums over the four column blocks of :func:`classify_frame` (``w // 4`` columns
    each); ``rest`` (4, h): over the ``w % 4`` columns left; ``squares`` (4, h): row sums of ``y**2``;
    ``clipped`` (4, BANDS): pixels at the white level per band; ``samples`` (4, m): the values at
    :func:`sample_positions`; ``width``: the plane's columns.
    """

    blocks: np.ndarray
    rest: np.ndarray
    squares: np.ndarray
    clipped: np.ndarray
    samples: np.ndarray
    width: int

    @property
    def rows(self) -> np.ndarray:
        return self.blocks.sum(axis=2) + self.rest

    def channel_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per channel mean and variance over the whole plane (exact integer sums, then one division)."""
        _, h, _ = self.blocks.shape
        n = h * self.width
        means, variances = np.empty(4), np.empty(4)
        for c in range(4):
            s1 = int(self.rows[c].astype(np.int64).sum())
            s2 = int(self.squares[c].astype(np.int64).sum())
            means[c] = s1 / n
            variances[c] = (n * s2 - s1 * s1) / (n * n)
        return means, variances


def _channels(y: np.ndarray, cfa: str | None) -> tuple[int, int, list[np.ndarray]]:
    """``(h, w, planes)``: the four channel views of a mosaic (H, W) with its ``cfa``, or of planes (4, h, w)."""
    from ..bayer import channel_offsets

    if cfa is None:
        return y.shape[1], y.shape[2], list(y)
    h, w = y.shape[0] // 2, y.shape[1] // 2
    return h, w, [y[dy : 2 * h : 2, dx : 2 * w : 2] for dy, dx in channel_offsets(cfa)]


def as_planes(y: np.ndarray, cfa: str | None = None) -> np.ndarray:
    """A mosaic (H, W) with its ``cfa``, or planes (4, h, w), as float64 planes (4, h, w), R, G1, G2, B."""
    h, w, views = _channels(y, cfa)
    out = np.empty((4, h, w))
    for c, v in enumerate(views):
        out[c] = v
    return out


def frame_sums(y: np.ndarray, *, white: float, positions: tuple[np.ndarray, np.ndarray], cfa: str | None = None,
               into: np.ndarray | None = None) -> tuple[np.ndarray | None, FrameSums]:  # fmt: skip
    """One frame's per-row sums (:class:`FrameSums`), and its float64 planes (4, h, w) of DN unless ``into``.

    ``y`` is a Bayer mosaic (H, W) of integer DN with its ``cfa`` (R, G1, G2, B as ``rawlab.bayer.pack``
    orders them), or planes (4, h, w). ``into`` (a group's float64 sum of frames, 4, h, w) gets the frame added
    as it goes, and no planes are returned. The frame is converted a few rows at a time and every sum taken
    while those rows are in the cache: packing, conversion and the sums cost about a third of the decode.
    """
    h, w, views = _channels(y, cfa)
    bw = w // 4
    planes = np.empty((4, h, w)) if into is None else None
    blocks, rest, squares = np.zeros((4, h, 4)), np.empty((4, h)), np.empty((4, h))
    threshold = white - 0.5
    clipped = np.zeros((4, BANDS))
    any_clipped = np.count_nonzero(y >= threshold) > 0  # on the integers, contiguous: cheaper than per plane
    step = max(8, (1 << 18) // max(w, 1))  # rows of 2 MB in float64: they stay in the cache
    buf = np.empty((min(step, h), w))
    for c, v in enumerate(views):
        for r0 in range(0, h, step):
            r1 = min(h, r0 + step)
            p = buf[: r1 - r0] if into is not None else planes[c, r0:r1]
            p[...] = v[r0:r1]
            if bw:
                blocks[c, r0:r1] = np.einsum("hbw->hb", p[:, : 4 * bw].reshape(r1 - r0, 4, bw))
            rest[c, r0:r1] = p[:, 4 * bw :].sum(axis=1)
            squares[c, r0:r1] = np.einsum("hw,hw->h", p, p)
            if into is not None:
                into[c, r0:r1] += p
        if any_clipped:
            clipped[c] = [np.count_nonzero(v[b] >= threshold) for b in _views(h)[1:]]
    samples = np.stack([v[positions[0], positions[1]] for v in views]).astype(np.float64)
    return planes, FrameSums(blocks, rest, squares, clipped, samples, w)


def classify_frame(sums: FrameSums, black: np.ndarray, white: float, *, dark_max: float = DARK_MAX,
                   role: str | None = None) -> tuple[str | None, str]:  # fmt: skip
    """``("dark" | "flat", note)`` or ``(None, reason)`` for a frame that is neither, from its row sums.

    A frame is uniform when the means of a 4x4 grid of blocks spread less than the noise allows (5 sigma of a
    block mean, sigma the plane's standard deviation) plus 5% of the level (illumination fall-off) plus 2 DN
    (row and column patterns); a uniform frame is a dark when its level is at most ``dark_max`` of the
    range, else a flat. ``role`` (from a recipe) decides dark or flat, but a frame must still be uniform.
    """
    _, h, _ = sums.blocks.shape
    w = sums.width
    bh, bw = h // 4, w // 4
    means, variances = sums.channel_moments()
    x_mean = means - black
    level = float(np.mean(x_mean / (white - black)))
    blocks = sums.blocks[:, : 4 * bh].reshape(4, 4, bh, 4).sum(axis=2) / max(bh * bw, 1)
    noise = np.sqrt(np.maximum(variances, 0.0))
    spread = blocks.reshape(4, -1).std(axis=1)
    allowed = 5 * noise / np.sqrt(max(bh * bw, 1)) + _FLAT_SPREAD * np.abs(x_mean) + 2.0
    if np.any(spread > allowed):
        c = int(np.argmax(spread / allowed))
        return None, (
            f"neither dark nor flat: not uniform (block means of channel {'R G1 G2 B'.split()[c]} spread "
            f"{spread[c]:.1f} DN, a dark or flat field allows {allowed[c]:.1f} DN); a scene?"
        )
    if role is not None:
        return role, f"{role} by recipe (level {level:.1%} of the range)"
    return ("dark" if level <= dark_max else "flat"), f"level {level:.1%} of the range"


def _int_sum(rows: np.ndarray) -> int:
    """Exact sum of integer-valued float64 row sums."""
    return int(np.asarray(rows).astype(np.int64).sum())


class GroupAccumulator:
    """Streaming :func:`group_stats` of frames added one at a time (:meth:`add`), result by :meth:`result`.

    Holds the per-pixel sum of the frames (float64, exact), and per frame its row sums and samples.
    """

    def __init__(self, black: np.ndarray, white: float, positions: tuple[np.ndarray, np.ndarray]):
        self.black = np.asarray(black, float)
        self.white = float(white)
        self.positions = positions
        self.total: np.ndarray | None = None
        self.frames: list[FrameSums] = []

    def add(self, sums: FrameSums, planes: np.ndarray | None = None) -> None:
        """Add one frame: its :func:`frame_sums` and its float64 ``planes`` of DN, or none when
        :func:`frame_sums` added it to :attr:`total` already (``into``). The first frame's planes become the
        accumulator's sum (not copied): do not change them afterwards."""
        if planes is None:
            if self.total is None:
                raise ValueError("the first frame of a group needs its planes")
        elif self.total is None:
            self.total = planes
        else:
            self.total += planes
        self.frames.append(sums)

    def result(self, *, dark: bool) -> dict:
        """The statistics (see the module docstring): arrays shaped ``(1 + BANDS, 4)`` (``means``:
        ``(1 + BANDS, L, 4)``) and, for darks with ``L >= 4``, the Tukey-lambda fit of the whole plane."""
        n = len(self.frames)
        _, h, w = self.total.shape
        views = _views(h)
        rows = np.stack([f.rows for f in self.frames])  # (L, 4, h) exact
        squares = np.sum([f.squares for f in self.frames], axis=0)  # (4, h) exact: below 2**53 per row
        sum_rows = rows.sum(axis=0)  # (4, h): row sums of S
        s2 = np.einsum("chw,chw->ch", self.total, self.total)  # (4, h): row sums of S**2
        row_means = rows / w - sum_rows[None] / (n * w)  # (L, 4, h): row means of y_i - mean_j y_j
        clipped = np.sum([f.clipped for f in self.frames], axis=0)  # (4, BANDS)
        out: dict = {"n": n, "shape": [h, w]}
        acc: dict[str, list] = {k: [] for k in ("means", "temporal", "spatial", "row", "clipped")}
        for k, v in enumerate(views):
            npix = (v.stop - v.start) * w
            means = (
                np.array([[_int_sum(rows[i, c, v]) / npix for c in range(4)] for i in range(n)]) - self.black
            )  # (L, 4)
            acc["means"].append(means)
            # The averaged image S / L: (N sum S**2 - (sum S)**2) / (L**2 N (N - 1)), in integers.
            acc["spatial"].append(
                [
                    (npix * _int_sum(s2[c, v]) - _int_sum(sum_rows[c, v]) ** 2) / (n * n * npix * (npix - 1))
                    for c in range(4)
                ]
            )
            frac = clipped.sum(axis=1) if k == 0 else clipped[:, k - 1]
            acc["clipped"].append(frac / (n * npix))
            if n >= 2:
                pix = np.array(
                    [
                        (n * _int_sum(squares[c, v]) - _int_sum(s2[c, v])) / (n * npix * (n - 1))
                        for c in range(4)
                    ]
                )
                acc["temporal"].append(pix - means.var(axis=0, ddof=1))
                rm = row_means[:, :, v]
                rm = rm - rm.mean(axis=2, keepdims=True)  # the frame's own offset (drift) out
                acc["row"].append((rm**2).sum(axis=2).mean(axis=0) / (rm.shape[2] - 1) * n / (n - 1))
            else:
                acc["temporal"].append(np.full(4, np.nan))
                acc["row"].append(np.full(4, np.nan))
        for k, vals in acc.items():
            out[k] = np.asarray(vals).tolist()
        if dark and n >= 4:
            # The whole plane's leave-one-out residual variance (tukey_shape), from the same exact sums:
            # sum over frames and pixels of (y_i - mean_j y_j)**2, less each frame-row's squared mean.
            ts = np.array([n * _int_sum(squares[c]) - _int_sum(s2[c]) for c in range(4)]) / n
            ts = ts - w * (row_means**2).sum(axis=(0, 2))
            var_pix = ts * (n / (n - 1)) ** 2 / (n * h * w) * (n - 1) / n
            samples = np.stack([f.samples for f in self.frames])  # (L, 4, m)
            rowmean = rows / w  # (L, 4, h)
            out["tukey"] = [
                tukey_shape(
                    samples[:, c],
                    rowmean[:, c, self.positions[0]],
                    self.positions[0],
                    h,
                    var_pix=float(var_pix[c]),
                    seed=c,
                )
                for c in range(4)
            ]
        return out


def group_stats(frames, *, black: np.ndarray, white: float, dark: bool, cfa: str | None = None) -> dict:
    """:class:`GroupAccumulator`'s statistics of ``frames``: an iterable of planes (4, h, w) of DN (or of
    mosaics (H, W) with ``cfa``), consumed one at a time."""
    frames = list(frames) if not hasattr(frames, "__len__") else frames
    h, w = (frames[0].shape[0] // 2, frames[0].shape[1] // 2) if cfa is not None else frames[0].shape[1:]
    acc = GroupAccumulator(black, white, sample_positions(h, w, len(frames)))
    for y in frames:
        planes, sums = frame_sums(y, white=white, positions=acc.positions, cfa=cfa, into=acc.total)
        acc.add(sums, planes)
    return acc.result(dark=dark)


def _ppcc(x: np.ndarray, near: float | None = None) -> tuple[float, float]:
    """The Tukey-lambda shape of ``x`` by the probability-plot correlation maximum (Filliben 1975), and that
    correlation: what ``scipy.stats.ppcc_max`` and ``probplot`` compute, with the quantile function in closed form
    and the sort done once (scipy's generic ``ppf`` made this the calibration's slowest step).

    The order statistic medians are symmetric about 1/2 and the quantile function odd about them, so the
    correlation needs the quantiles of the lower half only (``q(1 - p) = -q(p)``, their mean is 0), each
    ``p**lam`` as ``exp(lam * log p)`` from logarithms taken once: a quarter of the work per evaluation.
    ``near``: a shape close to the answer (a band's or a simulation's, near the whole plane's): the search
    starts there and stops at 1e-5 relative, about half the evaluations of scipy's default.
    """
    from scipy import optimize

    n = x.size
    osm = np.empty(n)  # Filliben's approximation of the uniform order statistic medians, as scipy uses
    osm[-1] = 0.5 ** (1.0 / n)
    osm[0] = 1 - osm[-1]
    osm[1:-1] = (np.arange(2, n) - 0.3175) / (n + 0.365)
    osr = np.sort(np.asarray(x, np.float64))
    osr = osr - osr.mean()
    k = n // 2  # with n odd the middle median is 1/2, whose quantile is 0 for every lam
    log_p, log_q = np.log(osm[:k]), np.log1p(-osm[:k])
    diff = osr[:k] - osr[::-1][:k]  # x_(i) - x_(n-1-i), what the lower half's quantiles multiply
    ss = float(osr @ osr)

    def corr(lam: float) -> float:
        q = log_p - log_q if abs(lam) < 1e-9 else (np.exp(lam * log_p) - np.exp(lam * log_q)) / lam
        return float(q @ diff / np.sqrt(2 * (q @ q) * ss))

    if near is None:
        lam = float(optimize.brent(lambda v: 1.0 - corr(v), brack=(-0.3, 0.3)))
    else:
        lam = float(optimize.brent(lambda v: 1.0 - corr(v), brack=(near - 0.02, near + 0.02), tol=1e-5))
    lam = float(np.clip(lam, -0.45, 1.0))
    return lam, corr(lam)


def tukey_shape(samples: np.ndarray, row_means: np.ndarray, sample_rows: np.ndarray, h: int, *,
                var_pix: float, seed: int = 0) -> dict:  # fmt: skip
    """The Tukey-lambda shape of the pixel read noise of ``L`` dark frames, one channel, DN.

    ``samples`` (L, m) are the frames' values at sampled pixels in rows ``sample_rows`` (m,) of ``h``;
    ``row_means`` (L, m) the frames' means of those rows; ``var_pix`` the variance of the whole plane's
    residual below, per frame (its sampled values would do; the exact one is free in
    :meth:`GroupAccumulator.result`).

    The fixed pattern and the row noise are removed first: each frame minus the mean of the others, then
    that residual's row mean (from the row means of the frames: ``rowmean(r_i) = rowmean(y_i) -
    (rowmean(S) - rowmean(y_i)) / (L - 1)``). That residual mixes the frame's noise with ``1 / (L - 1)`` of the
    others' and with rounding to integer DN, which pulls the shape towards Gaussian. So the probability-plot
    correlation (PPCC) maximum found on the data is de-biased by simulation: the same residual is built from
    Tukey-lambda draws of the measured sigma, rounded on the same fractional offsets, its PPCC maximum found,
    and the estimate moved by the difference (twice, fixed seeds). ``ppcc`` is the probability-plot
    correlation of the data at the raw maximum: the fit quality (1 is a perfect Tukey-lambda shape).
    Per band raw maxima give the standard error.
    """
    from scipy import stats

    n = samples.shape[0]
    total = samples.sum(axis=0)
    r = samples - (total[None] - samples) / (n - 1)
    r = r - (row_means - (row_means.sum(axis=0)[None] - row_means) / (n - 1))
    raw, quality = _ppcc(r.reshape(-1))
    bands = []
    for v in _views(h)[1:]:
        inside = (sample_rows >= v.start) & (sample_rows < v.stop)
        bands.append(_ppcc(r[:, inside].reshape(-1), near=raw)[0])
    sigma = np.sqrt(max(var_pix - 1.0 / 12.0, 1e-6))
    # The fractional parts of the per-pixel means at the samples, repeated to twice the data's sample size.
    frac = np.resize(np.mod(total / n, 1.0), 2 * _PPCC_SAMPLES // n + 1)
    rng = np.random.default_rng(np.random.SeedSequence([0x70C, seed]))
    m = frac.size

    def simulated(lam: float) -> float:
        u = np.clip(rng.uniform(size=(n, m)), 1e-12, 1 - 1e-12)
        t = np.log(u / (1 - u)) if abs(lam) < 1e-9 else (u**lam - (1 - u) ** lam) / lam
        e = np.rint(t / np.sqrt(stats.tukeylambda(lam).var()) * sigma + frac[None])
        tot = e.sum(axis=0)
        return _ppcc((e - (tot[None] - e) / (n - 1)).reshape(-1), near=lam)[0]

    lam = raw
    for _ in range(2):
        lam = float(np.clip(lam + (raw - simulated(lam)), -0.45, 1.0))
    return {
        "lambda": lam,
        "lambda_raw": raw,
        "ppcc": quality,
        "lambda_raw_bands": bands,
        "n_samples": int(r.size),
    }

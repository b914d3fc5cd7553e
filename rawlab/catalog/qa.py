"""Quality checks of a noisy frame against its clean reference: alignment, exposure gain, saturation, level.

Checks read packed planes ``(4, h, w)`` in raw DN (R, G1, G2, B; docs/architecture.md, "Units and conventions") on one Dask worker per
pair. Full frames are touched only by cheap integer passes (saturation count, channel sums, block sums,
maxima and minima); the float work runs on a central crop. About 0.2 s on one core for a 12 MP pair.

- Alignment (:func:`estimate_shift`): phase correlation of the luminance (mean of the four planes) of a central
  crop of up to 1024x1024 packed px (binned 2x2 beyond 512), Hann-windowed, with a Gaussian low-pass weight on
  the normalised cross-power spectrum so that noise-dominated frequencies do not steer the peak, restricted to
  the search window, refined by the upsampled DFT of Guizar-Sicairos et al. (Opt. Lett. 33, 2008). The match
  is the correlation of the band-passed luminances at that shift. Flat-field pairs (no structure above the
  noise in either frame) have nothing to align and are not excluded for it.
- Gain (:func:`estimate_gain`): per-channel ratio of sums of 8x8 block means (smaller on small frames) over blocks
  with signal, free of saturation and black clipping, after dropping outlier blocks (median/MAD of ratios).
- Saturation fraction and mean level (:func:`frame_stats`) over the whole frame.

Shift convention: ``moving(y, x) = ref(y - dy, x - dx)``. A feature at ``(y, x)`` in the reference is at
``(y + dy, x + dx)`` in the moving frame. Shifts are in mosaic pixels; one packed pixel is two.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import scipy.fft as sfft

from ..bayer import levels
from ..bayer import normalise as bayer_normalise
from ..errors import RawlabError

__all__ = ["QA_COLUMNS", "QAThresholds", "check_pair", "estimate_gain", "estimate_shift", "expected_gain"]
__all__ += ["PreparedFrame", "Thresholds", "frame_stats", "normalise", "prepare_frame", "saturation_fraction"]

#: The catalog columns :func:`check_pair` fills for a noisy frame, in this order.
QA_COLUMNS: tuple[str, ...] = tuple(
    "align_dy align_dx align_match gain gain_r gain_g1 gain_g2 gain_b expected_gain saturated_frac "
    "ref_saturated_frac mean_level status reason".split()
)

_CROP = 1024  # packed px: side of the central crop used for alignment
_FFT_MAX = 512  # crops larger than this are binned 2x2, so the FFT side stays <= 512
_LOWPASS = 0.1  # cycles per working px: sigma of the Gaussian weight of the correlation spectrum
_HIGHPASS = 0.03  # cycles per working px: the match ignores scales coarser than ~1 / _HIGHPASS
_BLOCK = 8  # packed px: side of the blocks whose means the gain compares
_MIN_BLOCKS = 8  # fewer usable blocks in a channel -> its gain is NaN
_WHITE_MARGIN = 0.95  # normalised level from which a sample counts as (nearly) saturated for the gain


class Thresholds:
    """What QA threshold sets share (:class:`QAThresholds` for pairs, ``BurstThresholds`` for bursts): every
    field a number >= 0 (those in ``_SIGNED`` may be negative), checked on construction, read from a dict."""

    _SIGNED: tuple[str, ...] = ()

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise RawlabError(f"QA threshold {f.name} must be a number, got {value!r}") from None
            if math.isnan(value) or (value < 0 and f.name not in self._SIGNED):
                raise RawlabError(f"QA threshold {f.name} must be a number >= 0, got {value!r}")
            object.__setattr__(self, f.name, value)

    def to_dict(self) -> dict[str, float]:
        """The thresholds as a plain dict (stored in the store's attributes)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """Thresholds from a dict; missing keys keep their defaults.

        Raises
        ------
        RawlabError
            If a key is not a threshold name or a value is not a valid number.
        """
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise RawlabError(f"unknown QA threshold(s) {names}; allowed keys: {', '.join(allowed)}")
        return cls(**dict(d))


@dataclasses.dataclass(frozen=True)
class QAThresholds(Thresholds):
    """Limits beyond which a noisy frame is ``excluded``. Every value can be overridden.

    Parameters
    ----------
    max_shift
        Largest accepted misalignment, ``hypot(dy, dx)`` in mosaic px. Tripod wobble leaves sub-pixel shifts
        and curated sets such as SID are aligned within about 1 px; beyond 2 px a pair cannot be compared pixel
        by pixel without registration.
    min_match
        Smallest accepted alignment confidence (-1..1): the correlation coefficient of the band-passed
        luminances at the estimated shift. Real pairs score above 0.9 at ISO 6400 down to 2% of full scale;
        the score falls toward 0 as the signal nears one photo-electron per pixel, where the shift stops being
        reliable (errors beyond 1 px below 0.3). Unrelated scenes score below 0.2.
    gain_tolerance
        Largest accepted ``|gain / expected_gain - 1|``, the measured exposure gain against the ratio of
        ISO x exposure time in the metadata. 0.25 is about a third of a stop: nominal ISOs and shutter speeds
        are rounded to third stops (1/60 s is really 1/64 s), which alone errs by up to ~12%.
    max_saturated
        Largest accepted fraction (0..1) of samples at the white level, in either frame. Highlights and lamps
        clip a few percent; the calibration chart clips about 6% by design.
    min_mean_level
        Smallest accepted mean normalised level of the noisy frame. Below 1e-3 (4 DN on a 12-bit sensor) a
        frame is a dark frame: its alignment and exposure cannot be checked. SID-style short exposures pass.
    """

    _SIGNED = ("min_match",)

    max_shift: float = 2.0
    min_match: float = 0.4
    gain_tolerance: float = 0.25
    max_saturated: float = 0.10
    min_mean_level: float = 1e-3


# -- per-frame statistics ------------------------------------------------------------------------------------


def _check_planes(planes, name: str = "planes") -> np.ndarray:
    planes = np.asarray(planes)
    if planes.ndim != 3 or planes.shape[0] != 4:
        raise ValueError(
            f"{name} must be packed planes (4, h, w) ordered R, G1, G2, B; got shape {planes.shape}"
        )
    return planes


def normalise(planes_dn, black_level, white_level) -> np.ndarray:
    """:func:`rawlab.bayer.normalise` of packed planes ``(4, h, w)``, checked for that shape."""
    return bayer_normalise(_check_planes(planes_dn), black_level, white_level)


def saturation_fraction(planes_dn, white_level: float, margin: float = 0) -> float:
    """Fraction (0..1) of samples at or above ``white_level - margin`` DN, over all planes (NaN if empty)."""
    planes = np.asarray(planes_dn)
    if planes.size == 0:
        return float("nan")
    limit = float(white_level) - float(margin)
    if planes.max() < limit:  # most frames: one pass without a mask of the frame's size
        return 0.0
    return (
        sum(int(np.count_nonzero(p >= limit)) for p in planes.reshape(-1, *planes.shape[-2:])) / planes.size
    )


def _plane_sums(planes: np.ndarray) -> np.ndarray:
    """Sum of each plane (float64, exact): integer planes row by row in uint32 (a row of up to 65537 uint16
    samples cannot overflow it), then over rows; 0.6x the CPU of one float64 sum, which converts every sample."""
    if planes.dtype.kind == "u" and planes.dtype.itemsize <= 2 and planes.shape[-1] <= 65537:
        return planes.sum(axis=-1, dtype=np.uint32).sum(axis=-1, dtype=np.uint64).astype(np.float64)
    return planes.reshape(planes.shape[0], -1).sum(axis=1, dtype=np.float64)


def frame_stats(planes_dn, black_level, white_level) -> dict[str, float]:
    """``saturated_frac`` (0..1, samples at the white level) and ``mean_level`` (normalised) of any frame.

    Every frame gets these columns: clean references and unpaired single frames too.
    """
    planes = _check_planes(planes_dn)
    n = planes[0].size
    means = _plane_sums(planes).reshape(4, 1, 1) / max(n, 1)
    mean_level = (
        float(np.mean(bayer_normalise(means, black_level, white_level, dtype=np.float64)))
        if n
        else float("nan")
    )
    return {"saturated_frac": saturation_fraction(planes, white_level), "mean_level": mean_level}


def expected_gain(ref_iso, ref_exposure, iso, exposure) -> float | None:
    """Brightness ratio the metadata predicts, ``(iso * exposure) / (ref_iso * ref_exposure)``.

    ISO and exposure time (s) of the reference, then of the noisy frame. ``None`` when any is missing, NaN or
    not positive (old formats have no EXIF ISO).
    """
    values = []
    for v in (ref_iso, ref_exposure, iso, exposure):
        try:
            v = float(v)
        except (TypeError, ValueError):
            return None
        if not (math.isfinite(v) and v > 0):
            return None
        values.append(v)
    return (values[2] * values[3]) / (values[0] * values[1])


# -- alignment -----------------------------------------------------------------------------------------------


def _central(planes: np.ndarray, size: int) -> tuple[slice, slice]:
    h, w = planes.shape[-2:]
    y0, x0 = (h - min(size, h)) // 2, (w - min(size, w)) // 2
    return slice(y0, y0 + min(size, h)), slice(x0, x0 + min(size, w))


def _luminance_pair(ref: np.ndarray, moving: np.ndarray, white: float = 0.98):
    """Luminances of two normalised crops, clipped at the same scene level, binned 2x2 when large."""
    # A rough gain (ratio of medians) puts both frames' clipping at one scene level; otherwise a brighter
    # moving frame has clipped areas the reference has not, and their edges pull the correlation peak.
    mr, mm = float(np.median(ref[1, ::2, ::2])), float(np.median(moving[1, ::2, ::2]))
    g0 = mm / mr if mr > 0 and mm > 0 else 1.0
    top = white * min(1.0, 1.0 / g0)
    lr = np.minimum(ref, np.float32(top)).mean(axis=0)
    lm = np.minimum(moving, np.float32(top * g0)).mean(axis=0)
    b = 2 if max(lr.shape) > _FFT_MAX else 1
    if b > 1:
        h, w = lr.shape[0] // 2 * 2, lr.shape[1] // 2 * 2
        lr, lm = (x[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) for x in (lr, lm))
    return lr, lm, b


def _dft_patch(spec: np.ndarray, cy: float, cx: float, half: int, step: float) -> np.ndarray:
    """Inverse DFT of ``spec`` on the grid ``c + step * k``, ``k = -half..half`` (centre exact)."""
    k = (np.arange(2 * half + 1) - half) * step
    fy, fx = sfft.fftfreq(spec.shape[0]), sfft.fftfreq(spec.shape[1])
    ky = np.exp(2j * np.pi * np.outer(cy + k, fy)).astype(np.complex64)
    kx = np.exp(2j * np.pi * np.outer(fx, cx + k)).astype(np.complex64)
    return (ky @ spec @ kx).real


def _correlate(
    lr: np.ndarray, lm: np.ndarray, max_lag: float, upsample: int, choose: Callable | None = None
) -> tuple[float, ...]:
    """Shift of ``lm`` relative to ``lr`` (working px) within ``|lag| <= max_lag``, the match, and the
    band-passed variance of each luminance (in units of a white noise's per-pixel variance).

    ``choose(candidates) -> index``, if given, picks the shift among the refined shifts of the surface's
    six highest local peaks (in that order) instead of taking the highest: the burst QA picks the motion
    most of the scene agrees with, where a textured moving object can give the highest peak."""
    h, w = lr.shape
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    fa, fb = sfft.fft2((lr - lr.mean()) * win), sfft.fft2((lm - lm.mean()) * win)
    cross = fb * np.conj(fa)  # its inverse DFT peaks at +d when lm(y) = lr(y - d)
    mag = np.abs(cross)
    if not np.any(mag > 0):
        return 0.0, 0.0, 0.0, 0.0, 0.0  # no structure at all: nothing to align
    f2 = sfft.fftfreq(h).astype(np.float32)[:, None] ** 2 + sfft.fftfreq(w).astype(np.float32)[None, :] ** 2
    weight = np.exp(-f2 / np.float32(2 * _LOWPASS**2))
    weight[0, 0] = 0.0  # the mean carries no position
    spec = (cross / np.maximum(mag, mag.max() * np.float32(1e-12)) * weight).astype(np.complex64)
    surface = sfft.ifft2(spec).real
    lags = np.r_[0 : int(max_lag) + 1, -int(max_lag) : 0]
    sub = surface[np.ix_(lags % h, lags % w)]
    starts = [np.unravel_index(int(np.argmax(sub)), sub.shape)] if choose is None else _peaks(sub, lags, 6)
    shifts = []
    for iy, ix in starts:
        py, px = float(lags[iy]), float(lags[ix])
        # quarter px over +-1, then 1/upsample
        for half, step in ((4, 0.25), (upsample // 4, 1.0 / upsample)):
            patch = _dft_patch(spec, py, px, half, step)
            jy, jx = np.unravel_index(int(np.argmax(patch)), patch.shape)
            py, px = py + (jy - half) * step, px + (jx - half) * step
        shifts.append((float(np.clip(py, -max_lag, max_lag)), float(np.clip(px, -max_lag, max_lag))))
    py, px = shifts[choose(shifts) if choose is not None and len(shifts) > 1 else 0]
    # Match: correlation coefficient of the band-passed luminances at (py, px), by Parseval. The high-pass
    # drops the large-scale layout (bright sky on top...) that unrelated scenes share.
    w2 = (weight * (1 - np.exp(-f2 / np.float32(2 * _HIGHPASS**2)))) ** 2
    fy, fx = sfft.fftfreq(h)[:, None], sfft.fftfreq(w)[None, :]
    phase = np.exp(2j * np.pi * (fy * py + fx * px)).astype(np.complex64)
    ea, eb = float(np.sum(w2 * np.abs(fa) ** 2)), float(np.sum(w2 * np.abs(fb) ** 2))
    match = float(np.sum(w2 * cross * phase).real) / math.sqrt(ea * eb) if ea * eb > 0 else 0.0
    white = float(np.sum(win.astype(np.float64) ** 2)) * float(np.sum(w2))  # E of ea for unit white noise
    return py, px, match, ea / white, eb / white


def _peaks(sub: np.ndarray, lags: np.ndarray, k: int) -> list[tuple[int, int]]:
    """Indices into ``sub`` (the surface over ``lags`` x ``lags``) of its ``k`` highest local maxima (3x3)."""
    from scipy.ndimage import maximum_filter

    order = np.argsort(lags)  # neighbours in lag order
    s = sub[np.ix_(order, order)]
    top = (maximum_filter(s, size=3, mode="constant", cval=-np.inf) == s).nonzero()
    best = np.argsort(-s[top], kind="stable")[:k]
    return [(int(order[top[0][i]]), int(order[top[1][i]])) for i in best]


def estimate_shift(ref, moving, *, max_shift: float = 16.0, upsample: int = 20) -> tuple[float, float, float]:
    """Sub-pixel translation of ``moving`` relative to ``ref``, searched within ``|dy|, |dx| <= max_shift``.

    Parameters
    ----------
    ref, moving
        Normalised packed planes (4, h, w) of the same shape. Brightness may differ by any gain and either may
        be partly saturated. Only a central crop of up to 1024x1024 packed px is read.
    max_shift
        Search half-width per axis, mosaic px. Peaks outside are ignored: a larger true shift comes back at
        the edge of the window or with a low match, never as a small shift with a high match.
    upsample
        The shift is resolved to ``1 / upsample`` mosaic px.

    Returns
    -------
    dy, dx
        Shift in mosaic px, ``moving(y, x) = ref(y - dy, x - dx)``: positive ``dy`` means the scene moved down
        in ``moving``. Odd shifts (which swap the CFA phase) are measured like any other: the mean of the four
        planes is one function of the scene sampled on the packed grid, so a one-pixel mosaic shift moves it
        by half a packed pixel.
    match
        Alignment confidence, -1..1: correlation coefficient of the band-passed luminances at that shift.

    Raises
    ------
    ValueError
        If the shapes differ or ``max_shift`` exceeds a quarter of the crop.
    """
    return _align(ref, moving, max_shift, upsample)[:3]


def _align(ref, moving, max_shift: float, upsample: int, choose: Callable | None = None) -> tuple[float, ...]:
    """:func:`estimate_shift`, plus the band-passed variance of each frame's luminance, in units of the
    per-pixel variance of an unbinned luminance (comparable with its noise variance). ``choose(lr, lm, b,
    shifts)``: see :func:`_correlate` (``lr``, ``lm`` the luminances binned ``b`` x ``b``, shifts in their px)."""
    ref, moving = _check_planes(ref, "ref"), _check_planes(moving, "moving")
    if ref.shape != moving.shape:
        raise ValueError(f"ref and moving must have the same shape, got {ref.shape} and {moving.shape}")
    sy, sx = _central(ref, _CROP)
    lr, lm, b = _luminance_pair(ref[:, sy, sx], moving[:, sy, sx])
    max_lag = max_shift / (2 * b)
    if max_lag > min(lr.shape) / 4:
        raise ValueError(f"max_shift {max_shift} mosaic px is too large for a {ref.shape[1:]} packed frame")
    lr, lm = lr.astype(np.float32), lm.astype(np.float32)
    pick = None if choose is None else (lambda shifts: choose(lr, lm, b, shifts))
    dy, dx, match, tr, tm = _correlate(lr, lm, max_lag, 2 * b * int(upsample), pick)
    return 2 * b * dy, 2 * b * dx, match, tr * b * b, tm * b * b


# -- exposure gain -------------------------------------------------------------------------------------------


def _block_sums(p: np.ndarray, axis: int, frac: float, blk: int) -> np.ndarray:
    """Sums over ``blk`` samples along ``axis`` of ``p`` moved by ``frac`` samples (|frac| <= 0.5).

    The move is bilinear, ``q(y) = (1 - f) p(y) + f p(y - 1)`` for ``f >= 0``, so a block sum of ``q`` is the
    block sum of ``p`` plus ``f`` times the difference of two boundary samples: the sub-pixel part of a shift
    costs nothing, and flux (a star, a lamp) crossing a block border moves with it. The first and last blocks
    use a clamped sample; callers ignore them.
    """
    n = p.shape[axis] // blk
    q = p[(slice(None),) * axis + (slice(0, n * blk),)]  # a view, no copy
    shape = [*q.shape[:axis], n, blk, *q.shape[axis + 1 :]]
    acc = np.uint32 if q.dtype.kind == "u" and q.dtype.itemsize <= 2 else np.float64
    s = q.reshape(shape).sum(axis=axis + 1, dtype=acc).astype(np.float64)
    if frac == 0:
        return s
    starts = np.arange(n) * blk
    inc, out = (np.maximum(starts - 1, 0), starts + blk - 1) if frac > 0 else (starts + blk, starts)
    inc = np.minimum(inc, p.shape[axis] - 1)
    return s + abs(frac) * (np.take(p, inc, axis=axis).astype(np.float64) - np.take(p, out, axis=axis))


def _block_stats(planes: np.ndarray, blk: int, frac=(0.0, 0.0)) -> tuple[np.ndarray, ...]:
    """Block (mean of the planes moved by ``frac`` packed px, max, min), each (4, h // blk, w // blk)."""
    mean = _block_sums(_block_sums(planes, 1, frac[0], blk), 2, frac[1], blk) / blk**2
    h, w = planes.shape[1] // blk, planes.shape[2] // blk
    p = planes[:, : h * blk, : w * blk]
    out = [mean]
    for reduce in (np.max, np.min):
        r = reduce(p.reshape(4, h, blk, p.shape[2]), axis=2)
        out.append(reduce(r.reshape(4, h, w, blk), axis=3).astype(np.float64))
    return tuple(out)


def _aligned_blocks(ref: np.ndarray, moving: np.ndarray, shift) -> tuple[tuple, tuple, int]:
    """Block stats of ``ref`` (moved by the sub-pixel part of ``shift``) and ``moving`` over their overlap."""
    s = [round(d / 2) for d in shift]  # integer packed part: crop
    h, w = ref.shape[1:]
    rs = tuple(slice(max(0, -k), n - max(0, k)) for k, n in zip(s, (h, w), strict=True))
    ms = tuple(slice(max(0, k), n - max(0, -k)) for k, n in zip(s, (h, w), strict=True))
    frac = (shift[0] / 2 - s[0], shift[1] / 2 - s[1])
    blk = int(np.clip(min(h, w) // 24, 2, _BLOCK))  # small frames: smaller blocks, enough of them
    return _block_stats(ref[:, rs[0], rs[1]], blk, frac), _block_stats(moving[:, ms[0], ms[1]], blk), blk


def _noise_floor(planes: np.ndarray, tile: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel pixel noise std near the dark end and black-clipping level, from a central 256x256 crop.

    The std is taken per 16x16 tile from the MAD of horizontal second differences (blind to gradients) and
    the 20th percentile over tiles is kept: the flattest, darker tiles, where texture does not pass for
    noise. A channel's minimum (maximum) is a clipping level if more than 0.1% of the samples sit on it
    (black clipped in-camera; saturation); samples there are left out. Returns ``(sigma, black clip level
    or -inf)``.
    """
    c = np.asarray(planes[(slice(None), *_central(planes, 256))], dtype=np.float32)
    sigma, clip = np.zeros(4), np.full(4, -np.inf)
    ty, tx = c.shape[1] // tile, (c.shape[2] - 2) // tile
    if ty == 0 or tx == 0:
        return sigma, clip
    for k in range(4):
        x = c[k, : ty * tile, : tx * tile + 2]
        bad = np.zeros(x.shape, dtype=bool)
        for level in (x.min(), x.max()):
            at = x == level
            if np.count_nonzero(at) > 1e-3 * at.size:
                bad |= at
                clip[k] = x.min() if level == x.min() else clip[k]
        d = x[:, 2:] - 2 * x[:, 1:-1] + x[:, :-2]
        d = np.where(bad[:, 2:] | bad[:, 1:-1] | bad[:, :-2], np.nan, d)
        d = d.reshape(ty, tile, tx, tile).transpose(0, 2, 1, 3).reshape(ty * tx, tile * tile)
        nans = np.count_nonzero(np.isnan(d), axis=1)
        keep = nans < tile * tile // 2
        if keep.any():
            mad = _row_mad(d[keep], nans[keep])
            sigma[k] = 1.4826 * float(np.percentile(mad, 20)) / math.sqrt(6.0)
    return sigma, clip


def _row_mad(d: np.ndarray, nans: np.ndarray) -> np.ndarray:
    """Median absolute deviation of each row of ``d``, ignoring NaN. Rows without NaN (nearly all) take the
    plain median, which is ~10x faster than ``nanmedian``'s masked-array path."""
    mad = np.empty(len(d))
    full = nans == 0
    if full.any():
        x = d[full]
        mad[full] = np.median(np.abs(x - np.median(x, axis=1, keepdims=True)), axis=1)
    if not full.all():
        x = d[~full]
        mad[~full] = np.nanmedian(np.abs(x - np.nanmedian(x, axis=1, keepdims=True)), axis=1)
    return mad


def _grow(mask: np.ndarray) -> np.ndarray:
    """Dilate a boolean mask (..., h, w) by its 3x3 neighbourhood."""
    out = mask.copy()
    out[..., 1:, :] |= mask[..., :-1, :]
    out[..., :-1, :] |= mask[..., 1:, :]
    grown = out.copy()
    grown[..., 1:] |= out[..., :-1]
    grown[..., :-1] |= out[..., 1:]
    return grown


def _gain_from_blocks(ref_blocks, mov_blocks, blk: int, ref_noise, mov_noise, white_margin: float):
    """Global and per-channel gains from block stats and per-channel ``(sigma, clip)`` of both frames."""
    (ref_mean, ref_max, ref_min), (mov_mean, mov_max, _) = ref_blocks, mov_blocks
    (rsig, rclip), (msig, mclip) = ref_noise, mov_noise
    if min(ref_mean.shape[1:]) < 3:
        return float("nan"), (float("nan"),) * 4  # frame smaller than 3x3 blocks
    # Blocks are chosen on the reference (the cleaner frame) and on the moving frame's level predicted from
    # it, not on the moving frame's noisy values, which would bias the ratio. Saturated blocks go with their
    # neighbours (a residual misalignment moves a clipped highlight's flux across block borders), and so do
    # blocks with a pixel within 3 sigma of black clipping (noise clipped at 0 DN biases it up). The sums run
    # over blocks with signal (mean 3 standard errors above 0) plus their neighbours, so that flux a residual
    # misalignment moves across the edge of a bright region is still counted.
    base = ~_grow((ref_max >= white_margin) | (mov_max >= white_margin))
    base &= ref_min > (rclip + 3 * rsig)[:, None, None]
    base[:, [0, -1], :] = base[:, :, [0, -1]] = False  # border blocks: clamped in _block_sums
    per, num_all, den_all = [], 0.0, 0.0
    for c in range(4):
        r, m = ref_mean[c], mov_mean[c]
        bright = base[c] & (r > max(3 * rsig[c] / blk, 1e-6))  # std error of a block mean: sigma / blk
        if np.count_nonzero(bright) >= _MIN_BLOCKS:
            g0 = float(np.median(m[bright] / r[bright]))
            base[c] &= ref_min[c] * g0 > mclip[c] + 3 * msig[c]
            bright &= base[c] & (r * g0 > 3 * msig[c] / blk)
        if np.count_nonzero(bright) < _MIN_BLOCKS:
            per.append(float("nan"))
            continue
        ratio = m[bright] / r[bright]
        med = float(np.median(ratio))
        spread = max(5 * 1.4826 * float(np.median(np.abs(ratio - med))), 1e-3 * abs(med))
        outlier = np.zeros_like(bright)
        outlier[bright] = np.abs(ratio - med) > spread  # motion, hot pixels, a light switched on
        sel = _grow(bright) & base[c] & ~_grow(outlier)
        num, den = float(m[sel].sum()), float(r[sel].sum())
        per.append(num / den)
        num_all, den_all = num_all + num, den_all + den
    return (num_all / den_all if den_all > 0 else float("nan")), tuple(per)


def estimate_gain(
    ref, moving, *, white_margin: float = _WHITE_MARGIN, shift: tuple[float, float] = (0.0, 0.0)
) -> tuple[float, tuple[float, float, float, float]]:
    """Exposure gain, brightness of ``moving`` over ``ref``: global and per channel R, G1, G2, B.

    Compares 8x8-packed-px block means (2x2 to 8x8 on frames under 192 px) over blocks with signal (and their neighbours), with no sample at or
    above ``white_margin`` in either frame or a neighbouring block, and no pixel within 3 noise std of black
    clipping (in-camera clipping is detected as a floor holding >0.1% of samples); blocks whose ratio is more
    than 5 MAD from the median go with their neighbours. The gain is the ratio of sums over the rest. Noise
    std is measured on flat tiles of each frame.

    Parameters
    ----------
    ref, moving
        Normalised packed planes (4, h, w) of the same shape.
    white_margin
        Normalised level from which a sample counts as (nearly) saturated.
    shift
        Shift of ``moving`` relative to ``ref`` in mosaic px, as :func:`estimate_shift` returns it: its integer
        packed part crops the overlap and its sub-pixel part moves ``ref``'s block sums (bilinear). Leave
        ``(0, 0)`` for aligned frames.

    Returns
    -------
    gain, (gain_r, gain_g1, gain_g2, gain_b)
        Dimensionless. A channel with fewer than 8 usable blocks is NaN; ``gain`` pools the other channels
        (NaN if none).
    """
    ref, moving = _check_planes(ref, "ref"), _check_planes(moving, "moving")
    if ref.shape != moving.shape:
        raise ValueError(f"ref and moving must have the same shape, got {ref.shape} and {moving.shape}")
    return _gain_from_blocks(
        *_aligned_blocks(ref, moving, shift), _noise_floor(ref), _noise_floor(moving), white_margin
    )


# -- the pair check ------------------------------------------------------------------------------------------


def _meta_levels(meta: Mapping, which: str) -> tuple[np.ndarray, np.ndarray]:
    missing = [k for k in ("black_level", "white_level") if meta.get(k) is None]
    if missing:
        raise RawlabError(
            f"{which} metadata lacks {' and '.join(missing)}: QA needs black and white levels (DN)"
        )
    return levels(meta["black_level"], meta["white_level"])


@dataclasses.dataclass(frozen=True)
class PreparedFrame:
    """What :func:`check_pair` computes from one frame alone, kept to check a reference against many frames.

    ``dn`` the packed planes (DN), ``black`` and ``span`` its levels per channel, ``crop`` the normalised central
    crop the alignment reads, ``noise`` its per-channel ``(sigma, black clip level)`` (:func:`_noise_floor`).
    """

    dn: np.ndarray
    black: np.ndarray
    span: np.ndarray
    crop: np.ndarray
    noise: tuple[np.ndarray, np.ndarray]


def prepare_frame(planes_dn, meta: Mapping, which: str = "reference") -> PreparedFrame:
    """A frame's part of :func:`check_pair`, done once: pass it as ``ref_dn`` to check several noisy frames
    against one reference (the catalog build does, one QA task per reference) for the same results.

    Raises
    ------
    RawlabError
        If ``meta`` lacks the black or white level.
    """
    dn = _check_planes(planes_dn, "ref_dn" if which == "reference" else "moving_dn")
    black, span = _meta_levels(meta, which)
    crop = normalise(dn[(slice(None), *_central(dn, _CROP))], black, meta["white_level"])
    return PreparedFrame(dn, black, span, crop, _noise_floor(crop))


def check_pair(
    ref_dn,
    moving_dn,
    *,
    ref_meta: Mapping,
    meta: Mapping,
    thresholds: QAThresholds | Mapping = QAThresholds(),
    ref_stats: Mapping | None = None,
    stats: Mapping | None = None,
) -> dict[str, Any]:
    """Quality checks of a noisy frame against its clean reference: the noisy frame's catalog QA columns.

    Parameters
    ----------
    ref_dn, moving_dn
        Packed planes (4, h, w) in DN as captured: the clean reference, then the noisy frame. ``ref_dn`` may be
        a :class:`PreparedFrame` of the reference (:func:`prepare_frame`), made once for all its frames.
    ref_meta, meta
        Their metadata: ``black_level`` (4 values R, G1, G2, B, DN), ``white_level`` (DN), ``iso`` and
        ``exposure_time`` (s). ISO and exposure may be missing or None: the gain is then measured, not checked.
    thresholds
        :class:`QAThresholds`, or a dict for :meth:`QAThresholds.from_dict`.
    ref_stats, stats
        Whole-frame :func:`frame_stats` when ``ref_dn``/``moving_dn`` are crops (the catalog build passes a
        central crop and the statistics it measured at ingest, so QA reads a fraction of each frame).

    Returns
    -------
    dict
        The keys of :data:`QA_COLUMNS`: ``align_dy``, ``align_dx`` (mosaic px, ``moving(y, x) = ref(y - dy,
        x - dx)``), ``align_match`` (-1..1), ``gain``, ``gain_r`` ... ``gain_b`` (noisy over clean brightness),
        ``expected_gain`` (ISO x exposure ratio, NaN if unknown), ``saturated_frac``, ``ref_saturated_frac``
        (0..1), ``mean_level`` (noisy frame, normalised), ``status`` (``"ok"`` or ``"excluded"``) and
        ``reason`` (``""``, or one sentence per failed check naming value and threshold, joined by ``"; "``).
        A pair whose gain differs from 1 but matches the metadata is ok: the noise fit matches exposure by the
        measured gain. A flat-field pair is not excluded for its (meaningless) shift or match.

    Raises
    ------
    RawlabError
        If either metadata lacks the black or white level, or a threshold is invalid.
    """
    t = QAThresholds.from_dict(thresholds) if isinstance(thresholds, Mapping) else thresholds
    ref = ref_dn if isinstance(ref_dn, PreparedFrame) else prepare_frame(ref_dn, ref_meta)
    ref_dn, rblack, rspan = ref.dn, ref.black, ref.span
    moving_dn = _check_planes(moving_dn, "moving_dn")
    mblack, mspan = _meta_levels(meta, "noisy frame")
    ref_stats = ref_stats if ref_stats is not None else frame_stats(ref_dn, rblack, ref_meta["white_level"])
    stats = stats if stats is not None else frame_stats(moving_dn, mblack, meta["white_level"])
    exp = expected_gain(
        ref_meta.get("iso"), ref_meta.get("exposure_time"), meta.get("iso"), meta.get("exposure_time")
    )
    row: dict[str, Any] = dict.fromkeys(QA_COLUMNS[:8], float("nan"))
    row.update(expected_gain=float("nan") if exp is None else exp, saturated_frac=stats["saturated_frac"])
    row.update(ref_saturated_frac=ref_stats["saturated_frac"], mean_level=stats["mean_level"])
    if ref_dn.shape != moving_dn.shape:
        reason = f"size mismatch: noisy frame {moving_dn.shape[1:]} vs reference {ref_dn.shape[1:]} packed px"
        return {**row, "status": "excluded", "reason": reason}
    reasons: list[str] = []
    if np.array_equal(ref_dn, moving_dn):  # a copy of the reference (re-saved, or the same file twice)
        reasons.append(
            "identical to its reference: the residual noisy - clean is exactly zero, so the pair holds no noise "
            "to learn or measure (a copy of the same capture?)"
        )
    if stats["mean_level"] < t.min_mean_level:
        reasons.append(
            f"too dark to check: mean level {stats['mean_level']:.3g} is below min_mean_level {t.min_mean_level:.3g}"
        )
    worst = max(stats["saturated_frac"], ref_stats["saturated_frac"])
    if worst > t.max_saturated:
        which = "noisy frame" if stats["saturated_frac"] >= ref_stats["saturated_frac"] else "reference"
        reasons.append(
            f"saturated: {worst:.1%} of the {which} is clipped, above max_saturated {t.max_saturated:.1%}"
        )

    # Alignment on normalised central crops: the only float copies of pixels made (the reference's once).
    rcrop, (rsig, rclip) = ref.crop, ref.noise
    mcrop = normalise(moving_dn[(slice(None), *_central(moving_dn, _CROP))], mblack, meta["white_level"])
    msig, mclip = _noise_floor(mcrop)
    fits = min(rcrop.shape[1:]) / 2 - 2  # on small frames, the widest search the crop allows
    search = max(0.0, min(max(16.0, 2 * t.max_shift), fits))  # at least +-16 px, beyond max_shift
    dy, dx, match, texture_r, texture_m = _align(rcrop, mcrop, search, 20)
    row.update(align_dy=dy, align_dx=dx, align_match=match)
    # A flat field (both frames without structure above their noise: a noise-calibration pair) has nothing
    # to align, and needs no alignment: its shift and match are noise, so they exclude nothing.
    flat = texture_r < 4 * np.sum(rsig**2) / 16 and texture_m < 4 * np.sum(msig**2) / 16
    if match < t.min_match and not flat:
        reasons.append(f"no reliable alignment: match {match:.2f} is below min_match {t.min_match:.3g}")
    elif math.hypot(dy, dx) > t.max_shift and not flat:
        reasons.append(
            f"misaligned: shift ({dy:.1f}, {dx:.1f}) px, length {math.hypot(dy, dx):.2f} px, exceeds max_shift "
            f"{t.max_shift:.3g} px"
        )

    # Gain over the whole overlap: block stats taken in DN (integer, exact), then normalised. Black clips at
    # 0 DN whatever the crop shows, or higher where the data sit on a floor.
    col = (slice(None), None, None)
    rb, mb, blk = _aligned_blocks(ref_dn, moving_dn, (dy, dx))
    rb = tuple((x - rblack[col]) / rspan[col] for x in rb)
    mb = tuple((x - mblack[col]) / mspan[col] for x in mb)
    rnoise, mnoise = (rsig, np.maximum(rclip, -rblack / rspan)), (msig, np.maximum(mclip, -mblack / mspan))
    gain, per = _gain_from_blocks(rb, mb, blk, rnoise, mnoise, _WHITE_MARGIN)
    row.update(gain=gain, gain_r=per[0], gain_g1=per[1], gain_g2=per[2], gain_b=per[3])
    if not math.isfinite(gain):
        reasons.append("exposure not measurable: no block has signal free of saturation and black clipping")
    elif exp is not None and abs(gain / exp - 1) > t.gain_tolerance:
        reasons.append(
            f"exposure mismatch: measured gain {gain:.3g} vs {exp:.3g} from ISO x exposure time "
            f"(off by {abs(gain / exp - 1):.0%}, above gain_tolerance {t.gain_tolerance:.0%})"
        )
    return {**row, "status": "excluded" if reasons else "ok", "reason": "; ".join(reasons)}

"""Robust merge of aligned burst frames: the pairwise frequency-domain Wiener merge of HDR+ (Hasinoff et al.,
SIGGRAPH Asia 2016, section 5), per Bayer plane, driven by the Poisson-Gaussian noise law.

Each packed plane is cut into tiles of ``tile`` pixels overlapping by half (:func:`rawlab.burst.align.
tile_origins`), each multiplied by the raised-cosine window ``w(n) = sin^2(pi (n + 1/2) / tile)``, whose
half-overlapped copies sum to exactly 1, so the merged tiles are simply added back. For each tile, with ``R``
the DFT of the reference's tile and ``Z_k`` that of frame ``k``'s tile at its aligned position (resampled by
its sub-pixel displacement, :func:`rawlab.burst.resample.shifted_tiles`), every frequency is merged as

    ``M = (1 / N) sum_k (Z_k + A_k (R - Z_k))``

where ``A_k`` in [0, 1] is how much of frame ``k`` is rejected at that frequency. Where a frame agrees with the
reference within the noise, ``A`` is small and the frame is averaged in; where it differs by more (motion the
alignment could not follow, an occlusion, detail the resampler got wrong), ``A`` goes to 1 and the reference is
kept: the merge does not ghost, it just denoises less there.

**The weight.** HDR+ takes ``A = |D|^2 / (|D|^2 + c s^2)`` with ``D = R - Z_k`` and ``s^2`` the variance of one
DFT coefficient of a windowed tile of the noise: HDR+ takes ``sigma^2 sum(w^2)`` with ``sigma^2 = a mu + b`` the
noise law ``Var[x] = a x + b`` (normalised units) at the tile's mean level ``mu``. rawlab sums each pixel's own
variance, ``s^2 = sum(w^2 sigma_p^2)`` with ``sigma_p^2 = a x_p + b`` at the reference's sample, and 0 where that
sample is clipped at white (1): a clipped sample carries no noise, so an alternate that differs there, as an
interpolated plateau a little below white does, is rejected rather than averaged in (with the tile's mean level,
clipped plateaus merged about 0.3 % below white; on the burst benchmark's scenes the change lifted PG-1's merge
at ISO 1600 by 0.08 dB, and 0.09 on the photographs below). Over the frame's edge, where tiles reach beyond it,
see :func:`_spectra`. On noise alone ``|D|^2 / s^2`` is ``2 E`` with ``E ~ Exp(1)``, a draw so spread that ``A``
rejects a sizeable, random part of frames that agree: with ``c = 8``, 8 frames of a burst that did not move at
all gained 6.9 dB of the ideal 9.0 (PG-1 at ISO 800, the merge's own alignment). rawlab decides on what the noise
does not explain:

    ``r = box(|D|^2 / s^2)``,  ``e = max(r - 2, 0)``,  ``A = e / (e + c)``

``box`` the mean over ``SMOOTH x SMOOTH`` (5 x 5) neighbouring frequencies of the tile (circular along the full
axis of the real DFT, the edge repeated along the half axis), which makes ``r`` about 2 with a spread of a third
to a fifth where ``D`` is noise (neighbouring coefficients of a windowed tile correlate), and ``2`` the mean of
``|D|^2 / s^2`` that noise alone gives, subtracted. Noise alone then leaves ``A`` near 0, and the same burst
gains 7.9 dB. What is left, motion and resampling error, concentrates in some frequencies and spreads to their
neighbours, so it is still rejected. ``c`` (``robustness``, 3) trades denoising for rejection. On shaken PG-1
bursts of photographs the burst benchmark does not score (astronaut, immunohistochemistry, hubble_deep_field,
seed 2000; 8 frames; stop 37's aligner and tile noise) HDR+'s weight gained +3.73 / +4.61 / +4.94 dB over the
reference at ISO 800 / 1600 / 3200, this one +4.18 / +5.14 / +5.64 with ``c = 3`` (``c`` 2 and 4 within 0.08 dB
of it), and the moving region gained +1.90 / +2.06 / +2.80 dB over the reference against +1.08 / +1.30 / +2.30:
it ghosts no more, it rejects less noise. Without the subtraction (the box alone) the gain was 0.1 dB.

That first pass rejects a frame also where the *reference's* noise makes ``R - Z_k`` large, which every pair
shares. A second pass (``passes=2``, the default) decides again with the first merge ``M1`` in place of ``R``,
``r`` then ``box(|M1 - Z_k|^2 / (v_k / 2))`` with ``v_k`` the noise variance of ``M1 - Z_k`` from the first pass's
weights (so noise alone again gives 2 on average, as ``Var(R - Z_k) = 2 s^2`` in the first pass); a rejected frame
still falls back on ``R``, so moving content stays the reference's. Falling back on ``M1`` instead was 0.2 to 0.35
dB worse.

The merged noise is estimated from the weights: with independent noise of equal variance in every frame, a
coefficient's variance is ``((1 + sum A_k)^2 + sum (1 - A_k)^2) / N^2`` times a single frame's; its mean over
all tiles and frequencies of a plane is that plane's **variance factor** (1 for one frame, ``1 / N`` for a
perfect average), by which the law's ``(a, b)`` are scaled for the merged frame's NoiseProfile. It takes the
weights as given; a frame's own noise raises its rejection, which lowers its weight, so on a burst that differs by
noise alone the merge's noise is below the estimate: 0.114 of a frame's against an estimate of 0.132 for 8 frames of
a chart moved by whole Bayer periods (MP-2, ISO 3200; ``tests/test_burst_merge.py``). On bursts of photographs
(MP-2 coffee at ISO 800 and 3200, PG-1 rocket at 1600, still and shaken; stop 37) what the merge left was 3 % below to 14 %
above the estimate: there the resampling error counts as noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft  # float32 in, complex64 out (numpy's FFT works in float64)
from scipy.ndimage import uniform_filter

from .align import TILES, Alignment, align_burst, tile_origins, within
from .resample import mosaic_tiles, shifted_tiles

__all__ = ["PASSES", "ROBUSTNESS", "SMOOTH", "Merged", "merge_burst", "window"]

ROBUSTNESS = 3.0  # c in A = e / (e + c) (module docstring): larger merges more (and ghosts sooner)
SMOOTH = 5  # |D|^2 / its noise is averaged over SMOOTH x SMOOTH neighbouring frequencies of a tile's DFT
PASSES = 2  # the second pass compares each frame with the first merge instead of the noisy reference
_BLOCK = 16  # tile rows merged at a time


@dataclass
class Merged:
    """The merge of a burst.

    Attributes
    ----------
    planes
        ``float32 (4, h, w)``: merged packed planes R, G1, G2, B, normalised.
    variance_factor
        ``(4,)``: merged noise variance over a single frame's, per plane (module docstring).
    alignments
        Per frame its :class:`~rawlab.burst.align.Alignment` (the reference's all zero).
    reference
        Index of the reference frame.
    """

    planes: np.ndarray
    variance_factor: np.ndarray
    alignments: list[Alignment]
    reference: int

    def noise(self, a, b) -> tuple[np.ndarray, np.ndarray]:
        """The merged frame's ``(a, b)`` per channel, from the input's."""
        k = self.variance_factor
        return np.asarray(a, np.float64) * k, np.asarray(b, np.float64) * k


def window(tile: int) -> np.ndarray:
    """The 2-D raised-cosine window ``(tile, tile)``; copies shifted by ``tile / 2`` sum to 1."""
    w = np.sin(np.pi * (np.arange(tile) + 0.5) / tile) ** 2
    return np.outer(w, w).astype(np.float32)


def _overlap_add(tiles: np.ndarray, h: int, w: int, tile: int) -> np.ndarray:
    """Sum half-overlapping tiles ``(C, ny, nx, tile, tile)`` back into ``(C, h, w)``: tiles of one parity in
    each axis do not overlap, so each parity is one reshape and add."""
    s = tile // 2
    c, ny, nx = tiles.shape[:3]
    canvas = np.zeros((c, (ny + 1) * s, (nx + 1) * s), np.float32)
    for py in (0, 1):
        for px in (0, 1):
            t = tiles[:, py::2, px::2]
            my, mx = t.shape[1:3]
            canvas[:, py * s : py * s + my * tile, px * s : px * s + mx * tile] += t.transpose(
                0, 1, 3, 2, 4
            ).reshape(c, my * tile, mx * tile)
    return canvas[:, s : s + h, s : s + w]


def merge_burst(
    frames: np.ndarray,
    a,
    b,
    *,
    reference: int = 0,
    tile: int = TILES[0],
    robustness: float = ROBUSTNESS,
    alignments: list[Alignment] | None = None,
    passes: int = PASSES,
    cfa: str | None = None,
) -> Merged:
    """Align every frame to the reference and merge them (module docstring).

    Parameters
    ----------
    frames
        ``(N, 4, h, w)`` packed normalised planes R, G1, G2, B (:meth:`rawlab.rawio.RawFrame.normalized`),
        all of one scene, size and exposure.
    a, b
        The noise law ``Var[x] = a x + b`` per channel R, G1, G2, B (or one value), normalised units.
    reference
        The frame the others are aligned and merged to.
    tile
        Tile size in packed pixels (even); alignment and merge share it.
    robustness
        ``c`` of the Wiener weight: larger merges more and rejects motion less.
    alignments
        Precomputed alignments (one per frame), else computed with :func:`rawlab.burst.align.align_burst`.
    cfa
        The frames' CFA pattern: alternate tiles are then resampled through a demosaic of the frame at mosaic
        resolution (:func:`rawlab.burst.resample.mosaic_tiles`), which undoes much of each plane's aliasing;
        without it each plane is resampled alone (:func:`rawlab.burst.resample.shifted_tiles`).
    passes
        1: HDR+'s merge against the reference; 2 (default): the rejection decided again against the first
        merge (module docstring).
    """
    frames = np.asarray(frames, np.float32)
    if frames.ndim != 4 or frames.shape[1] != 4:
        raise ValueError(f"frames must be (N, 4, h, w) packed planes, got shape {frames.shape}")
    n, _, h, w = frames.shape
    if not 0 <= reference < n:
        raise ValueError(f"reference {reference} is not a frame of a burst of {n}")
    if tile < 4 or tile % 2:
        raise ValueError(f"tile must be even and at least 4, got {tile}")
    a = np.broadcast_to(np.asarray(a, np.float64), (4,)).reshape(4, 1, 1)
    b = np.broadcast_to(np.asarray(b, np.float64), (4,)).reshape(4, 1, 1)
    y0, x0 = tile_origins(h, tile), tile_origins(w, tile)
    if alignments is None:
        alignments = align_burst(frames, reference, tile)
    win = window(tile)
    merged = np.empty((4, len(y0), len(x0), tile, tile), np.float32)
    factor_sum = np.zeros(4)
    for r0 in range(0, len(y0), _BLOCK):  # a block of tile rows at a time bounds the memory
        rows = slice(r0, r0 + _BLOCK)
        fr, fz, s2 = _spectra(frames, reference, alignments, y0[rows], x0, rows, tile, a, b, win, cfa)
        m, f = _wiener(fr, fz, s2, robustness, passes)
        merged[:, rows] = sfft.irfft2(m, s=(tile, tile))
        factor_sum += f.sum(axis=(1, 2, 3, 4))
    factor = factor_sum / (len(y0) * len(x0) * tile * (tile // 2 + 1))
    return Merged(_overlap_add(merged, h, w, tile), factor, alignments, reference)


def _spectra(frames, reference, alignments, y0, x0, rows, tile, a, b, win, cfa):
    """DFTs of the windowed tiles of the reference ``(4, ny, nx, T, T/2+1)`` and of every other frame at its
    aligned position ``(N-1, ...)``, and the noise variance of one coefficient per tile ``(4, ny, nx, 1, 1)``.

    A tile at the frame's edge reaches beyond it, where the frames repeat their edge pixels; an alternate's
    repeated edge is other content than the reference's wherever the frame moved, and that difference would
    reject the whole tile. So beyond the frame every alternate takes the reference's pixels (``R - Z_k`` is 0
    there) and ``s^2`` counts only the window's energy inside the frame, so that noise alone still gives
    ``r = 2`` on average."""
    zero = np.zeros((len(y0), len(x0), 2), np.float32)
    ref_tiles = shifted_tiles(frames[reference], y0, x0, tile, zero)
    fr = sfft.rfft2(ref_tiles * win)
    inside = _inside(frames.shape[-2:], y0, x0, tile)
    # Each pixel's noise variance from the law at its own level; a sample at white (clipped) has none.
    var = np.where(
        ref_tiles >= 1.0, 0.0, a[..., None, None] * np.maximum(ref_tiles, 0.0) + b[..., None, None]
    )
    s2 = (var * win * win * inside).sum(axis=(-2, -1))[..., None, None].astype(np.float32)
    fz = np.empty((len(frames) - 1, *fr.shape), fr.dtype)
    others = [k for k in range(len(frames)) if k != reference]
    for i, k in enumerate(others):
        d = alignments[k].displacement[rows]
        tiles = (
            shifted_tiles(frames[k], y0, x0, tile, d)
            if cfa is None
            else mosaic_tiles(frames[k], cfa, y0, x0, tile, d)
        )
        fz[i] = sfft.rfft2(np.where(inside, tiles, ref_tiles) * win)  # outside the frame: R - Z_k = 0
    return fr, fz, s2


def _inside(shape, y0, x0, tile) -> np.ndarray:
    """``bool (ny, nx, T, T)``: which pixels of each tile lie inside the frame (edge tiles reach beyond it)."""
    h, w = shape
    r = np.arange(tile)
    return within(y0[:, None] + r, (), h)[:, None, :, None] & within(x0[:, None] + r, (), w)[None, :, None, :]


def _wiener(fr, fz, s2, robustness: float, passes: int):
    """The merged spectra and each coefficient's variance factor (module docstring), from the reference's
    spectra ``fr``, the other frames' ``fz`` and the noise variance ``s2`` of one coefficient."""
    n = fz.shape[0] + 1

    def weights(target, var):  # var: half the variance of target - Z_k, so noise alone gives r = 2 on average
        d = target[None] - fz
        r = (d.real * d.real + d.imag * d.imag) / (var + 1e-30)
        lead = r.ndim - 2
        r = uniform_filter(
            r, size=(1,) * lead + (SMOOTH, SMOOTH), mode=("nearest",) * lead + ("wrap", "nearest")
        )
        excess = np.maximum(r - 2.0, 0.0)  # what the noise does not explain
        return (excess / (excess + robustness)).astype(np.float32)

    # Pass 1, as HDR+: each frame against the reference; a rejected frame is replaced by the reference.
    rej = weights(fr, s2)
    merged = (fr + (fz + rej * (fr[None] - fz)).sum(axis=0)) / n
    coef_r = (1.0 + rej.sum(axis=0)) / n  # the weight of the reference in the merge, and of each frame
    coef_z = (1.0 - rej) / n
    for _ in range(passes - 1):
        # Again against the merge, whose noise is lower than the reference's: a frame is no longer rejected
        # for the reference's own noise. Var(merge - Z_k) = s2 (sum of squared weights + 1 - 2 coef_z[k]),
        # against 2 s2 for R - Z_k: the same c is the same multiple of the difference's noise variance.
        own = coef_r**2 + (coef_z**2).sum(axis=0)
        rej = weights(merged, 0.5 * s2 * (own[None] + 1.0 - 2.0 * coef_z))
        merged = (fr + (fz + rej * (fr[None] - fz)).sum(axis=0)) / n  # a rejected frame: the reference
        coef_r = (1.0 + rej.sum(axis=0)) / n
        coef_z = (1.0 - rej) / n
    return merged, coef_r**2 + (coef_z**2).sum(axis=0)

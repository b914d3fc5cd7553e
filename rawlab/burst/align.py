"""Coarse-to-fine tile alignment of burst frames on the Bayer mosaic (HDR+, Hasinoff et al., SIGGRAPH Asia 2016).

Frames are aligned on their grey image: the mean of the four packed planes, i.e. the mosaic binned 2x2, so one
grey pixel is one Bayer period (two mosaic pixels) and the same displacement applies to every plane. A Gaussian
pyramid of the grey image (each level blurred and decimated by ``FACTORS`` relative to the level below) is
matched from the coarsest level down:

- every level is cut into tiles of ``TILES`` pixels overlapping by half (at the finest level exactly the
  merge's tiles, :mod:`rawlab.burst.merge`);
- at each coarse level every tile searches ``RADII`` pixels around its initial guess with the L2 distance;
  the finest level searches +-1 pixel with the L1 distance, which is more robust to outliers (HDR+); the
  coarsest level searches wider when a small frame has too few levels for the pyramid to reach ``REACH``
  packed pixels;
- a tile's initial guess is the displacement of the coarser level, scaled up, from the coarse tile nearest its
  centre or one of the two next nearest (the candidate that matches best at zero offset wins): so a tile on an
  object boundary can take the motion of either side (HDR+, section 4);
- at the finest level the integer optimum is refined to sub-pixel precision by a separable parabola through
  the L2 distances of its 3x3 neighbourhood (clamped to half a pixel), then by ``LK_STEPS`` Lucas-Kanade
  steps (Gauss-Newton on the windowed squared difference, with the alternate tile resampled at the current
  displacement by :func:`rawlab.burst.resample.shifted_tiles`; both images blurred by ``LK_SIGMA`` so the gradients are not noise):
  the parabola alone is biased towards whole pixels by up to a tenth of a pixel. A tile whose gradients
  cannot fix both directions (flat, or a single edge) keeps the parabola's estimate.

Hand shake moves the whole frame rigidly, so the tiles' displacements should follow one smooth field, and
each tile's own estimate scatters about it by its noise and aliasing (0.15 packed pixels at ISO 800 on PG-1,
0.7 at ISO 3200 on MP-2, robust standard deviations), more on flat tiles and over the frame's border. Last,
the frame's **global motion** is fitted to its tiles' displacements: an affine map of the tile centre, by
iteratively reweighted least squares (Huber, then Tukey's biweight), over the textured tiles wholly inside the
frame, so tiles on a moving object do not pull it. Each tile then compares its blurred, windowed squared
difference to the reference at the global motion and at its own displacement, over the pixels that lie inside
the frame at both (beyond its edge a frame repeats its edge pixels, and a tile over the border matches that
repetition). Its own displacement was fitted to the noise, so it matches better by noise alone: the tile
keeps it only if it matches better by more than ``GLOBAL_MARGIN`` (0.5) times the cost of the noise itself
(the difference's robust variance at the global motion times the weights' sum, about twice what fitting two
parameters to the blurred noise gains). A tile on local motion (a moving object, parallax the map cannot
follow) matches far better at its own and keeps it; a flat tile, or one with a single edge, takes the map.

On the burst benchmark's hand-shaken PG-1 bursts at ISO 1600 the global motion is within 0.01 to 0.03 packed
pixels of the truth on average, the tiles' own estimates 0.2 to 0.85 off. Taking it wherever it matched no worse
(until stop 37) still left the tiles 0.15 to 0.64 off on average and 1 in 10 more than 0.24 to 1.44 off, most of
them flat or over the border; now they are 0.015 to 0.06 off on average and 9 in 10 within 0.02 to 0.06 (on the
smaller bursts of ``tests/test_burst_align.py`` within 0.03 to 0.14). With the merge's changes of the same stop (:mod:`rawlab.burst.merge`: edge
tiles, clipped samples) the 8-frame merge rose by 0.37 to 0.57 dB on the photographs the burst benchmark does not
score (``benchmarks/burst.py --scenes astronaut,immunohistochemistry,hubble_deep_field --seed 2000``), most of it
from this rule (the edge tiles gave 0.09 to 0.15 of it); margins 0.5, 1 and 2 were within 0.01 dB of each other
there. On a chart moved by whole Bayer periods at ISO 3200 on MP-2, whose tiles constrain one direction weakly,
the map is off by up to 0.14 pixels in it, and a larger margin cost more (8.9 dB of gain at 0.5, 8.7 at 1, 9.1
with the old rule): the margin is the smallest of those that tied. A looser rule still, every tile within a pixel
of the map taking it, lost 0.3 dB on that chart.

Displacements are therefore per tile, in packed (grey) pixels, real-valued: the merge resamples each alternate
tile at its own sub-pixel displacement (through a demosaic at mosaic resolution,
:func:`rawlab.burst.resample.mosaic_tiles`, or each plane alone, :func:`~rawlab.burst.resample.shifted_tiles`), taking every plane's
samples at its own CFA sites, so the CFA phase never changes. Convention: ``alt(p + d) = ref(p)``, i.e. the
content moved by ``d``, the catalog's shift convention (``alt(y, x) = ref(y - dy, x - dx)``) in packed
pixels; twice it in mosaic pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .resample import shifted_tiles

__all__ = [
    "FACTORS",
    "RADII",
    "TILES",
    "Alignment",
    "align_burst",
    "align_frame",
    "global_motion",
    "grey",
    "tile_origins",
    "within",
]

FACTORS = (2, 4, 4)  # each coarser level's decimation relative to the one below it
TILES = (16, 16, 8, 8)  # tile size per level, finest first (packed pixels of that level)
RADII = (1, 4, 4, 4)  # search radius per level, finest first
LK_STEPS = 2  # Lucas-Kanade refinements of the finest level's sub-pixel estimate
LK_SIGMA = 1.0  # packed pixels: Gaussian blur of both grey images for the Lucas-Kanade gradients
MIN_TILES = 2  # a level is used only if it holds at least this many tiles across its smaller side
REACH = 16  # packed pixels: the coarsest level searches far enough for the whole pyramid to reach this far
_IRLS_STEPS = 8  # reweighting steps of the global motion's robust fit
# A tile keeps its own displacement only if it matches better than the global motion by this many times the
# noise's own cost (module docstring)
GLOBAL_MARGIN = 0.5


@dataclass
class Alignment:
    """Per-tile displacements of one frame against the reference.

    Attributes
    ----------
    displacement
        ``float (ny, nx, 2)``: ``(dy, dx)`` per tile, packed pixels (twice that in mosaic pixels).
    tile
        Tile size at the finest level; tile ``(i, j)`` covers rows ``[i*tile/2 - tile/2, i*tile/2 + tile/2)``.
    """

    displacement: np.ndarray
    tile: int

    def median_shift(self, weights: np.ndarray | None = None) -> tuple[float, float]:
        """The frame's overall ``(dy, dx)`` in mosaic pixels: the median over tiles (``weights`` selects)."""
        d = self.displacement.reshape(-1, 2)
        if weights is not None:
            d = d[np.asarray(weights, bool).reshape(-1)]
        dy, dx = np.median(d, axis=0) * 2.0
        return float(dy), float(dx)


def grey(planes: np.ndarray) -> np.ndarray:
    """The grey image of packed planes ``(4, h, w)``: their mean, float32 ``(h, w)`` (the mosaic binned 2x2)."""
    return np.asarray(planes, np.float32).mean(axis=0)


def tile_origins(n: int, tile: int) -> np.ndarray:
    """First row (or column) of each tile covering ``n`` pixels with half-overlapping tiles: ``i*s - s`` for
    ``i = 0 .. ceil(n / s)`` where ``s = tile / 2``; every pixel lies in exactly two tiles."""
    s = tile // 2
    return np.arange(-(-n // s) + 1) * s - s


def _pyramid(image: np.ndarray) -> list[np.ndarray]:
    """The grey image and its coarser levels (Gaussian blur, then decimation), finest first; a level is kept
    only while its tiles still number ``MIN_TILES`` across."""
    from scipy.ndimage import gaussian_filter

    levels = [np.asarray(image, np.float32)]
    for i, f in enumerate(FACTORS):
        coarse = gaussian_filter(levels[-1], sigma=0.5 * f, mode="nearest")[f // 2 :: f, f // 2 :: f]
        if min(coarse.shape) < MIN_TILES * TILES[i + 1]:
            break
        levels.append(coarse)
    return levels


def _gather(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """``image[ys, xs]`` with indices clipped to the image (edge extension): ``ys (..., T, 1)``, ``xs (..., 1, T)``."""
    h, w = image.shape[-2:]
    return image[..., np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)]


def _tiles(image: np.ndarray, y0: np.ndarray, x0: np.ndarray, tile: int) -> np.ndarray:
    """Tiles of ``image`` at rows ``y0`` and columns ``x0``: ``(..., ny, nx, tile, tile)`` (edges extended)."""
    r = np.arange(tile)
    return _gather(image, (y0[:, None] + r)[:, None, :, None], (x0[:, None] + r)[None, :, None, :])


def _costs(ref_tiles, alt, y0, x0, tile, disp, offsets, power) -> np.ndarray:
    """Distance between each reference tile and the alternate tile at ``disp + offset``, for every offset:
    ``(n_offsets, ny, nx)``; ``power`` 1 (L1) or 2 (L2). The alternate's tiles are gathered once, with a
    margin as wide as the largest offset, and each offset is a view into them."""
    m = max(max(abs(oy), abs(ox)) for oy, ox in offsets)
    r = np.arange(tile + 2 * m) - m
    ys = (y0[:, None] + disp[..., 0])[..., None, None] + r[:, None]
    xs = (x0[None, :] + disp[..., 1])[..., None, None] + r[None, :]
    ext = _gather(alt, ys, xs)  # (ny, nx, tile + 2m, tile + 2m)
    out = np.empty((len(offsets), *disp.shape[:2]), np.float32)
    for i, (oy, ox) in enumerate(offsets):
        diff = ref_tiles - ext[..., m + oy : m + oy + tile, m + ox : m + ox + tile]
        out[i] = (np.abs(diff) if power == 1 else diff * diff).sum(axis=(-2, -1))
    return out


def _search(ref_tiles, alt, y0, x0, tile, disp, radius, power) -> np.ndarray:
    # Nearest offsets first, so that a tie (a flat tile) keeps the initial guess.
    offsets = sorted(
        ((oy, ox) for oy in range(-radius, radius + 1) for ox in range(-radius, radius + 1)),
        key=lambda o: o[0] ** 2 + o[1] ** 2,
    )
    costs = _costs(ref_tiles, alt, y0, x0, tile, disp, offsets, power)
    return disp + np.asarray(offsets)[np.argmin(costs, axis=0)]


def _upsample(coarse: np.ndarray, c_tile: int, f: int, y0: np.ndarray, x0: np.ndarray, tile: int):
    """Three candidate initial displacements per fine tile (scaled by ``f``): from the coarse tile nearest
    its centre, and from the next nearest in y and in x."""
    cs = c_tile // 2
    cy = (y0 + tile / 2) / f / cs  # the fine tile's centre in coarse tile-index units
    cx = (x0 + tile / 2) / f / cs
    ny, nx = coarse.shape[:2]
    iy, ix = np.clip(np.rint(cy), 0, ny - 1).astype(int), np.clip(np.rint(cx), 0, nx - 1).astype(int)
    jy = np.clip(np.where(cy >= iy, iy + 1, iy - 1), 0, ny - 1)
    jx = np.clip(np.where(cx >= ix, ix + 1, ix - 1), 0, nx - 1)
    return [
        coarse[iy[:, None], ix[None, :]] * f,
        coarse[jy[:, None], ix[None, :]] * f,
        coarse[iy[:, None], jx[None, :]] * f,
    ]


def _subpixel(ref_tiles, alt, y0, x0, tile, disp) -> np.ndarray:
    """Separable parabola through the L2 distances at the integer optimum and its 4 neighbours."""
    offsets = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]
    c0, cym, cyp, cxm, cxp = _costs(ref_tiles, alt, y0, x0, tile, disp, offsets, 2)
    out = disp.astype(np.float32)
    for axis, (lo, hi) in enumerate(((cym, cyp), (cxm, cxp))):
        curv = lo - 2 * c0 + hi
        step = np.where(curv > 0, 0.5 * (lo - hi) / np.where(curv > 0, curv, 1.0), 0.0)
        out[..., axis] += np.clip(step, -0.5, 0.5)
    return out


def _window(tile: int) -> np.ndarray:
    """The raised-cosine window ``(tile, tile)`` the sub-pixel steps weigh a tile's pixels by."""
    w = np.sin(np.pi * (np.arange(tile) + 0.5) / tile) ** 2
    return np.outer(w, w)


def _lucas_kanade(ref_s: np.ndarray, alt_s: np.ndarray, y0, x0, tile: int, disp: np.ndarray) -> np.ndarray:
    """``LK_STEPS`` Gauss-Newton steps on each tile's windowed squared difference (module docstring), on the
    grey images blurred by ``LK_SIGMA``; each tile moves at most one pixel from ``disp`` in all. Returns the
    displacements, which tiles' gradients fixed both directions (the others keep ``disp``) and each tile's
    smaller structure-tensor eigenvalue."""
    gy, gx = np.gradient(ref_s)
    zero = np.zeros_like(disp)
    r_t, gy_t, gx_t = shifted_tiles(np.stack([ref_s, gy, gx]), y0, x0, tile, zero)
    w = _window(tile)
    syy, sxx, sxy = ((w * u * v).sum(axis=(-2, -1)) for u, v in ((gy_t, gy_t), (gx_t, gx_t), (gx_t, gy_t)))
    det = syy * sxx - sxy * sxy
    # Both directions fixed: the smaller eigenvalue of the structure tensor is at least 1% of the larger.
    ok = det > 0.01 * (syy + sxx) ** 2 / 1.01
    smaller = 0.5 * (syy + sxx) - np.sqrt(np.maximum(0.25 * (syy - sxx) ** 2 + sxy * sxy, 0.0))
    det = np.where(ok, det, 1.0)
    out = disp.copy()
    for _ in range(LK_STEPS):
        (a_t,) = shifted_tiles(alt_s[None], y0, x0, tile, out)
        e = w * (a_t - r_t)
        by, bx = (e * gy_t).sum(axis=(-2, -1)), (e * gx_t).sum(axis=(-2, -1))
        step_y = -(sxx * by - sxy * bx) / det
        step_x = -(syy * bx - sxy * by) / det
        step = np.where(ok[..., None], np.stack([step_y, step_x], axis=-1), 0.0)
        out = np.clip(out + step, disp - 1.0, disp + 1.0).astype(np.float32)
    return out, ok, smaller


def align_frame(
    ref_grey: np.ndarray, alt_grey: np.ndarray, tile: int = TILES[0], *, regularise: bool = True
) -> Alignment:
    """Align one frame's grey image to the reference's (module docstring).

    Parameters
    ----------
    ref_grey, alt_grey
        ``(h, w)`` grey images (:func:`grey`) of the reference and the frame, same shape.
    tile
        Finest-level tile size, packed pixels (even); the merge must use the same.
    regularise
        Let tiles that agree with the frame's global motion take it (module docstring); False keeps every
        tile's own estimate.

    Returns
    -------
    Alignment
        One displacement per finest-level tile (:func:`tile_origins` in each axis).
    """
    from scipy.ndimage import gaussian_filter

    if ref_grey.shape != alt_grey.shape:
        raise ValueError(f"frames differ in size: {ref_grey.shape} and {alt_grey.shape}")
    tiles = (tile, *TILES[1:])
    ref_levels, alt_levels = _pyramid(ref_grey), _pyramid(alt_grey)
    disp = None
    for lv in range(len(ref_levels) - 1, -1, -1):
        ref, alt, t = ref_levels[lv], alt_levels[lv], tiles[lv]
        y0, x0 = tile_origins(ref.shape[0], t), tile_origins(ref.shape[1], t)
        ref_tiles = _tiles(ref, y0, x0, t)
        power = 1 if lv == 0 else 2
        if disp is None:
            disp = np.zeros((len(y0), len(x0), 2), np.int64)
        else:
            candidates = _upsample(disp, tiles[lv + 1], FACTORS[lv], y0, x0, t)
            costs = np.stack([_costs(ref_tiles, alt, y0, x0, t, c, [(0, 0)], power)[0] for c in candidates])
            disp = np.take_along_axis(np.stack(candidates), np.argmin(costs, axis=0)[None, ..., None], 0)[0]
        radius = RADII[lv]
        if lv == len(ref_levels) - 1:  # a small frame has few levels: search wider at the coarsest
            scale = int(np.prod(FACTORS[:lv]))
            radius = max(
                radius, -(-(REACH - sum(RADII[i] * int(np.prod(FACTORS[:i])) for i in range(lv))) // scale)
            )
        disp = _search(ref_tiles, alt, y0, x0, t, disp, radius, power)
        if lv == 0:
            ref_s, alt_s = (gaussian_filter(v, LK_SIGMA, mode="nearest") for v in (ref, alt))
            d, ok, smaller = _lucas_kanade(
                ref_s, alt_s, y0, x0, t, _subpixel(ref_tiles, alt, y0, x0, t, disp)
            )
            if regularise:
                d = _follow_global(ref_s, alt_s, d, ok, smaller, y0, x0, t)
            return Alignment(d, tile)
    raise AssertionError("unreachable")  # pragma: no cover


def align_burst(frames: np.ndarray, reference: int = 0, tile: int = TILES[0]) -> list[Alignment]:
    """Every frame of packed planes ``(N, 4, h, w)`` aligned to frame ``reference`` (:func:`align_frame` on their
    grey images), the reference's own all zero: what :func:`rawlab.burst.merge_burst` merges by."""
    h, w = frames.shape[-2:]
    g = grey(frames[reference])
    zero = np.zeros((len(tile_origins(h, tile)), len(tile_origins(w, tile)), 2), np.float32)
    return [
        Alignment(zero, tile) if k == reference else align_frame(g, grey(frames[k]), tile)
        for k in range(len(frames))
    ]


def global_motion(
    displacement: np.ndarray, y0: np.ndarray, x0: np.ndarray, tile: int, reliable: np.ndarray | None = None
) -> np.ndarray:
    """The affine field ``(ny, nx, 2)`` that best explains per-tile displacements ``(ny, nx, 2)`` (tiles at
    ``y0`` x ``x0``, packed pixels), at each tile's centre, fitted robustly (module docstring) to the tiles
    ``reliable`` marks (all when None, or when it marks too few)."""
    d = np.asarray(displacement, np.float64).reshape(-1, 2)
    cy, cx = np.meshgrid(y0 + tile / 2, x0 + tile / 2, indexing="ij")
    span = max(float(np.ptp(cy)), float(np.ptp(cx)), 1.0)  # scaled coordinates keep the system conditioned
    design = np.stack([np.ones(cy.size), (cy - cy.mean()).ravel() / span, (cx - cx.mean()).ravel() / span], 1)
    use = np.ones(len(d), bool)
    if reliable is not None and np.count_nonzero(reliable) >= 2 * design.shape[1]:
        use = np.asarray(reliable, bool).ravel()
    if use.sum() < 2 * design.shape[1]:  # too few tiles for an affine map: a translation
        design = design[:, :1]
    w = use.astype(np.float64)
    for step in range(_IRLS_STEPS):
        coef = np.linalg.lstsq(design * w[:, None], d * w[:, None], rcond=None)[0]
        r = np.linalg.norm(d - design @ coef, axis=1)
        sigma = max(1.4826 * float(np.median(r[use])), 1e-3)  # robust standard deviation
        if step < _IRLS_STEPS // 2:  # Huber first, from the least-squares start
            w = use / np.maximum(1.0, r / (2.0 * sigma))
        else:  # then Tukey's biweight, which gives gross outliers no weight at all
            w = use * np.clip(1.0 - (r / (4.685 * sigma)) ** 2, 0.0, None) ** 2
    return (design @ coef).reshape(displacement.shape)


def within(pos: np.ndarray, shifts, n: int) -> np.ndarray:
    """Whether positions ``pos`` (rows or columns, ``(..., T)``) lie inside ``[0, n)``, and inside it after each
    shift in ``shifts`` (``(...)`` each, the sub-pixel interpolation's taps included)."""
    ok = (pos >= 0) & (pos < n)
    for d in shifts:
        moved = pos + d[..., None]
        ok = ok & (moved >= 2) & (moved <= n - 4)
    return ok


def _follow_global(ref_s, alt_s, disp, ok, smaller, y0, x0, tile: int) -> np.ndarray:
    """Tiles whose own displacement matches no better than the frame's global motion, beyond the noise's margin,
    take the global motion (module docstring; the grey images blurred as for Lucas-Kanade). The motion is
    fitted to the tiles wholly inside the frame whose Lucas-Kanade step fixed both directions (``ok``) with the
    stronger half of the gradients (``smaller``, the structure tensor's smaller eigenvalue): a tile over the
    border matches the edge's extension, and a flat one, or one with a single edge, says little of the motion."""
    h, w = ref_s.shape
    inside = ((y0 >= 0) & (y0 + tile <= h))[:, None] & ((x0 >= 0) & (x0 + tile <= w))[None]
    reliable = ok & inside
    if reliable.any():
        reliable &= smaller >= np.median(smaller[reliable])
    field = global_motion(disp, y0, x0, tile, reliable).astype(np.float32)
    (r_t,) = shifted_tiles(ref_s[None], y0, x0, tile, np.zeros_like(disp))
    (at_field,) = shifted_tiles(alt_s[None], y0, x0, tile, field)
    (at_own,) = shifted_tiles(alt_s[None], y0, x0, tile, disp)
    # Both compared only where the tile's pixels lie inside the reference and, at both displacements, inside the
    # frame: beyond its edge a frame repeats it, and a tile over the border matches that repetition.
    r = np.arange(tile)
    weight = _window(tile) * (
        within(y0[:, None, None] + r, (field[..., 0], disp[..., 0]), h)[..., :, None]
        & within(x0[None, :, None] + r, (field[..., 1], disp[..., 1]), w)[..., None, :]
    )
    # The tile's own displacement was fitted to its noise, so its cost is lower than at the true motion by
    # noise alone: it is kept only where it is lower than the global motion's by more than GLOBAL_MARGIN times
    # the cost of the noise itself, the difference's variance (robust, over the tiles inside the frame) times
    # the weights' sum.
    diff = (at_field - r_t)[inside] if inside.any() else at_field - r_t
    noise = (1.4826 * float(np.median(np.abs(diff - np.median(diff))))) ** 2
    c_field, c_own = ((weight * (v - r_t) ** 2).sum(axis=(-2, -1)) for v in (at_field, at_own))
    better = c_field <= c_own + GLOBAL_MARGIN * noise * weight.sum(axis=(-2, -1))
    return np.where(better[..., None], field, disp).astype(disp.dtype)

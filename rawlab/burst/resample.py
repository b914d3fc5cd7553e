"""Resampling an alternate frame's Bayer planes at a sub-pixel displacement, for the merge.

A packed plane samples its colour once per Bayer period, so fine detail in it is aliased, and no interpolation
of the plane alone can give its values half a period away. :func:`mosaic_tiles` interpolates at mosaic
resolution instead: the frame is demosaicked (:func:`demosaic_frame`) and each plane's colour is resampled with
Lanczos-3 at that plane's own sites moved by the displacement. At a whole-period displacement it returns the
plane's own samples exactly.

The demosaic is LibRaw's DHT (:mod:`rawlab.demosaic`), an edge-directed demosaic: the planes are mapped into its
16-bit range from ``-DHT_OFFSET`` (or the lowest sample, if lower) to 1 (or the highest), so that the noise below
black is not clipped, and each site's own sample is put back exactly. Until stop 36 it was Malvar, He and Cutler's
linear one (:func:`demosaic_mhc`, ICASSP 2004: bilinear corrected by the other channels' Laplacian, 5x5 filters),
still the fallback where a rawpy build lacks DHT. On PG-1 bursts of photographs the burst benchmark does not score
(astronaut, immunohistochemistry, hubble_deep_field; 8 frames) DHT lifted the merge by 0.20 / 0.21 / 0.05 / 0.08 dB
at ISO 800 / 1600 / 3200 / 6400, and the burst model as ``rawlab denoise --burst`` runs it by 0.13 / 0.11 dB at
ISO 800 / 1600: on aliased detail it interpolates along edges where MHC's linear filters blur across them. It costs
more: an 8-frame 12 MP merge took 91.0 s against 75.6 s with MHC on 2 cores (``benchmarks/burst_speed.py``).
"""

from __future__ import annotations

import numpy as np

from ..bayer import channel_offsets, unpack

__all__ = ["demosaic_frame", "demosaic_mhc", "lanczos_weights", "mosaic_tiles", "shifted_tiles"]

LANCZOS = 3  # Lanczos-3: 6 taps per axis, -2 .. 3 around the floor
# Packed rows demosaicked beyond those a band of tiles reaches (:func:`mosaic_tiles`): DHT's directions near a
# band's cut edge differ from the whole frame's, and 8 rows (16 mosaic rows) keep that away from the taps.
BAND_MARGIN = 8
# Where 0 lands in DHT's range: DHT compares neighbours by their ratios, so the offset sets how much the darkest
# noisy samples sway its directions. On the photographs above, 0 / 0.02 / 0.05 / 0.1 / 0.2 / 0.5 gave the PG-1 merge
# at ISO 800 45.00 / 45.02 / 45.04 / 45.06 / 45.05 / 44.97 dB (MP-2: 0.05 / 0.1 / 0.2 within 0.01 dB).
DHT_OFFSET = 0.1

# Malvar-He-Cutler filters (x 1/8): G at an R or B site; a colour at a G site whose same-colour neighbours are
# left and right (ROW) or above and below (COL); R at a B site and B at an R site (DIAG).
_G = np.array([[0, 0, -1, 0, 0], [0, 0, 2, 0, 0], [-1, 2, 4, 2, -1], [0, 0, 2, 0, 0], [0, 0, -1, 0, 0]]) / 8
_ROW = (
    np.array([[0, 0, 0.5, 0, 0], [0, -1, 0, -1, 0], [-1, 4, 5, 4, -1], [0, -1, 0, -1, 0], [0, 0, 0.5, 0, 0]])
    / 8
)
_COL = _ROW.T
_DIAG = (
    np.array(
        [[0, 0, -1.5, 0, 0], [0, 2, 0, 2, 0], [-1.5, 0, 6, 0, -1.5], [0, 2, 0, 2, 0], [0, 0, -1.5, 0, 0]]
    )
    / 8
)


def lanczos_weights(frac: np.ndarray) -> np.ndarray:
    """Lanczos-3 weights ``(..., 6)`` for taps ``-2 .. 3`` around the floor, fractional offsets in [0, 1)."""
    t = np.arange(-LANCZOS + 1, LANCZOS + 1)
    x = frac[..., None] - t
    w = np.sinc(x) * np.sinc(x / LANCZOS)
    return (w / w.sum(axis=-1, keepdims=True)).astype(np.float32)


def shifted_tiles(
    planes: np.ndarray, y0: np.ndarray, x0: np.ndarray, tile: int, disp: np.ndarray
) -> np.ndarray:
    """Tiles of ``planes (C, h, w)`` sampled at ``p + d`` for each tile's real displacement ``d = disp[i, j]``
    (``(dy, dx)``, packed pixels): ``(C, ny, nx, tile, tile)``, separable Lanczos-3 resampling, the image
    edges extended. A whole-pixel displacement copies pixels exactly."""
    lo = np.floor(disp).astype(np.int64)
    frac = (disp - lo).astype(np.float32)
    whole = not frac.any()  # whole pixels: a copy
    n = tile if whole else tile + 2 * LANCZOS - 1
    r = np.arange(n) - (0 if whole else LANCZOS - 1)
    ys = (y0[:, None] + lo[..., 0])[..., None, None] + r[:, None]  # (ny, nx, n, 1)
    xs = (x0[None, :] + lo[..., 1])[..., None, None] + r[None, :]  # (ny, nx, 1, n)
    h, w = planes.shape[-2:]
    g = planes[..., np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)]  # (C, ny, nx, n, n)
    if whole:
        return g
    wy, wx = lanczos_weights(frac[..., 0]), lanczos_weights(frac[..., 1])  # (ny, nx, 6)
    taps = 2 * LANCZOS
    out = wx[None, :, :, None, None, 0] * g[..., :tile]  # (C, ny, nx, n, tile)
    for t in range(1, taps):
        out += wx[None, :, :, None, None, t] * g[..., t : t + tile]
    res = wy[None, :, :, 0, None, None] * out[..., :tile, :]
    for t in range(1, taps):
        res += wy[None, :, :, t, None, None] * out[..., t : t + tile, :]
    return res


def demosaic_mhc(planes: np.ndarray, cfa: str) -> np.ndarray:
    """Full-resolution RGB ``(3, H, W)`` float32 of packed planes ``(4, h, w)`` (Malvar-He-Cutler); each
    site keeps its own sample."""
    from scipy.ndimage import correlate

    planes = np.asarray(planes, np.float32)
    means = np.maximum(planes.reshape(4, -1).mean(axis=1), 1e-6)
    g = 0.5 * (means[1] + means[2])
    scale = np.array([g / means[0], 1.0, 1.0, g / means[3]], np.float32)  # equal channel means
    m = unpack(planes * scale[:, None, None], cfa)
    kernels = {"g": _G, "row": _ROW, "col": _COL, "diag": _DIAG}
    f = {k: correlate(m, v.astype(np.float32), mode="mirror") for k, v in kernels.items()}
    out = np.empty((3, *m.shape), np.float32)
    (ry, rx), (g1y, g1x), (g2y, g2x), (by, bx) = channel_offsets(cfa)
    out[:] = m  # each site keeps its own sample; the other colours are filled in below
    # R: kept at R sites; from G rows/cols at the greens; diagonal at B.
    out[0, g1y::2, g1x::2] = f["row"][g1y::2, g1x::2]  # G1 is on red rows: its red neighbours are left/right
    out[0, g2y::2, g2x::2] = f["col"][g2y::2, g2x::2]
    out[0, by::2, bx::2] = f["diag"][by::2, bx::2]
    out[1, ry::2, rx::2] = f["g"][ry::2, rx::2]
    out[1, by::2, bx::2] = f["g"][by::2, bx::2]
    out[2, g1y::2, g1x::2] = f["col"][g1y::2, g1x::2]  # blue neighbours of G1 are above and below
    out[2, g2y::2, g2x::2] = f["row"][g2y::2, g2x::2]
    out[2, ry::2, rx::2] = f["diag"][ry::2, rx::2]
    out[0] /= scale[0]
    out[2] /= scale[3]
    return out


def demosaic_frame(planes: np.ndarray, cfa: str) -> np.ndarray:
    """Full-resolution RGB ``(3, H, W)`` float32 of packed planes ``(4, h, w)`` for resampling (module docstring):
    LibRaw's DHT, else :func:`demosaic_mhc`; each site keeps its own sample exactly."""
    from ..demosaic import available_demosaics, demosaic

    planes = np.asarray(planes, np.float32)
    if available_demosaics(["DHT"])[1]:
        return demosaic_mhc(planes, cfa)
    lo, hi = min(-DHT_OFFSET, float(planes.min())), max(1.0, float(planes.max()))  # nothing clipped
    scaled = np.moveaxis((planes - lo) / np.float32(hi - lo), 0, -1)
    out = np.moveaxis(demosaic(scaled, cfa, "DHT"), -1, 0) * np.float32(hi - lo) + np.float32(lo)
    for c, (oy, ox) in enumerate(channel_offsets(cfa)):  # each site's own sample, not its 16-bit rounding
        out[(0, 1, 1, 2)[c], oy::2, ox::2] = planes[c]
    return np.ascontiguousarray(out, np.float32)


def mosaic_tiles(
    planes: np.ndarray, cfa: str, y0: np.ndarray, x0: np.ndarray, tile: int, disp: np.ndarray
) -> np.ndarray:
    """Tiles ``(4, ny, nx, tile, tile)`` of ``planes (4, h, w)`` sampled at ``p + d`` per tile (``disp[i, j]``,
    ``(dy, dx)`` packed pixels), through the demosaicked frame (module docstring); edges extended.

    Tiles ``y0`` may be a band of the frame's tile rows: only the mosaic rows they reach are demosaicked."""
    h = planes.shape[-2]
    lo_d = np.floor(2.0 * disp).astype(np.int64)  # mosaic pixels
    frac = (2.0 * disp - lo_d).astype(np.float32)
    reach = int(np.abs(lo_d).max(initial=0)) // 2 + 4 + BAND_MARGIN
    top = max(0, int(y0.min()) - reach)
    bottom = min(h, int(y0.max()) + tile + reach)
    rgb = demosaic_frame(planes[:, top:bottom], cfa)  # mosaic rows 2 top ..
    big_h, big_w = rgb.shape[-2:]
    n = 2 * tile + 2 * LANCZOS - 2  # mosaic rows a tile's taps reach: 2 (tile - 1) + 6
    r = np.arange(n) - (LANCZOS - 1)
    wy, wx = lanczos_weights(frac[..., 0]), lanczos_weights(frac[..., 1])
    out = np.empty((4, len(y0), len(x0), tile, tile), np.float32)
    for c, (oy, ox) in enumerate(channel_offsets(cfa)):
        colour = (0, 1, 1, 2)[c]
        ys = (2 * y0[:, None] + oy + lo_d[..., 0] - 2 * top)[..., None, None] + r[:, None]
        xs = (2 * x0[None, :] + ox + lo_d[..., 1])[..., None, None] + r[None, :]
        g = rgb[colour][np.clip(ys, 0, big_h - 1), np.clip(xs, 0, big_w - 1)]  # (ny, nx, n, n)
        acc = wx[:, :, None, None, 0] * g[..., 0 : 2 * tile : 2]
        for t in range(1, 2 * LANCZOS):
            acc += wx[:, :, None, None, t] * g[..., t : t + 2 * tile : 2]
        res = wy[:, :, 0, None, None] * acc[..., 0 : 2 * tile : 2, :]
        for t in range(1, 2 * LANCZOS):
            res += wy[:, :, t, None, None] * acc[..., t : t + 2 * tile : 2, :]
        out[c] = res
    return out

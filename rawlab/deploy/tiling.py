"""Tile-by-tile inference with overlap and seamless blending.

A network exported at a fixed input shape (TFLite, docs/architecture.md, "Known facts about the stack") sees an image one ``T x T`` tile
at a time. Tiles overlap by at least ``overlap`` packed pixels; along each axis they are spread evenly from
the first row/column to the last, so the image borders are tile borders (the network sees the same edge as
on the whole image) and no padding is added unless the image is smaller than one tile.

Blending: in every overlap, the two tiles' weights are a raised-cosine cross-fade (``cos^2`` and ``sin^2``,
summing to 1) over the middle half of the overlap; the quarter next to each tile's own edge, where the
network saw zero padding instead of the neighbouring pixels, gets weight 0. The 2-D weight of a tile is the
product of its row and column weights, so the weights of all tiles covering a pixel sum to 1 (the output is
also divided by the accumulated weight, which makes that exact under rounding).

A network whose output is larger than its input by ``scale`` (the joint demosaic model: packed planes in,
RGB at mosaic resolution out, ``scale`` 2) is tiled the same way on its input; each weight covers the
``scale x scale`` output pixels of its input pixel, so the weights still sum to 1 everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["blend_weights", "pad_to", "run_tiled", "tile_origins"]


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap`` in common.

    The first tile starts at 0 and the last ends at ``length``; those between are spread evenly.
    ``length`` must be at least ``tile`` (pad smaller images first, :func:`pad_to`).
    """
    if length < tile:
        raise ValueError(f"length {length} is smaller than the tile {tile}; pad the image first")
    if length == tile:
        return [0]
    stride = tile - overlap
    n = 1 + -(-(length - tile) // stride)  # ceil: enough tiles that no overlap is below `overlap`
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _ramp(n: int, width: int) -> np.ndarray:
    """Weights rising from 0 to 1 over the middle ``width`` of ``n`` samples (raised cosine)."""
    i = np.arange(n, dtype=np.float64)
    start = (n - width) / 2
    t = np.clip((i + 0.5 - start) / max(width, 1), 0.0, 1.0)
    return np.sin(0.5 * np.pi * t) ** 2


def blend_weights(origins: list[int], tile: int, overlap: int) -> list[np.ndarray]:
    """1-D weights ``(tile,)`` for each tile of one axis; at every position the weights sum to 1."""
    width = max(1, overlap // 2)
    weights = [np.ones(tile) for _ in origins]
    for k in range(len(origins) - 1):
        common = origins[k] + tile - origins[k + 1]  # overlap of tile k and k+1 (>= overlap)
        up = _ramp(common, min(width, common))
        weights[k + 1][:common] *= up
        weights[k][tile - common :] *= 1.0 - up
    return weights


def pad_to(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad ``(h, w, c)`` at the bottom and right to at least ``height x width``: mirror, else edge values."""
    ph, pw = max(0, height - x.shape[0]), max(0, width - x.shape[1])
    if not ph and not pw:
        return x
    mode = "reflect" if ph < x.shape[0] and pw < x.shape[1] else "edge"
    return np.pad(x, ((0, ph), (0, pw), (0, 0)), mode=mode)


def run_tiled(
    fn: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    tile: int,
    overlap: int,
    *,
    batch: int = 1,
    out_channels: int = 4,
    scale: int = 1,
) -> np.ndarray:
    """Apply ``fn`` to overlapping ``tile x tile`` crops of ``x`` ``(h, w, c)`` and blend the results.

    Parameters
    ----------
    fn
        Maps a batch ``(batch, tile, tile, c)`` float32 to ``(batch, scale * tile, scale * tile,
        out_channels)``; always called with exactly ``batch`` tiles (the last batch is filled with copies of
        its first tile).
    x
        The input, channels last.
    tile, overlap
        Packed pixels; ``overlap`` must be less than half the tile.
    scale
        Output pixels per input pixel along each axis (2: RGB at mosaic resolution from packed planes).

    Returns
    -------
    numpy.ndarray
        ``(scale * h, scale * w, out_channels)`` float32.
    """
    if not 0 <= 2 * overlap < tile:
        raise ValueError(f"overlap {overlap} must be less than half the tile {tile}")
    h, w = x.shape[:2]
    xp = pad_to(np.asarray(x, np.float32), tile, tile)
    hp, wp = xp.shape[:2]
    ys, xs = tile_origins(hp, tile, overlap), tile_origins(wp, tile, overlap)
    wy, wx = blend_weights(ys, tile, overlap), blend_weights(xs, tile, overlap)
    if scale != 1:  # each input pixel's weight on its scale x scale output pixels
        wy, wx = [np.repeat(v, scale) for v in wy], [np.repeat(v, scale) for v in wx]
    s, t = scale, scale * tile
    out = np.zeros((s * hp, s * wp, out_channels), np.float64)
    total = np.zeros((s * hp, s * wp, 1), np.float64)
    jobs = [(i, j) for i in range(len(ys)) for j in range(len(xs))]
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        crops = [xp[ys[i] : ys[i] + tile, xs[j] : xs[j] + tile] for i, j in chunk]
        crops += [crops[0]] * (batch - len(crops))
        ys_out = np.asarray(fn(np.stack(crops)))
        for k, (i, j) in enumerate(chunk):
            wgt = (wy[i][:, None] * wx[j][None, :])[..., None]
            out[s * ys[i] : s * ys[i] + t, s * xs[j] : s * xs[j] + t] += wgt * ys_out[k]
            total[s * ys[i] : s * ys[i] + t, s * xs[j] : s * xs[j] + t] += wgt
    return (out / total)[: s * h, : s * w].astype(np.float32)

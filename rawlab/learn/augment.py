"""Bayer-preserving flips and transposes of packed planes (Liu et al., CVPRW 2019, "Bayer preserving augmentation").

Flipping or transposing a Bayer mosaic changes its CFA phase: a horizontal flip of an even-width ``RGGB`` mosaic
is ``GRBG``, and a transpose of ``GRBG`` is ``GBRG``. The augmented frame must be one the same sensor could have
recorded, so after the flip the mosaic is cropped by one pixel where needed to bring the pattern back to the
sensor's own. In packed space (planes ``R, G1, G2, B``, docs/architecture.md, "Units and conventions") this becomes a per-channel flip
whose offset depends on where the channel sits in the sensor's 2x2 tile, plus a ``G1 <-> G2`` swap under a
transpose (the greens on red rows become the greens on red columns).

An input of ``(H, W)`` packed pixels gives ``(H - 1, W - 1)`` (or ``(W - 1, H - 1)`` when transposed): the
pipeline reads a window one packed pixel larger than the crop, so every one of the 8 operations yields the crop
size. The gather indices are computed once per (pattern, operation, size) from the CFA geometry; the tests
check them against the same operation done on the mosaic with :func:`rawlab.bayer.unpack` and ``pack``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..bayer import channel_offsets

__all__ = ["N_OPS", "augment_packed", "bayer_crop", "describe_op", "op_bits", "op_channels"]

N_OPS = 8  # the dihedral group of the square: (transpose, flip rows, flip columns)
_COLOUR = (0, 1, 1, 2)  # R, G1, G2, B -> R, G, B


def op_bits(op: int) -> tuple[bool, bool, bool]:
    """``(transpose, flip_y, flip_x)`` of operation ``op`` in ``0..7`` (0 is the identity)."""
    if not 0 <= op < N_OPS:
        raise ValueError(f"augmentation op must be in 0..{N_OPS - 1}, got {op}")
    return bool(op & 4), bool(op & 2), bool(op & 1)


def describe_op(op: int) -> str:
    t, fy, fx = op_bits(op)
    names = [n for n, on in (("transpose", t), ("flip-y", fy), ("flip-x", fx)) if on]
    return "+".join(names) or "identity"


def _source(op: int, ht: int, wt: int):
    """The mosaic position in the original of the transformed ``(ht, wt)`` mosaic's ``(yy, xx)``: the
    transformed mosaic is the original transposed (``op`` bit 4), then flipped in rows (2) and columns (1)."""
    t, fy, fx = op_bits(op)

    def source(yy, xx):
        yy = ht - 1 - yy if fy else yy
        xx = wt - 1 - xx if fx else xx
        return (xx, yy) if t else (yy, xx)

    return source


@lru_cache(maxsize=64)
def bayer_crop(cfa: str, op: int) -> tuple[int, int]:
    """The smallest crop ``(oy, ox)`` (mosaic pixels, 0 or 1) of the even-sized mosaic transformed by ``op``
    that restores the ``cfa`` pattern (colours; a transpose may swap G1 and G2): the transformed, cropped
    mosaic ``[oy : H - 2 + oy, ox : W - 2 + ox]`` packs to :func:`augment_packed`'s output."""
    offs = channel_offsets(cfa)
    chan_at = {(dy, dx): c for c, (dy, dx) in enumerate(offs)}
    source = _source(op, 4, 4)  # any even size: only the parities matter

    def colour(y, x):
        return _COLOUR[chan_at[(int(y) % 2, int(x) % 2)]]

    for oy, ox in ((0, 0), (0, 1), (1, 0), (1, 1)):
        if all(colour(*source(oy + dy, ox + dx)) == _COLOUR[c] for c, (dy, dx) in enumerate(offs)):
            return oy, ox
    raise AssertionError(f"no Bayer-preserving crop for {cfa} op {op}")  # pragma: no cover - there always is


@lru_cache(maxsize=512)
def _gather(cfa: str, op: int, h_in: int, w_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source (row, column, channel) in the input planes of every output (row, column, channel)."""
    t = op_bits(op)[0]
    offs = channel_offsets(cfa)
    chan_at = {(dy, dx): c for c, (dy, dx) in enumerate(offs)}
    ht, wt = (2 * w_in, 2 * h_in) if t else (2 * h_in, 2 * w_in)  # the transformed mosaic's size
    source = _source(op, ht, wt)
    oy, ox = bayer_crop(cfa, op)
    h_out, w_out = ht // 2 - 1, wt // 2 - 1
    i = np.arange(h_out)[:, None, None]
    j = np.arange(w_out)[None, :, None]
    dy = np.array([o[0] for o in offs])[None, None, :]
    dx = np.array([o[1] for o in offs])[None, None, :]
    y, x = source(2 * i + dy + oy, 2 * j + dx + ox)
    y, x = np.broadcast_arrays(y, x)
    chan = np.vectorize(lambda a, b: chan_at[(a % 2, b % 2)], otypes=[np.intp])(y, x)
    rows, cols = y // 2, x // 2
    for a in (rows, cols, chan):
        a.setflags(write=False)
    return rows, cols, chan


def op_channels(cfa: str, op: int) -> tuple[int, ...]:
    """The input channel (0-3: R, G1, G2, B) that each output channel of ``op`` reads: the identity, or the
    two greens swapped where a transpose moves the greens on red rows onto red columns."""
    return tuple(int(c) for c in _gather(cfa.upper(), int(op), 2, 2)[2][0, 0])


def augment_packed(planes: np.ndarray, cfa: str, op: int) -> np.ndarray:
    """Apply dihedral operation ``op`` to channels-last packed planes ``(..., H, W, 4)`` of a ``cfa`` sensor.

    Returns ``(..., H - 1, W - 1, 4)`` (transposes: ``(..., W - 1, H - 1, 4)``), still ordered ``R, G1, G2,
    B`` and still in the sensor's own CFA phase: exactly ``pack(crop(op(unpack(planes))))``.
    """
    planes = np.asarray(planes)
    if planes.ndim < 3 or planes.shape[-1] != 4:
        raise ValueError(f"expected channels-last packed planes (..., H, W, 4), got shape {planes.shape}")
    rows, cols, chan = _gather(cfa.upper(), int(op), planes.shape[-3], planes.shape[-2])
    return planes[..., rows, cols, chan]

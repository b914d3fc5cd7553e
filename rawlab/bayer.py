"""Bayer CFA patterns and the packed ``R, G1, G2, B`` representation.

A Bayer mosaic of shape ``(..., H, W)`` is packed into four half-resolution planes ``(..., 4, H/2, W/2)``,
always ordered ``R, G1, G2, B`` whatever the sensor's pattern: G1 is the green sample on the red rows and G2
the green sample on the blue rows (docs/architecture.md, "Units and conventions"). Packing and unpacking are exact inverses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import RawlabError

__all__ = [
    "CFA_PATTERNS",
    "CHANNELS",
    "cfa_from_colors",
    "channel_offsets",
    "from_rggb",
    "levels",
    "normalise",
    "pack",
    "per_site",
    "to_rggb",
    "unpack",
]

CHANNELS: tuple[str, ...] = ("R", "G1", "G2", "B")
CFA_PATTERNS: tuple[str, ...] = ("RGGB", "BGGR", "GRBG", "GBRG")

# (row, col) of each packed channel inside the 2x2 tile, for every pattern. The pattern string lists the
# colours of the tile in reading order: (0,0) (0,1) (1,0) (1,1).
_OFFSETS: dict[str, tuple[tuple[int, int], ...]] = {
    "RGGB": ((0, 0), (0, 1), (1, 0), (1, 1)),
    "BGGR": ((1, 1), (1, 0), (0, 1), (0, 0)),
    "GRBG": ((0, 1), (0, 0), (1, 1), (1, 0)),
    "GBRG": ((1, 0), (1, 1), (0, 0), (0, 1)),
}


def _check_cfa(cfa: str) -> str:
    key = cfa.upper()
    if key not in _OFFSETS:
        raise ValueError(f"unknown CFA pattern {cfa!r}; expected one of {', '.join(CFA_PATTERNS)}")
    return key


def channel_offsets(cfa: str) -> tuple[tuple[int, int], ...]:
    """Return the ``(row, col)`` of R, G1, G2 and B inside the 2x2 tile of ``cfa``."""
    return _OFFSETS[_check_cfa(cfa)]


def pack(mosaic: np.ndarray, cfa: str) -> np.ndarray:
    """Pack a Bayer mosaic ``(..., H, W)`` into planes ``(..., 4, H/2, W/2)`` ordered R, G1, G2, B.

    Raises
    ------
    ValueError
        If ``H`` or ``W`` is odd or the pattern is unknown.
    """
    mosaic = np.asarray(mosaic)
    h, w = mosaic.shape[-2:]
    if h % 2 or w % 2:
        raise ValueError(f"a Bayer mosaic needs even height and width, got {h}x{w}; crop it first")
    planes = [mosaic[..., dy::2, dx::2] for dy, dx in channel_offsets(cfa)]
    return np.stack(planes, axis=-3)


def unpack(planes: np.ndarray, cfa: str) -> np.ndarray:
    """Inverse of :func:`pack`: planes ``(..., 4, h, w)`` back to a mosaic ``(..., 2h, 2w)``."""
    planes = np.asarray(planes)
    if planes.shape[-3] != 4:
        raise ValueError(f"expected 4 packed planes on axis -3, got shape {planes.shape}")
    h, w = planes.shape[-2:]
    mosaic = np.empty((*planes.shape[:-3], 2 * h, 2 * w), dtype=planes.dtype)
    for c, (dy, dx) in enumerate(channel_offsets(cfa)):
        mosaic[..., dy::2, dx::2] = planes[..., c, :, :]
    return mosaic


def per_site(values: Sequence[float], cfa: str) -> np.ndarray:
    """Lay per-channel values (R, G1, G2, B) onto the 2x2 CFA tile of ``cfa``, as a ``(2, 2)`` array."""
    tile = np.empty((2, 2), dtype=np.asarray(values).dtype)
    for v, (dy, dx) in zip(values, channel_offsets(cfa), strict=True):
        tile[dy, dx] = v
    return tile


def cfa_from_colors(tile_colors: np.ndarray | Sequence[Sequence[str]]) -> str:
    """Name the pattern of a 2x2 tile of colour letters (``"R"``, ``"G"``, ``"B"``), e.g. ``"GRBG"``.

    Raises
    ------
    ValueError
        If the tile is not a Bayer tile (one R, two G on opposite corners, one B).
    """
    letters = "".join(str(c) for row in tile_colors for c in row).upper()
    if letters not in _OFFSETS:
        raise ValueError(f"2x2 colour tile {letters!r} is not a Bayer pattern")
    return letters


# -- normalisation (docs/architecture.md, "Units") ------------------------------------------------------------


def levels(black_level, white_level) -> tuple[np.ndarray, np.ndarray]:
    """Black level and usable range ``white - black`` in DN, float64, validated, each ``(..., 4)``.

    Parameters
    ----------
    black_level
        Black level per channel R, G1, G2, B in DN: 4 values (or one for all four), or ``(n, 4)`` for ``n``
        frames.
    white_level
        White (saturation) level in DN: one value, or ``(n,)`` for ``n`` frames.

    Raises
    ------
    RawlabError
        If there are not 4 (or 1) black levels, or white does not exceed every black level.
    """
    black = np.asarray(black_level, dtype=np.float64)
    if black.ndim <= 1:
        black = black.reshape(-1)
        black = np.repeat(black, 4) if black.size == 1 else black
    if black.shape[-1:] != (4,):
        raise RawlabError(f"black_level needs 4 values (R, G1, G2, B) in DN, got {black_level!r}")
    span = np.asarray(white_level, dtype=np.float64)[..., None] - black
    if not np.all(span > 0):
        raise RawlabError(
            f"white_level {np.asarray(white_level).tolist()!r} DN must exceed every black level "
            f"{black.tolist()} DN"
        )
    return black, span


def normalise(planes_dn, black_level, white_level, *, channel_axis: int = -3, dtype=np.float32):
    """The normalised signal ``x = (DN - black_c) / (white - black_c)``, float32, 0 = black, 1 = white.

    This is rawlab's only implementation of the normalisation; every package calls it.

    Parameters
    ----------
    planes_dn
        Packed planes in DN with the four channels R, G1, G2, B on ``channel_axis`` (default ``-3``: the
        store's ``(..., 4, h, w)``; pass ``-1`` for the model's channels-last ``(..., h, w, 4)``). NumPy and
        Dask arrays both work (Dask stays lazy).
    black_level
        Black level per channel in DN: 4 values (or one for all four), or ``(n, 4)`` when ``planes_dn`` is a
        stack of ``n`` frames ``(n, 4, h, w)``.
    white_level
        White level in DN: one value, or ``(n,)`` for a stack of frames.
    dtype
        ``float32`` (default: images) or ``float64`` (sums over many pixels that must stay exact).

    Raises
    ------
    RawlabError
        If the levels are unusable (see :func:`levels`).
    ValueError
        If ``planes_dn`` does not have 4 channels on ``channel_axis``.
    """
    black, span = levels(black_level, white_level)
    ndim = np.ndim(planes_dn)
    axis = channel_axis % ndim if ndim else 0
    if not ndim or planes_dn.shape[axis] != 4:
        raise ValueError(
            f"expected packed planes with 4 channels (R, G1, G2, B) on axis {channel_axis}, "
            f"got shape {np.shape(planes_dn)}"
        )
    # per-frame levels (n, 4) line up with the leading axes; the channel axis takes the 4, the rest broadcast
    trailing = ndim - axis - 1
    shape = black.shape + (1,) * trailing
    b = black.astype(dtype).reshape(shape)
    scale = (1.0 / span).astype(dtype).reshape(shape)
    return (planes_dn.astype(dtype) - b) * scale


def _rggb_axes(cfa: str, first_axis: int) -> tuple[int, ...]:
    ry, rx = channel_offsets(cfa)[0]  # where red sits in the 2x2 tile: a flip of that axis puts it at 0
    return tuple(a for a, f in ((first_axis, ry), (first_axis + 1, rx)) if f)


def to_rggb(planes, cfa: str):
    """Channels-last packed planes ``(..., h, w, 4)`` of a ``cfa`` mosaic, flipped into the RGGB phase.

    Flipping a mosaic of even size along an axis moves each colour to the other parity of that axis and keeps
    rows (columns) of red as rows (columns) of red, so in packed space it is a flip of every plane with the
    channel order ``R, G1, G2, B`` unchanged; the flips that bring red to ``(0, 0)`` make any CFA RGGB.
    """
    axes = _rggb_axes(cfa, -3)
    return np.flip(planes, axes) if axes else planes


def from_rggb(rgb, cfa: str):
    """RGB ``(..., H, W, 3)`` of an RGGB-phase mosaic (:func:`to_rggb` of a ``cfa`` one), flipped back into
    the ``cfa`` mosaic's own geometry."""
    axes = _rggb_axes(cfa, -3)
    return np.flip(rgb, axes) if axes else rgb

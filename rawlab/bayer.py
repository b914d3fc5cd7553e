"""Bayer CFA patterns and the packed ``R, G1, G2, B`` representation.

A Bayer mosaic of shape ``(..., H, W)`` is packed into four half-resolution planes ``(..., 4, H/2, W/2)``,
always ordered ``R, G1, G2, B`` whatever the sensor's pattern: G1 is the green sample on the red rows and G2
the green sample on the blue rows (DESIGN.md, "Channels"). Packing and unpacking are exact inverses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "CFA_PATTERNS",
    "CHANNELS",
    "cfa_from_colors",
    "channel_offsets",
    "pack",
    "per_site",
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

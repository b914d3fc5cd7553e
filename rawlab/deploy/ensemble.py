"""Self-ensemble: a denoiser run on several rotations of a Bayer frame, each mapped back, and averaged.

A network trained with the 8 Bayer-preserving flips and transposes (:mod:`rawlab.learn.augment`) should give
the same answer on a rotated frame, rotated back; one that is not fully trained errs differently on each, and
the mean of its answers errs less. On held-out photographs the built-in model gains about 0.3-0.55 dB from 2
images, 0.37-0.69 dB from 4 and 0.39-0.73 dB from 8, the more the higher the ISO (``benchmarks/quality.py
--ensemble``), at 2, 4 and 8 times the network's cost.

Each image is an exact dihedral operation of the mosaic that keeps the sensor's own CFA phase: the mosaic
transposed and flipped, then cropped by one pixel where needed (:func:`rawlab.learn.augment.bayer_crop`), so it
is :func:`rawlab.learn.augment.augment_packed`'s image. The frame is padded by one packed pixel on every side
first (edge values, whole 2x2 cells, so the phase is kept): every pixel of the frame is in every image. Each
estimate is un-cropped, flipped and transposed back. Each channel keeps its noise law: a transpose swaps the
two greens, and their laws go with them (:func:`rawlab.learn.augment.op_channels`).

:data:`ENSEMBLES` names the images of each size: 2 is the identity and the anti-transpose; 4 the four
rotations; 8 the whole group. :data:`DEFAULT_ENSEMBLE` is what the deploy runtime uses unless told otherwise
(``rawlab denoise --ensemble N``).

A joint demosaic+denoise model's estimate is full-resolution RGB (``rgb=True``): each image's RGB is put back
the same way, pixel for pixel of the mosaic.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import RawlabError

__all__ = ["DEFAULT_ENSEMBLE", "ENSEMBLES", "check_ensemble", "self_ensemble"]

# Operation numbers are rawlab.learn.augment.op_bits's: (transpose, flip rows, flip columns) as bits 4, 2, 1.
ENSEMBLES: dict[int, tuple[int, ...]] = {
    1: (0,),
    2: (0, 7),  # the identity and the anti-transpose
    4: (0, 3, 5, 6),  # the four rotations: 0, 180, 90 and 270 degrees
    8: tuple(range(8)),
}
DEFAULT_ENSEMBLE = 4  # about 90 % of the 8-image gain at half its cost


def check_ensemble(n: int) -> int:
    """``n`` if it is a size of :data:`ENSEMBLES`; a :class:`RawlabError` naming the sizes otherwise."""
    if n not in ENSEMBLES:
        raise RawlabError(f"--ensemble takes {', '.join(map(str, ENSEMBLES))} images, not {n!r}")
    return int(n)


def _transform(mosaic: np.ndarray, op: int) -> np.ndarray:
    """Mosaics ``(..., H, W)`` transposed (``op`` bit 4), then flipped in rows (2) and columns (1): a view."""
    from ..learn.augment import op_bits

    t, fy, fx = op_bits(op)
    m = np.swapaxes(mosaic, -1, -2) if t else mosaic
    return m[..., :: -1 if fy else 1, :: -1 if fx else 1]


def _untransform(mosaic: np.ndarray, op: int) -> np.ndarray:
    from ..learn.augment import op_bits

    t, fy, fx = op_bits(op)
    m = mosaic[..., :: -1 if fy else 1, :: -1 if fx else 1]
    return np.swapaxes(m, -1, -2) if t else m


def self_ensemble(
    fn: Callable[[np.ndarray, list[int]], np.ndarray],
    x: np.ndarray,
    cfa: str,
    n: int = DEFAULT_ENSEMBLE,
    *,
    rgb: bool = False,
) -> np.ndarray:
    """The mean over the :data:`ENSEMBLES` ``[n]`` images of ``fn``'s estimate, mapped back onto ``x``.

    ``x`` is ``(h, w, 4 m)`` channels-last packed planes of ``m`` mosaics of one ``cfa`` (a frame; or a burst
    model's merge and frames), each image the same operation of every mosaic. ``fn(planes, src)`` estimates
    ``(h', w', 4 k)`` packed planes (``k`` mosaics: an estimate, and per-pixel maps that move with it, such as
    the SURE guard's derivatives) from an image ``(h', w', 4 m)`` of any size; ``src`` is the input channel
    (0-3) each channel of every mosaic of the image reads, so that ``fn`` can take each channel's noise law
    (``a[src]``). Returns ``(h, w, 4 k)`` float32; with ``rgb``, ``fn`` estimates ``(2 h', 2 w', 3)`` RGB at
    the mosaic's resolution and the result is ``(2 h, 2 w, 3)``.
    """
    from ..bayer import pack, unpack
    from ..learn.augment import bayer_crop, op_channels

    ops = ENSEMBLES[check_ensemble(n)]
    x = np.asarray(x, np.float32)
    if len(ops) == 1:
        return np.asarray(fn(x, [0, 1, 2, 3]), np.float32)
    cfa = cfa.upper()
    h, w, c = x.shape
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")  # whole 2x2 cells: the CFA phase is kept
    mosaics = unpack(np.moveaxis(padded, -1, 0).reshape(c // 4, 4, h + 2, w + 2), cfa)  # (m, H, W)
    total = None
    for op in ops:
        oy, ox = bayer_crop(cfa, op)
        image = _transform(mosaics, op)
        ht, wt = image.shape[-2:]
        planes = pack(image[:, oy : oy + ht - 2, ox : ox + wt - 2], cfa).reshape(
            c, (ht - 2) // 2, (wt - 2) // 2
        )
        y = np.asarray(fn(np.ascontiguousarray(np.moveaxis(planes, 0, -1)), list(op_channels(cfa, op))))
        y = np.moveaxis(y, -1, 0)
        if not rgb:  # (4 k, h', w') planes -> k mosaics
            y = unpack(y.reshape(-1, 4, *y.shape[1:]), cfa)
        back = np.zeros((len(y), ht, wt), np.float32)
        back[:, oy : oy + ht - 2, ox : ox + wt - 2] = y
        back = _untransform(back, op)  # zero on the one-pixel rim each image lacks, all outside the frame
        total = back if total is None else total + back
    if rgb:
        out = np.moveaxis(total, 0, -1)[2 : 2 * h + 2, 2 : 2 * w + 2]
    else:
        planes = pack(total, cfa)  # (k, 4, H/2, W/2)
        out = np.moveaxis(planes.reshape(-1, *planes.shape[2:]), 0, -1)[1 : h + 1, 1 : w + 1]
    return np.ascontiguousarray(out / np.float32(len(ops)))

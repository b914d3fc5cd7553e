"""A viewable preview of Bayer planes: demosaic, white balance, camera -> sRGB, tone curve, PNG or TIFF.

Deliberately simple (it is for looking at a result, not for finishing photographs):

1. bilinear demosaic of the mosaic (each missing colour is the mean of its nearest same-colour neighbours);
2. the file's as-shot white balance (``RawInfo.wb``), or grey-world when the file has none;
3. camera RGB -> linear sRGB through the file's colour matrix (XYZ -> camera, as LibRaw reports it): as in
   dcraw, ``cam_from_srgb = cam_from_xyz @ xyz_from_srgb`` with rows scaled to sum to 1, then inverted, so
   white stays white; the identity when the file has no matrix;
4. exposure like dcraw's auto-brightness: the 99th percentile of the linear values maps to white (or a
   given white point, to show two renderings alike);
5. the sRGB transfer curve; 8-bit PNG or 16-bit TIFF.
"""

from __future__ import annotations

import os

import numpy as np

from ..bayer import unpack

__all__ = [
    "camera_to_srgb_linear",
    "demosaic_bilinear",
    "linear_preview",
    "render_preview",
    "srgb_preview",
    "write_image",
]

_XYZ_FROM_SRGB = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_K_RB = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 4
_K_G = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], np.float32) / 4


def demosaic_bilinear(planes: np.ndarray, cfa: str) -> np.ndarray:
    """Packed planes ``(4, h, w)`` (R, G1, G2, B) -> camera RGB ``(2h, 2w, 3)`` float32, bilinear."""
    from scipy.ndimage import convolve

    mosaic = unpack(np.asarray(planes, np.float32), cfa)
    ones = np.ones_like(planes[0], dtype=np.float32)
    zeros = np.zeros_like(ones)
    rgb = np.empty((*mosaic.shape, 3), np.float32)
    for c, (sites, kernel) in enumerate((((0,), _K_RB), ((1, 2), _K_G), ((3,), _K_RB))):
        mask = unpack(np.stack([ones if k in sites else zeros for k in range(4)]), cfa)
        rgb[..., c] = convolve(mosaic * mask, kernel, mode="mirror")
    return rgb


def _srgb_from_camera(color_matrix) -> np.ndarray:
    if color_matrix is None:
        return np.eye(3)
    cam_from_srgb = np.asarray(color_matrix, np.float64) @ _XYZ_FROM_SRGB
    sums = cam_from_srgb.sum(axis=1, keepdims=True)
    if np.any(np.abs(sums) < 1e-9):
        return np.eye(3)
    try:
        return np.linalg.inv(cam_from_srgb / sums)
    except np.linalg.LinAlgError:
        return np.eye(3)


def linear_preview(planes: np.ndarray, info, color_matrix=None) -> np.ndarray:
    """Steps 1-3: normalised packed planes ``(4, h, w)`` -> linear sRGB ``(2h, 2w, 3)`` float32, not clipped
    above. ``color_matrix`` (XYZ -> camera) overrides ``info.color_matrix``."""
    return camera_to_srgb_linear(demosaic_bilinear(np.clip(planes, 0.0, 1.0), info.cfa), info, color_matrix)


def camera_to_srgb_linear(rgb: np.ndarray, info, color_matrix=None) -> np.ndarray:
    """Steps 2-3 on camera RGB ``(H, W, 3)`` (normalised; modified in place): white balance and camera ->
    linear sRGB, clipped at 0."""
    if info.wb is not None:
        gains = np.array([info.wb[0], 1.0, info.wb[3]], np.float32)
    else:  # grey world
        means = rgb.reshape(-1, 3).mean(axis=0)
        gains = (means[1] / np.maximum(means, 1e-6)).astype(np.float32)
    rgb *= gains
    cm = info.color_matrix if color_matrix is None else color_matrix
    rgb = rgb @ _srgb_from_camera(cm).T.astype(np.float32)
    return np.clip(rgb, 0.0, None, out=rgb)


def render_preview(planes: np.ndarray, info, color_matrix=None, white: float | None = None) -> np.ndarray:
    """Normalised packed planes ``(4, h, w)`` of a file with :class:`rawlab.rawio.RawInfo` ``info`` -> sRGB
    ``(2h, 2w, 3)`` float32 in ``[0, 1]`` (display-referred).

    ``white`` is the linear value shown as white (default: the 99th percentile of :func:`linear_preview`;
    pass the same value to render two versions of an image alike).
    """
    return srgb_preview(linear_preview(planes, info, color_matrix), white)


def srgb_preview(rgb: np.ndarray, white: float | None = None) -> np.ndarray:
    """Steps 4-5 on linear sRGB ``(H, W, 3)`` (modified in place): exposure and the sRGB curve, ``[0, 1]``."""
    if white is None:
        white = float(np.percentile(rgb, 99.0))
    rgb *= np.float32(1.0 / max(white, 1e-6))
    np.clip(rgb, 0.0, 1.0, out=rgb)
    return np.where(rgb <= 0.0031308, 12.92 * rgb, 1.055 * np.power(rgb, 1 / 2.4) - 0.055).astype(np.float32)


def write_image(path: str | os.PathLike[str], rgb: np.ndarray, fmt: str) -> None:
    """Write display-referred RGB in ``[0, 1]`` as an 8-bit PNG (``"png"``) or a 16-bit TIFF (``"tiff"``)."""
    if fmt == "png":
        from PIL import Image

        Image.fromarray(np.round(rgb * 255).astype(np.uint8), "RGB").save(path, optimize=False)
    elif fmt == "tiff":
        import tifffile

        tifffile.imwrite(path, np.round(rgb * 65535).astype(np.uint16), photometric="rgb")
    else:
        raise ValueError(f"unknown image format {fmt!r}; expected 'png' or 'tiff'")

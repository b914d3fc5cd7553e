"""Noise-free linear scenes in a virtual sensor's normalised raw space.

Natural scenes are scikit-image's bundled photographs (no download) taken back from sRGB to linear camera
raw by the "unprocessing" of Brooks et al. (CVPR 2019): undo the tone curve and the sRGB gamma, undo the
colour correction (sRGB -> XYZ -> camera through the sensor's ColorMatrix), undo the white balance, and keep
the Bayer sample of each pixel. The calibration chart is built in raw space directly: flat patches from deep
shadow to beyond saturation, gradients, and a few coloured patches, the layout a photon-transfer measurement
needs.

Every function returns packed planes ``(4, H/2, W/2)`` in R, G1, G2, B order, float64, where 1.0 is the white
level before clipping (so values above 1.0 saturate), except :func:`render_scene_rgb`: the same scene as full-
resolution linear camera RGB ``(H, W, 3)`` in the same units, before mosaicking (the truth a demosaicer is
scored against). Mosaicking it gives :func:`render_scene`'s planes exactly.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .procedural import mosaic
from .sensors import VirtualSensor

__all__ = [
    "NATURAL_SCENES",
    "chart",
    "chart_rgb",
    "natural_scene",
    "natural_scene_rgb",
    "photo",
    "render_scene",
    "render_scene_rgb",
    "unprocess_srgb",
]

# Photographs bundled with scikit-image (in skimage/data, not fetched).
NATURAL_SCENES: tuple[str, ...] = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "stereo_motorcycle",
    "immunohistochemistry",
    "hubble_deep_field",
    "retina",
)

_SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)


@lru_cache(maxsize=8)
def _load_photo(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo pairs: keep the left view
        img = img[0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3]).astype(np.float64) / 255.0


def _resize_cover(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Scale ``img`` to cover ``h x w`` and centre-crop, keeping the aspect ratio."""
    from skimage.transform import resize

    ih, iw = img.shape[:2]
    scale = max(h / ih, w / iw)
    nh, nw = max(h, round(ih * scale)), max(w, round(iw * scale))
    out = resize(img, (nh, nw), order=1, anti_aliasing=scale < 1, preserve_range=True)
    top, left = (nh - h) // 2, (nw - w) // 2
    return out[top : top + h, left : left + w]


def _camera_from_srgb(sensor: VirtualSensor) -> np.ndarray:
    """sRGB-linear -> camera RGB, rows normalised so that white maps to (1, 1, 1) (white-balanced camera)."""
    cam_from_srgb = np.asarray(sensor.xyz_to_cam) @ _SRGB_TO_XYZ
    return cam_from_srgb / cam_from_srgb.sum(axis=1, keepdims=True)


def unprocess_srgb(srgb: np.ndarray) -> np.ndarray:
    """Display sRGB in ``[0, 1]`` back to linear sRGB: the inverse of the smoothstep global tone curve of Brooks
    et al. (2019), then of the sRGB transfer function."""
    y = np.clip(srgb, 0.0, 1.0)
    toned = 0.5 - np.sin(np.arcsin(np.clip(1.0 - 2.0 * y, -1.0, 1.0)) / 3.0)
    return np.where(toned <= 0.04045, toned / 12.92, ((toned + 0.055) / 1.055) ** 2.4)


def photo(name: str) -> np.ndarray:
    """A bundled photograph (:data:`NATURAL_SCENES`) as display sRGB ``(H, W, 3)`` float64 in ``[0, 1]``."""
    return _load_photo(name)


def natural_scene_rgb(name: str, sensor: VirtualSensor, height: int, width: int) -> np.ndarray:
    """Unprocess a bundled photograph into the sensor's linear camera RGB ``(H, W, 3)`` (not white-balanced),
    scaled so that the 99th percentile of its mosaic is 1.0."""
    linear = unprocess_srgb(_resize_cover(_load_photo(name), height, width))
    # Colour: balanced camera RGB from sRGB, then undo the white balance.
    camera = linear @ _camera_from_srgb(sensor).T / np.asarray(sensor.wb_gains)
    camera = np.clip(camera, 0.0, None)
    # The scale is set on the mosaic (each site keeps its own colour at its own position, so G1 and G2 differ
    # as on a real sensor), so the planes are exactly what natural_scene has always returned.
    return camera / max(np.percentile(mosaic(camera, sensor.cfa), 99.0), 1e-6)


def natural_scene(name: str, sensor: VirtualSensor, height: int, width: int) -> np.ndarray:
    """Unprocess a bundled photograph into the sensor's packed raw planes, 99th percentile at 1.0."""
    return mosaic(natural_scene_rgb(name, sensor, height, width), sensor.cfa)


def chart(sensor: VirtualSensor, height: int, width: int) -> np.ndarray:
    """A calibration chart in packed raw planes.

    Top half: a grid of flat neutral patches whose levels run log-spaced from deep shadow (2e-4 of white) to
    1.15 (clipped), with two black patches (no light: only read noise). Bottom half: horizontal gradients
    from 0 to 1.2, and a row of coloured patches so the channels see different levels at once.
    """
    h, w = height // 2, width // 2
    planes = np.zeros((4, h, w))
    rows, cols = 4, 8
    top = h // 2
    levels = np.concatenate([[0.0, 0.0], np.geomspace(2e-4, 1.15, rows * cols - 2)])
    for i, level in enumerate(levels):
        r, c = divmod(i, cols)
        y0, y1 = r * top // rows, (r + 1) * top // rows
        x0, x1 = c * w // cols, (c + 1) * w // cols
        planes[:, y0:y1, x0:x1] = level
    grad_h = (h - top) * 2 // 3
    ramp = np.linspace(0.0, 1.2, w)
    planes[:, top : top + grad_h, :] = ramp[None, None, :]
    # Squared ramp: more samples in the shadows, where the read-noise term b dominates.
    planes[:, top + grad_h // 2 : top + grad_h, :] = (ramp**2 / 1.2)[None, None, :]
    colours = np.array(
        [[0.8, 0.35, 0.35, 0.1], [0.1, 0.5, 0.5, 0.7], [0.6, 0.6, 0.6, 0.05], [0.02, 0.2, 0.2, 0.9]]
    )
    n = len(colours)
    for i, col in enumerate(colours):
        x0, x1 = i * w // n, (i + 1) * w // n
        planes[:, top + grad_h :, x0:x1] = col[:, None, None]
    return planes


def chart_rgb(sensor: VirtualSensor, height: int, width: int) -> np.ndarray:
    """The chart as linear camera RGB ``(H, W, 3)``: every 2x2 CFA cell takes its planes' R, G (G1 = G2 on the
    chart) and B. Patch edges fall on cell edges, so this is exact; the ramps are 2-pixel steps, as drawn."""
    planes = chart(sensor, height, width)
    rgb = np.stack([planes[0], 0.5 * (planes[1] + planes[2]), planes[3]], axis=-1)
    return np.repeat(np.repeat(rgb, 2, axis=0), 2, axis=1)


def render_scene_rgb(scene: str, sensor: VirtualSensor, height: int, width: int) -> np.ndarray:
    """Full-resolution linear camera RGB ``(H, W, 3)`` of ``scene``, whose mosaic is :func:`render_scene`."""
    if scene == "chart":
        return chart_rgb(sensor, height, width)
    return natural_scene_rgb(scene, sensor, height, width)


def render_scene(scene: str, sensor: VirtualSensor, height: int, width: int) -> np.ndarray:
    """Packed noise-free planes for ``scene`` (``"chart"`` or a name from :data:`NATURAL_SCENES`)."""
    if scene == "chart":
        return chart(sensor, height, width)
    return natural_scene(scene, sensor, height, width)

"""Write demosaiced camera RGB (the joint demosaic+denoise model's output) as a linear DNG or a 16-bit TIFF.

The image is camera-native linear RGB before white balance, in rawlab's normalised units per channel
(``0`` = the black level, ``1`` = the white level, as :func:`rawlab.bayer.normalise` gives for the planes),
``(H, W, 3)``, in the sensor's orientation (as :func:`rawlab.rawio.read_raw` returns the mosaic).

- ``dng``: a LinearRaw DNG (:func:`rawlab.dng.write_linear_dng`) in DN with the source's levels, white
  balance (AsShotNeutral), colour matrices and orientation, so a raw converter (LibRaw, darktable) renders it
  as it renders the source, minus the demosaic. Values below black are kept down to 0 DN, so the shadows of a
  denoised image stay unbiased.
- ``tiff``: a 16-bit RGB TIFF of the same pixels, black-subtracted and scaled so that the white level is
  65535 (what ``dcraw -4 -o 0 -T`` writes), clipped to ``[0, 65535]``; the levels, white balance and colour
  matrix go in its ImageDescription as JSON (``rawlab.linear-tiff/1``).

Levels per RGB channel: R and B keep their plane's black level; G takes the mean of G1 and G2. Each is
rounded to a whole DN, because LibRaw rounds a fractional (RATIONAL) black level; the pixels are scaled with
the rounded value, so the file is self-consistent.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import RawlabError

__all__ = ["FORMATS", "linear_dng_metadata", "rgb_levels", "to_dn", "write_linear_rgb"]

FORMATS = ("dng", "tiff")
ILLUMINANT_D65 = 21  # EXIF LightSource; LibRaw's built-in (Adobe) matrices are for D65
TIFF_SCHEMA = "rawlab.linear-tiff/1"


def rgb_levels(info) -> tuple[np.ndarray, int]:
    """Black levels ``(3,)`` (R, G, B; whole DN) and the white level (DN) of a :class:`rawlab.rawio.RawInfo`."""
    b = np.asarray(info.black_level, np.float64)
    return np.round([b[0], 0.5 * (b[1] + b[2]), b[3]]), int(info.white_level)


def _source_tags(info) -> dict[str, Any]:
    """The source's own DNG/TIFF tags (colour matrices, AsShotNeutral, Orientation), or ``{}`` when the file
    is not a TIFF (CRW, KDC, ...) or cannot be read again."""
    from ..dng import read_dng_tags

    try:
        return read_dng_tags(info.path)
    except (ValueError, OSError):  # tifffile's TiffFileError is a ValueError
        return {}


def _matrix(value) -> np.ndarray | None:
    if value is None or np.shape(value) != (3, 3) or not np.all(np.isfinite(value)):
        return None
    return np.asarray(value, np.float64)


def linear_dng_metadata(info) -> dict[str, Any]:
    """Keyword arguments of :func:`rawlab.dng.write_linear_dng` that carry a source raw's metadata.

    Parameters
    ----------
    info
        :class:`rawlab.rawio.RawInfo` of the source raw.

    Returns
    -------
    dict
        ``black_level`` (3, DN), ``white_level``, ``make``, ``model``, ``unique_camera_model``,
        ``color_matrix1`` and ``calibration_illuminant1`` (and ``color_matrix2`` / ``calibration_illuminant2``
        when the source DNG has a second one), ``as_shot_neutral``, ``orientation``, ``iso``,
        ``exposure_time``. A source DNG's ColorMatrix1/2, CalibrationIlluminant1/2 and AsShotNeutral are
        copied as they are; otherwise the matrix is LibRaw's (a D65 matrix) and the neutral is the reciprocal
        of LibRaw's as-shot white balance. With neither, ``color_matrix1`` is ``None`` (the writer's XYZ ->
        linear sRGB default) and ``as_shot_neutral`` is ``None``.
    """
    tags = _source_tags(info)
    black, white = rgb_levels(info)
    meta: dict[str, Any] = {
        "black_level": black,
        "white_level": white,
        "make": (info.make or "Unknown").strip() or "Unknown",
        "model": (info.model or info.sensor or "Unknown").strip() or "Unknown",
        "unique_camera_model": tags.get("unique_camera_model"),
        "color_matrix1": None,
        "calibration_illuminant1": ILLUMINANT_D65,
        "as_shot_neutral": None,
        "orientation": tags.get("orientation") if tags.get("orientation") in range(1, 9) else 1,
        "iso": round(info.iso) if info.iso and 1 <= round(info.iso) <= 65535 else None,
        "exposure_time": info.exposure_time if info.exposure_time and info.exposure_time > 0 else None,
    }
    cm1 = _matrix(tags.get("color_matrix1"))
    if cm1 is not None:
        meta["color_matrix1"] = cm1
        meta["calibration_illuminant1"] = int(tags.get("calibration_illuminant1") or ILLUMINANT_D65)
        cm2, ill2 = _matrix(tags.get("color_matrix2")), tags.get("calibration_illuminant2")
        if cm2 is not None and ill2 is not None:
            meta["color_matrix2"], meta["calibration_illuminant2"] = cm2, int(ill2)
    elif info.color_matrix is not None:
        meta["color_matrix1"] = _matrix(info.color_matrix)
    neutral = tags.get("as_shot_neutral")
    if neutral is not None and len(neutral) == 3 and all(np.isfinite(neutral)) and min(neutral) > 0:
        meta["as_shot_neutral"] = tuple(float(v) for v in neutral)
    elif info.wb is not None and all(v > 0 for v in info.wb):
        meta["as_shot_neutral"] = (1.0 / info.wb[0], 1.0 / info.wb[1], 1.0 / info.wb[3])
    return meta


def _check_rgb(rgb) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise RawlabError(f"linear RGB must be (H, W, 3), got shape {rgb.shape}")
    bad = int(np.count_nonzero(~np.isfinite(rgb)))
    if bad:
        raise RawlabError(f"linear RGB has {bad} non-finite value(s); the model output is broken")
    return rgb


def to_dn(rgb, black, white: int) -> np.ndarray:
    """Normalised linear RGB ``(H, W, 3)`` -> ``uint16`` DN ``round(black + x * (white - black))`` per
    channel, clipped to ``[0, white]`` (values below black are kept down to 0 DN)."""
    rgb = _check_rgb(rgb)
    black = np.asarray(black, np.float64)
    dn = np.rint(black + rgb.astype(np.float64) * (white - black))
    return np.clip(dn, 0, white).astype(np.uint16)


def write_linear_rgb(
    path: str | os.PathLike[str], rgb, info, fmt: str = "dng", *, software: str | None = None
) -> None:
    """Write normalised linear camera RGB ``(H, W, 3)`` of the raw described by ``info`` as ``fmt``.

    Parameters
    ----------
    path
        Output file; overwritten if it exists.
    rgb
        Camera RGB before white balance, normalised per channel (0 = black, 1 = white), in the orientation
        of the source's mosaic (:func:`rawlab.rawio.read_raw`); float, any range (clipped on writing).
    info
        :class:`rawlab.rawio.RawInfo` of the source raw.
    fmt
        ``"dng"`` (linear DNG, DN, the source's metadata) or ``"tiff"`` (16-bit, white = 65535).
    software
        TIFF Software tag; default ``"rawlab <version>"``.

    Raises
    ------
    RawlabError
        For an unknown format, pixels that are not ``(H, W, 3)`` finite values, or metadata that the file
        format cannot hold (the message says which).
    """
    software = software or f"rawlab {__version__}"
    if fmt not in FORMATS:
        raise RawlabError(f"unknown linear RGB format {fmt!r}; choose one of {', '.join(FORMATS)}")
    meta = linear_dng_metadata(info)
    if fmt == "dng":
        from ..dng import write_linear_dng

        dn = to_dn(rgb, meta["black_level"], meta["white_level"])
        try:
            write_linear_dng(path, dn, software=software, **meta)
        except ValueError as e:  # metadata a DNG cannot hold: say so for this file
            raise RawlabError(f"the linear RGB could not be written as a DNG ({e})") from None
    else:
        _write_tiff(path, _check_rgb(rgb), meta, info, software)


def _write_tiff(path, rgb: np.ndarray, meta: dict[str, Any], info, software: str) -> None:
    import tifffile

    pixels = np.clip(np.rint(rgb.astype(np.float64) * 65535), 0, 65535).astype(np.uint16)
    description = {
        "schema": TIFF_SCHEMA,
        "pixels": "camera RGB before white balance, linear: 65535 * (DN - black) / (white - black)",
        "source": os.path.basename(info.path),
        **{k: v for k, v in meta.items() if k in ("make", "model", "iso", "exposure_time", "orientation")},
        "black_level": [float(b) for b in meta["black_level"]],
        "white_level": meta["white_level"],
        "as_shot_neutral": None if meta["as_shot_neutral"] is None else list(meta["as_shot_neutral"]),
        "color_matrix1": None
        if meta["color_matrix1"] is None
        else np.asarray(meta["color_matrix1"]).tolist(),
        "calibration_illuminant1": meta["calibration_illuminant1"],
    }
    tifffile.imwrite(
        path,
        pixels,
        photometric="rgb",
        software=software,
        description=json.dumps(description),
        metadata=None,  # the description above is the metadata; tifffile's own JSON would replace it
        extratags=[(274, "H", 1, int(meta["orientation"]), True)],  # TIFF Orientation
    )

"""Write Bayer mosaics (and demosaiced linear camera RGB) as DNG 1.4 files that LibRaw (rawpy) reads back
bit-exactly, and read their tags.

Layout (the one cameras and Adobe's converter use)::

    IFD0       NewSubFileType 1: a small 8-bit RGB preview, plus the tags DNG keeps in IFD0
               (Make, Model, DNGVersion, UniqueCameraModel, ColorMatrix1, AsShotNeutral, NoiseProfile, ...)
      SubIFD   NewSubFileType 0: the CFA mosaic and the raw-IFD tags (CFA pattern, black/white levels, crop)
      ExifIFD  ExposureTime, ISOSpeedRatings (LibRaw reads ISO only from here), ExifVersion

The file is written here byte by byte rather than with ``tifffile.TiffWriter``, which cannot write an EXIF
sub-IFD ("ExifIFD and GPSIFD tags are not supported") or nest the raw image in a SubIFD next to one. The
raw image is one uncompressed strip (16-bit, or bit-packed MSB-first when ``bits_per_sample < 16``) or
256x256 lossless-JPEG (ITU T.81 process 14, predictor 1) tiles encoded with ``imagecodecs``. LibRaw rejects
Deflate-compressed integer DNGs, so that is not offered. Tags are read back with ``tifffile``.

:func:`write_linear_dng` uses the same layout for a LinearRaw image (PhotometricInterpretation 34892, three
16-bit samples per pixel, one uncompressed strip, one black level per sample): what a raw converter
renders without demosaicing.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import struct
import uuid
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from rawlab.bayer import CFA_PATTERNS, channel_offsets, normalise, per_site

__all__ = ["color_matrix_of", "raw_metadata", "read_dng_tags", "write_dng", "write_linear_dng"]

# TIFF field types.
_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL = 1, 2, 3, 4, 5
_SBYTE, _UNDEFINED, _SSHORT, _SLONG, _SRATIONAL, _FLOAT, _DOUBLE = 6, 7, 8, 9, 10, 11, 12
_TYPE_NAMES = {
    name: code
    for code, name in enumerate(
        "BYTE ASCII SHORT LONG RATIONAL SBYTE UNDEFINED SSHORT SLONG SRATIONAL FLOAT DOUBLE".split(), 1
    )
}
_TYPE_FORMAT = {_BYTE: "B", _SBYTE: "b", _SHORT: "H", _SSHORT: "h", _LONG: "I", _SLONG: "i"}
_TYPE_FORMAT.update({_FLOAT: "f", _DOUBLE: "d"})

# Tag codes written by write_dng.
NEW_SUBFILE_TYPE, IMAGE_WIDTH, IMAGE_LENGTH, BITS_PER_SAMPLE, COMPRESSION = 254, 256, 257, 258, 259
PHOTOMETRIC, MAKE, MODEL, STRIP_OFFSETS, ORIENTATION = 262, 271, 272, 273, 274
SAMPLES_PER_PIXEL, ROWS_PER_STRIP, STRIP_BYTE_COUNTS, PLANAR_CONFIG = 277, 278, 279, 284
SOFTWARE, DATETIME = 305, 306
TILE_WIDTH, TILE_LENGTH, TILE_OFFSETS, TILE_BYTE_COUNTS, SUB_IFDS = 322, 323, 324, 325, 330
CFA_REPEAT_PATTERN_DIM, CFA_PATTERN, EXPOSURE_TIME, EXIF_IFD = 33421, 33422, 33434, 34665
ISO_SPEED_RATINGS, EXIF_VERSION, DATETIME_ORIGINAL = 34855, 36864, 36867
DNG_VERSION, DNG_BACKWARD_VERSION, UNIQUE_CAMERA_MODEL = 50706, 50707, 50708
CFA_PLANE_COLOR, CFA_LAYOUT, BLACK_LEVEL_REPEAT_DIM, BLACK_LEVEL = 50710, 50711, 50713, 50714
WHITE_LEVEL, DEFAULT_SCALE, DEFAULT_CROP_ORIGIN, DEFAULT_CROP_SIZE = 50717, 50718, 50719, 50720
COLOR_MATRIX1, COLOR_MATRIX2, AS_SHOT_NEUTRAL, BASELINE_EXPOSURE = 50721, 50722, 50728, 50730
CALIBRATION_ILLUMINANT1, CALIBRATION_ILLUMINANT2, NOISE_PROFILE = 50778, 50779, 51041

PHOTOMETRIC_CFA, PHOTOMETRIC_LINEAR_RAW = 32803, 34892
COMPRESSION_NONE, COMPRESSION_LJPEG = 1, 7
ILLUMINANT_D65 = 21
DNG_VERSION_1_4 = (1, 4, 0, 0)
# Nothing written here needs a reader newer than DNG 1.1 (NoiseProfile is 1.3, and older readers ignore it).
DNG_BACKWARD_1_1 = (1, 1, 0, 0)  # also right for LinearRaw, which DNG has had since 1.0
LJPEG_TILE = 256
PREVIEW_SIDE = 256
MIN_SIDE = 22  # LibRaw's identify() rejects smaller raw images as "not RAW"

# Tags a caller may not pass through ``extra_tags``: they describe the file's structure.
_STRUCTURAL = frozenset(
    {NEW_SUBFILE_TYPE, IMAGE_WIDTH, IMAGE_LENGTH, BITS_PER_SAMPLE, COMPRESSION, PHOTOMETRIC, STRIP_OFFSETS}
    | {SAMPLES_PER_PIXEL, ROWS_PER_STRIP, STRIP_BYTE_COUNTS, PLANAR_CONFIG, TILE_WIDTH, TILE_LENGTH}
    | {TILE_OFFSETS, TILE_BYTE_COUNTS, SUB_IFDS, EXIF_IFD, 34853, 40965}  # + GPS, Interoperability
)
# Extra tags that belong in the raw IFD (DNG 1.4 spec, "IFD: Raw IFD"); EXIF tags go to the ExifIFD and
# everything else to IFD0.
_RAW_IFD_TAGS = frozenset(
    {50712, 50715, 50716, 50733, 50737, 50738, 50780, 50829, 50830, 51008, 51009, 51022, 51125}
)


def _is_exif_tag(code: int) -> bool:
    return code in (33434, 33437) or 34850 <= code <= 34867 or 36864 <= code <= 42999


# ----------------------------------------------------------------------------------------------------------
# Encoding TIFF values
# ----------------------------------------------------------------------------------------------------------


def _rational(x: float, signed: bool) -> tuple[int, int]:
    """Closest fraction to ``x`` whose numerator and denominator fit the 32-bit TIFF field."""
    if not math.isfinite(x):
        raise ValueError(f"cannot store {x!r} as a TIFF rational")
    top = 2**31 - 1 if signed else 2**32 - 1
    if abs(x) > top:
        raise ValueError(f"{x!r} is too large for a TIFF rational")
    frac = Fraction(x).limit_denominator(max(1, min(top, int(top / max(abs(x), 1.0)))))
    return frac.numerator, frac.denominator


def _encode(type_: int, value: Any) -> tuple[int, bytes]:
    """Return ``(count, little-endian payload)`` for ``value`` as TIFF ``type_``."""
    if type_ == _ASCII:
        text = value.decode("ascii") if isinstance(value, bytes) else str(value)
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError:
            raise ValueError(f"TIFF ASCII tags hold 7-bit text only, got {text!r}") from None
        raw += b"\0"
        return len(raw), raw
    if type_ == _UNDEFINED:
        raw = bytes(value) if not isinstance(value, str) else value.encode("ascii")
        return len(raw), raw
    values = np.ravel(np.asarray(value, dtype=np.float64 if type_ in (_FLOAT, _DOUBLE) else object))
    if type_ in (_RATIONAL, _SRATIONAL):
        signed = type_ == _SRATIONAL
        pairs = [_rational(float(v), signed) for v in values]
        if not signed and any(n < 0 for n, _ in pairs):
            raise ValueError(f"negative value in an unsigned RATIONAL tag: {list(values)}")
        fmt = "<" + ("i" if signed else "I") * 2 * len(pairs)
        return len(pairs), struct.pack(fmt, *(v for pair in pairs for v in pair))
    fmt = _TYPE_FORMAT.get(type_)
    if fmt is None:
        raise ValueError(f"unknown TIFF field type {type_}")
    items = [float(v) for v in values] if fmt in "fd" else [int(v) for v in values]
    try:
        return len(items), struct.pack(f"<{len(items)}{fmt}", *items)
    except struct.error as exc:
        raise ValueError(f"value {list(values)} does not fit TIFF type {type_}: {exc}") from None


class _Ifd:
    """One image file directory: tags in code order, values larger than 4 bytes stored right after it."""

    def __init__(self) -> None:
        self.tags: dict[int, tuple[int, int, bytes]] = {}

    def set(self, code: int, type_: int, value: Any) -> None:
        count, payload = _encode(type_, value)
        self.tags[code] = (type_, count, payload)

    def nbytes(self) -> int:
        n = 2 + 12 * len(self.tags) + 4
        return n + sum(len(p) + len(p) % 2 for _, _, p in self.tags.values() if len(p) > 4)

    def tobytes(self, offset: int) -> bytes:
        """Serialise as if placed at file ``offset``; the next-IFD pointer is 0."""
        entries = [struct.pack("<H", len(self.tags))]
        data = bytearray()
        data_at = offset + 2 + 12 * len(self.tags) + 4
        for code in sorted(self.tags):
            type_, count, payload = self.tags[code]
            if len(payload) <= 4:
                field = payload.ljust(4, b"\0")
            else:
                field = struct.pack("<I", data_at + len(data))
                data += payload + b"\0" * (len(payload) % 2)  # values start on a word boundary
            entries.append(struct.pack("<HHI", code, type_, count) + field)
        entries.append(struct.pack("<I", 0))
        return b"".join(entries) + bytes(data)


# ----------------------------------------------------------------------------------------------------------
# Pixel data
# ----------------------------------------------------------------------------------------------------------


def _pack_bits(mosaic: np.ndarray, bits: int) -> bytes:
    """Pack each row MSB-first at ``bits`` per sample, rows padded to whole bytes (TIFF FillOrder 1)."""
    if bits == 16:
        return np.ascontiguousarray(mosaic, dtype="<u2").tobytes()
    if bits == 8:
        return mosaic.astype(np.uint8).tobytes()
    h, w = mosaic.shape
    group = 8 // math.gcd(bits, 8)  # samples that fill a whole number of bytes: 2 at 12 bits, 4 at 10 or 14
    if w % group == 0 and bits * group <= 64:
        # Fast path: shift each group of samples into one integer, left-align it, emit its top bytes.
        word = np.dtype(np.uint32 if bits * group <= 32 else np.uint64)
        samples = mosaic.reshape(h, w // group, group)
        acc = np.zeros((h, w // group), dtype=word)
        for i in range(group):
            acc <<= word.type(bits)
            acc |= samples[..., i]
        acc <<= word.type(8 * word.itemsize - bits * group)
        packed = acc.astype(word.newbyteorder(">")).view(np.uint8).reshape(h, w // group, word.itemsize)
        return packed[..., : bits * group // 8].tobytes()
    planes = np.unpackbits(np.ascontiguousarray(mosaic, dtype=">u2").view(np.uint8).reshape(h, w, 2), axis=-1)
    return np.packbits(planes[..., 16 - bits :].reshape(h, w * bits), axis=-1).tobytes()


def _ljpeg_encode(block: np.ndarray, bits: int) -> bytes:
    """One lossless-JPEG (ITU T.81 SOF3, one component, predictor 1) frame of ``block``."""
    try:
        import imagecodecs
    except ImportError as exc:  # not a core dependency; only this option needs it
        raise ImportError("compression='ljpeg' needs imagecodecs: pip install imagecodecs") from exc
    return bytes(imagecodecs.ljpeg_encode(np.ascontiguousarray(block), bitspersample=bits))


def _ljpeg_tiles(mosaic: np.ndarray, bits: int) -> list[bytes]:
    """Encode ``mosaic`` as 256x256 lossless-JPEG tiles in row-major order; edge tiles are edge-padded."""
    h, w = mosaic.shape
    t = LJPEG_TILE
    ph, pw = -h % t, -w % t
    padded = np.pad(mosaic, ((0, ph), (0, pw)), mode="edge") if ph or pw else mosaic
    return [
        _ljpeg_encode(padded[y : y + t, x : x + t], bits)
        for y in range(0, h + ph, t)
        for x in range(0, w + pw, t)
    ]


def _preview(
    mosaic: np.ndarray, cfa: str, black: np.ndarray, white: int, neutral: np.ndarray | None
) -> np.ndarray:
    """A small 8-bit RGB rendering (white balance + gamma 2.2, no colour matrix) for file browsers."""
    h, w = mosaic.shape
    step = 2 * max(1, math.ceil(max(h, w) / 2 / PREVIEW_SIDE))
    sub = np.stack([mosaic[dy::step, dx::step] for dy, dx in channel_offsets(cfa)]).astype(np.float32)
    sub = normalise(sub, black, white)
    return _tone(np.stack([sub[0], 0.5 * (sub[1] + sub[2]), sub[3]], axis=-1), neutral)


def _linear_preview(rgb: np.ndarray, black: np.ndarray, white: int, neutral: np.ndarray | None) -> np.ndarray:
    """:func:`_preview` of a linear ``(H, W, 3)`` image with per-sample black levels."""
    step = max(1, math.ceil(max(rgb.shape[:2]) / PREVIEW_SIDE))
    sub = rgb[::step, ::step].astype(np.float32)
    return _tone((sub - black.astype(np.float32)) / (white - black).astype(np.float32), neutral)


def _tone(rgb: np.ndarray, neutral: np.ndarray | None) -> np.ndarray:
    """Normalised camera RGB ``(h, w, 3)`` float32 -> white-balanced, gamma-2.2 8-bit RGB."""
    if neutral is not None:
        rgb *= (neutral[1] / neutral).astype(np.float32)
    rgb = np.clip(rgb, 0.0, 1.0) ** (1 / 2.2)
    return (rgb * 255 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------


def _check_mosaic(mosaic: Any) -> np.ndarray:
    if not isinstance(mosaic, np.ndarray):
        raise ValueError(f"mosaic must be a numpy array, got {type(mosaic).__name__}")
    if mosaic.dtype != np.uint16:
        raise ValueError(
            f"mosaic must be uint16 DN, got dtype {mosaic.dtype}; convert with mosaic.astype(np.uint16) "
            "after checking the values lie in [0, white_level]"
        )
    if mosaic.ndim != 2:
        raise ValueError(f"mosaic must be 2-D (H, W), got shape {mosaic.shape}")
    h, w = mosaic.shape
    if h % 2 or w % 2:
        raise ValueError(f"a Bayer mosaic needs even height and width, got {h}x{w}; crop one row or column")
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(
            f"mosaic {h}x{w} is too small: LibRaw refuses raw images under {MIN_SIDE}x{MIN_SIDE} px"
        )
    if h > 65535 or w > 65535:
        raise ValueError(f"mosaic {h}x{w} is too large: LibRaw reads DNG images up to 65535 px per side")
    return mosaic


def _check_rgb(rgb: Any) -> np.ndarray:
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"rgb must be a numpy array, got {type(rgb).__name__}")
    if rgb.dtype != np.uint16:
        raise ValueError(
            f"rgb must be uint16 DN, got dtype {rgb.dtype}; scale normalised values to DN "
            "(black + x * (white - black)), round, and convert with astype(np.uint16)"
        )
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must be (H, W, 3) camera R, G, B, got shape {rgb.shape}")
    h, w, _ = rgb.shape
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(
            f"image {h}x{w} is too small: LibRaw refuses raw images under {MIN_SIDE}x{MIN_SIDE} px"
        )
    if h > 65535 or w > 65535:
        raise ValueError(f"image {h}x{w} is too large: LibRaw reads DNG images up to 65535 px per side")
    return rgb


def _check_illuminant(name: str, value: Any) -> int:
    if isinstance(value, bool) or int(value) != value or not 0 <= value <= 65535:
        raise ValueError(
            f"{name} must be an EXIF LightSource code (21 = D65, 17 = Standard A), got {value!r}"
        )
    return int(value)


def _check_levels(
    mosaic: np.ndarray, black_level: Any, white_level: int, bits: int
) -> tuple[np.ndarray, int]:
    if int(white_level) != white_level or not 1 <= white_level < 2**bits:
        raise ValueError(
            f"white_level must be an integer in [1, {2**bits - 1}] for bits_per_sample={bits}, got {white_level!r}"
        )
    white = int(white_level)
    black = np.asarray(black_level, dtype=np.float64)
    if black.ndim == 0:
        black = np.repeat(black, 4)
    if black.shape != (4,):
        raise ValueError(
            f"black_level must be a scalar or 4 values in R, G1, G2, B order, got {black_level!r}"
        )
    if not (np.all(np.isfinite(black)) and np.all(black >= 0) and np.all(black < white)):
        raise ValueError(f"black_level values must lie in [0, white_level={white}), got {black.tolist()}")
    peak = int(mosaic.max())
    if peak > white:
        n = int(np.count_nonzero(mosaic > white))
        raise ValueError(
            f"{n} mosaic value(s) exceed white_level={white} (max {peak}); clip the mosaic to the white level "
            "or pass the sensor's real white level"
        )
    return black, white


def _positive(name: str, value: Any, n: int | None = None) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if n is not None and arr.shape != (n,):
        raise ValueError(f"{name} must have {n} values, got {value!r}")
    if not (np.all(np.isfinite(arr)) and np.all(arr > 0)):
        raise ValueError(f"{name} must be finite and positive, got {value!r}")
    return arr


def _check_noise_profile(noise_profile: Any) -> np.ndarray:
    arr = np.asarray(noise_profile, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] not in (1, 3):
        raise ValueError(
            "noise_profile must be 1 pair (S, O) for all channels or 3 pairs for R, G, B "
            f"(DNG NoiseProfile, normalised units), got {noise_profile!r}"
        )
    if not np.all(np.isfinite(arr)) or np.any(arr[:, 0] <= 0) or np.any(arr[:, 1] < 0):
        raise ValueError(
            f"NoiseProfile needs S > 0 and O >= 0 in every pair (DNG spec), got {arr.tolist()}; "
            "clip a negative fitted read-noise term to 0"
        )
    return arr


def _exif_datetime(value: str | _dt.datetime) -> str:
    if isinstance(value, _dt.datetime):
        return value.strftime("%Y:%m:%d %H:%M:%S")
    try:
        _dt.datetime.strptime(value, "%Y:%m:%d %H:%M:%S")
    except (TypeError, ValueError):
        raise ValueError(
            f"datetime must be 'YYYY:MM:DD HH:MM:SS' (EXIF) or a datetime, got {value!r}"
        ) from None
    return value


def _unique_model(make: str, model: str) -> str:
    make, model = " ".join(make.split()), " ".join(model.split())
    return model if model.lower().startswith(make.lower()) else f"{make} {model}".strip()


# XYZ (D65) -> linear sRGB. Used as ColorMatrix1 when none is given: a "camera" whose raw RGB is linear sRGB.
SRGB_FROM_XYZ_D65 = np.array(
    [
        [3.2404542, -1.5371385, -0.4985314],
        [-0.9692660, 1.8760108, 0.0415560],
        [0.0556434, -0.2040259, 1.0572252],
    ]
)


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------


def write_dng(
    path: str | os.PathLike[str],
    mosaic: np.ndarray,
    *,
    cfa: str,
    black_level: float | Sequence[float],
    white_level: int,
    make: str,
    model: str,
    unique_camera_model: str | None = None,
    iso: float | None = None,
    exposure_time: float | None = None,
    as_shot_neutral: Sequence[float] | None = None,
    color_matrix1: ArrayLike | None = None,
    noise_profile: Sequence[tuple[float, float]] | None = None,
    datetime: str | _dt.datetime | None = None,
    software: str = "rawlab",
    compression: str = "none",
    bits_per_sample: int = 16,
    extra_tags: Sequence[tuple] = (),
) -> None:
    """Write a Bayer mosaic as a DNG 1.4 file.

    Parameters
    ----------
    path
        Output file; overwritten if it exists.
    mosaic
        ``uint16`` array ``(H, W)`` of raw values in DN, ``H`` and ``W`` even, all values ``<= white_level``.
    cfa
        Pattern of the top-left 2x2 tile: ``"RGGB"``, ``"BGGR"``, ``"GRBG"`` or ``"GBRG"``.
    black_level
        Black level in DN: one value, or four in ``R, G1, G2, B`` order (G1 = green on red rows). Written as
        a 2x2 BlackLevelRepeatDim with one value per CFA site, so LibRaw reports it per channel.
    white_level
        Saturation level in DN (DNG WhiteLevel), below ``2**bits_per_sample``.
    make, model
        TIFF Make and Model (IFD0), as the camera writes them.
    unique_camera_model
        DNG UniqueCameraModel; defaults to ``"{make} {model}"`` (just ``model`` when it starts with the make).
    iso
        ISO speed, an integer up to 65535 (EXIF ISOSpeedRatings is 16-bit); written to the ExifIFD.
    exposure_time
        Exposure in seconds, written to the ExifIFD as a rational.
    as_shot_neutral
        Camera-space neutral ``(R, G, B)`` (DNG AsShotNeutral); LibRaw's white balance is its reciprocal.
    color_matrix1
        3x3 XYZ(D65) -> camera matrix (DNG ColorMatrix1, CalibrationIlluminant1 = D65). Defaults to the
        XYZ -> linear sRGB matrix, because DNG requires a colour matrix for a CFA image.
    noise_profile
        DNG NoiseProfile ``(S, O)`` pairs in normalised units, ``Var[x] = S * x + O``: one pair for all
        channels, or three for R, G, B. ``S > 0`` and ``O >= 0``.
    datetime
        Capture time, ``"YYYY:MM:DD HH:MM:SS"`` or a :class:`datetime.datetime`; written as DateTime and
        EXIF DateTimeOriginal. Omitted when ``None``, so the same inputs give byte-identical files.
    software
        TIFF Software tag.
    compression
        ``"none"`` (one uncompressed strip; fastest) or ``"ljpeg"`` (lossless JPEG in 256x256 tiles;
        smaller, slower to write).
    bits_per_sample
        Stored bits per sample, 8 to 16. Uncompressed data below 16 bits are bit-packed (e.g. 12-bit data
        in 1.5 bytes per sample); for ``"ljpeg"`` it is the JPEG sample precision.
    extra_tags
        More tags as ``(code, type, count, value)`` tuples (tifffile's form; a fifth element is ignored);
        ``type`` is a TIFF type code or name such as ``"SRATIONAL"``, ``count`` may be ``None``. Raw-IFD tags
        (ActiveArea, OpcodeList1-3, ...) go to the raw IFD, EXIF tags to the ExifIFD, the rest to IFD0.

    Raises
    ------
    ValueError
        For a mosaic that is not even-sized ``uint16`` 2-D data, values above ``white_level``, an unknown
        CFA pattern or compression, and any metadata value that a DNG cannot hold.
    """
    mosaic = _check_mosaic(mosaic)
    if not isinstance(cfa, str) or cfa.upper() not in CFA_PATTERNS:
        raise ValueError(f"unknown CFA pattern {cfa!r}; expected one of {', '.join(CFA_PATTERNS)}")
    cfa = cfa.upper()
    if int(bits_per_sample) != bits_per_sample or not 8 <= bits_per_sample <= 16:
        raise ValueError(f"bits_per_sample must be an integer from 8 to 16, got {bits_per_sample!r}")
    bits = int(bits_per_sample)
    if compression not in ("none", "ljpeg"):
        raise ValueError(
            f"compression must be 'none' or 'ljpeg', got {compression!r} "
            "(LibRaw cannot read Deflate-compressed integer DNGs)"
        )
    black, white = _check_levels(mosaic, black_level, white_level, bits)
    _check_make_model(make, model)
    neutral = None if as_shot_neutral is None else _positive("as_shot_neutral", as_shot_neutral, 3)
    cm = SRGB_FROM_XYZ_D65 if color_matrix1 is None else _check_matrix("color_matrix1", color_matrix1)
    _check_exposure(iso, exposure_time)
    noise = None if noise_profile is None else _check_noise_profile(noise_profile)
    stamp = None if datetime is None else _exif_datetime(datetime)

    thumb = _preview(mosaic, cfa, black, white, neutral)
    chunks, layout = _encode_raw(mosaic, bits, compression)

    # IFD0: the preview image and the DNG tags that describe the whole file.
    ifd0 = _preview_ifd0(thumb, make, model, software, stamp, orientation=1)
    ifd0.set(DNG_VERSION, _BYTE, DNG_VERSION_1_4)
    ifd0.set(DNG_BACKWARD_VERSION, _BYTE, DNG_BACKWARD_1_1)
    ifd0.set(UNIQUE_CAMERA_MODEL, _ASCII, unique_camera_model or _unique_model(make, model))
    ifd0.set(COLOR_MATRIX1, _SRATIONAL, cm)
    if neutral is not None:
        ifd0.set(AS_SHOT_NEUTRAL, _RATIONAL, neutral)
    ifd0.set(BASELINE_EXPOSURE, _SRATIONAL, 0)
    ifd0.set(CALIBRATION_ILLUMINANT1, _SHORT, ILLUMINANT_D65)
    if noise is not None:
        ifd0.set(NOISE_PROFILE, _DOUBLE, noise)

    # Raw IFD: the CFA mosaic and its levels.
    h, w = mosaic.shape
    raw = _Ifd()
    raw.set(NEW_SUBFILE_TYPE, _LONG, 0)
    raw.set(IMAGE_WIDTH, _LONG, w)
    raw.set(IMAGE_LENGTH, _LONG, h)
    raw.set(BITS_PER_SAMPLE, _SHORT, bits)
    raw.set(PHOTOMETRIC, _SHORT, PHOTOMETRIC_CFA)
    raw.set(SAMPLES_PER_PIXEL, _SHORT, 1)
    raw.set(PLANAR_CONFIG, _SHORT, 1)
    for code, value in layout.items():
        raw.set(code, _SHORT if code == COMPRESSION else _LONG, value)
    raw.set(CFA_REPEAT_PATTERN_DIM, _SHORT, (2, 2))
    raw.set(CFA_PATTERN, _BYTE, ["RGB".index(c) for c in cfa])
    raw.set(CFA_PLANE_COLOR, _BYTE, (0, 1, 2))
    raw.set(CFA_LAYOUT, _SHORT, 1)
    raw.set(BLACK_LEVEL_REPEAT_DIM, _SHORT, (2, 2))
    _set_black_level(raw, per_site(black, cfa).ravel())
    raw.set(WHITE_LEVEL, _LONG, white)
    raw.set(DEFAULT_SCALE, _RATIONAL, (1, 1))
    raw.set(DEFAULT_CROP_ORIGIN, _LONG, (0, 0))
    raw.set(DEFAULT_CROP_SIZE, _LONG, (w, h))

    exif = _exif_ifd(iso, exposure_time, stamp)
    _add_extra_tags(extra_tags, ifd0, raw, exif, "write_dng")
    _write_file(path, ifd0, raw, exif, thumb.tobytes(), chunks)


def write_linear_dng(
    path: str | os.PathLike[str],
    rgb: np.ndarray,
    *,
    black_level: float | Sequence[float],
    white_level: int,
    make: str,
    model: str,
    color_matrix1: ArrayLike | None = None,
    calibration_illuminant1: int = ILLUMINANT_D65,
    color_matrix2: ArrayLike | None = None,
    calibration_illuminant2: int | None = None,
    as_shot_neutral: Sequence[float] | None = None,
    unique_camera_model: str | None = None,
    orientation: int = 1,
    iso: float | None = None,
    exposure_time: float | None = None,
    datetime: str | _dt.datetime | None = None,
    software: str = "rawlab",
    extra_tags: Sequence[tuple] = (),
) -> None:
    """Write demosaiced camera RGB as a linear DNG (PhotometricInterpretation LinearRaw, DNG 1.4, readable
    by DNG 1.1 readers).

    The pixels are camera-native linear RGB before white balance, in DN like a raw: a raw converter applies
    the black and white levels, the white balance (AsShotNeutral) and the colour matrices to them as it does
    to a CFA raw, skipping only the demosaic. Same layout as :func:`write_dng`: an 8-bit preview in IFD0, the
    image (three 16-bit samples per pixel, one uncompressed strip) in a SubIFD, EXIF in an ExifIFD.

    Parameters
    ----------
    path
        Output file; overwritten if it exists.
    rgb
        ``uint16`` array ``(H, W, 3)`` of camera R, G, B in DN, all values ``<= white_level``.
    black_level
        Black level in DN: one value, or three in ``R, G, B`` order (BlackLevel with BlackLevelRepeatDim
        1x1, one value per sample). Whole numbers are written as LONG, others as RATIONAL (exact; LibRaw
        truncates them).
    white_level
        Saturation level in DN, 1 to 65535 (WhiteLevel, the same for the three samples).
    make, model
        TIFF Make and Model, as the source camera wrote them.
    color_matrix1, calibration_illuminant1
        XYZ -> camera 3x3 matrix (ColorMatrix1) and the EXIF LightSource code of the illuminant it was
        measured under (21 = D65, 17 = Standard A). The matrix defaults to XYZ -> linear sRGB.
    color_matrix2, calibration_illuminant2
        A second matrix and its illuminant (ColorMatrix2, CalibrationIlluminant2), as dual-illuminant DNGs
        carry; both or neither.
    as_shot_neutral
        Camera-space neutral ``(R, G, B)`` (AsShotNeutral): the reciprocal of the as-shot white balance.
    unique_camera_model
        DNG UniqueCameraModel; defaults to ``"{make} {model}"`` (just ``model`` when it starts with the make).
    orientation
        TIFF Orientation of the image, 1 to 8 (1: rows top to bottom, columns left to right).
    iso, exposure_time, datetime, software, extra_tags
        As for :func:`write_dng`.

    Raises
    ------
    ValueError
        For pixels that are not ``uint16 (H, W, 3)``, values above ``white_level``, and any metadata value
        that a DNG cannot hold.
    """
    rgb = _check_rgb(rgb)
    if int(white_level) != white_level or not 1 <= white_level <= 65535:
        raise ValueError(f"white_level must be an integer in [1, 65535], got {white_level!r}")
    white = int(white_level)
    black = np.asarray(black_level, dtype=np.float64)
    black = np.repeat(black, 3) if black.ndim == 0 else black
    if black.shape != (3,) or not (
        np.all(np.isfinite(black)) and np.all(black >= 0) and np.all(black < white)
    ):
        raise ValueError(
            f"black_level must be one value or 3 (R, G, B) in [0, white_level={white}), got {black_level!r}"
        )
    peak = int(rgb.max())
    if peak > white:
        n = int(np.count_nonzero(rgb > white))
        raise ValueError(
            f"{n} rgb value(s) exceed white_level={white} (max {peak}); clip the image to the white level "
            "or pass the sensor's real white level"
        )
    _check_make_model(make, model)
    neutral = None if as_shot_neutral is None else _positive("as_shot_neutral", as_shot_neutral, 3)
    cm1 = SRGB_FROM_XYZ_D65 if color_matrix1 is None else _check_matrix("color_matrix1", color_matrix1)
    colour = [(cm1, _check_illuminant("calibration_illuminant1", calibration_illuminant1))]
    if (color_matrix2 is None) != (calibration_illuminant2 is None):
        raise ValueError("color_matrix2 and calibration_illuminant2 go together: pass both or neither")
    if color_matrix2 is not None:
        cm2 = _check_matrix("color_matrix2", color_matrix2)
        colour.append((cm2, _check_illuminant("calibration_illuminant2", calibration_illuminant2)))
    if orientation not in range(1, 9):
        raise ValueError(f"orientation must be a TIFF Orientation from 1 to 8, got {orientation!r}")
    _check_exposure(iso, exposure_time)
    stamp = None if datetime is None else _exif_datetime(datetime)

    thumb = _linear_preview(rgb, black, white, neutral)
    ifd0 = _preview_ifd0(thumb, make, model, software, stamp, orientation=int(orientation))
    ifd0.set(DNG_VERSION, _BYTE, DNG_VERSION_1_4)
    ifd0.set(DNG_BACKWARD_VERSION, _BYTE, DNG_BACKWARD_1_1)
    ifd0.set(UNIQUE_CAMERA_MODEL, _ASCII, unique_camera_model or _unique_model(make, model))
    tags = ((COLOR_MATRIX1, CALIBRATION_ILLUMINANT1), (COLOR_MATRIX2, CALIBRATION_ILLUMINANT2))
    for (cm_tag, ill_tag), (cm, illuminant) in zip(tags[: len(colour)], colour, strict=True):
        ifd0.set(cm_tag, _SRATIONAL, cm)
        ifd0.set(ill_tag, _SHORT, illuminant)
    if neutral is not None:
        ifd0.set(AS_SHOT_NEUTRAL, _RATIONAL, neutral)
    ifd0.set(BASELINE_EXPOSURE, _SRATIONAL, 0)

    h, w, _ = rgb.shape
    pixels = np.ascontiguousarray(rgb, dtype="<u2").tobytes()
    raw = _Ifd()
    raw.set(NEW_SUBFILE_TYPE, _LONG, 0)
    raw.set(IMAGE_WIDTH, _LONG, w)
    raw.set(IMAGE_LENGTH, _LONG, h)
    raw.set(BITS_PER_SAMPLE, _SHORT, (16, 16, 16))
    raw.set(COMPRESSION, _SHORT, COMPRESSION_NONE)
    raw.set(PHOTOMETRIC, _SHORT, PHOTOMETRIC_LINEAR_RAW)
    raw.set(SAMPLES_PER_PIXEL, _SHORT, 3)
    raw.set(PLANAR_CONFIG, _SHORT, 1)
    raw.set(STRIP_OFFSETS, _LONG, 0)
    raw.set(ROWS_PER_STRIP, _LONG, h)
    raw.set(STRIP_BYTE_COUNTS, _LONG, len(pixels))
    raw.set(BLACK_LEVEL_REPEAT_DIM, _SHORT, (1, 1))
    _set_black_level(raw, black)
    raw.set(WHITE_LEVEL, _LONG, (white,) * 3)
    raw.set(DEFAULT_SCALE, _RATIONAL, (1, 1))
    raw.set(DEFAULT_CROP_ORIGIN, _LONG, (0, 0))
    raw.set(DEFAULT_CROP_SIZE, _LONG, (w, h))

    exif = _exif_ifd(iso, exposure_time, stamp)
    _add_extra_tags(extra_tags, ifd0, raw, exif, "write_linear_dng")
    _write_file(path, ifd0, raw, exif, thumb.tobytes(), [pixels])


def _check_make_model(make: Any, model: Any) -> None:
    if not (isinstance(make, str) and isinstance(model, str) and make.strip() and model.strip()):
        raise ValueError(
            f"make and model must be non-empty strings (TIFF Make/Model), got {make!r}, {model!r}"
        )


def _check_matrix(name: str, value: ArrayLike) -> np.ndarray:
    cm = np.asarray(value, dtype=np.float64)
    if cm.shape != (3, 3) or not np.all(np.isfinite(cm)):
        raise ValueError(f"{name} must be a finite 3x3 XYZ->camera matrix, got {value!r}")
    return cm


def _check_exposure(iso: float | None, exposure_time: float | None) -> None:
    if iso is not None and not (math.isfinite(iso) and iso == round(iso) and 1 <= iso <= 65535):
        raise ValueError(f"iso must be an integer from 1 to 65535 (EXIF ISOSpeedRatings), got {iso!r}")
    if exposure_time is not None:
        _positive("exposure_time", exposure_time)


def _preview_ifd0(
    thumb: np.ndarray, make: str, model: str, software: str, stamp: str | None, orientation: int
) -> _Ifd:
    """IFD0 holding the 8-bit RGB preview (its strip offset is set by ``_write_file``) and Make/Model."""
    ifd0 = _Ifd()
    ifd0.set(NEW_SUBFILE_TYPE, _LONG, 1)
    ifd0.set(IMAGE_WIDTH, _LONG, thumb.shape[1])
    ifd0.set(IMAGE_LENGTH, _LONG, thumb.shape[0])
    ifd0.set(BITS_PER_SAMPLE, _SHORT, (8, 8, 8))
    ifd0.set(COMPRESSION, _SHORT, COMPRESSION_NONE)
    ifd0.set(PHOTOMETRIC, _SHORT, 2)  # RGB
    ifd0.set(MAKE, _ASCII, make)
    ifd0.set(MODEL, _ASCII, model)
    ifd0.set(ORIENTATION, _SHORT, orientation)
    ifd0.set(SAMPLES_PER_PIXEL, _SHORT, 3)
    ifd0.set(ROWS_PER_STRIP, _LONG, thumb.shape[0])
    ifd0.set(STRIP_BYTE_COUNTS, _LONG, thumb.nbytes)
    ifd0.set(PLANAR_CONFIG, _SHORT, 1)
    ifd0.set(SOFTWARE, _ASCII, software)
    if stamp is not None:
        ifd0.set(DATETIME, _ASCII, stamp)
    return ifd0


def _set_black_level(raw: _Ifd, values: np.ndarray) -> None:
    """BlackLevel as LONG when every value is a whole number of DN, else as exact RATIONALs."""
    if np.all(values == np.round(values)):
        raw.set(BLACK_LEVEL, _LONG, values.astype(np.int64))
    else:
        raw.set(BLACK_LEVEL, _RATIONAL, values)


def _exif_ifd(iso: float | None, exposure_time: float | None, stamp: str | None) -> _Ifd:
    exif = _Ifd()
    exif.set(EXIF_VERSION, _UNDEFINED, b"0231")
    if exposure_time is not None:
        exif.set(EXPOSURE_TIME, _RATIONAL, exposure_time)
    if iso is not None:
        exif.set(ISO_SPEED_RATINGS, _SHORT, round(iso))
    if stamp is not None:
        exif.set(DATETIME_ORIGINAL, _ASCII, stamp)
    return exif


def _add_extra_tags(extra_tags: Sequence[tuple], ifd0: _Ifd, raw: _Ifd, exif: _Ifd, writer: str) -> None:
    for tag in extra_tags:
        code, type_, count, value = _check_extra_tag(tag, writer)
        target = exif if _is_exif_tag(code) else raw if code in _RAW_IFD_TAGS else ifd0
        if code in target.tags:
            raise ValueError(f"extra tag {code} duplicates a tag {writer} writes; pass it as its argument")
        target.set(code, type_, value)
        if count is not None and target.tags[code][1] != count:
            raise ValueError(f"extra tag {code}: count {count} does not match its value {value!r}")


def _encode_raw(mosaic: np.ndarray, bits: int, compression: str) -> tuple[list[bytes], dict[int, Any]]:
    """Encode the mosaic; return its chunks and the layout tags (offsets are filled in by ``_write_file``)."""
    h, w = mosaic.shape
    if compression == "none":
        chunks = [_pack_bits(mosaic, bits)]
    elif w < LJPEG_TILE:
        # LibRaw wraps rows at the image width inside a tile wider than the image, so narrow images are
        # one lossless-JPEG strip instead.
        chunks = [_ljpeg_encode(mosaic, bits)]
    else:
        chunks = _ljpeg_tiles(mosaic, bits)
        return chunks, {
            COMPRESSION: COMPRESSION_LJPEG,
            TILE_WIDTH: LJPEG_TILE,
            TILE_LENGTH: LJPEG_TILE,
            TILE_OFFSETS: [0] * len(chunks),
            TILE_BYTE_COUNTS: [len(c) for c in chunks],
        }
    return chunks, {
        COMPRESSION: COMPRESSION_NONE if compression == "none" else COMPRESSION_LJPEG,
        STRIP_OFFSETS: 0,
        ROWS_PER_STRIP: h,
        STRIP_BYTE_COUNTS: len(chunks[0]),
    }


def _write_file(
    path: str | os.PathLike[str], ifd0: _Ifd, raw: _Ifd, exif: _Ifd, thumb: bytes, chunks: list[bytes]
) -> None:
    """Lay out header, IFD0, raw IFD, ExifIFD, preview strip and raw data (16-byte aligned), then write.

    The pointer tags have fixed sizes, so every offset is known before anything is serialised. The file is
    written beside ``path`` and renamed into place, so an interrupted run never leaves a truncated DNG.
    """
    ifd0.set(SUB_IFDS, _LONG, 0)
    ifd0.set(EXIF_IFD, _LONG, 0)
    ifd0.set(STRIP_OFFSETS, _LONG, 0)
    raw_at = 8 + ifd0.nbytes()
    exif_at = raw_at + raw.nbytes()
    thumb_at = exif_at + exif.nbytes()
    data_at = thumb_at + len(thumb) + (-(thumb_at + len(thumb)) % 16)
    chunk_at = data_at + np.concatenate([[0], np.cumsum([len(c) for c in chunks])[:-1]])
    if int(chunk_at[-1]) + len(chunks[-1]) >= 2**32:
        raise ValueError("the raw image does not fit in a classic TIFF file (4 GiB of 32-bit offsets)")
    ifd0.set(SUB_IFDS, _LONG, raw_at)
    ifd0.set(EXIF_IFD, _LONG, exif_at)
    ifd0.set(STRIP_OFFSETS, _LONG, thumb_at)
    raw.set(TILE_OFFSETS if TILE_OFFSETS in raw.tags else STRIP_OFFSETS, _LONG, chunk_at)
    head = b"".join(
        [b"II*\0", struct.pack("<I", 8), ifd0.tobytes(8), raw.tobytes(raw_at), exif.tobytes(exif_at), thumb]
    )
    path = os.fspath(path)
    tmp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with open(tmp, "xb") as fh:
            fh.write(head + bytes(data_at - len(head)))
            for chunk in chunks:
                fh.write(chunk)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _check_extra_tag(tag: Sequence[Any], writer: str = "write_dng") -> tuple[int, int, int | None, Any]:
    if len(tag) not in (4, 5):
        raise ValueError(f"extra tag must be (code, type, count, value), got {tag!r}")
    code, type_, count, value = tag[:4]
    code = int(code)
    if code in _STRUCTURAL:
        raise ValueError(f"extra tag {code} describes the file structure and is written by {writer}")
    if isinstance(type_, str):
        if type_.upper() not in _TYPE_NAMES:
            raise ValueError(
                f"extra tag {code}: unknown TIFF type {type_!r}; use one of {', '.join(_TYPE_NAMES)}"
            )
        type_ = _TYPE_NAMES[type_.upper()]
    return code, int(type_), None if count is None else int(count), value


# ----------------------------------------------------------------------------------------------------------
# Reading tags back
# ----------------------------------------------------------------------------------------------------------


def _rationals(value: Any) -> list[float]:
    """tifffile gives (S)RATIONAL values as flat (num, den, num, den, ...) tuples."""
    flat = np.ravel(np.asarray(value, dtype=np.float64))
    return (flat[0::2] / flat[1::2]).tolist()


def _tag(page: Any, code: int) -> Any:
    tag = page.tags.get(code)
    return None if tag is None else tag.value


def _raw_page(tif: Any, photometric: int = PHOTOMETRIC_CFA) -> Any:
    """The full-resolution raw IFD: NewSubFileType 0 with PhotometricInterpretation CFA (or ``photometric``),
    in IFD0 or a SubIFD."""
    candidates = []
    for page in tif.pages:
        candidates.append(page)
        candidates.extend(page.pages or [])
    for page in candidates:
        if int(_tag(page, NEW_SUBFILE_TYPE) or 0) == 0 and _tag(page, PHOTOMETRIC) == photometric:
            return page
    return None


def read_dng_tags(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the metadata of a DNG (ours or a camera's) with tifffile.

    Returns
    -------
    dict
        ``make``, ``model``, ``unique_camera_model``, ``software``, ``datetime`` (str), ``iso`` (int),
        ``exposure_time`` (s), ``dng_version`` (4-tuple), ``height``, ``width``, ``bits_per_sample``,
        ``compression`` (TIFF code), ``cfa`` (e.g. ``"RGGB"``), ``black_level`` (4 floats, R G1 G2 B, DN),
        ``white_level`` (DN), ``as_shot_neutral`` (3 floats), ``color_matrix1`` (3x3 array),
        ``calibration_illuminant1``, ``color_matrix2``, ``calibration_illuminant2``, ``orientation`` (TIFF
        code of IFD0), ``baseline_exposure``, ``noise_profile`` (list of ``(S, O)``), ``linear_raw``.
        A value the file does not hold is ``None``; the raw-image fields are ``None`` when the file has no
        CFA image (e.g. a LinearRaw DNG). ``linear_raw`` describes a LinearRaw image when the file has one:
        ``height``, ``width``, ``samples_per_pixel``, ``bits_per_sample``, ``compression``, ``black_level``
        (one float per sample, DN; the first of each sample's BlackLevelRepeatDim pattern) and
        ``white_level`` (one int per sample, DN).

    Raises
    ------
    ValueError
        If the file is not a TIFF/DNG (tifffile's ``TiffFileError`` is a ``ValueError``).
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        ifd0 = tif.pages[0]
        exif = _tag(ifd0, EXIF_IFD) or {}
        raw = _raw_page(tif)
        out: dict[str, Any] = {
            "make": _text(_tag(ifd0, MAKE)),
            "model": _text(_tag(ifd0, MODEL)),
            "unique_camera_model": _text(_tag(ifd0, UNIQUE_CAMERA_MODEL)),
            "software": _text(_tag(ifd0, SOFTWARE)),
            "datetime": _text(exif.get("DateTimeOriginal") or _tag(ifd0, DATETIME)),
            "dng_version": _version(_tag(ifd0, DNG_VERSION)),
            "iso": _iso(exif.get("ISOSpeedRatings", _tag(ifd0, ISO_SPEED_RATINGS))),
            "exposure_time": _first_rational(exif.get("ExposureTime", _tag(ifd0, EXPOSURE_TIME))),
            "as_shot_neutral": _opt_rationals(_tag(ifd0, AS_SHOT_NEUTRAL)),
            "color_matrix1": None,
            "calibration_illuminant1": _tag(ifd0, CALIBRATION_ILLUMINANT1),
            "color_matrix2": None,
            "calibration_illuminant2": _tag(ifd0, CALIBRATION_ILLUMINANT2),
            "orientation": None if _tag(ifd0, ORIENTATION) is None else int(_tag(ifd0, ORIENTATION)),
            "baseline_exposure": _first_rational(_tag(ifd0, BASELINE_EXPOSURE)),
            "noise_profile": None,
            **dict.fromkeys(_RAW_FIELDS),
        }
        for key, code in (("color_matrix1", COLOR_MATRIX1), ("color_matrix2", COLOR_MATRIX2)):
            cm = _tag(ifd0, code)
            if cm is not None:
                values = _rationals(cm)
                out[key] = np.reshape(values, (len(values) // 3, 3))
        noise = _tag(ifd0, NOISE_PROFILE)
        if noise is None and raw is not None:
            noise = _tag(raw, NOISE_PROFILE)
        if noise is not None:
            flat = np.ravel(np.asarray(noise, dtype=np.float64))
            out["noise_profile"] = [(float(s), float(o)) for s, o in zip(flat[0::2], flat[1::2], strict=True)]
        if raw is not None:
            out.update(_raw_fields(raw))
        linear = _raw_page(tif, PHOTOMETRIC_LINEAR_RAW)
        out["linear_raw"] = None if linear is None else _linear_fields(linear)
    return out


def _linear_fields(page: Any) -> dict[str, Any]:
    """Size, layout and per-sample levels of a LinearRaw IFD."""
    spp = int(_tag(page, SAMPLES_PER_PIXEL) or 1)
    bps = _tag(page, BITS_PER_SAMPLE)
    fields: dict[str, Any] = {
        "height": int(_tag(page, IMAGE_LENGTH)),
        "width": int(_tag(page, IMAGE_WIDTH)),
        "samples_per_pixel": spp,
        "bits_per_sample": None if bps is None else int(np.ravel(bps)[0]),
        "compression": int(_tag(page, COMPRESSION) or 1),
        "black_level": None,
        "white_level": None,
    }
    black = _tag(page, BLACK_LEVEL)
    if black is not None:
        rational = page.tags[BLACK_LEVEL].dtype == _RATIONAL
        values = _rationals(black) if rational else np.ravel(black).astype(float).tolist()
        fields["black_level"] = tuple(values[:spp] if len(values) >= spp else values[:1] * spp)
    white = _tag(page, WHITE_LEVEL)
    if white is not None:
        values = [int(v) for v in np.ravel(white)]
        fields["white_level"] = tuple(values if len(values) == spp else values[:1] * spp)
    return fields


_RAW_FIELDS = ("height", "width", "bits_per_sample", "compression", "cfa", "black_level", "white_level")


def _raw_fields(raw: Any) -> dict[str, Any]:
    """Size, layout, CFA and levels of the raw IFD (BlackLevelDeltaH/V, if any, are not applied)."""
    bps = _tag(raw, BITS_PER_SAMPLE)
    fields: dict[str, Any] = {
        "height": int(_tag(raw, IMAGE_LENGTH)),
        "width": int(_tag(raw, IMAGE_WIDTH)),
        "bits_per_sample": int(np.ravel(bps)[0]) if bps is not None else None,
        "compression": int(_tag(raw, COMPRESSION) or 1),
        **dict.fromkeys(("cfa", "black_level", "white_level")),
    }
    dim = tuple(np.ravel(_tag(raw, CFA_REPEAT_PATTERN_DIM) or ()))
    pattern = _tag(raw, CFA_PATTERN)
    if dim == (2, 2) and pattern is not None:
        letters = "".join("RGB"[c] if c < 3 else "?" for c in _bytes(pattern))
        fields["cfa"] = letters if letters in CFA_PATTERNS else None
    white = _tag(raw, WHITE_LEVEL)
    if white is not None:
        fields["white_level"] = int(np.ravel(white)[0])
    black = _tag(raw, BLACK_LEVEL)
    if black is not None:
        tag = raw.tags[BLACK_LEVEL]
        values = _rationals(black) if tag.dtype in (_RATIONAL,) else np.ravel(black).astype(float).tolist()
        bdim = tuple(np.ravel(_tag(raw, BLACK_LEVEL_REPEAT_DIM) or (1, 1)))
        if bdim == (1, 1) and len(values) >= 1:
            fields["black_level"] = (values[0],) * 4
        elif bdim == (2, 2) and len(values) == 4 and fields["cfa"] is not None:
            tile = np.reshape(values, (2, 2))
            fields["black_level"] = tuple(float(tile[dy, dx]) for dy, dx in channel_offsets(fields["cfa"]))
    return fields


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).rstrip("\0").strip() or None


def _bytes(value: Any) -> bytes:
    """tifffile gives BYTE arrays as ``bytes`` or as a tuple of ints, depending on the tag."""
    return value if isinstance(value, bytes) else bytes(int(v) for v in np.ravel(value))


def _version(value: Any) -> tuple[int, ...] | None:
    return None if value is None else tuple(_bytes(value))


def _iso(value: Any) -> int | None:
    return None if value is None else int(np.ravel(value)[0])


def _first_rational(value: Any) -> float | None:
    return None if value is None else _rationals(value)[0]


def _opt_rationals(value: Any) -> tuple[float, ...] | None:
    return None if value is None else tuple(_rationals(value))


def color_matrix_of(info) -> np.ndarray | None:
    """XYZ -> camera 3x3 of a raw file (a :class:`rawlab.rawio.RawInfo`): LibRaw's, else (LibRaw reports none
    for many DNGs) the file's DNG ColorMatrix1; None when neither is known."""
    if info.color_matrix is not None:
        return np.asarray(info.color_matrix, np.float64)
    if info.raw_format == "DNG":
        try:
            cm = read_dng_tags(info.path).get("color_matrix1")
        except (ValueError, OSError):
            return None
        if cm is not None and np.shape(cm) == (3, 3) and np.all(np.isfinite(cm)):
            return np.asarray(cm, np.float64)
    return None


def raw_metadata(info) -> dict[str, Any]:
    """The :func:`write_dng` keywords that carry a raw file's metadata (a :class:`rawlab.rawio.RawInfo`) into
    a mosaic DNG derived from it (denoised, merged): CFA, levels, make, model, ISO, exposure, white balance
    and colour matrix, each left out (None) where the file's value is unknown or one a DNG cannot hold."""
    iso = round(info.iso) if info.iso and 1 <= round(info.iso) <= 65535 else None
    neutral = None
    if info.wb is not None and all(v > 0 for v in info.wb):
        neutral = (1.0 / info.wb[0], 1.0 / info.wb[1], 1.0 / info.wb[3])
    return {
        "cfa": info.cfa,
        "black_level": list(info.black_level),
        "white_level": int(info.white_level),
        "make": (info.make or "Unknown").strip() or "Unknown",
        "model": (info.model or info.sensor or "Unknown").strip() or "Unknown",
        "iso": iso,
        "exposure_time": info.exposure_time if info.exposure_time and info.exposure_time > 0 else None,
        "as_shot_neutral": neutral,
        "color_matrix1": color_matrix_of(info),
    }

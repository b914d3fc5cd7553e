"""Read camera raw files as Bayer mosaics with their metadata. The only module in rawlab that imports rawpy.

:func:`read_raw` decodes a file once with LibRaw (via rawpy), copies the visible mosaic out of LibRaw's
memory, crops it to even height and width (dropping the last row/column, so the CFA pattern stays valid) and
returns it with a :class:`RawInfo`. :func:`read_info` returns the metadata alone.

Where each value comes from
---------------------------
- Pixels, CFA, black and white levels, white balance and colour matrix: LibRaw. The CFA is read from
  ``raw_pattern`` on the *visible* area (indices into ``color_desc``, e.g. ``b"RGBG"`` where index 3 is the
  second green); black levels from ``black_level_per_channel`` (indexed by colour index) are mapped to
  ``R, G1, G2, B`` through the same pattern, G1 being the green on red rows (see :mod:`rawlab.bayer`).
- Make and model (rawpy does not expose them), ISO and exposure time: the fallback chain of
  :mod:`rawlab.rawmeta` -- TIFF IFD0 (tifffile) ``"tiff"`` -> EXIF (exifread) ``"exif"`` -> the CIFF heap of
  a Canon CRW ``"ciff"`` -> DNG UniqueCameraModel ``"tiff"`` -> a table keyed by content magic (QuickTake,
  RAF) ``"header"``; ISO and exposure from EXIF ``"exif"`` (or TIFF/EP tags in IFD0 ``"tiff"``), then LibRaw's
  ``other.iso_speed`` / ``other.shutter_speed`` ``"libraw"`` (0 means unknown), else ``"missing"``.
  ``RawInfo.sources`` records the winner for each of the four.

Errors
------
Every failure is a :class:`~rawlab.errors.RawReadError` with a sentence for the user and a ``kind``:
``"missing"`` (no such file), ``"not-raw"`` (empty, a directory, an image/text/other file LibRaw does not
recognise), ``"truncated"`` (the file ends before the data it declares, or a read error), ``"no-pixels"``
(a metadata-only stub: the image data is absent, or it decodes to a constant mosaic), ``"non-bayer"`` (LibRaw
decodes it, but not as a 2x2 R/G/G/B mosaic: linear DNG, scanner, X-Trans, 4-colour CFA) and
``"undecodable"`` (a raw LibRaw cannot decode, e.g. a VC-5 compressed GoPro GPR). A decoded file is first
checked for constant pixels and cut-short image data, then for its layout; so a stub is ``"no-pixels"`` even
when its layout is not Bayer either. LibRaw itself prints some messages ("Unexpected end of file") to stderr;
for content read from memory it would call the file "unknown file", so rawlab puts the name in.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rawlab import bayer, rawmeta
from rawlab.errors import RawReadError
from rawlab.rawmeta import FileMeta, normalize_sensor_name, sniff_raw_format

__all__ = [
    "MaskedPixels",
    "RawFrame",
    "RawInfo",
    "masked_pixel_stats",
    "normalize_sensor_name",
    "read_info",
    "read_raw",
    "sniff_raw_format",
]

Source = str | os.PathLike[str] | bytes
MASK_GUARD = 2  # masked rows/columns next to the visible area that :func:`_masked_pixels` leaves out


@dataclass(frozen=True)
class RawInfo:
    """Metadata of one Bayer raw, in rawlab's conventions (docs/architecture.md).

    Attributes
    ----------
    path : str
        The file (or the ``name`` given for in-memory content).
    raw_format : str
        Format recognised from the content: ``"DNG"``, ``"CRW"``, ``"NEF"``, ``"CR2"``, ``"KDC"``, ``"QTK"``,
        ``"TIFF-raw"`` (a TIFF-based raw of no more specific kind), ...
    make, model : str or None
        As the camera writes them, whitespace-normalised.
    sensor : str
        :func:`normalize_sensor_name` of make and model (``"Unknown"`` for a missing part).
    iso : float or None
    exposure_time : float or None
        Seconds.
    cfa : str
        ``"RGGB"``, ``"BGGR"``, ``"GRBG"`` or ``"GBRG"``: the pattern of the returned (even-cropped) mosaic.
    black_level : tuple of 4 float
        DN, channel order R, G1, G2, B.
    white_level : int
        DN.
    height, width : int
        Of the returned mosaic: the visible area, cropped to even size.
    wb : tuple of 4 float or None
        As-shot white-balance multipliers R, G1, G2, B, normalised so that G1 is 1.
    color_matrix : tuple of 3 tuples of 3 float, or None
        XYZ -> camera (LibRaw ``rgb_xyz_matrix[:3]``); ``None`` when LibRaw has none (all zero).
    sources : mapping
        For ``make``, ``model``, ``iso`` and ``exposure_time``: ``"tiff"``, ``"exif"``, ``"ciff"``,
        ``"header"``, ``"libraw"`` or ``"missing"``.
    masked : MaskedPixels or None
        The sensor's optically masked pixels, where the file keeps them (the recorded frame outside the
        visible area, as on Canon's CRWs: a 12-column, 6-row, 52-column and 2-row border on the PowerShot
        S40); ``None`` where it has none.
    """

    path: str
    raw_format: str
    make: str | None
    model: str | None
    sensor: str
    iso: float | None
    exposure_time: float | None
    cfa: str
    black_level: tuple[float, float, float, float]
    white_level: int
    height: int
    width: int
    wb: tuple[float, float, float, float] | None
    color_matrix: tuple[tuple[float, ...], ...] | None
    sources: Mapping[str, str] = field(hash=False)  # a plain dict, so that RawInfo pickles for Dask
    masked: MaskedPixels | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", dict(self.sources))


@dataclass(frozen=True)
class MaskedPixels:
    """Statistics of a sensor's optically masked pixels (no light reaches them: black level plus read noise).

    Of the pixels within 7 standard deviations of the median (a defective pixel or a bright column does not
    move them; 7, not 5: where half the pixels are clipped at black, the sd is about 0.6 of the read noise's
    and 5 of it would cut the upper tail): ``mean`` (DN), ``offset``, the mean of each pixel less its own CFA
    channel's black level (about 0 for a true masked border), and ``variance`` (DN^2) about each channel's
    own mean (channels whose levels differ do not add their spread, :func:`masked_pixel_stats`); ``count``
    how many pixels that is; ``floor`` the lowest value read and ``floor_share`` the share of all masked pixels
    there (a camera that clips its data at black leaves many there: the moments are then those of a censored
    distribution). ``channel_variance``: the variance of each CFA channel's pixels apart (R, G1, G2, B; NaN for
    one with under 256 of them), where the channels are known: a sensor's read noise can differ between them."""

    mean: float
    offset: float
    variance: float
    count: int
    floor: float
    floor_share: float
    channel_variance: tuple[float, float, float, float] | None = None  # R, G1, G2, B, as ``variance``


def _masked_pixels(raw: Any, order: list[int]) -> MaskedPixels | None:
    """:class:`MaskedPixels` of the frame LibRaw read around the visible area, or ``None`` where there is none
    (under 1024 pixels of it). The rows and columns next to the visible area (``MASK_GUARD``: light leaks into
    them, 0.8 DN on the PowerShot S40's first right column) and constant ones (padding) are left out.
    ``order``: LibRaw's colour index of R, G1, G2 and B."""
    s = raw.sizes
    full, colours = raw.raw_image, raw.raw_colors
    top, left, h, w = s.top_margin, s.left_margin, s.height, s.width
    if full.shape[0] < top + h or full.shape[1] < left + w or colours.shape != full.shape:
        return None
    g = MASK_GUARD
    border = [
        np.s_[: max(top - g, 0), :],
        np.s_[top + h + g :, :],
        np.s_[top : top + h, : max(left - g, 0)],
        np.s_[top : top + h, left + w + g :],
    ]
    values, channel = [], []
    for k, part in enumerate(border):
        v, c = full[part], colours[part]
        if v.size == 0:
            continue
        lines = (v, c) if k < 2 else (v.T, c.T)  # rows of the top and bottom, columns of the sides
        for line, ch in zip(*lines, strict=True):
            if line.min() != line.max():  # a constant line is padding
                values.append(line)
                channel.append(ch)
    if not values:
        return None
    levels = np.asarray(raw.black_level_per_channel, np.float64)
    channel = np.concatenate(channel)
    return masked_pixel_stats(np.concatenate(values), levels[channel], channel, order)


def masked_pixel_stats(
    values: np.ndarray,
    black: float | np.ndarray = 0.0,
    channel: np.ndarray | None = None,
    order: list[int] | None = None,
) -> MaskedPixels | None:
    """:class:`MaskedPixels` of masked pixels' ``values`` (DN, any shape) whose black level is ``black`` (one
    value, or each pixel's: its CFA channel's), ``channel`` each pixel's CFA colour index (None: one channel)
    and ``order`` the indices of R, G1, G2 and B (for ``channel_variance``); ``None`` under 1024 of them. The variance is about each channel's own mean there, not its nominal black:
    a file's per-channel black levels can be a rounding off what its masked pixels read (the PowerShot S30's
    say 31 and 32 DN where every channel reads 31.86), and that spread is not noise."""
    v = np.ravel(values).astype(np.float64)
    if v.size < 1024:
        return None
    r = v - np.ravel(np.broadcast_to(np.asarray(black, np.float64), np.shape(values)))
    ch = np.zeros(v.size, np.int64) if channel is None else np.ravel(channel).astype(np.int64)
    floor = float(v.min())
    floor_share = float(np.mean(v == floor))
    keep = np.ones(v.size, bool)
    for _ in range(3):  # clip at 7 sd of what is kept (at least 2 DN: the data are whole DN)
        centre = np.zeros(ch.max() + 1)
        for c in np.unique(ch[keep]):
            centre[c] = np.median(r[keep & (ch == c)])
        z = r - centre[ch]
        sd = float(z[keep].std())
        keep = np.abs(z) <= max(7.0 * sd, 2.0)
    n = np.bincount(ch[keep], minlength=ch.max() + 1)
    means = np.bincount(ch[keep], weights=r[keep], minlength=ch.max() + 1) / np.maximum(n, 1)
    z, labels = (r - means[ch])[keep], ch[keep]
    per = None
    if order is not None:
        per = tuple(float(z[labels == c].var()) if c < len(n) and n[c] >= 256 else math.nan for c in order)
    return MaskedPixels(
        float(v[keep].mean()), float(r[keep].mean()), float(z.var()), int(keep.sum()), floor, floor_share, per
    )


@dataclass(frozen=True, eq=False)
class RawFrame:
    """A decoded Bayer raw: its metadata and its visible mosaic (uint16 DN, even height and width)."""

    info: RawInfo
    mosaic: np.ndarray

    def packed(self) -> np.ndarray:
        """The mosaic as ``uint16`` planes ``(4, H/2, W/2)`` ordered R, G1, G2, B."""
        return bayer.pack(self.mosaic, self.info.cfa)

    def normalized(self) -> np.ndarray:
        """``float32`` planes ``(4, H/2, W/2)``: ``(DN - black_c) / (white - black_c)`` per channel."""
        return bayer.normalise(self.packed(), self.info.black_level, self.info.white_level)


def read_raw(source: Source, *, name: str | None = None) -> RawFrame:
    """Decode a Bayer raw file into a :class:`RawFrame`.

    Parameters
    ----------
    source
        A path, or the file's content as bytes (e.g. read through fsspec from S3).
    name
        The path to use in messages and in ``info.path``; defaults to the path, or ``"<bytes>"``.

    Raises
    ------
    RawReadError
        For anything that is not a readable Bayer raw; ``kind`` says which case (see the module docstring).
    """
    info, mosaic = _read(source, name, want_pixels=True)
    assert mosaic is not None
    return RawFrame(info, mosaic)


def read_info(source: Source, *, name: str | None = None) -> RawInfo:
    """Read the metadata of a Bayer raw without keeping its pixels.

    rawpy makes LibRaw decode the image before it reports levels or the CFA, so this costs one decode; it
    skips the copy of the mosaic. Raises exactly what :func:`read_raw` raises for the same file.
    """
    return _read(source, name, want_pixels=False)[0]


# --------------------------------------------------------------------------------------------- internals


@contextlib.contextmanager
def _opened(source: Source, where: str) -> Iterator[tuple[io.BufferedIOBase, int, Any]]:
    """Yield ``(binary file, size, what LibRaw should open)`` and turn OS errors into RawReadError."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        yield io.BytesIO(data), len(data), io.BytesIO(data)
        return
    path = os.fspath(source)
    if not isinstance(path, str):
        raise TypeError(f"pass a str path or the file content as bytes, not a bytes path {path!r}")
    try:
        fh = open(path, "rb")  # closed by the `with fh` below, after the OSError mapping
    except FileNotFoundError:
        raise RawReadError(
            where, "no such file; check the path (and the mount, for network storage)", "missing"
        ) from None
    except IsADirectoryError:
        raise RawReadError(
            where, "is a directory, not a raw file; pass the files inside it", "not-raw"
        ) from None
    except OSError as exc:
        raise RawReadError(
            where, f"cannot be read ({exc.strerror or exc}); check its permissions", "truncated"
        ) from None
    with fh:
        yield fh, os.fstat(fh.fileno()).st_size, path


def _read(source: Source, name: str | None, *, want_pixels: bool) -> tuple[RawInfo, np.ndarray | None]:
    if name is not None:
        where = name
    elif isinstance(source, (bytes, bytearray, memoryview)):
        where = "<bytes>"
    else:
        where = os.fspath(source)  # type: ignore[assignment]
    with _opened(source, where) as (fh, size, target):
        if size == 0:
            raise RawReadError(
                where, "is empty (0 bytes), so it holds no image; re-copy it from the source", "not-raw"
            )
        try:
            meta = rawmeta.inspect_file(fh, size)
        except OSError as exc:
            raise RawReadError(
                where, f"could not be read ({exc}); check the storage and copy it again", "truncated"
            ) from None
        return _decode(target, where, meta, want_pixels)


def _decode(target: Any, where: str, meta: FileMeta, want_pixels: bool) -> tuple[RawInfo, np.ndarray | None]:
    import rawpy  # imported here so that `import rawlab` and `rawlab --help` stay fast

    try:
        with _libraw_names(where) if isinstance(target, io.BytesIO) else contextlib.nullcontext():
            with rawpy.imread(target) as raw:
                raw.unpack()  # explicit, so that decoding errors surface here rather than in a property
                return _extract(raw, rawpy, where, meta, want_pixels)
    except rawpy.LibRawError as exc:
        raise _libraw_failure(where, meta, exc, rawpy) from exc
    except (RuntimeError, rawpy.NotSupportedError) as exc:  # rawpy's own checks on odd files
        raise RawReadError(
            where, f"could not be decoded by rawpy ({exc}); report this file to rawlab", "undecodable"
        ) from exc
    except OSError as exc:  # rawpy reading a file-like object
        raise RawReadError(
            where, f"could not be read ({exc}); check the storage and copy it again", "truncated"
        ) from exc


_STDERR = threading.Lock()


@contextlib.contextmanager
def _libraw_names(where: str) -> Iterator[None]:
    """Name the file in what LibRaw prints to stderr while decoding content from memory.

    LibRaw writes "unknown file: Unexpected end of file" from C for a buffer; stderr (fd 2) is sent to a
    temporary file meanwhile and copied back with the name in place. One decode at a time does this (others
    running in threads of the same process print as LibRaw does), as fd 2 is the process's.
    """
    if not _STDERR.acquire(blocking=False):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        _STDERR.release()
        yield
        return
    try:
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                tmp.seek(0)
                text = tmp.read()
                if text:
                    os.write(2, text.replace(b"unknown file:", os.fsencode(where) + b":"))
    finally:
        os.close(saved)
        _STDERR.release()


def _extract(
    raw: Any, rawpy: Any, where: str, meta: FileMeta, want_pixels: bool
) -> tuple[RawInfo, np.ndarray | None]:
    fmt = meta.raw_format or "raw"
    visible = raw.raw_image_visible  # a view into LibRaw's memory, valid until the RawPy is closed
    if visible.size == 0 or int(visible.min()) == int(visible.max()):
        raise _no_pixels(where, meta, int(visible.flat[0]) if visible.size else None)
    if meta.payload is not None and meta.payload.state == "partial":
        raise _truncated(where, meta)
    cfa, pattern = _bayer_pattern(raw, rawpy, where, fmt)
    h, w = visible.shape[0] // 2 * 2, visible.shape[1] // 2 * 2
    levels = np.asarray(raw.black_level_per_channel, dtype=np.float64)
    black = tuple(float(levels[pattern[dy][dx]]) for dy, dx in bayer.channel_offsets(cfa))
    white = int(raw.white_level)
    if white <= max(black):
        raise RawReadError(
            where,
            f"has a white level ({white} DN) at or below its black level ({max(black):g} DN), so its signal "
            "cannot be normalised; LibRaw does not know this camera's levels -- report the camera model",
            "undecodable",
        )
    other = raw.other
    meta.offer("iso", other.iso_speed, "libraw")  # no-op when EXIF already gave it; 0 stays missing
    meta.offer("exposure_time", other.shutter_speed, "libraw")
    info = RawInfo(
        path=where,
        raw_format=meta.raw_format or "unknown",
        make=meta.make,
        model=meta.model,
        sensor=normalize_sensor_name(meta.make, meta.model),
        iso=meta.iso,
        exposure_time=meta.exposure_time,
        cfa=cfa,
        black_level=black,  # type: ignore[arg-type]
        white_level=white,
        height=h,
        width=w,
        wb=_white_balance(raw.camera_whitebalance, pattern, cfa),
        color_matrix=_color_matrix(raw.rgb_xyz_matrix),
        sources=meta.sources,
        masked=_masked_pixels(raw, [pattern[dy][dx] for dy, dx in bayer.channel_offsets(cfa)]),
    )
    mosaic = np.array(visible[:h, :w], dtype=np.uint16, copy=True) if want_pixels else None
    return info, mosaic


def _bayer_pattern(raw: Any, rawpy: Any, where: str, fmt: str) -> tuple[str, list[list[int]]]:
    """The visible area's CFA name and its 2x2 colour-index pattern, or a ``"non-bayer"`` error."""
    need = "rawlab needs a Bayer CFA mosaic (2x2 R, G, G, B) and cannot use this file"
    pattern = raw.raw_pattern
    if raw.raw_type != rawpy.RawType.Flat or pattern is None:
        raise RawReadError(
            where,
            f"is a {fmt} file that LibRaw decodes as several colour values per pixel (a linear/demosaiced DNG, "
            f"a film scanner or a multi-channel format), not as a CFA mosaic; {need}. Use the camera's "
            "original raw",
            "non-bayer",
        )
    desc = raw.color_desc.decode("ascii", "replace")
    if pattern.shape != (2, 2):
        raise RawReadError(
            where,
            f"has a {pattern.shape[0]}x{pattern.shape[1]} colour filter pattern (e.g. Fujifilm X-Trans), not a "
            f"2x2 Bayer tile; {need}",
            "non-bayer",
        )
    letters = [[desc[i] if i < len(desc) else "?" for i in row] for row in pattern.tolist()]
    try:
        if raw.num_colors != 3:
            raise ValueError
        cfa = bayer.cfa_from_colors(letters)
    except ValueError:
        raise RawReadError(
            where,
            f"has a {raw.num_colors}-colour filter array ({desc}, tile {''.join(map(''.join, letters))}), "
            f"not an R/G/B Bayer pattern; {need}",
            "non-bayer",
        ) from None
    return cfa, pattern.tolist()


def _white_balance(cam_mul: list[float], pattern: list[list[int]], cfa: str) -> tuple[float, ...] | None:
    """As-shot multipliers R, G1, G2, B over G1; LibRaw's 4th value (second green) 0 means "same as G"."""
    mul = [float(v) for v in cam_mul]
    if len(mul) == 4 and mul[3] == 0:
        mul[3] = mul[1]
    values = [mul[pattern[dy][dx]] for dy, dx in bayer.channel_offsets(cfa)]
    if not all(np.isfinite(values)) or min(values) <= 0:
        return None  # e.g. [0, 1, 0, 0]: LibRaw has no as-shot balance for this file
    return tuple(v / values[1] for v in values)


def _color_matrix(matrix: np.ndarray) -> tuple[tuple[float, ...], ...] | None:
    m = np.asarray(matrix, dtype=np.float64)[:3, :3]
    if not np.any(m) or not np.all(np.isfinite(m)):
        return None
    return tuple(tuple(float(v) for v in row) for row in m)


def _no_pixels(where: str, meta: FileMeta, constant: int | None = None) -> RawReadError:
    p = meta.payload
    if p is not None and p.state == "absent" and p.declared is None:
        why = f"{p.where} is missing"
    elif p is not None and p.state == "absent" and p.present == p.declared:
        why = f"the image in {p.where} is only {p.declared:,} bytes long"
    elif p is not None and p.state == "absent":
        why = (
            f"{p.where} points to {p.declared:,} bytes of image data, {p.present:,} of which are in the file"
        )
    else:
        why = f"it decodes to a constant image (every value is {constant} DN)"
    return RawReadError(
        where,
        f"holds no pixel data ({why}): it is a metadata-only copy, e.g. a test fixture or a file cut before "
        "its image data; use the original file",
        "no-pixels",
    )


def _truncated(where: str, meta: FileMeta) -> RawReadError:
    p = meta.payload
    assert p is not None and p.declared is not None
    return RawReadError(
        where,
        f"is cut short: {p.where} points to {p.declared:,} bytes of image data but only {p.present:,} are "
        f"in the file ({meta.size:,} bytes); copy or download it again",
        "truncated",
    )


# Compression codes LibRaw (as built into rawpy) does not decode, with what to do about them.
_COMPRESSION_HINTS = {
    8: "Deflate-compressed image data, which LibRaw does not decode for integer raws; re-save the DNG "
    "uncompressed or with lossless JPEG",
    9: "GoPro VC-5 compressed image data (a GPR file); rawpy's LibRaw is built without the GPR SDK, so convert "
    "it to a standard DNG first with GoPro's gpr tools (github.com/gopro/gpr)",
    52546: "JPEG XL compressed image data (DNG 1.7), which this LibRaw does not decode; convert it with Adobe "
    "DNG Converter using lossless JPEG",
}


def _libraw_failure(where: str, meta: FileMeta, exc: Exception, rawpy: Any) -> RawReadError:
    """Explain why LibRaw failed, from the file's structure first and LibRaw's error class second."""
    fmt = meta.raw_format
    payload = meta.payload
    if payload is not None and payload.state == "absent":
        return _no_pixels(where, meta)
    if payload is not None and payload.state == "partial":
        return _truncated(where, meta)
    if meta.damaged:
        return RawReadError(
            where,
            f"is damaged: {meta.damaged}; the file was most likely cut short, copy it again",
            "truncated",
        )
    if fmt in (None, "headerless"):
        return RawReadError(
            where,
            "is not a raw file that LibRaw recognises (no known raw signature: an image, text or archive "
            "file, or a headerless raw of a size LibRaw does not know); pass camera raw files only",
            "not-raw",
        )
    hint = _COMPRESSION_HINTS.get(meta.compression or -1)
    if hint:
        return RawReadError(where, f"is a {fmt} file with {hint}", "undecodable")
    version = ".".join(map(str, rawpy.libraw_version))
    if isinstance(exc, rawpy.LibRawFileUnsupportedError):
        return RawReadError(
            where,
            f"looks like a {fmt} raw but LibRaw {version} cannot decode it (unsupported camera or encoding); "
            "convert it to DNG with Adobe DNG Converter, or check that your rawpy is recent enough",
            "undecodable",
        )
    if isinstance(exc, rawpy.LibRawIOError | rawpy.LibRawDataError):
        if payload is not None and payload.state == "complete" and isinstance(exc, rawpy.LibRawDataError):
            return RawReadError(
                where,
                f"holds all its image data but LibRaw {version} reports it as corrupt or in an encoding it "
                "cannot decode; check the file with the camera maker's software",
                "undecodable",
            )
        return RawReadError(
            where,
            f"ends before its image data does (LibRaw hit the end of the file or corrupt data while decoding "
            f"this {fmt or 'raw'} file); copy or download it again",
            "truncated",
        )
    if isinstance(exc, rawpy.LibRawTooBigError | rawpy.LibRawUnsufficientMemoryError):
        return RawReadError(
            where,
            f"is too large for LibRaw's memory limits ({exc}); free memory or use fewer workers",
            "undecodable",
        )
    return RawReadError(
        where, f"could not be decoded by LibRaw {version} ({type(exc).__name__}: {exc})", "undecodable"
    )

"""Raw-file metadata read from the file's own structure, without LibRaw.

:mod:`rawlab.rawio` decodes pixels with LibRaw (rawpy), which does not expose the camera make and model and
reads ISO only from the places it knows. This module fills those gaps and checks whether a file holds the pixel
data it declares. It never raises on bad input: whatever it cannot read is reported as missing.

Fallback chain (first hit wins; the winner is recorded in ``sources`` as the string in brackets):

- **make / model**: TIFF IFD0 tags 271/272 via tifffile (DNG, NEF, CR2, KDC, ARW, PEF, ...; also the ``CMT1``
  TIFF block of a CR3) [``"tiff"``] → EXIF via exifread (TIFF variants tifffile rejects, such as ORF and RW2,
  and the JPEG that a RAF embeds) [``"exif"``] → the make/model record (0x080a) in the heap of a Canon CIFF CRW
  [``"ciff"``] → DNG ``UniqueCameraModel`` (50708), its first word taken as the make [``"tiff"``] → a table
  keyed by content magic for formats whose header names the camera (QuickTake ``qktk``/``qktn``, the model
  field of a RAF header) [``"header"``] → ``"missing"``.
- **ISO**: EXIF ``ISOSpeedRatings`` (0x8827) in the EXIF IFD (or a CR3's ``CMT2``) [``"exif"``] → the same tag
  in IFD0, where TIFF/EP writers put it [``"tiff"``] → exifread [``"exif"``] → LibRaw's ``other.iso_speed``,
  filled in by :mod:`rawlab.rawio` (0 means unknown) [``"libraw"``] → ``"missing"``. Old formats (CRW, KDC,
  QTK) have no EXIF ISO.
- **exposure time** (seconds): EXIF ``ExposureTime`` (0x829a), same order as ISO, LibRaw's
  ``other.shutter_speed`` last.

The payload check (:class:`Payload`) compares the bytes the main image declares (TIFF strips/tiles of the
largest full-resolution IFD, the CFA block of a RAF, the ``mdat`` box of a CR3, the raw record of a CRW) with
the bytes actually in the file, which tells a metadata-only stub and a cut-short copy apart from a file LibRaw
merely cannot decode.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
import logging
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

__all__ = [
    "FileMeta",
    "Payload",
    "inspect_file",
    "normalize_sensor_name",
    "read_metadata",
    "sniff_raw_format",
]

HEADER_BYTES = 64
_MIN_PAYLOAD = 1024  # bytes: no camera image fits in less; fewer present means "no pixel data"
_EOF_SLACK = 512  # bytes: some writers over-declare the last strip; tolerate that much past the end

# --------------------------------------------------------------------------------------------- sniffing

_RAW_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"FUJIFILMCCD-RAW", "RAF"),
    (0, b"qktk", "QTK"),
    (0, b"qktn", "QTK"),
    (0, b"IIRO", "ORF"),
    (0, b"IIRS", "ORF"),
    (0, b"MMOR", "ORF"),
    (0, b"IIU\x00", "RW2"),
    (0, b"\x00MRM", "MRW"),
    (0, b"FOVb", "X3F"),
    (0, b"IIII", "IIQ"),
    (0, b"MMMM", "IIQ"),
    (0, b"ARRI\x12\x34\x56\x78", "ARI"),
    (0, b"NOKIARAW", "NOKIA"),
    (0, b"DSC-Image", "RDC"),  # Rollei d530flex: a text header, so it must be matched before the text test
    (4, b"ftypcrx ", "CR3"),
    (4, b"RED1", "R3D"),
    (4, b"RED2", "R3D"),
    (6, b"HEAPCCDR", "CRW"),
)
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_NOT_RAW_MAGIC = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"GIF87a",
    b"GIF89a",
    b"%PDF",
    b"PK\x03\x04",  # zip
    b"\x1f\x8b",  # gzip
    b"BZh",
    b"\xfd7zXZ\x00",
    b"7z\xbc\xaf\x27\x1c",
    b"\x93NUMPY",
    b"\x89HDF",
    b"\xef\xbb\xbf",  # UTF-8 byte-order mark
)
_TEXT_BYTES = frozenset(range(32, 127)) | {9, 10, 12, 13}


def sniff_raw_format(header: bytes) -> str | None:
    """Name the raw format of a file from its first bytes (about 64), or ``None`` if it is clearly not a raw.

    This is a cheap pre-filter for scanning folders, not a verdict: LibRaw decides in the end, and
    :func:`rawlab.rawio.read_raw` always asks it. Recognised signatures: TIFF-based raws (``"CR2"`` from its
    ``CR\\x02`` marker, otherwise ``"TIFF-raw"``: DNG, NEF, ARW, KDC, ... need the IFDs to tell apart, see
    :func:`read_metadata`), Canon CIFF ``"CRW"``, ``"CR3"``, ``"RAF"``, ``"ORF"``, ``"RW2"``, ``"MRW"``,
    ``"X3F"``, ``"IIQ"``, ``"ARI"``, ``"R3D"``, QuickTake ``"QTK"``, ``"NOKIA"`` and ``"RDC"``.

    Returns
    -------
    str or None
        The format; ``"headerless"`` for binary data with no known signature (LibRaw identifies some raws by
        file size alone, e.g. old Kodak, Casio and Nokia files); ``None`` for empty input, other image and
        archive formats (PNG, JPEG, GIF, PDF, zip, HEIF/MP4 containers, ...) and text.
    """
    head = bytes(header[:HEADER_BYTES])
    if not head:
        return None
    for offset, magic, fmt in _RAW_MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return fmt
    if head[:4] in _TIFF_MAGIC:
        return "CR2" if head[8:11] == b"CR\x02" else "TIFF-raw"
    if head.startswith(_NOT_RAW_MAGIC) or head[4:8] == b"ftyp":
        return None
    if _is_text(head):
        return None
    return "headerless"


def _is_text(head: bytes) -> bool:
    if all(b in _TEXT_BYTES for b in head):
        return True
    for cut in range(4):  # the 64-byte window may split a multi-byte UTF-8 character
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return all(ch.isprintable() or ch in "\t\n\r\f" for ch in text)
    return False


# --------------------------------------------------------------------------------------------- sensor names

# Words of a maker's legal name that say nothing about the brand ("Eastman Kodak Company" -> "Kodak").
_LEGAL_WORDS = frozenset(
    "company co co. corp corp. corporation inc inc. ltd ltd. limited gmbh ag sa s.a. the and & group "
    "imaging digital optical electric camera cameras photo international japan".split()
)


def _clean(text: str | None) -> str:
    return " ".join((text or "").replace("\x00", " ").split())


def normalize_sensor_name(make: str | None, model: str | None) -> str:
    """Return the sensor name ``"{Make} {Model}"`` (docs/architecture.md, "Units and conventions").

    Whitespace (and NUL padding) is collapsed. When the model already names the maker, the model alone is
    used: it starts with the whole make (``"Canon"`` + ``"Canon PowerShot S40"``), or its first word is a
    brand word of the make (``"NIKON CORPORATION"`` + ``"NIKON D1"`` -> ``"NIKON D1"``; ``"Eastman Kodak
    Company"`` + ``"Kodak DC120 ZOOM Digital Camera"`` -> the model). A missing or blank part becomes
    ``"Unknown"`` (``"Unknown"`` alone when both are missing). Case is kept as the camera writes it.
    Re-applying the function with the same make changes nothing.
    """
    make_c = _clean(make) or "Unknown"
    model_c = _clean(model) or "Unknown"
    mk, md = make_c.casefold(), model_c.casefold()
    if md == mk or md.startswith(mk + " "):
        return model_c
    brand_words = {w for w in mk.split() if w not in _LEGAL_WORDS}
    if md.split(" ", 1)[0] in brand_words:
        return model_c
    return f"{make_c} {model_c}"


# --------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Payload:
    """The main image's data as the file's structure declares it.

    Attributes
    ----------
    declared
        Bytes the main image declares (``None`` when the structure has no image data record at all).
    present
        How many of those bytes lie inside the file.
    where
        The structure that holds the image data, for messages (e.g. ``"the TIFF IFD at byte 59642"``).
    """

    declared: int | None
    present: int
    where: str

    @property
    def state(self) -> str:
        """``"absent"`` (under 1 KiB of image data present), ``"partial"`` or ``"complete"``."""
        if self.present < _MIN_PAYLOAD:
            return "absent"
        if self.declared is not None and self.declared - self.present > _EOF_SLACK:
            return "partial"
        return "complete"


@dataclass
class FileMeta:
    """What :func:`read_metadata` found; every field may be ``None``.

    ``sources`` maps ``make``, ``model``, ``iso`` and ``exposure_time`` to where the value came from
    (``"tiff"``, ``"exif"``, ``"ciff"``, ``"header"`` or ``"missing"``). ``compression`` is the TIFF
    compression code of the main image; ``damaged`` says why the container structure is unreadable.
    """

    size: int
    raw_format: str | None = None
    make: str | None = None
    model: str | None = None
    iso: float | None = None
    exposure_time: float | None = None
    sources: dict[str, str] = field(default_factory=dict)
    payload: Payload | None = None
    compression: int | None = None
    damaged: str | None = None

    def offer(self, key: str, value: object, source: str) -> None:
        """Set ``key`` from ``source`` unless an earlier source of the chain already set it."""
        if getattr(self, key) is not None:
            return
        if key in ("make", "model"):
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            value = _clean(value if isinstance(value, str) else None) or None
        else:
            value = _positive(value)
        if value is not None:
            setattr(self, key, value)
            self.sources[key] = source

    def finish(self) -> FileMeta:
        for key in ("make", "model", "iso", "exposure_time"):
            self.sources.setdefault(key, "missing")
        return self


def _positive(value: object) -> float | None:
    """A finite positive number from an int, float, TIFF rational ``(num, den)`` or first of a sequence."""
    if isinstance(value, (tuple, list)) and value:
        if len(value) == 2 and all(isinstance(v, int) for v in value):
            value = value[0] / value[1] if value[1] else None
        else:
            value = value[0]
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None


# --------------------------------------------------------------------------------------------- reading

_QUIET: contextvars.ContextVar[bool] = contextvars.ContextVar("rawlab_quiet_parsers", default=False)


class _DropWhileQuiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _QUIET.get()


for _name in ("tifffile", "exifread"):
    # tifffile and exifread log every oddity of camera files (maker notes, IFDs without strips); rawlab
    # reports what matters itself. The filter drops records only inside our own parsing calls.
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, _DropWhileQuiet) for f in _logger.filters):
        _logger.addFilter(_DropWhileQuiet())


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    token = _QUIET.set(True)
    try:
        yield
    finally:
        _QUIET.reset(token)


def read_metadata(source: str | os.PathLike[str] | bytes) -> FileMeta:
    """Read format, make, model, ISO, exposure and the payload check of a raw file, without LibRaw.

    Works on files LibRaw rejects (stubs, GPR, truncated copies), so a catalog can still name the camera of
    a failed file. Never raises for bad content; a missing file raises :class:`FileNotFoundError`.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return inspect_file(io.BytesIO(data), len(data))
    with open(os.fspath(source), "rb") as fh:
        return inspect_file(fh, os.fstat(fh.fileno()).st_size)


def inspect_file(fh: BinaryIO, size: int) -> FileMeta:
    """:func:`read_metadata` on an open binary file of ``size`` bytes (the position is not preserved)."""
    fh.seek(0)
    head = fh.read(HEADER_BYTES)
    meta = FileMeta(size=size, raw_format=sniff_raw_format(head))
    fmt = meta.raw_format
    with _quiet():
        tiff = _read_tiff(fh, meta) if fmt in ("TIFF-raw", "CR2") else None
        missing = None in (meta.make, meta.model, meta.iso, meta.exposure_time)
        if fmt in ("TIFF-raw", "CR2", "ORF", "RW2") and missing:
            _read_exif(fh, meta)
        if tiff is not None:
            _finish_tiff(meta, *tiff)
        if fmt == "CRW":
            _read_ciff(fh, meta)
        elif fmt == "CR3":
            _read_bmff(fh, meta)
        elif fmt == "RAF":
            _read_raf(fh, meta)
        elif fmt == "QTK":
            # dcraw/LibRaw: qktk is the QuickTake 100, qktn the 150 (the 200 sets byte 5).
            model = (
                "QuickTake 100" if head[:4] == b"qktk" else "QuickTake 200" if head[5] else "QuickTake 150"
            )
            meta.offer("make", "Apple", "header")
            meta.offer("model", model, "header")
    return meta.finish()


def _read_at(fh: BinaryIO, offset: int, n: int) -> bytes:
    fh.seek(offset)
    return fh.read(n)


def _tiff_tags_of(data: BinaryIO) -> dict[int, object]:
    """IFD0 tags of a TIFF stream as ``{code: value}`` (used for the TIFF blocks inside CR3)."""
    import tifffile

    try:
        with tifffile.TiffFile(data) as tif:
            return {tag.code: tag.value for tag in tif.pages.first.tags}
    except Exception:  # a damaged block only means the metadata is missing
        return {}


# Formats of TIFF-based raws, by maker, where the IFDs (not the header) tell them apart.
_TIFF_FORMAT_BY_MAKE = (("nikon", "NEF"), ("sony", "ARW"), ("pentax", "PEF"), ("ricoh", "PEF"))
_TIFF_FORMAT_BY_MAKE += (("samsung", "SRW"), ("hasselblad", "3FR"), ("leaf", "MOS"), ("epson", "ERF"))


def _read_tiff(fh: BinaryIO, meta: FileMeta) -> tuple[str, bool] | None:
    """IFD0 make/model, EXIF ISO/exposure and the payload; returns ``(UniqueCameraModel, is_dng)``."""
    import tifffile

    try:
        fh.seek(0)  # tifffile takes the current position as the start of the TIFF stream
        with tifffile.TiffFile(fh) as tif:
            ifd0 = tif.pages.first.tags
            meta.offer("make", ifd0.valueof(271), "tiff")
            meta.offer("model", ifd0.valueof(272), "tiff")
            exif = ifd0.valueof(34665)
            if isinstance(exif, dict):
                meta.offer("iso", exif.get("ISOSpeedRatings"), "exif")
                meta.offer("exposure_time", exif.get("ExposureTime"), "exif")
            meta.offer("iso", ifd0.valueof(34855), "tiff")
            meta.offer("exposure_time", ifd0.valueof(33434), "tiff")
            unique = ifd0.valueof(50708)
            is_dng = ifd0.valueof(50706) is not None
            pages = []
            for page in tif.pages:
                pages.append(page)
                pages.extend(getattr(page, "pages", None) or ())
            _tiff_payload(pages, meta)
    except Exception:  # tifffile is strict; a file it cannot parse still goes to exifread and LibRaw
        return None
    return (_clean(unique) if isinstance(unique, str) else ""), is_dng


def _finish_tiff(meta: FileMeta, unique: str, is_dng: bool) -> None:
    if unique and (meta.make is None or meta.model is None):
        # DNG UniqueCameraModel is "Make Model" by convention, e.g. "Blackmagic Pocket Cinema Camera 4K".
        meta.offer("make", unique.split(" ", 1)[0], "tiff")
        meta.offer("model", unique, "tiff")
    if meta.raw_format == "TIFF-raw":
        make = (meta.make or "").casefold()
        if is_dng:
            meta.raw_format = "DNG"
        elif "kodak" in make:
            model = (meta.model or "").replace(" ", "").casefold()
            meta.raw_format = "KDC" if any(f"dc{n}" in model for n in (25, 40, 50, 120)) else "DCR"
        else:
            meta.raw_format = next((fmt for key, fmt in _TIFF_FORMAT_BY_MAKE if key in make), "TIFF-raw")


def _ints(value: object) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)  # type: ignore[union-attr]


def _tiff_payload(pages: list, meta: FileMeta) -> None:
    """Payload of the largest full-resolution IFD (NewSubfileType bit 0 clear; all IFDs if none is)."""
    candidates = []
    for page in pages:
        tags = page.tags
        offsets = _ints(tags.valueof(273) or tags.valueof(324))
        counts = _ints(tags.valueof(279) or tags.valueof(325))
        reduced = bool((tags.valueof(254) or 0) & 1)
        candidates.append((reduced, sum(counts), offsets, counts, page.offset, tags.valueof(259)))
    full = [c for c in candidates if not c[0]] or candidates
    if not full:
        return
    _, declared, offsets, counts, ifd_offset, compression = max(full, key=lambda c: c[1])
    present = sum(max(0, min(o + n, meta.size) - o) for o, n in zip(offsets, counts, strict=False))
    meta.payload = Payload(declared, present, f"the TIFF IFD at byte {ifd_offset}")
    meta.compression = compression if isinstance(compression, int) else None


def _read_exif(fh: BinaryIO, meta: FileMeta, offset: int = 0, length: int | None = None) -> None:
    import exifread

    try:
        fh.seek(offset)
        stream = io.BytesIO(fh.read(length if length is not None else -1)) if offset or length else fh
        tags = exifread.process_file(stream, details=False, extract_thumbnail=False)
    except Exception:  # exifread raises on malformed EXIF in many ways; metadata is best-effort
        return

    def value(key: str) -> object:
        tag = tags.get(key)
        if tag is None:
            return None
        values = getattr(tag, "values", None)
        if isinstance(values, str):
            return values
        first = values[0] if values else None
        num, den = getattr(first, "num", None), getattr(first, "den", None)
        return (num, den) if num is not None and den else first

    meta.offer("make", value("Image Make"), "exif")
    meta.offer("model", value("Image Model"), "exif")
    meta.offer("iso", value("EXIF ISOSpeedRatings"), "exif")
    meta.offer("exposure_time", value("EXIF ExposureTime"), "exif")


class _Damaged(Exception):
    pass


def _read_ciff(fh: BinaryIO, meta: FileMeta) -> None:
    """Canon CIFF (CRW): a heap whose record directory sits at its end, found via the heap's last 4 bytes."""
    head = _read_at(fh, 0, 14)
    order = "<" if head[:2] == b"II" else ">"
    header_len = struct.unpack(order + "I", head[2:6])[0]
    found: dict[str, object] = {}

    def walk(start: int, length: int, depth: int) -> None:
        if depth > 4 or length < 6 or start + length > meta.size:
            raise _Damaged
        (dir_off,) = struct.unpack(order + "I", _read_at(fh, start + length - 4, 4))
        if dir_off > length - 6:
            raise _Damaged
        (count,) = struct.unpack(order + "H", _read_at(fh, start + dir_off, 2))
        if dir_off + 2 + 10 * count > length - 4:
            raise _Damaged
        table = _read_at(fh, start + dir_off + 2, 10 * count)
        for i in range(count):
            kind, rsize, roff = struct.unpack(order + "HII", table[10 * i : 10 * i + 10])
            if kind & 0xC000:  # value stored inside the record itself
                continue
            if roff + rsize > length:
                raise _Damaged
            if kind == 0x080A:  # "Make\0Model\0"
                parts = _read_at(fh, start + roff, min(rsize, 256)).split(b"\x00")
                found["make"] = parts[0].decode("latin-1")
                found["model"] = parts[1].decode("latin-1") if len(parts) > 1 else None
            elif kind == 0x2005 and depth == 0:  # RawData
                found["raw"] = (start + roff, rsize)
            elif kind & 0x3800 in (0x2800, 0x3000):  # sub-heap
                walk(start + roff, rsize, depth + 1)

    try:
        walk(header_len, meta.size - header_len, 0)
    except (_Damaged, struct.error):
        meta.damaged = (
            "its CIFF record directory, which a CRW file keeps at its very end, is missing or corrupt"
        )
        return
    meta.offer("make", found.get("make"), "ciff")
    meta.offer("model", found.get("model"), "ciff")
    raw = found.get("raw")
    if isinstance(raw, tuple):
        meta.payload = Payload(raw[1], raw[1], "the CRW raw-data record (0x2005)")
    else:
        meta.payload = Payload(None, 0, "the CRW raw-data record (0x2005)")


_CANON_UUID = bytes.fromhex("85c0b687820f11e08111f4ce462b6a48")


def _boxes(fh: BinaryIO, start: int, end: int) -> Iterator[tuple[bytes, int, int, int]]:
    """ISO BMFF boxes in ``[start, end)`` as ``(type, box start, payload start, box end)``."""
    pos = start
    for _ in range(10_000):
        if pos + 8 > end:
            return
        size, kind = struct.unpack(">I4s", _read_at(fh, pos, 8))
        body = pos + 8
        if size == 1:
            (size,) = struct.unpack(">Q", _read_at(fh, pos + 8, 8))
            body += 8
        elif size == 0:
            size = end - pos
        if size < body - pos:
            return
        if kind == b"uuid":
            kind = b"uuid:" + _read_at(fh, body, 16)
            body += 16
        yield kind, pos, body, pos + size
        pos += size


def _read_bmff(fh: BinaryIO, meta: FileMeta) -> None:
    """CR3: make/model in the ``CMT1`` TIFF block, ISO/exposure in ``CMT2``; pixels in ``mdat``."""
    mdat = None
    try:
        for kind, _, body, end in _boxes(fh, 0, meta.size):
            if kind == b"mdat":
                mdat = (body, end)
            elif kind == b"moov":
                for sub, _, sbody, send in _boxes(fh, body, min(end, meta.size)):
                    if sub == b"uuid:" + _CANON_UUID:
                        _read_canon_cmt(fh, sbody, min(send, meta.size), meta)
    except struct.error:  # a box header cut off by the end of the file
        pass
    if mdat is None:
        meta.payload = Payload(None, 0, "the CR3 'mdat' (media data) box")
    else:
        declared = mdat[1] - mdat[0]
        present = max(0, min(mdat[1], meta.size) - mdat[0])
        meta.payload = Payload(declared, present, "the CR3 'mdat' (media data) box")


def _read_canon_cmt(fh: BinaryIO, start: int, end: int, meta: FileMeta) -> None:
    for kind, _, body, box_end in _boxes(fh, start, end):
        if kind in (b"CMT1", b"CMT2"):
            tags = _tiff_tags_of(io.BytesIO(_read_at(fh, body, min(box_end, end) - body)))
            if kind == b"CMT1":
                meta.offer("make", tags.get(271), "tiff")
                meta.offer("model", tags.get(272), "tiff")
            else:  # CMT2 is the EXIF IFD, written as a TIFF stream
                meta.offer("iso", tags.get(34855), "exif")
                meta.offer("exposure_time", tags.get(33434), "exif")


def _read_raf(fh: BinaryIO, meta: FileMeta) -> None:
    """RAF: a header with the model name and big-endian offsets of an EXIF JPEG and the CFA block."""
    header = _read_at(fh, 0, 108)
    if len(header) < 108:
        meta.damaged = "its RAF header is cut short"
        return
    jpeg_off, jpeg_len, _, _, cfa_off, cfa_len = struct.unpack(">6I", header[84:108])
    if jpeg_len and jpeg_off + jpeg_len <= meta.size:
        _read_exif(fh, meta, jpeg_off, jpeg_len)
    meta.offer("make", "FUJIFILM", "header")
    meta.offer("model", header[28:60].split(b"\x00")[0].decode("latin-1"), "header")
    present = max(0, min(cfa_off + cfa_len, meta.size) - cfa_off)
    meta.payload = Payload(cfa_len, present, "the RAF CFA (raw data) block")

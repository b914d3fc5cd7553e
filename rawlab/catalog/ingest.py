"""The per-file task of a build: read one raw, hash it, store its pixels, return its catalog row.

This runs on Dask workers, one task per file. It never raises for bad input: a file that cannot be read comes
back as a row with ``status="failed"``, its error and the error kind, so the build goes on. A failure to write
the store is the machine's (disk full, quota, read-only, denied), not the file's: the row comes back with a
``store_error`` message instead, the frame's partial group is removed, and the build stops.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..cluster import worker_threads
from ..errors import RawReadError
from .qa import frame_stats
from .store import FrameStore, _os_reason, frame_id

__all__ = [
    "CRASH_ENV",
    "MASKED_COLUMNS",
    "PROFILE_KEY",
    "PhaseClock",
    "capture_time",
    "ingest_file",
    "masked_from_row",
    "masked_row",
    "metadata_row",
]

# Fault injection for tests only: a worker whose file path contains this string dies abruptly (os._exit),
# as it would if LibRaw crashed in C code. A real LibRaw crash cannot be produced on demand.
CRASH_ENV = "RAWLAB_TEST_CRASH_ON"
# A task's row carries its CPU seconds per phase under this key; the build takes it out before the catalog.
PROFILE_KEY = "_profile"


class PhaseClock:
    """CPU seconds per phase of one task: user + system time of the whole worker process (every thread, so
    the codec threads a phase starts are counted in it), which is what the machine pays for the phase."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        c = time.process_time()
        try:
            yield
        finally:
            self.cpu[phase] = self.cpu.get(phase, 0.0) + time.process_time() - c


MASKED_COLUMNS = ("masked_count", "masked_mean", "masked_offset", "masked_variance", "masked_floor",
                  "masked_floor_share", "masked_channel_variance")  # fmt: skip


def masked_row(masked) -> dict[str, Any]:
    """Catalog columns of a file's masked border (:class:`rawlab.rawio.MaskedPixels`; ``masked_count`` 0 and
    NaN where it has none), from which ``noise-fit --method single`` takes ``b``."""
    if masked is None:
        return dict.fromkeys(MASKED_COLUMNS, np.nan) | {"masked_count": 0, "masked_channel_variance": None}
    per = masked.channel_variance
    return {
        "masked_count": int(masked.count),
        "masked_mean": float(masked.mean),
        "masked_offset": float(masked.offset),
        "masked_variance": float(masked.variance),
        "masked_floor": float(masked.floor),
        "masked_floor_share": float(masked.floor_share),
        "masked_channel_variance": None if per is None else [float(v) for v in per],
    }


def masked_from_row(row: dict[str, Any]):
    """The :class:`rawlab.rawio.MaskedPixels` a catalog row recorded (:func:`masked_row`), or None: none, or a
    catalog written before the columns were."""
    from ..rawio import MaskedPixels

    count = row.get("masked_count")
    if count is None or not np.isfinite(count) or int(count) <= 0:
        return None
    per = row.get("masked_channel_variance")
    per = None if per is None or len(per) != 4 else tuple(float(v) for v in per)
    return MaskedPixels(float(row["masked_mean"]), float(row["masked_offset"]), float(row["masked_variance"]),
                        int(count), float(row["masked_floor"]), float(row["masked_floor_share"]), per)  # fmt: skip


def metadata_row(info) -> dict[str, Any]:
    """Catalog columns from a :class:`rawlab.rawio.RawInfo`."""
    src = dict(info.sources)
    return masked_row(getattr(info, "masked", None)) | {
        "raw_format": info.raw_format,
        "make": info.make,
        "model": info.model,
        "sensor": info.sensor,
        "iso": np.nan if info.iso is None else float(info.iso),
        "exposure_time": np.nan if info.exposure_time is None else float(info.exposure_time),
        "cfa": info.cfa,
        "black_level": [float(v) for v in info.black_level],
        "white_level": int(info.white_level),
        "height": int(info.height),
        "width": int(info.width),
        "wb": None if info.wb is None else [float(v) for v in info.wb],
        "make_source": src.get("make", "missing"),
        "model_source": src.get("model", "missing"),
        "iso_source": src.get("iso", "missing"),
        "exposure_source": src.get("exposure_time", "missing"),
    }


def capture_time(data: bytes) -> float | None:
    """When the frame was taken: EXIF ``DateTimeOriginal`` plus ``SubSecTimeOriginal``, as seconds on the
    camera's clock read as UTC (a POSIX timestamp; only differences between frames of one body mean anything). Burst recognition (:mod:`rawlab.catalog.bursts`) orders frames by it.

    TIFF-based raws (DNG, NEF, CR2, ARW, PEF, ...) are read with tifffile, others with exifread; the file's
    IFDs only, about 0.2 ms. ``None`` (not NaN, so that rows compare equal) when the file has no capture time.
    Never raises.
    """
    import datetime as _dt
    import io

    from ..rawmeta import _quiet  # tifffile and exifread log every oddity of camera files; rawmeta mutes them

    stamp, subsec, tiff = None, None, False
    with contextlib.suppress(Exception), _quiet():
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            tiff = True
            ifd0 = tif.pages[0]
            tag = ifd0.tags.get(34665)  # ExifIFD
            exif = tag.value if tag is not None and isinstance(tag.value, dict) else {}
            stamp = exif.get("DateTimeOriginal") or (ifd0.tags.get(306).value if 306 in ifd0.tags else None)
            subsec = exif.get("SubsecTimeOriginal")
    if not tiff:  # CR3, RAF, ... : exifread finds the EXIF block
        with contextlib.suppress(Exception), _quiet():
            import exifread

            tags = exifread.process_file(io.BytesIO(data), details=False)
            stamp = str(tags.get("EXIF DateTimeOriginal") or tags.get("Image DateTime") or "") or None
            subsec = str(tags.get("EXIF SubSecTimeOriginal") or "") or None
    try:
        when = _dt.datetime.strptime(str(stamp).strip("\x00 "), "%Y:%m:%d %H:%M:%S")
    except (TypeError, ValueError):
        return None
    frac = str(subsec or "").strip("\x00 ")
    extra = float(f"0.{frac}") if frac.isdigit() else 0.0
    return when.replace(tzinfo=_dt.UTC).timestamp() + extra


def _read_bytes(path: str, storage_options: dict) -> bytes:
    if "://" in path:
        import fsspec

        with fsspec.open(path, "rb", **storage_options) as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def ingest_file(
    source: dict[str, Any], store_url: str, storage_options: dict | None = None
) -> dict[str, Any]:
    """Ingest one source file (a :class:`~rawlab.catalog.scan.SourceFile` as a dict) into the store.

    Returns its catalog row. Pixels already in the store (same content hash) are not written again. The row
    carries the task's CPU seconds per phase under :data:`PROFILE_KEY` (the build takes them out).
    """
    storage_options = storage_options or {}
    clock = PhaseClock()
    with clock("task"):
        row = _ingest(source, store_url, storage_options, clock)
    # "other": what no phase covers (the store checks, the frame lock, freeing the arrays)
    clock.cpu["other"] = clock.cpu.pop("task") - sum(clock.cpu.values())
    row[PROFILE_KEY] = clock.cpu
    return row


def _ingest(
    source: dict[str, Any], store_url: str, storage_options: dict, clock: PhaseClock
) -> dict[str, Any]:
    row: dict[str, Any] = {**source, "status": "ok", "error": "", "error_kind": ""}
    crash_on = os.environ.get(CRASH_ENV)
    if crash_on and crash_on in source["path"]:
        os._exit(134)  # see CRASH_ENV
    try:
        with clock("read"):
            data = _read_bytes(source["path"], storage_options)
    except OSError as e:
        return {**row, "status": "failed", "error": f"cannot read the file: {e}", "error_kind": "unreadable"}
    with clock("metadata"):
        row["capture_time"] = capture_time(data)
    if worker_threads() >= 2:  # a spare thread: hash while LibRaw decodes (both release the GIL)
        sha, decoded = _hash_during_decode(data, source["path"], clock)
    else:
        with clock("hash"):  # the one hash of the file: it names the frame and finds copies and re-runs
            sha = hashlib.sha256(data).hexdigest()
        decoded = None
    fid = frame_id(sha)
    row.update({"sha256": sha, "frame_id": fid, "size": len(data)})
    store = FrameStore(store_url, storage_options)
    existing = store.frame_attrs(fid)
    if existing is not None:  # same content already ingested (re-run, or a duplicate file)
        return _reused(row, existing)
    if decoded is None:
        decoded = _decode(data, source["path"], clock)
    if isinstance(decoded, RawReadError):
        why = {"error": decoded.reason, "error_kind": decoded.kind}
        return {**row, "frame_id": "", "status": "failed", **why}
    frame, decoded = decoded, None  # one reference to the mosaic, dropped after packing
    del data
    with clock("pack"):
        planes, info = frame.packed(), frame.info
        del frame  # the planes are a copy: the mosaic (24 MB at 12 MP) goes now, not after the write
    row.update(metadata_row(info))
    with clock("stats"):  # whole-frame saturation and level, once per file: QA reads them from the row
        row.update(frame_stats(planes, info.black_level, info.white_level))
    with _frame_lock(fid):  # two copies of one file in one build: one writes, the other reuses
        existing = store.frame_attrs(fid)
        if existing is not None:
            return _reused(row, existing)
        try:
            with clock("write"):  # Blosc compression on the worker's codec threads, then the file writes
                store.write_frame(fid, planes, row)
        except OSError as e:
            with contextlib.suppress(OSError):  # leave the store as it was before this file
                store.remove_frames([fid])
            return {**row, "store_error": f"cannot write {source['path']} into {store_url}: {_os_reason(e)}"}
    return {**row, "reused": False}


def _decode(data: bytes, name: str, clock: PhaseClock):
    """The decoded frame, or the :class:`RawReadError` that says why the file cannot be read."""
    from ..rawio import read_raw

    try:
        with clock("decode"):
            return read_raw(data, name=name)
    except RawReadError as e:
        return e


def _hash_during_decode(data: bytes, name: str, clock: PhaseClock):
    """``(sha256 hex, frame or RawReadError)``: the file hashed on a second thread while it decodes, so a worker
    with two threads (more cores than workers) does not wait for the hash. The frame is then decoded even when
    its content turns out to be stored already (a duplicate file), which the sequential order would skip."""
    from concurrent.futures import ThreadPoolExecutor

    def digest() -> tuple[str, float]:
        c = time.thread_time()
        return hashlib.sha256(data).hexdigest(), time.thread_time() - c

    before = clock.cpu.get("decode", 0.0)
    with clock("decode"), ThreadPoolExecutor(1, thread_name_prefix="rawlab-hash") as pool:
        pending = pool.submit(digest)
        decoded = _decode(data, name, PhaseClock())
        sha, hash_cpu = pending.result()
    # the decode clock counted the whole process, the hashing thread included: give that to "hash"
    clock.cpu["decode"] = before + max(0.0, clock.cpu["decode"] - before - hash_cpu)
    clock.cpu["hash"] = clock.cpu.get("hash", 0.0) + hash_cpu
    return sha, decoded


def _reused(row: dict[str, Any], existing: dict[str, Any]) -> dict[str, Any]:
    """``row`` (this file's path, size, hash) completed from the stored frame's row (its decoded metadata)."""
    stored = existing["row"]
    keep = {k: v for k, v in stored.items() if k not in row or k == "raw_format"}  # the decoder's format, not
    return {**row, **keep, "reused": True}  # the scan's guess from the first bytes (DNG, not TIFF-raw)


@contextlib.contextmanager
def _frame_lock(fid: str):
    """Hold a cluster-wide lock on frame ``fid`` while this task writes it (nothing outside a Dask worker)."""
    try:
        from distributed import Lock, get_worker

        get_worker()
    except (ImportError, ValueError):
        yield
        return
    with Lock(f"rawlab-frame-{fid}"):
        yield

"""The Zarr v3 store: one group per ingested frame, the catalog beside them, opened lazily as xarray.

Layout::

    STORE/zarr.json                 root group; attrs: format, rawlab version, build parameters
    STORE/frames/<id>/raw           uint16 (channel=4, y, x) packed R, G1, G2, B planes, raw DN as captured
    STORE/bursts/<sensor>/<bid>/raw uint16 (frame, channel=4, y, x): a burst's frames in capture order, their
                                    chunks the frames' own (hard links); attrs: the reference, frame ids, QA
    STORE/catalog.parquet           one row per distinct file content (rawlab.open_catalog)
    STORE/.rawlab-build.lock        while a build writes: who holds the store (see :class:`StoreLock`)

``<id>`` is the first 20 hex digits of the file's SHA-256, so identical content is stored once. A frame
group is written in full and only then marked ``complete`` in its attributes (with its catalog row), so a
build killed at any moment leaves either a complete frame or one that the next run overwrites: nothing
half-written is ever read.

Chunks are ``(4, 256, 256)`` packed pixels (a 512x512 mosaic tile, 512 KiB raw): large enough for analysis
reductions, small enough that a random training crop reads one to four chunks. The codec is Blosc with
bit-shuffle; see ``benchmarks/codecs.py`` for the measured ratio and cost.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from .._version import __version__
from ..bayer import CHANNELS
from ..errors import RawlabError

__all__ = [
    "CHUNK", "STORE_FORMAT", "FrameStore", "StoreLock", "StoreWriteError", "frame_id", "normalized", "open_store",
]  # fmt: skip

STORE_FORMAT = "rawlab.store/1"
CHUNK = 256
CATALOG = "catalog.parquet"
LOCK = ".rawlab-build.lock"


class StoreWriteError(RawlabError):
    """Writing to the store failed for a reason of the machine (disk full, quota, read-only or denied), not of
    the file being ingested: the build stops, leaving the store as it was before."""


def frame_id(sha256: str) -> str:
    return sha256[:20]


def default_codec():
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle")


def _is_url(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


class FrameStore:
    """Read and write one rawlab store (a local path or an fsspec URL such as ``s3://bucket/store.zarr``)."""

    def __init__(self, url: str | os.PathLike[str], storage_options: dict | None = None):
        import fsspec

        self.url = os.fspath(url)
        self.storage_options = storage_options or {}
        self.fs, self.root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        self._zstore = None

    # -- zarr plumbing -------------------------------------------------------------------------------------
    @property
    def zstore(self):
        if self._zstore is None:
            from zarr.storage import FsspecStore, LocalStore

            if _is_url(self.url):
                self._zstore = FsspecStore.from_url(self.url, storage_options=self.storage_options)
            else:
                self._zstore = LocalStore(self.root)
        return self._zstore

    def _root_group(self, mode: str = "r"):
        import zarr

        return zarr.open_group(self.zstore, mode=mode, zarr_format=3)

    def exists(self) -> bool:
        return self.fs.exists(f"{self.root}/zarr.json")

    def attrs(self) -> dict[str, Any]:
        return dict(self._root_group().attrs)

    def initialise(self, build_params: dict[str, Any]) -> None:
        """Create the store, or check that an existing one was written by a compatible rawlab."""
        if self.exists():
            fmt = self.attrs().get("format")
            if fmt != STORE_FORMAT:
                raise RawlabError(
                    f"{self.url} is not a {STORE_FORMAT} store (format {fmt!r}); it was written by another "
                    f"tool or an incompatible rawlab version — use a new --out path"
                )
            group = self._root_group("a")
        else:
            self.check_target()
            group = self._root_group("a")
            group = group.update_attributes(
                {"format": STORE_FORMAT, "created_by": f"rawlab {__version__}", "builds": []}
            )
        builds = list(group.attrs.get("builds", []))
        builds.append({"rawlab_version": __version__, **build_params})
        group.update_attributes({"rawlab_version": __version__, "builds": builds[-50:]})

    def check_target(self) -> None:
        """Refuse a local ``--out`` that exists and holds something other than a rawlab store."""
        if self.exists() or _is_url(self.url) or not os.path.exists(self.url):
            return
        if not os.path.isdir(self.url) or any(not n.startswith(LOCK) for n in os.listdir(self.url)):
            raise RawlabError(
                f"{self.url} exists and is not a rawlab store; choose a new --out path or an existing store"
            )

    def lock(self, wait: float = 0.0, echo: Callable[[str], None] | None = None) -> StoreLock:
        """A :class:`StoreLock` on this store (use as a context manager)."""
        return StoreLock(self, wait=wait, echo=echo)

    # -- frames --------------------------------------------------------------------------------------------
    def frame_path(self, fid: str) -> str:
        return f"frames/{fid}"

    def frame_attrs(self, fid: str) -> dict[str, Any] | None:
        """The frame's attributes if it is completely written, else ``None``."""
        path = f"{self.root}/frames/{fid}/zarr.json"
        try:
            with self.fs.open(path, "r") as f:
                attrs = json.load(f).get("attributes", {})
        except (FileNotFoundError, OSError, ValueError):
            return None
        # Both marks come in one atomic metadata write; a group with only one (from an older rawlab) is redone.
        return attrs if attrs.get("complete") and isinstance(attrs.get("row"), dict) else None

    def write_frame(self, fid: str, planes: np.ndarray, row: dict[str, Any], chunk: int = CHUNK) -> None:
        """Write packed DN planes ``(4, h, w)`` uint16, then mark the frame complete with its catalog row.

        ``chunk`` is the chunk edge in packed pixels (the analysis layout's :data:`CHUNK` unless a derived
        store, such as a training store, asks for another).

        Zarr writes the metadata (the array carries zarr v3 ``dimension_names``, so ``xarray.open_zarr`` reads
        it with its dimensions); the chunks are encoded and written here (:meth:`_write_chunks`), byte for byte
        what zarr writes, at half its CPU.
        """
        import zarr

        if planes.dtype != np.uint16 or planes.ndim != 3 or planes.shape[0] != 4:
            raise ValueError(f"expected uint16 planes (4, h, w), got {planes.dtype} {planes.shape}")
        h, w = planes.shape[1:]
        group = zarr.open_group(self.zstore, path=self.frame_path(fid), mode="w", zarr_format=3)
        chunks = (4, min(chunk, h), min(chunk, w))
        codec = default_codec()
        group.create_array(
            "raw",
            shape=planes.shape,
            dtype=planes.dtype,
            chunks=chunks,
            compressors=[codec],
            dimension_names=("channel", "y", "x"),
        )
        self._write_chunks(f"{self.frame_path(fid)}/raw", planes, chunks, codec)
        # One metadata write for both marks. (``group.attrs.update`` would be two: zarr's Attributes is a plain
        # MutableMapping, so it sets key by key, and a kill between them left a frame "complete" without its row.)
        group.update_attributes({"complete": True, "row": _jsonable(row)})

    def _write_chunks(self, array_path: str, data: np.ndarray, chunks: tuple[int, ...], codec) -> None:
        """Encode and write the chunks of a new zarr v3 array (regular grid, default ``c/`` keys, fill value 0,
        codecs ``bytes`` little-endian then ``codec``, a zarr ``BloscCodec``), as zarr would.

        Zarr 3 spends about 1 ms of Python per chunk around the codec (0.12 CPU-s for a 12 MP frame's 48
        chunks, of which Blosc is 0.045); this writes the same bytes in 0.06. Edge chunks are padded with the
        fill value and all-fill chunks are not written, as zarr does. The chunks are encoded on as many threads
        as Zarr's codec pool may use (``threading.max_workers``: a Dask worker's thread budget).
        """
        import itertools
        from concurrent.futures import ThreadPoolExecutor

        import zarr
        from numcodecs import Blosc

        shuffle = {"noshuffle": Blosc.NOSHUFFLE, "shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE}
        blosc = Blosc(
            cname=codec.cname.value, clevel=codec.clevel, shuffle=shuffle[codec.shuffle.value],
            blocksize=codec.blocksize,
        )  # fmt: skip
        data = np.asarray(data, dtype=data.dtype.newbyteorder("<"))
        grid = [range(0, n, c) for n, c in zip(data.shape, chunks, strict=True)]

        def encode(origin: tuple[int, ...]) -> tuple[str, bytes | None]:
            block = data[tuple(slice(o, o + c) for o, c in zip(origin, chunks, strict=True))]
            key = "/".join(["c", *(str(o // c) for o, c in zip(origin, chunks, strict=True))])
            if not block.any():
                return key, None  # all fill value: zarr leaves it out, readers fill it
            if block.shape != chunks:
                full = np.zeros(chunks, dtype=data.dtype)
                full[tuple(slice(0, n) for n in block.shape)] = block
                block = full
            return key, blosc.encode(np.ascontiguousarray(block))

        origins = list(itertools.product(*grid))
        n_threads = min(len(origins), zarr.config.get("threading.max_workers") or os.cpu_count() or 1)
        if n_threads > 1:
            with ThreadPoolExecutor(n_threads) as pool:
                encoded = list(pool.map(encode, origins))
        else:
            encoded = [encode(o) for o in origins]
        base = f"{self.root}/{array_path}"
        if _is_url(self.url):
            self.fs.pipe({f"{base}/{key}": blob for key, blob in encoded if blob is not None})
            return
        for key, blob in encoded:
            if blob is None:
                continue
            path = os.path.join(base, *key.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(blob)

    def read_frame(self, fid: str) -> np.ndarray:
        import zarr

        return zarr.open_array(self.zstore, path=f"{self.frame_path(fid)}/raw", mode="r")[...]

    def read_crop(self, fid: str, size: int) -> np.ndarray:
        """The central ``size x size`` packed pixels of a frame (reads only the chunks it needs)."""
        import zarr

        arr = zarr.open_array(self.zstore, path=f"{self.frame_path(fid)}/raw", mode="r")
        h, w = arr.shape[1:]
        y0, x0 = max(0, (h - size) // 2), max(0, (w - size) // 2)
        return arr[:, y0 : y0 + size, x0 : x0 + size]

    def frame_array(self, fid: str):
        """The frame as a lazy dask array ``(4, h, w)`` backed by its Zarr chunks."""
        import dask.array as da
        import zarr

        arr = zarr.open_array(self.zstore, path=f"{self.frame_path(fid)}/raw", mode="r")
        return da.from_zarr(arr)

    def frames_state(self) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """``({id: attrs} of complete frames, [ids of incomplete frames])`` in one listing."""
        base = f"{self.root}/frames"
        if not self.fs.exists(base):
            return {}, []
        complete, incomplete = {}, []
        for info in self.fs.ls(base, detail=True):
            if info.get("type") != "directory":
                continue  # the frames group's own zarr.json
            fid = info["name"].rstrip("/").rsplit("/", 1)[-1]
            attrs = self.frame_attrs(fid)
            if attrs is None:
                incomplete.append(fid)
            else:
                complete[fid] = attrs
        return complete, incomplete

    def list_frames(self) -> dict[str, dict[str, Any]]:
        """All completely written frames, ``{id: attrs}``."""
        return self.frames_state()[0]

    def remove_frames(self, ids: list[str]) -> None:
        """Delete frame groups (used for the incomplete leftovers of a killed build)."""
        for fid in ids:
            self.fs.rm(f"{self.root}/frames/{fid}", recursive=True)

    # -- bursts --------------------------------------------------------------------------------------------
    def burst_path(self, sensor: str, burst_id: str) -> str:
        """``bursts/<sensor>/<burst id>``, the sensor's ``/`` replaced as :func:`open_store` does."""
        return f"bursts/{str(sensor).replace('/', '_')}/{burst_id}"

    def burst_attrs(self, path: str) -> dict[str, Any] | None:
        """A burst group's attributes if it is completely written, else ``None``."""
        try:
            with self.fs.open(f"{self.root}/{path}/zarr.json", "r") as f:
                attrs = json.load(f).get("attributes", {})
        except (FileNotFoundError, OSError, ValueError):
            return None
        return attrs if attrs.get("complete") else None

    def write_burst(self, path: str, frame_ids: list[str], attrs: dict[str, Any]) -> None:
        """Write burst group ``path``: ``raw`` uint16 ``(frame, channel, y, x)`` holding the stored frames
        ``frame_ids`` in this order, then its attributes with ``complete`` in one metadata write.

        A frame's chunk ``(4, cy, cx)`` and the burst's ``(1, 4, cy, cx)`` encode to the same bytes (same
        samples, order and codec), so the burst's chunks are the frames' chunk files: hard links on a local
        store (no second copy of the pixels), byte copies elsewhere. Frames written with another layout are
        decoded and written again. A group already complete with these frames keeps its pixels and only gets
        the new attributes (a re-run, other QA thresholds).
        """
        import zarr

        done = self.burst_attrs(path)
        if done is not None and done.get("frame_ids") == list(frame_ids):
            group = zarr.open_group(self.zstore, path=path, mode="a", zarr_format=3)
            group.update_attributes({**_jsonable(attrs), "frame_ids": list(frame_ids), "complete": True})
            return
        frames = [zarr.open_array(self.zstore, path=f"{self.frame_path(f)}/raw", mode="r") for f in frame_ids]
        first = frames[0]
        for fid, arr in zip(frame_ids, frames, strict=True):
            if arr.shape != first.shape or arr.dtype != first.dtype:
                raise ValueError(
                    f"frame {fid} is {arr.dtype} {arr.shape}, the burst's first frame {first.dtype} {first.shape}"
                )
        group = zarr.open_group(self.zstore, path=path, mode="w", zarr_format=3)  # an unfinished one goes
        codec = default_codec()
        burst = group.create_array(
            "raw",
            shape=(len(frames), *first.shape),
            dtype=first.dtype,
            chunks=(1, *first.chunks),
            compressors=[codec],
            dimension_names=("frame", "channel", "y", "x"),
        )
        same = all(_codecs(a) == _codecs(burst) and a.chunks == first.chunks for a in frames)
        for k, (fid, arr) in enumerate(zip(frame_ids, frames, strict=True)):
            if same:
                self._link_chunks(f"{self.frame_path(fid)}/raw", f"{path}/raw", k)
            else:
                burst[k] = arr[...]
        group.update_attributes({**_jsonable(attrs), "frame_ids": list(frame_ids), "complete": True})

    def _link_chunks(self, src: str, dst: str, k: int) -> None:
        """Chunk files ``src/c/<i>/<j>/<l>`` of a frame as ``dst/c/<k>/<i>/<j>/<l>`` of a burst."""
        import shutil

        base = f"{self.root}/{src}/c/"
        for name in self.fs.find(base):
            rel = name[len(base) :] if name.startswith(base) else name.rsplit("/c/", 1)[-1]
            target = f"{self.root}/{dst}/c/{k}/{rel}"
            if _is_url(self.url):
                self.fs.copy(name, target)
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            try:
                os.link(name, target)
            except OSError:  # a file system without hard links
                shutil.copyfile(name, target)

    def burst_array(self, path: str):
        """A burst's frames as a lazy dask array ``(frame, 4, h, w)`` backed by its Zarr chunks."""
        import dask.array as da
        import zarr

        return da.from_zarr(zarr.open_array(self.zstore, path=f"{path}/raw", mode="r"))

    # -- catalog -------------------------------------------------------------------------------------------
    def write_catalog(self, df) -> None:
        """Write the catalog atomically (a temporary file renamed into place)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        # On the calling thread, into memory, then one write: no Arrow thread pool (see read_catalog).
        table = pa.Table.from_pandas(df, preserve_index=False, nthreads=1)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        tmp = f"{self.root}/.{CATALOG}.tmp"
        try:
            with self.fs.open(tmp, "wb") as f:
                f.write(sink.getvalue().to_pybytes())
            self.fs.mv(tmp, f"{self.root}/{CATALOG}")
        except OSError as e:  # disk full, quota, read-only: the previous catalog stays as it was
            with contextlib.suppress(OSError):
                self.fs.rm(tmp)
            raise StoreWriteError(
                f"cannot write the catalog of {self.url}: {_os_reason(e)}; the store is as it was before "
                f"this build's catalog update — free space or fix permissions and run the build again"
            ) from None

    def read_catalog(self):
        """The catalog, or None before the first build. Read on the calling thread alone: Arrow's thread pools,
        once started, can abort the process at exit (``terminate called without an active exception``, exit
        -6, apache/arrow#34314), which a short command like ``rawlab stats`` on an empty store hit once under a
        loaded CI; a catalog is small, so no thread pool is started for it."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = f"{self.root}/{CATALOG}"
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as f:
            data = f.read()
        return pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False).to_pandas(use_threads=False)


def _os_reason(e: OSError) -> str:
    """``No space left on device [ENOSPC]``: the system's words and the error's name."""
    name = errno.errorcode.get(e.errno or 0)
    return f"{e.strerror or e}" + (f" [{name}]" if name else "")


# -- the build lock -------------------------------------------------------------------------------------------


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux ``/proc``), to tell a live holder from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(info: dict[str, Any]) -> bool:
    """Whether the holder recorded in a lock may still run (always ``True`` for another host's holder)."""
    if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return True
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    start = _proc_start(info["pid"])
    return not (start and info.get("pid_start") and start != info["pid_start"])


class StoreLock:
    """Only one build writes a store at a time: a lock file ``STORE/.rawlab-build.lock`` naming its holder.

    Local stores: the lock is written in full to a private file and hard-linked into place, which succeeds for
    exactly one process (``O_EXCL`` semantics, also on NFS). It records pid, host, start time and the pid's
    start time; a lock whose process is gone from this host (a build killed with SIGKILL) is stale and is
    recovered. A holder on another host cannot be checked: its lock is removed by hand if no build runs.

    fsspec URLs (``s3://``, ``memory://``): object stores have no atomic create-if-absent, so the lock is best
    effort: written when absent, then read back after a moment to confirm it is ours. It stops a second build
    started later; two builds started within that moment may both proceed.

    A second build waits up to ``wait`` seconds for the holder to finish, then raises :class:`RawlabError`
    naming the store and the holder.
    """

    def __init__(self, store: FrameStore, *, wait: float = 0.0, echo: Callable[[str], None] | None = None):
        self.store, self.wait, self.echo = store, float(wait), echo
        self.path = f"{store.root}/{LOCK}"
        self.local = not _is_url(store.url)
        self.info = {
            "pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "pid_start": _proc_start(os.getpid()), "token": uuid.uuid4().hex,
        }  # fmt: skip

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def holder(self) -> dict[str, Any] | None:
        """The current holder's record, ``{}`` if the lock exists but cannot be read, ``None`` if unlocked."""
        try:
            if self.local:
                with open(self.path) as f:
                    text = f.read()
            else:
                text = self.store.fs.cat_file(self.path).decode()
        except FileNotFoundError:
            return None
        except OSError:
            return {}
        try:
            info = json.loads(text)
        except ValueError:
            return {}
        return info if isinstance(info, dict) else {}

    def _try(self) -> bool:
        text = json.dumps(self.info)
        if self.local:
            os.makedirs(self.store.root, exist_ok=True)
            mine = f"{self.path}.{self.info['token']}"
            with open(mine, "w") as f:
                f.write(text)
            try:
                os.link(mine, self.path)
                return True
            except FileExistsError:
                return False
            except OSError:  # a file system without hard links: exclusive create instead
                try:
                    fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "w") as f:
                    f.write(text)
                return True
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(mine)
        if self.store.fs.exists(self.path):
            return False
        self.store.fs.pipe_file(self.path, text.encode())
        time.sleep(
            0.5
        )  # a writer that raced us has written by now: the last write wins, and one of us sees it
        return (self.holder() or {}).get("token") == self.info["token"]

    def _break_stale(self, stale: dict[str, Any]) -> None:
        """Remove a lock whose holder is dead, without removing a fresh lock another build took meanwhile."""
        if not self.local:
            if (self.holder() or {}).get("token") == stale.get("token"):
                with contextlib.suppress(FileNotFoundError):
                    self.store.fs.rm(self.path)
            return
        aside = f"{self.path}.stale.{self.info['token']}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            with open(aside) as f:
                moved = json.loads(f.read() or "{}")
        except (OSError, ValueError):
            moved = {}
        if moved.get("token") != stale.get("token"):  # another build's fresh lock: put it back
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
        with contextlib.suppress(OSError):
            os.unlink(aside)

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait
        told = False
        while True:
            try:
                if self._try():
                    return
            except OSError as e:
                raise StoreWriteError(
                    f"cannot write the store {self.store.url!r}: {_os_reason(e)}; choose a writable --out"
                ) from None
            holder = self.holder()
            if holder is None:
                continue  # released between our attempt and the look
            if holder and not _alive(holder):
                if self.echo:
                    self.echo(
                        f"catalog build: recovering a stale lock on {self.store.url} (pid {holder.get('pid')} "
                        f"on {holder.get('host')} is gone)"
                    )
                self._break_stale(holder)
                continue
            who = (
                f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"
                if holder
                else "a holder whose lock file cannot be read"
            )
            if time.monotonic() >= deadline:
                raise RawlabError(
                    f"store {self.store.url} is being written by another build ({who}); wait for it to finish "
                    f"and run again (or raise --wait), or, if no build is running, delete {self.path}"
                )
            if self.echo and not told:
                self.echo(f"catalog build: {self.store.url} is being written by another build ({who}); "
                          f"waiting up to {self.wait:.0f} s for it")  # fmt: skip
                told = True
            time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))

    def release(self) -> None:
        """Remove the lock if it is still ours."""
        if (self.holder() or {}).get("token") != self.info["token"]:
            return
        with contextlib.suppress(OSError):
            if self.local:
                os.unlink(self.path)
            else:
                self.store.fs.rm(self.path)


def _codecs(arr) -> list:
    """An array's codec chain as JSON (what decides the bytes of its chunks)."""
    return [c.to_dict() for c in arr.metadata.codecs]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    def conv(v):
        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, float) and np.isnan(v):
            return None
        return v

    return {k: conv(v) for k, v in row.items()}


def open_store(store: str | os.PathLike[str], storage_options: dict | None = None):
    """Open a store's pixels lazily as an ``xarray.DataTree``: one node per sensor, one child per frame size.

    Each leaf holds ``raw`` (frame, channel, y, x) uint16 backed by dask, with per-frame coordinates from the
    catalog (``path``, ``iso``, ``exposure_time``, ``scene``, ``role``, ``status``, ``clean_frame``, ``cfa``,
    ``black_level`` (frame, channel) and ``white_level``). Use :func:`normalized` for normalised values.
    Failed files have no pixels and are not in the tree.
    """
    import dask.array as da
    import xarray as xr

    fstore = FrameStore(store, storage_options)
    if not fstore.exists():
        raise RawlabError(
            f"{fstore.url} is not a rawlab store (no zarr.json); build one with `rawlab catalog build`"
        )
    cat = fstore.read_catalog()
    if cat is None or cat.empty:
        return xr.DataTree(name="rawlab")
    id_of_path = dict(zip(cat["path"], cat["frame_id"], strict=True))
    cat = cat[cat["frame_id"].notna() & (cat["frame_id"] != "")].drop_duplicates("frame_id")
    children = {}
    for (sensor, h, w), rows in cat.groupby(["sensor", "height", "width"], sort=True):
        rows = rows.sort_values("path")
        ids = rows["frame_id"].tolist()
        raw = da.stack([fstore.frame_array(fid) for fid in ids])
        ds = xr.Dataset(
            {"raw": (("frame", "channel", "y", "x"), raw)},
            coords={
                "frame": np.array(ids, dtype=object),
                "channel": np.array(CHANNELS, dtype=object),
                "path": ("frame", rows["path"].to_numpy(dtype=object)),
                "iso": ("frame", rows["iso"].to_numpy(dtype=float)),
                "exposure_time": ("frame", rows["exposure_time"].to_numpy(dtype=float)),
                "scene": ("frame", rows["scene"].astype(object).to_numpy()),
                "role": ("frame", rows["role"].astype(object).to_numpy()),
                "status": ("frame", rows["status"].astype(object).to_numpy()),
                "clean_frame": (
                    "frame",
                    np.array(
                        [id_of_path.get(p, "") if isinstance(p, str) else "" for p in rows["clean_path"]],
                        dtype=object,
                    ),
                ),
                "cfa": ("frame", rows["cfa"].astype(object).to_numpy()),
                "black_level": (("frame", "channel"), np.stack(rows["black_level"].to_numpy()).astype(float)),
                "white_level": ("frame", rows["white_level"].to_numpy(dtype=float)),
            },
            attrs={"sensor": sensor, "mosaic_height": int(h), "mosaic_width": int(w)},
        )
        node_name = str(sensor).replace("/", "_")
        children.setdefault(node_name, {})[f"{int(w)}x{int(h)}"] = ds
    tree = {f"/{s}/{shape}": ds for s, shapes in children.items() for shape, ds in shapes.items()}
    return xr.DataTree.from_dict(tree, name="rawlab")


def normalized(ds):
    """Normalised signal ``(raw - black_c) / (white - black_c)`` of a store node, lazily, float32."""
    from ..bayer import normalise

    raw = ds["raw"]
    x = normalise(raw.data, ds["black_level"].values, ds["white_level"].values, channel_axis=1)
    return raw.copy(data=x).rename("normalized")

"""A training store: the frames one training run reads, copied from the analysis store with small chunks.

The analysis layout (``rawlab.catalog.store``: 256x256 packed-pixel chunks) suits reductions over whole frames;
a random 32-pixel training crop from it decodes a whole 256x256 chunk for 1/64 of its pixels. With
``data.store_chunk`` set, ``rawlab train`` first copies the frames it needs (the noisy frames of both splits and
their clean references) into ``WORKDIR/train.zarr`` with ``store_chunk``-pixel chunks, then reads crops from
there. The copy is a rawlab store like any other (same frame ids, same catalog rows, pixels bit-identical), so
the input pipeline does not know the difference, a resumed run reuses it, and deleting it costs only the copy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..catalog.store import FrameStore

__all__ = ["derive_training_store"]


def derive_training_store(
    source: FrameStore,
    frame_ids: Iterable[str],
    dest: str | Path,
    chunk: int,
    *,
    threads: int = 2,
    echo: Callable[[str], None] | None = None,
) -> FrameStore:
    """Copy ``frame_ids`` from ``source`` into the store at ``dest`` with ``chunk``-pixel chunks.

    Frames already complete in ``dest`` with the same chunking are kept (ids are content hashes), so this is
    incremental and safe to re-run after an interruption.

    Returns
    -------
    FrameStore
        The training store, ready for :class:`rawlab.learn.input_pipeline.Pipeline`.
    """
    import zarr

    out = FrameStore(dest)
    out.initialise({"derived_from": source.url, "purpose": "training crops", "chunk": chunk})
    have, partial = out.frames_state()
    out.remove_frames(partial)

    def chunked_right(fid: str) -> bool:
        arr = zarr.open_array(out.zstore, path=f"{out.frame_path(fid)}/raw", mode="r")
        return arr.chunks[1:] == (min(chunk, arr.shape[1]), min(chunk, arr.shape[2]))

    todo = sorted({f for f in frame_ids if f not in have or not chunked_right(f)})
    if not todo:
        return out
    attrs = source.list_frames()

    def copy(fid: str) -> None:
        out.write_frame(fid, source.read_frame(fid), attrs[fid]["row"], chunk=chunk)

    if echo:
        echo(f"training store: copying {len(todo)} frames into {out.url} with {chunk}x{chunk} chunks")
    with ThreadPoolExecutor(max(1, threads)) as pool:  # zarr decode/encode releases the GIL
        list(pool.map(copy, todo))
    return out

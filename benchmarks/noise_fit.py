"""Noise-fit cost against one plain read pass over the same store, side by side in one run.

    python benchmarks/noise_fit.py [--size 4000x3000] [--scenes 3] [--repeats 3]

The read pass is a dask sum of every frame in the store (the cheapest thing that touches every pixel), on the
same 2-worker cluster. Goal: noise-fit at most 2x a read pass.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import synth_dataset


def read_pass(store: str, client) -> float:
    import dask

    from rawlab.catalog.store import FrameStore

    fstore = FrameStore(store)
    ids = list(fstore.list_frames())
    total = dask.delayed(sum)([fstore.frame_array(fid).sum(dtype="uint64") for fid in ids])
    return float(client.compute(total).result())


def main():
    from rawlab.catalog.build import build_catalog
    from rawlab.cluster import RunOptions, dask_client
    from rawlab.noise.pipeline import fit_store

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="4000x3000")
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="rawlab-noisefit-"))
    files = synth_dataset(tmp / "data", size=(w, h), n_scenes=args.scenes)
    store = str(tmp / "store.zarr")
    with dask_client(workers=args.workers) as (client, _info):
        build_catalog([str(tmp / "data")], store, options=RunOptions(client=client))
        read_pass(store, client)  # warm the workers' imports
        reads, fits = [], []
        for r in range(args.repeats):
            t = time.perf_counter()
            read_pass(store, client)
            reads.append(time.perf_counter() - t)
            t = time.perf_counter()
            result = fit_store(
                store, sensor="all", method="paired", bootstrap=200, options=RunOptions(client=client)
            )
            fits.append(time.perf_counter() - t)
            print(f"  run {r + 1}: read pass {reads[-1]:.2f} s, noise-fit {fits[-1]:.2f} s "
                  f"(moments {result.timings['moments']:.2f} s, fit {result.timings['fit']:.2f} s)")  # fmt: skip
    read, fit = statistics.median(reads), statistics.median(fits)
    print(f"{len(files)} frames of {w}x{h}, {args.workers} workers")
    print(f"read pass (dask sum of every frame): {read:.2f} s (median)")
    print(f"noise-fit (paired, bootstrap 200):  {fit:.2f} s (median)")
    print(f"ratio: {fit / read:.2f}x a read pass  (goal <= 2x)")


if __name__ == "__main__":
    main()

"""Ingest throughput: `rawlab catalog build` on a 2-worker local cluster vs a plain sequential loop.

    python benchmarks/ingest.py [--files 24] [--size 4000x3000] [--repeats 3]

Both ingest the same synthetic 12 MP DNGs into the same Zarr layout and codec: the loop reads each file with
rawpy (through rawlab.rawio), packs it and writes it; rawlab's build also hashes, pairs and quality-checks.
Runs alternate (loop, build, loop, build, ...) so both see the same machine load; prints files/s for each,
medians, and the ratio. A third line is the ceiling of the machine: the same plain loop split over N spawned
processes (no hashing, no pairing, no QA), to tell what parallel ingest can gain here at all.

It also prints the CPU each side burns (user + system seconds per file, and the mean number of busy cores):
Zarr 3 compresses chunks on a thread pool and Blosc has threads of its own, so the "sequential" loop already
keeps more than one core busy, and the most any 2-core scheme can gain over it is 2 / (its busy cores).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _common import synth_dataset


def plain_loop(files, out: Path) -> None:
    import zarr

    from rawlab.catalog.store import CHUNK, default_codec
    from rawlab.rawio import read_raw

    group = zarr.open_group(out, mode="w", zarr_format=3)
    for i, f in enumerate(files):
        planes = read_raw(f).packed()
        arr = group.create_array(
            f"frames/{i}/raw", shape=planes.shape, dtype=planes.dtype, chunks=(4, CHUNK, CHUNK),
            compressors=[default_codec()],
        )  # fmt: skip
        arr[...] = planes


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads) so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cluster_cpu_seconds(client) -> float:
    """CPU seconds of this process plus every Dask worker process."""
    return cpu_seconds() + sum(client.run(cpu_seconds).values())


def _loop_part(args) -> None:
    files, out = args
    plain_loop(files, out)


def split_loop(files, out: Path, n: int) -> None:
    """The plain loop over ``n`` spawned processes, each on every n-th file (the parallel ceiling)."""
    from multiprocessing import get_context

    with get_context("spawn").Pool(n) as pool:
        pool.map(_loop_part, [(files[i::n], out / f"part{i}.zarr") for i in range(n)])


def main():
    from rawlab.catalog.build import build_catalog
    from rawlab.cluster import RunOptions, dask_client

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=24, help="approximate number of DNGs (whole scenes)")
    ap.add_argument("--size", default="4000x3000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="rawlab-ingest-"))
    n_scenes = max(1, round(args.files / 7))  # sensor PG-1: 2 clean + 5 noisy frames per scene
    files = synth_dataset(tmp / "data", size=(w, h), n_scenes=n_scenes)
    print(f"{len(files)} DNG files of {w}x{h}; {args.workers} workers; {args.repeats} alternating runs")
    loop_rates, build_rates, split_rates = [], [], []
    loop_cpu, build_cpu = [], []  # (CPU s per file, busy cores)
    with dask_client(workers=args.workers) as (client, _info):
        for r in range(args.repeats):
            out = tmp / f"loop-{r}.zarr"
            t, c = time.perf_counter(), cpu_seconds()
            plain_loop(files, out)
            wall, used = time.perf_counter() - t, cpu_seconds() - c
            loop_rates.append(len(files) / wall)
            loop_cpu.append((used / len(files), used / wall))
            shutil.rmtree(out)
            out = tmp / f"split-{r}"
            t = time.perf_counter()
            split_loop(files, out, args.workers)
            split_rates.append(len(files) / (time.perf_counter() - t))
            shutil.rmtree(out)
            out = tmp / f"build-{r}.zarr"
            t, c = time.perf_counter(), cluster_cpu_seconds(client)
            _, summary = build_catalog([str(tmp / "data")], str(out), options=RunOptions(client=client))
            wall, used = time.perf_counter() - t, cluster_cpu_seconds(client) - c
            build_rates.append(len(files) / wall)
            build_cpu.append((used / len(files), used / wall))
            assert summary.n_ingested == len(files), summary
            shutil.rmtree(out)
            phases = ", ".join(f"{k} {v:.1f} s" for k, v in summary.timings.items())
            print(
                f"  run {r + 1}: loop {loop_rates[-1]:.2f}, split loop {split_rates[-1]:.2f}, "
                f"rawlab {build_rates[-1]:.2f} files/s ({phases})"
            )
    loop, build = statistics.median(loop_rates), statistics.median(build_rates)
    print(f"plain loop (1 process):          {loop:.2f} files/s (median)")
    print(f"rawlab catalog build ({args.workers} workers): {build:.2f} files/s (median)")
    split = statistics.median(split_rates)
    print(
        f"plain loop split over {args.workers} processes: {split:.2f} files/s (median; the machine's ceiling)"
    )
    for name, cpu in (("plain loop", loop_cpu), ("rawlab", build_cpu)):
        per_file = statistics.median(c for c, _ in cpu)
        cores = statistics.median(b for _, b in cpu)
        print(
            f"{name + ' CPU:':<34}{per_file:.3f} CPU-s per file, {cores:.2f} of {os.cpu_count()} cores busy"
        )
    cores = statistics.median(b for _, b in loop_cpu)
    print(f"speed-up: {build / loop:.2f}x  (goal >= 1.7x on 2 cores); ceiling {split / loop:.2f}x")
    print(
        f"the loop keeps {cores:.2f} cores busy, so with the same work per file no 2-core scheme can beat it by "
        f"more than {args.workers / cores:.2f}x"
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

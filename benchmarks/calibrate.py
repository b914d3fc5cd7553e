"""Calibration cost against one plain Dask read pass over the same frames, side by side in one run.

    python benchmarks/calibrate.py [--size 4000x3000] [--repeats 2] [--workers 2]

The frames are one calibration sensor's darks and flats (``rawlab synth --calibration``: 129 frames for
SynthCam CAL-1; the issue's case is 200 12 MP frames). The read pass decodes every frame on Dask and sums it
(the cheapest thing that touches every pixel), on the same cluster. Goal: calibrate at most 2x a read pass.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def _read_sum(path: str) -> int:
    from rawlab.rawio import read_raw

    return int(read_raw(path).mosaic.sum(dtype="uint64"))


def main():
    from rawlab.calibrate import calibrate
    from rawlab.cluster import RunOptions, dask_client, run_tasks
    from rawlab.synth.calibration import CALIBRATION_SENSORS, write_calibration_set

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="4000x3000")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="rawlab-calibrate-"))
    t = time.perf_counter()
    summary = write_calibration_set(tmp, seed=0, size=(w, h), sensors=(CALIBRATION_SENSORS[0],))
    print(f"wrote {summary.n_files} frames at {w}x{h} in {time.perf_counter() - t:.1f} s")
    files = sorted(str(p) for p in tmp.rglob("*.dng"))
    with dask_client(workers=args.workers) as (client, _info):
        run_tasks(client, _read_sum, [(f,) for f in files[:4]])  # warm the workers' imports
        reads, cals = [], []
        for r in range(args.repeats):
            t = time.perf_counter()
            run_tasks(client, _read_sum, [(f,) for f in files], name="read")
            reads.append(time.perf_counter() - t)
            t = time.perf_counter()
            calibrate([str(tmp)], options=RunOptions(client=client))
            cals.append(time.perf_counter() - t)
            print(f"  run {r + 1}: read pass {reads[-1]:.2f} s, calibrate {cals[-1]:.2f} s")
    read, cal = statistics.median(reads), statistics.median(cals)
    print(
        f"median: read pass {read:.2f} s, calibrate {cal:.2f} s = {cal / read:.2f}x a read pass (goal <= 2x)"
    )


if __name__ == "__main__":
    main()

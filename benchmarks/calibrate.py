"""Calibration cost against one plain Dask read pass over the same frames, side by side in one run.

    python benchmarks/calibrate.py [--size 4000x3000] [--frames 200] [--repeats 2] [--workers 2]
                                   [--data /work/caldata] [--phases]

The frames are the calibration sensors' darks and flats (``rawlab synth --calibration``: 129 frames per
sensor, SynthCam CAL-1 then CAL-2): ``--frames N`` takes the first ``N`` in path order (200: all of CAL-1's and
CAL-2's darks and first flats at ISO 100). The issue's case is 200 frames of 12 MP (``--size 4000x3000``,
about 24 MB a frame). ``--data DIR`` keeps the written set in ``DIR/<W>x<H>/<sensor>/`` and reuses it (writing
200 frames of 12 MP takes minutes); without it the set goes to a temporary folder, removed at the end.

The read pass decodes every frame on Dask and sums it (the cheapest thing that touches every pixel), on the
same cluster. Both are timed in wall-clock seconds and in CPU seconds (the workers' own, from
``time.process_time`` in each worker before and after, plus this process's: the scheduler and the fit), per
frame: the CPU figures hold on a loaded machine, the wall-clock ratio only on a quiet one. ``--phases`` also
runs calibrate's two Dask passes on their own once (the header pass that groups the frames, and the group
tasks that decode and measure), for the CPU of each. Goal: calibrate at most 2x a read pass.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def _read_sum(path: str) -> int:
    from rawlab.rawio import read_raw

    return int(read_raw(path).mosaic.sum(dtype="uint64"))


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads) so far."""
    return time.process_time()


def _warm() -> None:
    """Import what the tasks use: imports are start-up, not per-frame work."""
    import importlib

    for name in ("scipy.optimize", "scipy.stats", "rawlab.calibrate.pipeline", "rawlab.rawio"):
        importlib.import_module(name)


def calibration_files(data: Path, size: tuple[int, int], n_frames: int) -> list[str]:
    """The first ``n_frames`` calibration frames (path order) at ``size`` under ``data``, written if missing."""
    from rawlab.synth.calibration import CALIBRATION_SENSORS, write_calibration_set

    w, h = size
    files: list[str] = []
    for s in CALIBRATION_SENSORS:
        if len(files) >= n_frames:
            break
        out = data / f"{w}x{h}" / s.name.replace(" ", "_")
        if not (out / "truth.json").exists():  # written last: the set is complete
            t = time.perf_counter()
            summary = write_calibration_set(out, seed=0, size=(w, h), sensors=(s,))
            print(f"wrote {summary.n_files} frames of {s.name} at {w}x{h} in {time.perf_counter() - t:.0f} s")
        found = sorted(str(p) for p in out.rglob("*.dng"))
        files += found
    if len(files) < n_frames:
        raise SystemExit(f"--frames {n_frames}: the calibration sensors have {len(files)} frames in all")
    return files[:n_frames]


def measure(client, fn, per_frame: int) -> tuple[float, float, float]:
    """Run ``fn()``: (wall seconds, workers' CPU seconds per frame, this process's CPU seconds per frame)."""

    def workers_cpu() -> float:
        return sum(client.run(cpu_seconds).values())

    t, c, cw = time.perf_counter(), cpu_seconds(), workers_cpu()
    fn()
    wall = time.perf_counter() - t
    return wall, (workers_cpu() - cw) / per_frame, (cpu_seconds() - c) / per_frame


def main():
    from rawlab.calibrate import calibrate
    from rawlab.calibrate.pipeline import _info, _measure_group
    from rawlab.cluster import RunOptions, dask_client, run_tasks

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="4000x3000")
    ap.add_argument("--frames", type=int, default=129)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", type=Path, default=None, help="keep the written frames here and reuse them")
    ap.add_argument("--phases", action="store_true", help="also time calibrate's two Dask passes alone")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    data = args.data or Path(tempfile.mkdtemp(prefix="rawlab-calibrate-"))
    try:
        files = calibration_files(data, (w, h), args.frames)
        n = len(files)
        folder = Path(tempfile.mkdtemp(prefix="rawlab-calibrate-links-"))
        for f in files:  # calibrate takes folders: the chosen frames, linked under their names
            link = folder / Path(f).relative_to(data).parent / Path(f).name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(f)
        print(f"{n} frames at {w}x{h}, {args.workers} workers, {args.repeats} repeats")
        with dask_client(workers=args.workers) as (client, _):
            client.run(_warm)
            run_tasks(client, _read_sum, [(f,) for f in files[:4]])  # warm the workers' reads
            reads, cals = [], []
            for r in range(args.repeats):
                reads.append(measure(client, lambda: run_tasks(client, _read_sum, [(f,) for f in files]), n))
                cals.append(
                    measure(client, lambda: calibrate([str(folder)], options=RunOptions(client=client)), n)
                )
                (rw, rc, rd), (cw, cc, cd) = reads[-1], cals[-1]
                print(
                    f"  run {r + 1}: read pass {rw:.2f} s (CPU per frame: workers {rc:.3f} s, driver {rd:.3f} s); "
                    f"calibrate {cw:.2f} s (workers {cc:.3f} s, driver {cd:.3f} s)"
                )
            if args.phases:
                paths = sorted(str(p) for p in folder.rglob("*.dng"))
                infos = []
                wall, c, d = measure(
                    client,
                    lambda: infos.extend(o.value for o in run_tasks(client, _info, [(p,) for p in paths])),
                    n,
                )
                print(f"  phase 1, headers: {wall:.2f} s, CPU per frame: workers {c:.3f} s, driver {d:.3f} s")
                groups: dict = {}
                for i in infos:
                    groups.setdefault((i["sensor"], i["iso"], i["exposure_time"]), []).append(i["path"])
                tasks = [(g, [None] * len(g), 0.02) for g in groups.values()]
                wall, c, d = measure(client, lambda: run_tasks(client, _measure_group, tasks), n)
                print(
                    f"  phase 2, {len(tasks)} group tasks (decode + statistics): {wall:.2f} s, CPU per frame: "
                    f"workers {c:.3f} s, driver {d:.3f} s"
                )
        shutil.rmtree(folder)
    finally:
        if args.data is None:
            shutil.rmtree(data, ignore_errors=True)

    def med(runs, k):
        return statistics.median(r[k] for r in runs)

    read, cal = med(reads, 0), med(cals, 0)
    read_cpu, cal_cpu = med(reads, 1) + med(reads, 2), med(cals, 1) + med(cals, 2)
    print(
        f"median wall: read pass {read:.2f} s, calibrate {cal:.2f} s = {cal / read:.2f}x a read pass (goal <= 2x)"
    )
    print(
        f"median CPU per frame (workers + driver): read pass {read_cpu:.3f} s, calibrate {cal_cpu:.3f} s = "
        f"{cal_cpu / read_cpu:.2f}x"
    )


if __name__ == "__main__":
    main()

"""Peak memory of `rawlab stats` as the store grows: stores of N, 2N and 4N frames, side by side in one run.

    python benchmarks/stats.py [--size 1024x768] [--scenes 9] [--workers 2]

One synthetic dataset of N frames (two sensors) is written per seed; the stores hold 1, 2 and 4 of them. Each
store gets `rawlab stats` in full (pixel pass, noise fit, tables, report) on a fresh local cluster, in a fresh
process, while a thread in every worker and in the client samples its resident memory every 20 ms. The table
gives wall time, the store's raw pixel volume, and the peak RSS of the client and of the largest worker; the
last line gives the 4N/N ratios. Goal: memory flat (ratio near 1) while time and data grow 4x, because every
statistic is a Dask reduction and nothing holds a whole store.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import synth_dataset


class _Sampler:
    """Peak RSS of this process, sampled every ``interval`` s in a thread."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self._proc, self._interval = psutil.Process(), interval
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self._interval)

    def stop(self) -> int:
        self._stop.set()
        return max(self.peak, self._proc.memory_info().rss)


def _worker_start(dask_worker):
    dask_worker._rawlab_sampler = _Sampler()
    return dask_worker._rawlab_sampler.peak


def _worker_stop(dask_worker):
    return dask_worker._rawlab_sampler.stop()


def _warm():
    """Import what the tasks need, so that the measured run is the same work at every size."""
    import rawlab.noise.pipeline
    import rawlab.stats.pixels  # noqa: F401


def child(store: str, out: str, workers: int) -> dict:
    """One measurement (runs in its own process): `rawlab stats` on ``store`` with a fresh local cluster."""
    from rawlab.cluster import RunOptions, dask_client
    from rawlab.stats import compute_stats, write_outputs

    with dask_client(workers=workers) as (client, _info):
        client.run(_warm)
        base = client.run(_worker_start)
        me = _Sampler()
        base_client = me.peak
        t = time.perf_counter()
        res = compute_stats(store, bootstrap=50, options=RunOptions(client=client))
        write_outputs(res, out)
        wall = time.perf_counter() - t
        peaks = client.run(_worker_stop)
        peak_client = me.stop()
    return {
        "frames": len(res.frames),
        "megapixels": float(res.frames["n_samples"].sum() / 1e6),
        "wall_s": wall,
        "client_base_mb": base_client / 2**20,
        "client_peak_mb": peak_client / 2**20,
        "worker_base_mb": max(base.values()) / 2**20,
        "worker_peak_mb": max(peaks.values()) / 2**20,
        "timings": res.timings,
    }


def main():
    from rawlab.catalog.build import build_catalog
    from rawlab.cluster import RunOptions, dask_client

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1024x768")
    ap.add_argument("--scenes", type=int, default=9)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--child", nargs=2, metavar=("STORE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.workers)))
        return
    w, h = (int(v) for v in args.size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="rawlab-stats-"))
    sources = [tmp / f"data-{seed}" for seed in range(4)]
    for seed, src in enumerate(sources):
        synth_dataset(src, size=(w, h), n_scenes=args.scenes, n_sensors=2, seed=seed)
    rows = []
    with dask_client(workers=args.workers) as (client, _info):
        stores = {}
        for k in (1, 2, 4):
            stores[k] = str(tmp / f"store-{k}.zarr")
            build_catalog([str(s) for s in sources[:k]], stores[k], options=RunOptions(client=client))
    for k, store in stores.items():
        res = subprocess.run(
            [sys.executable, __file__, "--child", store, str(tmp / f"report-{k}"), "--workers", str(args.workers)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        row = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"  {k}N: {row['frames']} frames done in {row['wall_s']:.1f} s", flush=True)
    print(
        f"{args.size} frames, 2 sensors, {args.workers} workers; rawlab stats (pixel pass + noise fit + report)"
    )
    print(f"{'store':>5} {'frames':>7} {'raw MB':>8} {'wall s':>7} {'pixels s':>8} {'fit s':>6} "
          f"{'client MB':>10} {'worker MB':>10}  (peak RSS; before the run: client, worker)")  # fmt: skip
    for k, r in zip((1, 2, 4), rows, strict=True):
        raw = r["megapixels"] * 2  # uint16
        t = r["timings"]
        print(f"{k:>4}N {r['frames']:>7} {raw:>8.0f} {r['wall_s']:>7.1f} {t['pixels']:>8.1f} "
              f"{t.get('noise_fit', 0):>6.1f} {r['client_peak_mb']:>10.0f} {r['worker_peak_mb']:>10.0f}  "
              f"({r['client_base_mb']:.0f}, {r['worker_base_mb']:.0f})")  # fmt: skip
    a, b = rows[0], rows[-1]
    print(f"4N/N: data {b['megapixels'] / a['megapixels']:.2f}x, wall {b['wall_s'] / a['wall_s']:.2f}x, "
          f"client peak RSS {b['client_peak_mb'] / a['client_peak_mb']:.2f}x, "
          f"worker peak RSS {b['worker_peak_mb'] / a['worker_peak_mb']:.2f}x  (goal: memory ~1x)")  # fmt: skip


if __name__ == "__main__":
    main()

"""Helpers shared by the benchmark scripts: synthetic data on demand and robust timing."""

from __future__ import annotations

import statistics
import time
from pathlib import Path


def synth_dataset(
    out: Path, *, size: tuple[int, int], n_scenes: int, n_sensors: int = 1, seed: int = 0
) -> list[Path]:
    """Write (or reuse) a synthetic dataset and return its DNG files."""
    from rawlab.synth import write_dataset

    marker = out / f".done-{size[0]}x{size[1]}-{n_scenes}-{n_sensors}-{seed}"
    if not marker.exists():
        write_dataset(out, seed=seed, size=size, n_sensors=n_sensors, n_scenes=n_scenes)
        marker.touch()
    return sorted(out.rglob("*.dng"))


def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times

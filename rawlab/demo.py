"""``rawlab demo``: the README's main job, run on the built-in synthetic dataset.

Each stage calls the same library function its command calls, so the demo is also a smoke test of the whole
pipeline. Stages that are not built yet are listed as such.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["run_demo"]


def run_demo(out: Path, *, seed: int = 0, echo: Callable[[str], None] = print) -> dict:
    """Run the pipeline into ``out`` and return what each stage produced."""
    from .noise.profile import load_profiles
    from .rawio import read_info
    from .synth import write_dataset

    t0 = time.perf_counter()
    results: dict = {}
    echo(f"rawlab demo -> {out}")

    summary = write_dataset(out / "data", seed=seed)
    results["synth"] = summary
    echo(
        f"  [1/5] synth       {summary.n_files} DNG files, {summary.n_sensors} sensors, {summary.n_scenes} scenes "
        f"({summary.nbytes / 1e6:.1f} MB) -> {summary.out}"
    )
    truth = load_profiles(summary.truth_path)
    first = sorted(summary.out.rglob("*.dng"))[0]
    info = read_info(first)
    echo(
        f"                    check: {first.relative_to(out)} reads back as {info.sensor}, ISO {info.iso:g}, "
        f"{info.cfa}, black {list(info.black_level)}, white {info.white_level}"
    )
    echo("                    true noise (normalised; Var = a*x + b, G1 channel):")
    for s in truth.sensors:
        lo, hi = s.profiles[0], s.profiles[-1]
        echo(
            f"                      {s.sensor:<16} ISO {lo.iso:>5g}: a={lo.a[1]:.2e} b={lo.b[1]:.2e}   "
            f"ISO {hi.iso:>5g}: a={hi.a[1]:.2e} b={hi.b[1]:.2e}"
        )
    for step, (name, issue) in enumerate(
        [("catalog build", 3), ("noise-fit", 4), ("stats", 5), ("train/eval", 6)], start=2
    ):
        if step > 5:
            break
        echo(f"  [{step}/5] {name:<11} not built yet (issue #{issue})")
    echo(f"demo: done in {time.perf_counter() - t0:.1f} s; outputs in {out}")
    return results

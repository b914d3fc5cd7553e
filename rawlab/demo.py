"""``rawlab demo``: the README's main job, run on the built-in synthetic dataset.

Each stage calls the same library function its command calls, so the demo is also a smoke test of the whole
pipeline. Stages that are not built yet are listed as such.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["run_demo"]

_PLANNED = [("stats", 5), ("train + eval", 6), ("export + denoise", 7)]


def run_demo(
    out: Path, *, seed: int = 0, workers: int | None = None, echo: Callable[[str], None] = print
) -> dict:
    """Run the pipeline into ``out`` and return what each stage produced."""
    from .catalog.build import build_catalog
    from .catalog.summary import catalog_summary, format_summary
    from .noise.profile import load_profiles
    from .synth import write_dataset

    t0 = time.perf_counter()
    n_stages = 3 + len(_PLANNED)
    results: dict = {}
    echo(f"rawlab demo -> {out}/")

    synth = write_dataset(out / "data", seed=seed)
    results["synth"] = synth
    echo(
        f"[1/{n_stages}] synth          {synth.n_files} DNG files, {synth.n_sensors} sensors, {synth.n_scenes} "
        f"scenes ({synth.nbytes / 1e6:.1f} MB) in {synth.out}/; true noise in {synth.truth_path}"
    )
    truth = load_profiles(synth.truth_path)
    for s in truth.sensors:
        lo, hi = s.profiles[0], s.profiles[-1]
        echo(
            f"      {s.sensor:<14} {s.extra['cfa']} {s.extra['white_level'] + 1:>5} levels, black "
            f"{s.extra['black_level'][0]:>3}; ISO {lo.iso:g}-{hi.iso:g}: a {lo.a[1]:.1e}-{hi.a[1]:.1e}, "
            f"b {lo.b[1]:.1e}-{hi.b[1]:.1e} (normalised, G1)"
        )

    store = out / "store.zarr"
    cat, build = build_catalog(
        [str(synth.out)], str(store), workers=workers, echo=lambda m: echo("      " + m)
    )
    results["catalog"] = (cat, build)
    echo(f"[2/{n_stages}] catalog build  {build.line().split(': ', 1)[1]}")
    for line in format_summary(catalog_summary(cat), str(store)).splitlines():
        echo("      " + line)
    noisy = cat[cat["role"] == "noisy"]
    echo(
        f"      pair QA: |shift| <= {max(noisy['align_dy'].abs().max(), noisy['align_dx'].abs().max()):.2f} px, "
        f"gain {noisy['gain'].min():.3f}-{noisy['gain'].max():.3f} (expected 1 from ISO x exposure)"
    )

    from .noise.pipeline import fit_store
    from .noise.report import write_outputs

    fit = fit_store(str(store), sensor="all", method="auto", workers=workers, bootstrap=100)
    written = write_outputs(fit, out / "noise.json")
    results["noise"] = fit
    echo(f"[3/{n_stages}] noise-fit      {written.summary.split(': ', 1)[1]}")
    for line in written.lines:
        echo("      " + line)
    for st in truth.sensors:  # the built-in data's truth is known: show how close the fit came
        sf = fit.profiles.sensor(st.sensor)
        da = sorted(abs(sf.at_iso(p.iso).a[c] / p.a[c] - 1) for p in st.profiles for c in range(4))
        db = sorted(abs(sf.at_iso(p.iso).b[c] / p.b[c] - 1) for p in st.profiles for c in range(4))
        echo(
            f"      vs truth.json, {st.sensor}: median |da|/a {da[len(da) // 2]:.1%}, "
            f"median |db|/b {db[len(db) // 2]:.1%}"
        )

    for i, (name, issue) in enumerate(_PLANNED, start=4):
        echo(f"[{i}/{n_stages}] {name:<14} not built yet (issue #{issue})")
    echo(
        f"demo: {build.n_files} files curated into {store}; noise profile {out / 'noise.json'} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    return results

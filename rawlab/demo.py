"""``rawlab demo``: the README's main job, run on the built-in synthetic dataset.

Each stage calls the same library function its command calls, so the demo is also a smoke test of the whole
pipeline, from synthetic DNGs to a denoised DNG.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["run_demo"]


def run_demo(
    out: Path, *, seed: int = 0, workers: int | None = None, echo: Callable[[str], None] = print
) -> dict:
    """Run the pipeline into ``out`` and return what each stage produced."""
    from .catalog.build import build_catalog
    from .catalog.summary import catalog_summary, format_summary
    from .cluster import RunOptions
    from .noise.profile import load_profiles
    from .synth import write_dataset

    t0 = time.perf_counter()
    n_stages = 7
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
        [str(synth.out)], str(store), options=RunOptions(workers=workers, echo=lambda m: echo("      " + m))
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

    fit = fit_store(
        str(store), sensor="all", method="auto", bootstrap=100, options=RunOptions(workers=workers)
    )
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

    from .stats import compute_stats
    from .stats import write_outputs as write_stats

    stats = compute_stats(str(store), profile=fit, options=RunOptions(workers=workers))  # reuses the fit
    report = write_stats(stats, out / "report")
    results["stats"] = stats
    echo(f"[4/{n_stages}] stats          {report.summary.split(': ', 1)[1]}")
    for line in report.lines[:3]:
        echo("      " + line)
    echo(f"      open {out / 'report' / 'report.html'}; notebooks in analyses/ (RAWLAB_STORE={store})")

    results["train"] = _train_stage(out, store, echo, f"[5/{n_stages}]")
    results["eval"] = _eval_stage(out, store, results["train"].workdir, workers, echo, f"[6/{n_stages}]")
    results["deploy"] = _deploy_stage(out, results["train"].workdir, synth.out, echo, f"[7/{n_stages}]")

    echo(
        f"demo: {build.n_files} files curated into {store}; noise profile {out / 'noise.json'}; report "
        f"{out / 'report' / 'report.html'} ({time.perf_counter() - t0:.1f} s)"
    )
    return results


def _train_stage(out: Path, store: Path, echo: Callable[[str], None], tag: str):
    """A short ``tiny`` training run (``rawlab train STORE --config tiny``) into ``out/model``, from scratch."""
    import shutil

    from .cluster import RunOptions
    from .learn.configs import load_config
    from .learn.train import train_and_evaluate

    workdir = out / "model"
    shutil.rmtree(workdir, ignore_errors=True)  # the demo shows a run from step 0, not a resume
    cfg = load_config("tiny", noise__profile=str(out / "noise.json"))
    result = train_and_evaluate(
        cfg, workdir, str(store), options=RunOptions(echo=lambda m: echo("      " + m)), progress=False
    )
    echo(f"{tag} train          {result.line().split(': ', 1)[1]}")
    echo(f"      metrics in {workdir / 'metrics.csv'} (TensorBoard: tensorboard --logdir {workdir / 'tb'})")
    return result


def _eval_stage(out: Path, store: Path, model_dir: Path, workers, echo: Callable[[str], None], tag: str):
    """``rawlab eval STORE --model DIR --out out/eval.json``: the demo model against the baselines."""
    from .cluster import RunOptions
    from .evaluation import evaluate_store, write_outputs

    result = evaluate_store(str(store), model_dir, options=RunOptions(workers=workers))
    written = write_outputs(result, out / "eval.json")
    echo(f"{tag} eval           {written.summary.split(': ', 1)[1]}")
    for line in written.lines:
        echo("      " + line)
    return result


def _deploy_stage(out: Path, model_dir: Path, data: Path, echo: Callable[[str], None], tag: str) -> dict:
    """``rawlab export`` (int8 TFLite) and ``rawlab denoise`` of one high-ISO demo raw, to DNG and PNG."""
    import re

    import numpy as np

    from .deploy.denoise import denoise_files
    from .deploy.export import export_tflite
    from .deploy.render import linear_preview, render_preview, write_image
    from .dng import color_matrix_of
    from .errors import RawlabError
    from .rawio import read_raw

    model = model_dir
    try:
        warn = lambda m: echo("      " + m) if m.startswith("warning") else None  # noqa: E731
        exported = export_tflite(model_dir, out / "denoiser.tflite", quantize="int8", echo=warn)
        model = exported.out
        echo(f"{tag} export         {exported.summary().split(': ', 1)[1]}")
    except RawlabError as e:
        if "rawlab[export]" not in str(e):
            raise
        echo(f"{tag} export         skipped ({e}); denoising with the JAX model")

    # The noisiest frame of a photograph (not the chart), and its scene's clean reference for a PSNR.
    def iso(p: Path) -> int:
        m = re.search(r"_iso(\d+)_", p.name)
        return int(m.group(1)) if m else 0

    photos = [p for p in sorted(data.rglob("*.dng")) if not p.name.startswith("chart")]
    noisy = max(photos, key=iso)
    clean = min((p for p in photos if p.parent == noisy.parent), key=lambda p: (iso(p), p.name))
    target = out / "denoised"
    runs = [denoise_files([str(noisy)], model, target, fmt=fmt, overwrite=True) for fmt in ("dng", "png")]
    res = runs[0].results[0]
    if not res.ok:
        echo(f"      {res.line()}")
        return {"runs": runs}
    frame = read_raw(noisy)
    ref = read_raw(clean).normalized()
    after = read_raw(res.out).normalized()
    # The input rendered like the denoised preview (same exposure), for a side-by-side look.
    cm = color_matrix_of(frame.info)
    white = float(np.percentile(linear_preview(after, frame.info, cm), 99.0))  # as the denoised preview
    before = target / f"{noisy.stem}_input.png"
    write_image(before, render_preview(frame.normalized(), frame.info, cm, white=white), "png")
    psnr = [10 * np.log10(1 / np.mean((x - ref) ** 2)) for x in (frame.normalized(), after)]
    echo(f"      denoise: {runs[0].line().split(': ', 1)[1]}")
    echo(
        f"      {noisy.name} (ISO {frame.info.iso:g}): PSNR against its scene's clean frame {psnr[0]:.2f} -> "
        f"{psnr[1]:.2f} dB"
    )
    echo(f"      noise from {res.noise}")
    echo(f"      open {res.out} (raw) and {runs[1].results[0].out} (preview; the input: {before})")
    # The model shipped inside rawlab on the same frame (what `rawlab denoise RAW --out DIR` uses).
    built = denoise_files([str(noisy)], "builtin", out / "denoised-builtin", fmt="dng", overwrite=True)
    bres = built.results[0]
    if bres.ok:
        psnr.append(10 * np.log10(1 / np.mean((read_raw(bres.out).normalized() - ref) ** 2)))
        echo(f"      built-in model (no --model): {psnr[0]:.2f} -> {psnr[2]:.2f} dB; {bres.out}")
    else:
        echo(f"      built-in model: {bres.line()}")
    return {"runs": runs, "psnr": psnr, "builtin": built}

"""Curate: ``synth``, ``demo`` and ``catalog``."""

from __future__ import annotations

import time

import click

from ._common import _cluster_options, _Group, _reporting, _size, main


@main.command()
@click.argument("out", type=click.Path(file_okay=False, writable=True))
@click.option("--seed", default=0, show_default=True, help="Random seed: same seed, same files.")
@click.option(
    "--size",
    default="512x384",
    show_default=True,
    callback=_size,
    help="Frame size WxH in mosaic pixels; 4000x3000 gives realistic 12 MP frames.",
)
@click.option(
    "--sensors",
    "n_sensors",
    default=2,
    show_default=True,
    type=click.IntRange(1, 4),
    help="Number of virtual sensors (they differ in CFA, bit depth, black level and noise law).",
)
@click.option(
    "--scenes",
    "n_scenes",
    default=4,
    show_default=True,
    type=click.IntRange(1, 9),
    help="Scenes per sensor: a calibration chart plus photographs.",
)
@click.option(
    "--clean-frames",
    "n_clean",
    default=2,
    show_default=True,
    type=click.IntRange(1, 8),
    help="Base-ISO frames per scene; the first is the clean reference.",
)
@click.option(
    "--calibration",
    is_flag=True,
    help="Write a calibration set instead: dark frames and flat fields (EMVA 1288) from calibration sensors "
    "with row noise, DSNU, PRNU, dark current and Tukey-lambda read noise, their truth in OUT/truth.json.",
)
@click.option(
    "--burst",
    "n_burst",
    type=click.IntRange(2, 64),
    default=None,
    help="Write bursts of N frames instead: per sensor, scene and ISO, N DNGs of one scene under hand shake "
    "(sub-pixel translation and a small rotation per frame; the first frame is the reference), each with its "
    "own noise, in OUT/<sensor>/<scene>/burst_iso<ISO>/; the motion, the moving object and the clean "
    "reference in OUT/truth.json (--clean-frames unused).",
)
@click.option(
    "--moving/--no-moving",
    default=True,
    show_default=True,
    help="With --burst: a textured disc moves across the scene between frames (its mask in the truth).",
)
@click.option(
    "--physics",
    "physics",
    default=None,
    type=click.Path(exists=True),
    help="Write the scenes as recorded by a calibrated sensor instead: physics noise (shot noise through the "
    "gain K, PRNU, dark current, Tukey-lambda read noise, row noise, DSNU, rounding and clipping) drawn from this "
    "calibration.json of `rawlab calibrate` (or its folder); --sensors is unused.",
)
@click.option(
    "--physics-sensor",
    default=None,
    help="With --physics: which calibrated sensor, when the calibration holds several.",
)
@click.option(
    "--masked-border",
    default=0,
    show_default=True,
    type=click.IntRange(0, 512),
    help="Mosaic pixels (even) of optically masked border around each frame, as many cameras record: read "
    "noise alone at the black level, outside the DNG's ActiveArea. `rawlab denoise` measures the read noise "
    "there when no profile knows the sensor. The frames' own pixels are the same with or without it.",
)
def synth(
    out,
    seed,
    size,
    n_sensors,
    n_scenes,
    n_clean,
    calibration,
    n_burst,
    moving,
    physics,
    physics_sensor,
    masked_border,
):
    """Write a synthetic dataset of real DNG files with known noise.

    Writes OUT/<sensor>/<scene>/*.dng, each scene shot at the base ISO (clean) and up the sensor's ISO
    ladder at the same brightness, with Poisson-Gaussian noise clipped and quantised as a sensor does, and
    OUT/truth.json with the true noise parameters (rawlab.noise/1 schema). With --calibration, writes
    OUT/<sensor>/darks/ and OUT/<sensor>/flats/ for `rawlab calibrate` (--scenes and --clean-frames unused).
    With --burst N, writes bursts of N frames per sensor, scene and ISO for `rawlab burst merge`, their
    motion, moving object and clean reference in OUT/truth.json. With --physics CALIBRATION, writes the same
    layout as recorded by a calibrated sensor (physics noise, rawlab.noise.physics).
    """
    from ..synth import get_sensors, write_dataset
    from ..synth.generate import plan_dataset

    t0 = time.perf_counter()
    chosen = [o for o, on in (("--calibration", calibration), ("--burst", n_burst is not None),
                              ("--physics", physics)) if on]  # fmt: skip
    if len(chosen) > 1:
        raise click.UsageError(f"choose one of {' and '.join(chosen)}: each writes a different dataset")
    if masked_border and chosen:
        raise click.UsageError(f"--masked-border is for the default dataset, not with {chosen[0]}")
    if masked_border % 2:
        raise click.UsageError(f"--masked-border must be even (whole Bayer tiles), got {masked_border}")
    if physics:
        from ..synth.physics import plan_physics_dataset, write_physics_dataset

        kw = {"sensor": physics_sensor, "seed": seed, "n_scenes": n_scenes, "n_clean": n_clean}
        with _reporting("synth", len(plan_physics_dataset(physics, **kw))) as report:
            summary = write_physics_dataset(out, physics, size=size, progress=report["progress"], **kw)
        click.echo(
            f"synth: wrote {summary.n_files} DNG files ({summary.nbytes / 1e6:.1f} MB) with physics noise from "
            f"{physics}, {summary.n_scenes} scenes at {size[0]}x{size[1]} to {summary.out}; truth in "
            f"{summary.truth_path} ({time.perf_counter() - t0:.1f} s)"
        )
        return
    if calibration:
        from ..synth.calibration import CALIBRATION_SENSORS, plan_calibration, write_calibration_set

        n = len(plan_calibration(CALIBRATION_SENSORS[: max(1, min(n_sensors, len(CALIBRATION_SENSORS)))]))
        with _reporting("synth", n) as report:
            cal = write_calibration_set(
                out, seed=seed, size=size, n_sensors=n_sensors, progress=report["progress"]
            )
        click.echo(
            f"synth: wrote {cal.n_files} dark and flat DNG files ({cal.nbytes / 1e6:.1f} MB) for {cal.n_sensors} "
            f"calibration sensors at {size[0]}x{size[1]} to {cal.out}; truth in {cal.truth_path} "
            f"({time.perf_counter() - t0:.1f} s)"
        )
        return
    if n_burst is not None:
        from ..synth.burst import plan_bursts, write_bursts

        total = n_burst * len(plan_bursts(get_sensors(n_sensors), seed=seed, n_scenes=n_scenes))
        with _reporting("synth", total) as report:
            summary = write_bursts(
                out,
                n_frames=n_burst,
                seed=seed,
                size=size,
                n_sensors=n_sensors,
                n_scenes=n_scenes,
                moving=moving,
                progress=report["progress"],
            )
        click.echo(
            f"synth: wrote {summary.n_files} DNG files ({summary.nbytes / 1e6:.1f} MB) in bursts of {n_burst} for "
            f"{summary.n_sensors} sensors, {summary.n_scenes} scenes at {size[0]}x{size[1]} to {summary.out}; "
            f"truth in {summary.truth_path} ({time.perf_counter() - t0:.1f} s)"
        )
        return
    total = len(plan_dataset(get_sensors(n_sensors), seed=seed, n_scenes=n_scenes, n_clean=n_clean))
    with _reporting("synth", total) as report:
        summary = write_dataset(
            out,
            seed=seed,
            size=size,
            n_sensors=n_sensors,
            n_scenes=n_scenes,
            n_clean=n_clean,
            masked_border=masked_border,
            progress=report["progress"],
        )
    click.echo(
        f"synth: wrote {summary.n_files} DNG files ({summary.nbytes / 1e6:.1f} MB) for {summary.n_sensors} "
        f"sensors, {summary.n_scenes} scenes at {size[0]}x{size[1]} to {summary.out}; truth in "
        f"{summary.truth_path} ({time.perf_counter() - t0:.1f} s)"
    )


@main.command()
@click.argument("out", default="rawlab-demo", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic dataset.")
@click.option(
    "--workers", type=click.IntRange(1, 512), default=None, help="Local Dask workers (default: one per core)."
)
def demo(out, seed, workers):
    """Run the whole pipeline on the built-in synthetic dataset, into OUT (default ./rawlab-demo)."""
    from pathlib import Path

    from ..demo import run_demo

    run_demo(Path(out), seed=seed, workers=workers, echo=click.echo)


@main.group(cls=_Group)
def catalog():
    """Build and inspect catalogued Zarr stores of paired raw frames."""


@catalog.command("build")
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--out", "out", required=True, help="Store to create or update: a path or an fsspec URL (s3://...)."
)
@click.option(
    "--recipe",
    default=None,
    help="Pairing recipe: a name in catalogs/ (sid, sidd, rawnind; bursts, auto for bursts) or a YAML file.",
)
@_cluster_options("Address of a running Dask scheduler to use instead of a local cluster.")
@click.option(
    "--threads",
    type=click.IntRange(1, 512),
    default=None,
    help="Threads per local worker for compression and decoding (default: cores // workers).",
)
@click.option("--strict", is_flag=True, help="Exit 1 if any file failed.")
@click.option(
    "--qa-max-shift", type=float, default=None, help="Exclude pairs misaligned by more (mosaic px)."
)
@click.option(
    "--qa-gain-tolerance",
    type=float,
    default=None,
    help="Exclude pairs whose measured gain departs more than this (relative) from ISO x exposure.",
)
@click.option(
    "--qa-max-saturated", type=float, default=None, help="Exclude pairs with a larger saturated fraction."
)
@click.option(
    "--qa-burst-max-motion",
    type=float,
    default=None,
    help="Exclude burst frames moved further from their reference (mosaic px; default 64).",
)
@click.option(
    "--qa-burst-exposure-tolerance",
    type=float,
    default=None,
    help="Exclude burst frames whose brightness departs more than this (relative) from the reference's "
    "(default 0.1, widened by the noise).",
)
@click.option(
    "--qa-burst-min-sharpness",
    type=float,
    default=None,
    help="Exclude burst frames less sharp than this fraction of their burst's median (default 0.5).",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=300,
    show_default=True,
    help="Seconds to wait for another build writing the same store before giving up (exit 2).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def catalog_build(
    sources,
    out,
    recipe,
    scheduler,
    workers,
    threads,
    strict,
    qa_max_shift,
    qa_gain_tolerance,
    qa_max_saturated,
    qa_burst_max_motion,
    qa_burst_exposure_tolerance,
    qa_burst_min_sharpness,
    wait,
    as_json,
):
    """Scan SOURCES (folders, files, globs; local or fsspec URLs) for raw files and ingest them into a store.

    Reads metadata, pairs noisy frames with their clean reference (same folder, lowest ISO; or a --recipe),
    checks each pair (alignment, exposure gain, saturation) and stores the Bayer pixels losslessly in Zarr.
    With --recipe bursts (or auto), bursts are recognised instead (one folder and body, one ISO and
    exposure, consecutive capture times), checked per burst (motion to the reference, exposure, blur) and
    stored as one group each with a frame axis.
    Re-running ingests only new or changed files. A file that cannot be read is recorded as failed and the
    build goes on; SOURCES holding no raw file at all is an error (exit 2).

    \b
    Building into an existing store adds to it: its catalog is merged, never replaced.
      rawlab catalog build shoot1 --out s.zarr; rawlab catalog build shoot2 --out s.zarr
    lists both, exactly as `rawlab catalog build shoot1 shoot2 --out s.zarr` would (pairs are recomputed
    over all files built with the same recipe). A file that was under SOURCES before and is gone now is
    dropped from the catalog (its pixels stay in the store); files of other sources are kept as they are.

    Files with identical content (same SHA-256) are one frame: one row, the first path in name order, with
    the copies in its `other_paths`; a copy never pairs with its original.

    One build writes a store at a time. A second build into the same store waits (up to --wait seconds)
    for the first to finish, then reuses what it wrote; a lock left by a killed build on this machine is
    recovered. (For s3:// and other object stores the lock is best effort.) If the store cannot be written
    (disk full, quota, read-only, permission) the build stops with exit 2 and the store as it was before.
    """
    import json

    from ..catalog.build import build_catalog
    from ..catalog.burst_qa import BurstThresholds
    from ..catalog.qa import QAThresholds
    from ..cluster import RunOptions

    overrides = {
        k: v
        for k, v in {
            "max_shift": qa_max_shift,
            "gain_tolerance": qa_gain_tolerance,
            "max_saturated": qa_max_saturated,
        }.items()
        if v is not None
    }
    thresholds = QAThresholds.from_dict({**QAThresholds().to_dict(), **overrides})
    burst = {
        "max_motion": qa_burst_max_motion,
        "exposure_tolerance": qa_burst_exposure_tolerance,
        "min_sharpness": qa_burst_min_sharpness,
    }
    burst_thresholds = BurstThresholds.from_dict({k: v for k, v in burst.items() if v is not None})
    with _reporting("ingest") as report:
        _, summary = build_catalog(
            list(sources),
            out,
            recipe=recipe,
            thresholds=thresholds,
            burst_thresholds=burst_thresholds,
            wait=wait,
            options=RunOptions(scheduler=scheduler, workers=workers, threads=threads, **report),
        )
    for path, reason in summary.failures:
        click.echo(f"failed: {path}: {reason}", err=True)
    if as_json:
        click.echo(json.dumps({k: v for k, v in summary.__dict__.items()}, default=str))
    else:
        click.echo(summary.line())
    if strict and summary.n_failed:
        raise SystemExit(1)


@catalog.command("show")
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def catalog_show(store, as_json):
    """Summarise a store: counts per sensor, ISO, role and status, its bursts, and every failed or excluded
    file with the reason."""
    import json

    from ..catalog import open_catalog
    from ..catalog.summary import catalog_summary, format_summary

    summary = catalog_summary(open_catalog(store))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(format_summary(summary, store))
        n = len(summary["sensors"])
        click.echo(
            f"catalog show: {summary['files']} files, {n} sensors, {len(summary['problems'])} problems"
        )

"""The ``rawlab`` command line: parse, validate, call one library function, print a one-line summary.

Heavy modules (rawpy, dask, jax, tensorflow) are imported inside the commands so ``rawlab --help`` is instant.
Exit codes (docs/architecture.md, "CLI contract"): 0 success, 1 a ``--strict`` failure, 2 a usage error or bad input;
errors a user can fix are printed as one message, never as a traceback.
"""

from __future__ import annotations

import contextlib
import sys
import time

import click

from ._version import __version__
from .cluster import SCHEDULER_ENV
from .errors import RawlabError


class _Group(click.Group):
    """A group that turns :class:`RawlabError` into a one-line message and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RawlabError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)

    def list_commands(self, ctx):  # keep the pipeline order, not alphabetical order
        return list(self.commands)


def _size(ctx, param, value: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"expected WIDTHxHEIGHT in pixels, e.g. 4000x3000; got {value!r}") from None
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise click.BadParameter(f"width and height must be even and at least 16; got {w}x{h}")
    return w, h


@contextlib.contextmanager
def _reporting(desc: str, total: int = 0):
    """Keyword arguments that report a library call's progress (a bar on stderr) and notes (stderr lines)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="file", file=sys.stderr, disable=None, leave=False)
    try:
        yield {
            "progress": bar.update,
            "set_total": lambda n: bar.reset(total=n),
            "echo": lambda m: click.echo(m, err=True),
        }
    finally:
        bar.close()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="rawlab")
def main():
    """rawlab: paired raw-denoising datasets, sensor noise models, and raw denoisers.

    \b
    Typical pipeline:
      rawlab synth data/               # or your own folders of camera raws
      rawlab catalog build data/ --out store.zarr
      rawlab noise-fit store.zarr --sensor all --out noise.json
      rawlab stats store.zarr --out report/
      rawlab train store.zarr --config tiny --workdir runs/tiny
      rawlab export runs/tiny --format tflite --out tiny.tflite
      rawlab denoise photo.dng --model tiny.tflite --out denoised/

    Run `rawlab demo` to do all of it on the built-in synthetic dataset.
    """


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
def synth(out, seed, size, n_sensors, n_scenes, n_clean, calibration):
    """Write a synthetic dataset of real DNG files with known noise.

    Writes OUT/<sensor>/<scene>/*.dng, each scene shot at the base ISO (clean) and up the sensor's ISO
    ladder at the same brightness, with Poisson-Gaussian noise clipped and quantised as a sensor does, and
    OUT/truth.json with the true noise parameters (rawlab.noise/1 schema). With --calibration, writes
    OUT/<sensor>/darks/ and OUT/<sensor>/flats/ for `rawlab calibrate` (--scenes and --clean-frames unused).
    """
    from .synth import get_sensors, write_dataset
    from .synth.generate import plan_dataset

    t0 = time.perf_counter()
    if calibration:
        from .synth.calibration import CALIBRATION_SENSORS, plan_calibration, write_calibration_set

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
    total = len(plan_dataset(get_sensors(n_sensors), seed=seed, n_scenes=n_scenes, n_clean=n_clean))
    with _reporting("synth", total) as report:
        summary = write_dataset(
            out,
            seed=seed,
            size=size,
            n_sensors=n_sensors,
            n_scenes=n_scenes,
            n_clean=n_clean,
            progress=report["progress"],
        )
    click.echo(
        f"synth: wrote {summary.n_files} DNG files ({summary.nbytes / 1e6:.1f} MB) for {summary.n_sensors} "
        f"sensors, {summary.n_scenes} scenes at {size[0]}x{size[1]} to {summary.out}; truth in "
        f"{summary.truth_path} ({time.perf_counter() - t0:.1f} s)"
    )


def _cluster_options(scheduler_help: str = "Address of a running Dask scheduler."):
    """``--scheduler ADDR`` (or ``$RAWLAB_SCHEDULER``) and ``--workers N``, shared by every Dask command."""

    def decorate(f):
        f = click.option(
            "--workers",
            type=click.IntRange(1, 512),
            default=None,
            help="Local cluster size (default: one per core).",
        )(f)
        return click.option(
            "--scheduler", default=None, envvar=SCHEDULER_ENV, show_envvar=True, help=scheduler_help
        )(f)

    return decorate


@main.command()
@click.argument("out", default="rawlab-demo", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic dataset.")
@click.option(
    "--workers", type=click.IntRange(1, 512), default=None, help="Local Dask workers (default: one per core)."
)
def demo(out, seed, workers):
    """Run the whole pipeline on the built-in synthetic dataset, into OUT (default ./rawlab-demo)."""
    from pathlib import Path

    from .demo import run_demo

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
    "--recipe", default=None, help="Pairing recipe: a name in catalogs/ (sid, sidd, rawnind) or a YAML file."
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
    wait,
    as_json,
):
    """Scan SOURCES (folders, files, globs; local or fsspec URLs) for raw files and ingest them into a store.

    Reads metadata, pairs noisy frames with their clean reference (same folder, lowest ISO; or a --recipe),
    checks each pair (alignment, exposure gain, saturation) and stores the Bayer pixels losslessly in Zarr.
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

    from .catalog.build import build_catalog
    from .catalog.qa import QAThresholds
    from .cluster import RunOptions

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
    with _reporting("ingest") as report:
        _, summary = build_catalog(
            list(sources),
            out,
            recipe=recipe,
            thresholds=thresholds,
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
    """Summarise a store: counts per sensor, ISO, role and status, and every failed or excluded file."""
    import json

    from .catalog import open_catalog
    from .catalog.summary import catalog_summary, format_summary

    summary = catalog_summary(open_catalog(store))
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(format_summary(summary, store))
        n = len(summary["sensors"])
        click.echo(
            f"catalog show: {summary['files']} files, {n} sensors, {len(summary['problems'])} problems"
        )


@main.command("noise-fit")
@click.argument("store")
@click.option("--sensor", required=True, help="Sensor name as in `rawlab catalog show`, or 'all'.")
@click.option(
    "--method",
    type=click.Choice(["auto", "paired", "single"]),
    default="auto",
    show_default=True,
    help="paired: noisy frames against clean references; single: each frame alone (Foi et al. 2008); "
    "auto: pairs where the sensor has them.",
)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Profile file to write.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["rawlab", "darktable", "dng", "android"]),
    default="rawlab",
    show_default=True,
    help="rawlab JSON; a darktable noiseprofiles.json; DNG NoiseProfile values; or the Android camera noise "
    "model (S = A*sens + B, O = C*sens^2 + D*digital_gain^2, with the CTS check and C functions).",
)
@click.option(
    "--bootstrap",
    type=click.IntRange(0, 10000),
    default=200,
    show_default=True,
    help="Bootstrap resamples over frames for the standard errors.",
)
@_cluster_options()
def noise_fit(store, sensor, method, out, fmt, bootstrap, scheduler, workers):
    """Fit Poisson-Gaussian noise, Var[x] = a*x + b (normalised units), per sensor, ISO and channel.

    Then fits the law over ISO (a proportional to ISO; b = b0 + b1*ISO^2, with gain steps detected), validates
    the fit on held-out tiles, and writes the profile with plots beside it (<out>_<sensor>_variance.png,
    <out>_<sensor>_isolaw.png).
    """
    from .cluster import RunOptions
    from .noise.pipeline import fit_store
    from .noise.report import write_outputs
    from .outputs import output_file

    output_file(out)  # before the fit, not after it
    with _reporting("noise moments") as report:
        result = fit_store(
            store,
            sensor=sensor,
            method=method,
            bootstrap=bootstrap,
            options=RunOptions(scheduler=scheduler, workers=workers, **report),
        )
    written = write_outputs(result, out, fmt)
    for line in written.lines:
        click.echo(line)
    click.echo(written.summary)


@main.command("calibrate")
@click.argument("sources", nargs=-1)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Folder to write.")
@click.option(
    "--sensor", default=None, help="Calibrate only this sensor (as `rawlab catalog show` names it)."
)
@click.option(
    "--darks", multiple=True, help="Frames that are darks (a recipe; repeatable): folder, file or glob."
)
@click.option("--flats", multiple=True, help="Frames that are flat fields (a recipe; repeatable).")
@click.option(
    "--dark-max",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.02,
    show_default=True,
    help="SOURCES are told apart by level: a frame at most this fraction of the range above black is a dark.",
)
@click.option("--strict", is_flag=True, help="Exit 1 if any frame was rejected.")
@_cluster_options()
def calibrate(sources, out, sensor, darks, flats, dark_max, strict, scheduler, workers):
    """Calibrate sensors from dark frames and flat fields: EMVA 1288 figures per ISO and CFA channel.

    SOURCES (folders, files, globs) hold darks and flats, told apart by level; --darks and --flats name them
    instead. Writes OUT/calibration.json (rawlab.calibration/1: read noise, Tukey-lambda shape, row noise, DSNU,
    PRNU, dark current, system gain K, saturation, linearity error, each with its standard error),
    OUT/figures.json, OUT/report.html and OUT/emva1288/ descriptors. Frames that are neither dark nor flat
    are reported with the reason and left out.
    """
    from .calibrate import calibrate as run
    from .calibrate.report import write_calibration
    from .cluster import RunOptions
    from .outputs import output_folder

    t0 = time.perf_counter()
    output_folder(out)
    with _reporting("calibrate") as report:
        result = run(sources, darks=darks, flats=flats, sensor=sensor, dark_max=dark_max,
                     options=RunOptions(scheduler=scheduler, workers=workers, **report))  # fmt: skip
    files = write_calibration(result, out)
    for r in result.rejected:
        click.echo(f"rejected: {r['path']}: {r['reason']}", err=True)
    for s in result.doc["sensors"]:
        click.echo(f"{s['sensor']}:")
        click.echo(
            f"  {'ISO':>6} {'K (G1)':>9} {'read':>7} {'row':>6} {'DSNU':>6} {'PRNU%':>6} {'DC/s':>7} {'lambda':>7}"
        )
        for i in s["isos"]:
            f = {k: v["value"][1] for k, v in i["figures"].items()}
            cells = [f["system_gain_dn_per_e"], f["read_noise_dn"], f["row_noise_dn"], f["dsnu_dn"],
                     f["prnu_percent"], f["dark_current_dn_per_s"], f["tukey_lambda"]]  # fmt: skip
            click.echo(
                f"  {i['iso']:>6} " + " ".join(f"{'-' if v is None else format(v, '.4g'):>7}" for v in cells)
            )
    click.echo(
        f"calibrate: {len(result.doc['sensors'])} sensors, {sum(len(s['isos']) for s in result.doc['sensors'])} "
        f"ISOs, {len(result.rejected)} frames rejected -> {files[0]}, {files[2]} ({time.perf_counter() - t0:.1f} s)"
    )
    if strict and result.rejected:
        sys.exit(1)


@main.command("stats")
@click.argument("store")
@click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False), help="Folder for the tables and report."
)
@click.option(
    "--profile",
    type=click.Path(dir_okay=False),
    default=None,
    help="Noise profile to use (rawlab JSON from `rawlab noise-fit`); sensors it lacks are fitted here.",
)
@click.option(
    "--anchors",
    type=click.Path(dir_okay=False),
    default=None,
    help="External profiles to compare with: a darktable noiseprofiles.json or a rawlab JSON.",
)
@_cluster_options()
def stats(store, out, profile, anchors, scheduler, workers):
    """Cross-device statistics of STORE: sensors.csv, report.html and plots in OUT.

    One row per sensor and ISO: noise a and b (from --profile, else fitted), SNR at 18% grey
    (20*log10(x/sigma), dB), read-noise-limited dynamic range (log2(1/sqrt(b)), stops), gain and read noise in
    electrons, frame counts, exposure, saturation and QA. Sensors are ranked at the same ISO and signal level;
    --anchors adds published profiles to compare the shape of the ISO laws with.
    """
    from .cluster import RunOptions
    from .outputs import output_folder
    from .stats import compute_stats, write_outputs

    output_folder(out)  # before the passes over the store, not after them
    with _reporting("stats") as report:
        result = compute_stats(
            store,
            profile=profile,
            anchors=anchors,
            options=RunOptions(scheduler=scheduler, workers=workers, **report),
        )
    written = write_outputs(result, out)
    for line in [*result.notes, *written.lines]:
        click.echo(line)
    click.echo(written.summary)


@main.command("train")
@click.argument("store")
@click.option(
    "--config",
    "config_name",
    default=None,
    help="Training config: tiny (seconds on a CPU), mobile, large, builtin, r2r (self-supervised fine-tuning), "
    "joint (demosaic + denoise to linear RGB), or a Python file with "
    "get_config(). With --init it defaults to the config the initial model was trained with.",
)
@click.option(
    "--workdir",
    required=True,
    type=click.Path(file_okay=False),
    help="Run directory (model, checkpoints, metrics); training resumes from its last checkpoint.",
)
@click.option(
    "--steps", type=click.IntRange(1, None), default=None, help="Total steps (overrides the config)."
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, None),
    default=None,
    help="Global batch size (overrides the config).",
)
@click.option("--seed", type=int, default=None, help="Seed of the initialisation and of the batches.")
@click.option(
    "--noise",
    "noise_profile",
    type=click.Path(dir_okay=False),
    default=None,
    help="Noise profile (rawlab JSON from `rawlab noise-fit`); default: fitted from STORE, cached in "
    "WORKDIR/noise.json.",
)
@click.option(
    "--init",
    "init",
    default=None,
    help="Fine-tune: start from this model (builtin or a model directory) instead of random weights. On a "
    "store of noisy frames only, combine with a self-supervised config (data.self_supervised).",
)
def train(store, config_name, workdir, steps, batch_size, seed, noise_profile, init):
    """Train the U-Net denoiser on the noisy/clean pairs of STORE (its training split of scenes).

    Random aligned, exposure-matched crops of real pairs, mixed with synthetic Poisson-Gaussian noise drawn
    from the noise profile over each sensor's ISO range; Bayer-preserving flips and transposes; L1 + SSIM
    loss; AdamW with warmup and cosine decay. Writes WORKDIR/config.json and model.msgpack (the model for
    `rawlab eval`, `export` and `denoise`), orbax checkpoints, metrics.csv and TensorBoard logs (WORKDIR/tb).
    Run it again to resume (with a larger --steps to train on).
    """
    from .cluster import RunOptions
    from .learn.configs import load_config
    from .learn.train import train_and_evaluate

    if config_name is None:
        if init is None:
            raise click.UsageError("give --config (tiny, mobile, large, builtin or a file), or --init MODEL")
        import json

        from .learn.modelio import CONFIG, resolve_model

        described = resolve_model(init) / CONFIG  # the name only: the weights are loaded once, by training
        config_name = json.loads(described.read_text()).get("name") if described.is_file() else None
        if config_name is None:
            raise click.UsageError(f"--init {init}: no config.json naming its config there; give --config")
    cfg = load_config(
        config_name, steps=steps, data__batch_size=batch_size, seed=seed, noise__profile=noise_profile
    )
    options = RunOptions(echo=lambda m: click.echo(m, err=True))
    result = train_and_evaluate(cfg, workdir, store, options=options, init=init)
    click.echo(result.line())


_GUARD_HELP = (
    "With the guard (default), each tile of the network's output is blended back toward the input as far as "
    "Stein's unbiased risk estimate says is better, so the model does not make an image worse than it was "
    "(twice the inference cost); --no-guard runs the network alone."
)


@main.command("eval")
@click.argument("store")
@click.option(
    "--model",
    "model",
    default=None,
    help="builtin, a model directory (`rawlab train --workdir`), or a .tflite/.onnx file; omit to score the "
    "baselines only.",
)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="JSON file to write.")
@click.option(
    "--methods",
    default="all",
    show_default=True,
    help="Comma-separated: model, identity, vst-wavelet, vst-nlm, vst-bm3d (needs the optional bm3d "
    "package); 'all' is every available one. NL-means costs about 0.5 s per megapixel, BM3D about 30.",
)
@click.option(
    "--profile",
    type=click.Path(dir_okay=False),
    default=None,
    help="Noise profile (rawlab JSON) for (a, b); default: the model's noise law, else a fit of STORE.",
)
@click.option(
    "--scenes",
    type=click.Choice(["heldout", "all"]),
    default="heldout",
    show_default=True,
    help="heldout: the evaluation split (scenes never trained on); all: every pair (for another store).",
)
@click.option(
    "--max-frames", type=click.IntRange(1, None), default=None, help="At most N frames per sensor and ISO."
)
@click.option(
    "--crop", type=click.IntRange(16, None), default=None, help="Score the central NxN packed pixels."
)
@_cluster_options()
@click.option("--guard/--no-guard", default=True, show_default=True, help=_GUARD_HELP)
def eval_(store, model, out, methods, profile, scenes, max_frames, crop, scheduler, workers, guard):
    """PSNR and SSIM per sensor and ISO on held-out pairs: the model against the classical baselines.

    Scores packed, normalised Bayer planes against the exposure-matched clean reference (data range 1):
    the model, the noisy input (identity), and variance-stabilised (generalised Anscombe, exact unbiased
    inverse) wavelet, NL-means and BM3D denoising. Writes OUT (schema rawlab.eval/1) and a PSNR-vs-ISO plot
    beside it (<out>.png).
    """
    from .cluster import RunOptions
    from .evaluation import evaluate_store, write_outputs

    with _reporting("eval") as report:
        result = evaluate_store(
            store,
            model,
            methods=methods,
            profile=profile,
            scenes=scenes,
            max_frames=max_frames,
            crop=crop,
            options=RunOptions(scheduler=scheduler, workers=workers, **report),
            guard=guard,
        )
    written = write_outputs(result, out)
    for line in written.lines:
        click.echo(line)
    click.echo(written.summary)


@main.command("export")
@click.argument("model_dir", metavar="MODEL", type=click.Path(file_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["tflite", "onnx", "dtmodel"]),
    default="tflite",
    show_default=True,
    help="tflite: phones (LiteRT); onnx: ONNX Runtime, float32; dtmodel: a darktable 5.6+ raw-denoise package.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(dir_okay=False),
    help="The .tflite, .onnx or .dtmodel file to write.",
)
@click.option(
    "--quantize",
    type=click.Choice(["none", "fp16", "dynamic", "int8"]),
    default="none",
    show_default=True,
    help="none: float32; fp16: float16 weights; dynamic: int8 weights; int8: full integer, calibrated (tflite and "
    "onnx; fp16 and dynamic are tflite only).",
)
@click.option(
    "--tile",
    type=click.IntRange(8, 8192),
    default=None,
    help="Fixed input tile in packed pixels (default: the model's tile size, usually 256).",
)
@click.option(
    "--calibration",
    default=None,
    help="A store or raw files for int8 calibration and the parity check (default: the training store).",
)
def export(model_dir, fmt, out, quantize, tile, calibration):
    """Export MODEL (`rawlab train --workdir`, or builtin) to TFLite, ONNX or darktable, with a parity check.

    tflite: jax2tf at a fixed tile shape, builtin TFLite ops only. onnx: the network written with builtin ONNX
    ops (dynamic height and width), run by `rawlab denoise` with ONNX Runtime alone. dtmodel: a .dtmodel
    package for darktable's neural restore (raw denoise), installed from darktable's AI preferences. The
    float32 export must match JAX within 1e-4 on real crops (held-out scenes of the training store) or
    nothing is written; quantised exports print their
    PSNR cost, and their PSNR against each pair's aligned, exposure-matched clean reference. Tile size,
    overlap, normalisation and noise law are embedded in the file (and written beside it as OUT.json), so
    `rawlab denoise --model OUT` needs nothing else. OUT's folder is checked (and created) first.
    """
    from .deploy.export import export_model

    result = export_model(
        model_dir,
        out,
        fmt=fmt,
        quantize=quantize,
        tile=tile,
        calibration=calibration,
        echo=lambda m: click.echo(m, err=True),
    )
    click.echo(f"description: {result.sidecar}")
    click.echo(result.summary())


@main.command("denoise")
@click.argument("raws", nargs=-1, required=True)
@click.option(
    "--model",
    default="builtin",
    show_default=True,
    help="builtin (the model shipped inside rawlab), a model directory (`rawlab train --workdir`), or a "
    ".tflite or .onnx from `rawlab export`.",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Folder to write into (created); inputs' paths below their common folder are kept.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["dng", "png", "tiff"]),
    default="dng",
    show_default=True,
    help="dng: denoised raw, metadata kept; png (8-bit) / tiff (16-bit): a rendered sRGB preview.",
)
@click.option(
    "--overwrite", is_flag=True, help="Replace outputs that exist (default: keep them and skip those inputs)."
)
@_cluster_options("Address of a running Dask scheduler (its workers must see the model and the files).")
@click.option("--strict", is_flag=True, help="Exit 1 if any file failed.")
@click.option("--guard/--no-guard", default=True, show_default=True, help=_GUARD_HELP)
@click.option(
    "--output",
    type=click.Choice(["bayer", "rgb"]),
    default="bayer",
    show_default=True,
    help="bayer: a denoised raw (or its preview). rgb: demosaic and denoise with a joint model (`rawlab train "
    "--config joint`) into clean linear camera RGB: --format dng a linear DNG, tiff a 16-bit linear TIFF, png an "
    "sRGB preview; the SURE guard (a Bayer denoiser's) is not applied.",
)
def denoise(raws, model, out, fmt, overwrite, scheduler, workers, strict, guard, output):
    """Denoise RAWS (raw files, folders or globs; anything LibRaw reads as a Bayer mosaic) into OUT.

    Each file is normalised with its own levels and its noise from the model's noise law for its sensor and
    ISO (else the DNG NoiseProfile, else an estimate from the image alone), denoised in overlapping tiles,
    and written as a DNG of the same size, CFA and levels, or as a rendered preview.

    Each output goes in OUT at its input's path below the inputs' common folder, with the format's suffix,
    and one line per input says where it went (or why not):

    \b
      rawlab denoise a/x.dng b/x.dng --out D      ->  D/a/x.dng, D/b/x.dng
      rawlab denoise a/x.dng a/y.dng --out D      ->  D/x.dng, D/y.dng
      rawlab denoise shoot/ --out D --format png  ->  D/<path below shoot/>.png

    An existing output is kept and its input reported as skipped (not a failure), so re-running a batch
    finishes only what is missing; --overwrite replaces existing outputs. An output never replaces one of the
    inputs, and two inputs never share an output (x.dng and x.DNG, or x.nef and x.dng, both of which would
    become x.dng): the first in input order gets it, the other fails with the reason. Files that cannot be
    read are reported with the reason and the rest go on.

    Exit status: 0; 1 when every file failed (or any, with --strict); 2 for a usage error, such as a missing,
    truncated or corrupt model or an --out that cannot be written, which are checked before any file is read.
    """
    from .cluster import RunOptions
    from .deploy.denoise import denoise_files

    with _reporting("denoise") as report:
        summary = denoise_files(
            list(raws),
            model,
            out,
            fmt=fmt,
            overwrite=overwrite,
            options=RunOptions(scheduler=scheduler, workers=workers, **report),
            guard=guard,
            output=output,
        )
    for r in summary.results:
        click.echo(r.line(), err=r.failed)
    click.echo(summary.line())
    if summary.all_failed or (strict and summary.n_failed):
        raise SystemExit(1)


@main.command("serve")
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default)."
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--model",
    "models",
    multiple=True,
    default=("builtin",),
    show_default=True,
    help="builtin, a .onnx, .tflite or model directory to serve (repeat for several; the first is the default).",
)
@click.option(
    "--workers", type=click.IntRange(1, 64), default=None, help="Concurrent jobs (default: 2, or 1 core)."
)
@click.option("--max-upload-mb", type=float, default=200, show_default=True, help="Largest upload accepted.")
@click.option("--job-timeout", type=float, default=300, show_default=True, help="Seconds a job may run.")
@click.option("--max-queue", type=click.IntRange(0, 10000), default=16, show_default=True,
              help="Jobs that may wait for a worker; beyond that the service answers 503.")  # fmt: skip
@click.option(
    "--tmp",
    "tmp_root",
    default=None,
    help="Folder for the service's temporary files (default: the system's).",
)
def serve(host, port, models, workers, max_upload_mb, job_timeout, max_queue, tmp_root):
    """Serve denoising over HTTP: POST /denoise (a raw file -> DNG, or ?format=png|tiff), GET /models, /health.

    \b
      rawlab serve --model tiny.onnx
      curl -F file=@photo.dng localhost:8000/denoise -o out.dng

    The models are checked before the service starts. Each job runs in a worker process, with limits on the
    upload size, the jobs waiting and the time per job; bad uploads are answered 4xx with the reason.
    """
    from .serve import build_config
    from .serve import serve as run

    config = build_config(
        list(models),
        workers=workers,
        max_upload_mb=max_upload_mb,
        job_timeout=job_timeout,
        max_queue=max_queue,
        tmp_root=tmp_root,
    )
    names = ", ".join(f"{m['name']} ({m['label']})" for m in config.described)
    click.echo(f"serve: {names} on http://{host}:{port} ({config.workers} workers)", err=True)
    run(config, host=host, port=port)


if __name__ == "__main__":  # pragma: no cover
    main()

"""Learn: ``train`` and ``eval``."""

from __future__ import annotations

import click

from ..errors import RawlabError
from ._common import _cluster_options, _fuse_mode, _fuse_single, _reporting, _runtime_options, main


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
    "--calibration",
    "calibration",
    type=click.Path(),
    default=None,
    help="Draw the synthetic noise from this sensor calibration (calibration.json of `rawlab calibrate`, or its "
    "folder): shot noise through the system gain, Tukey-lambda read noise, row noise, DSNU, PRNU, dark current "
    "(noise.kind physics). Without --noise, the model's noise map is the calibration's own Poisson-Gaussian law "
    "(written to WORKDIR/calibration-noise.json).",
)
@click.option(
    "--init",
    "init",
    default=None,
    help="Fine-tune: start from this model (builtin or a model directory) instead of random weights. On a "
    "store of noisy frames only, combine with a self-supervised config (data.self_supervised).",
)
def train(store, config_name, workdir, steps, batch_size, seed, noise_profile, calibration, init):
    """Train the U-Net denoiser on the noisy/clean pairs of STORE (its training split of scenes).

    Random aligned, exposure-matched crops of real pairs, mixed with synthetic Poisson-Gaussian noise drawn
    from the noise profile over each sensor's ISO range; Bayer-preserving flips and transposes; L1 + SSIM
    loss; AdamW with warmup and cosine decay. Writes WORKDIR/config.json and model.msgpack (the model for
    `rawlab eval`, `export` and `denoise`), orbax checkpoints, metrics.csv and TensorBoard logs (WORKDIR/tb).
    Run it again to resume (with a larger --steps to train on).
    """
    from ..cluster import RunOptions
    from ..learn.configs import load_config
    from ..learn.train import train_and_evaluate

    if config_name is None:
        if init is None:
            raise click.UsageError("give --config (tiny, mobile, large, builtin or a file), or --init MODEL")
        import json

        from ..learn.modelio import CONFIG, resolve_model

        described = resolve_model(init) / CONFIG  # the name only: the weights are loaded once, by training
        config_name = json.loads(described.read_text()).get("name") if described.is_file() else None
        if config_name is None:
            raise click.UsageError(f"--init {init}: no config.json naming its config there; give --config")
    physics = {"noise__kind": "physics", "noise__calibration": calibration} if calibration else {}
    if calibration:  # a wrong path fails now, not after the noise fit
        from ..noise.physics import equivalent_profiles, load_calibration

        doc = load_calibration(calibration)
        if noise_profile is None:  # the noise map: the calibration's own law, the physics noise's variance
            from ..noise.profile import save_profiles
            from ..outputs import output_folder

            noise_profile = str(output_folder(workdir, "--workdir") / "calibration-noise.json")
            save_profiles(equivalent_profiles(doc), noise_profile)
    cfg = load_config(
        config_name,
        steps=steps,
        data__batch_size=batch_size,
        seed=seed,
        noise__profile=noise_profile,
        **physics,
    )
    options = RunOptions(echo=lambda m: click.echo(m, err=True))
    if calibration:
        options.note(f"synthetic noise: physics, drawn from the calibration {calibration}")
    result = train_and_evaluate(cfg, workdir, store, options=options, init=init)
    click.echo(result.line())


@main.command("eval")
@click.argument("store")
@click.option(
    "--model",
    "model",
    default=None,
    help="builtin, a model directory (`rawlab train --workdir`), or a .tflite/.onnx file; omit to score the "
    "baselines only. On bursts: the single-frame model (column single).",
)
@click.option(
    "--bursts",
    is_flag=True,
    default=False,
    help="Score bursts (the default when STORE is a `rawlab synth OUT --burst N` folder, or a store with bursts "
    "and no pairs): the reference frame, --model on it, the classical merge and --burst-model, per frame count, "
    "on the static area and on the moving object's region; writes OUT as rawlab.eval-bursts/1.",
)
@click.option(
    "--burst-model",
    "burst_model",
    default=None,
    help="Bursts: the burst model (`rawlab burst train --workdir`, or its export; column model).",
)
@click.option(
    "--fuse-single/--no-fuse-single",
    default=None,
    help="Bursts (on by default, with the fusion): fuse --burst-model's output with the built-in single-frame "
    "model on the reference, as `rawlab denoise --burst` does; --no-fuse-single scores it without, as "
    "`rawlab denoise --burst --no-fuse-single` runs it.",
)
@click.option(
    "--frames",
    "frames",
    default="2,4,8",
    show_default=True,
    help="Bursts: frame counts to score (counts above the bursts' length are left out).",
)
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="JSON file to write.")
@click.option(
    "--methods",
    default="all",
    show_default=True,
    help="Comma-separated: model, identity, vst-wavelet, vst-nlm, vst-dct, vst-bm3d (needs the optional bm3d "
    "package); 'all' is every available one. NL-means costs about 0.5 s per megapixel, the DCT about 1, BM3D "
    "about 30.",
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
@_runtime_options
def eval_(
    store, model, bursts, burst_model, fuse_single, frames, out, methods, profile, scenes, max_frames, crop,
    scheduler, workers, guard, fuse, fuse_bm3d, ensemble,
):  # fmt: skip
    """PSNR and SSIM per sensor and ISO on held-out pairs: the model against the classical baselines.

    Scores packed, normalised Bayer planes against the exposure-matched clean reference (data range 1):
    the model, the noisy input (identity), and variance-stabilised (generalised Anscombe, exact unbiased
    inverse) wavelet, NL-means, sliding-window DCT and BM3D denoising. Writes OUT (schema rawlab.eval/1) and a PSNR-vs-ISO plot
    beside it (<out>.png).

    On bursts (STORE a `rawlab synth OUT --burst N` folder, whose truth gives the clean reference and the
    moving object, or a store built from one with --recipe bursts, scored on the frames its QA kept): PSNR per sensor, ISO and frame count of the reference frame, the single-frame --model on
    it, the classical merge (`rawlab burst merge`) and the --burst-model (`rawlab denoise --burst`), on the
    static area and on the region the moving object covers; writes OUT (rawlab.eval-bursts/1) and <out>.png.
    """
    from ..cluster import RunOptions
    from ..evaluation.burst_sources import is_burst_source

    ctx = click.get_current_context()
    if bursts or is_burst_source(store):
        given = [f"--{name.replace('_', '-')}" for name in ("methods", "profile", "scenes", "max_frames", "crop")
                 if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT]  # fmt: skip
        if given:
            raise RawlabError(
                f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to pairs, not bursts; drop {'it' if len(given) == 1 else 'them'} (bursts are scored with the truth's "
                "noise law, whole frames, every burst)"
            )
        if fuse_bm3d:
            raise RawlabError("--fuse-bm3d applies to pairs, not bursts; drop it")
        fuse_single = _fuse_single(fuse_single, bool(burst_model), fuse and guard, "--burst-model")
        _eval_bursts(
            store, model, burst_model, frames, out, scheduler, workers, guard, ensemble, fuse, fuse_single
        )
        return
    fuse = _fuse_mode(fuse, fuse_bm3d, guard)
    extra = [f"--{n.replace('_', '-')}" for n in ("burst_model", "frames", "fuse_single")
             if ctx.get_parameter_source(n) != click.core.ParameterSource.DEFAULT]  # fmt: skip
    if extra:
        raise RawlabError(
            f"{', '.join(extra)} {'applies' if len(extra) == 1 else 'apply'} to bursts, but {store} is not a `rawlab synth OUT --burst N` folder (no "
            "truth.json listing bursts); pass such a folder, or drop them to score the pairs of a store"
        )
    from ..evaluation import evaluate_store, write_outputs

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
            ensemble=ensemble,
            fuse=fuse,
        )
    written = write_outputs(result, out)
    for line in written.lines:
        click.echo(line)
    click.echo(written.summary)


def _eval_bursts(
    source, model, burst_model, frames, out, scheduler, workers, guard, ensemble, fuse, fuse_single
):
    """``rawlab eval --bursts``: check the source and the output, score, write, print the table."""
    import os

    from ..cluster import RunOptions
    from ..evaluation.burst_report import write_burst_outputs
    from ..evaluation.bursts import evaluate_bursts
    from ..outputs import output_file

    if "://" not in source and not os.path.exists(source):
        raise RawlabError(
            f"{source} does not exist; pass the OUT folder of `rawlab synth OUT --burst N` or a store built from it"
        )
    output_file(out, "--out")
    with _reporting("eval bursts") as report:
        result = evaluate_bursts(
            source,
            single=model,
            burst_model=burst_model,
            counts=frames,
            guard=guard,
            options=RunOptions(scheduler=scheduler, workers=workers, **report),
            ensemble=ensemble,
            fuse=fuse,
            fuse_single=fuse_single,
        )
    written = write_burst_outputs(result, out)
    for line in written.lines:
        click.echo(line)
    click.echo(written.summary)

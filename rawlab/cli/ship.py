"""Ship: ``export``, ``denoise`` and ``serve``."""

from __future__ import annotations

import click

from ..demosaic import DEMOSAICS
from ._common import _cluster_options, _fuse_mode, _fuse_single, _reporting, _runtime_options, main


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
    from ..deploy.export import export_model

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
@_runtime_options
@click.option(
    "--output",
    type=click.Choice(["bayer", "rgb"]),
    default="bayer",
    show_default=True,
    help="bayer: a denoised raw (or its preview). rgb: demosaic and denoise with a joint model (without --model "
    "the one shipped inside rawlab, builtin-joint; or yours, `rawlab train --config joint`) into clean linear "
    "camera RGB: --format dng a linear DNG, tiff a 16-bit linear TIFF, png an sRGB preview. For a joint model "
    "that denoises first (builtin-joint, --config joint_mobile; a model directory), the guard and the fusion "
    "act on its Bayer part and its demosaic reads their result (about 2.5x the time); other joint models and "
    "exported files run the network alone.",
)
@click.option(
    "--demosaic",
    type=click.Choice(["model", *DEMOSAICS]),
    default="model",
    show_default=True,
    help="With --output rgb: model runs the joint model; a LibRaw demosaic name runs a Bayer denoiser (without "
    "--model the built-in one) as rawlab denoise runs it, then that demosaic. On held-out synthetic frames the "
    "built-in denoiser then DHT is above builtin-joint at 12 of 13 sensor-ISOs, by up to 1.8 dB (README).",
)
@click.option(
    "--burst",
    is_flag=True,
    help="RAWS are the frames of one burst (or folders, each a burst): a burst model (without --model the one "
    "shipped inside rawlab, builtin-burst; or yours, rawlab burst train) denoises the reference from all of "
    "them, aligned and merged by rawlab burst, into OUT/<burst folder>.dng.",
)
@click.option(
    "--reference",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="With --burst: index of the frame to denoise (the others are aligned onto it), in name order.",
)
@click.option(
    "--fuse-single/--no-fuse-single",
    default=None,
    help="With --burst (on by default, with the fusion): also run the built-in single-frame model on the "
    "reference and blend the burst output with it by SURE, tile by tile and per plane, where the merge is weaker "
    "(a frame misaligned, aliasing at low ISO). On held-out synthetic bursts +0.4 dB on PG-1 at ISO 800-1600; "
    "--no-fuse-single takes 45 % of the time (README).",
)
def denoise(
    raws,
    model,
    out,
    fmt,
    overwrite,
    scheduler,
    workers,
    strict,
    guard,
    fuse,
    fuse_bm3d,
    ensemble,
    output,
    demosaic,
    burst,
    reference,
    fuse_single,
):
    """Denoise RAWS (raw files, folders or globs; anything LibRaw reads as a Bayer mosaic) into OUT.

    Each file is normalised with its own levels and its noise from the model's noise law for its sensor and
    ISO (else the DNG NoiseProfile, else an estimate from the image alone, its read noise from the sensor's
    masked border where the file keeps one), denoised in overlapping tiles,
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
    from click.core import ParameterSource

    from ..errors import RawlabError
    from ..learn.modelio import BUILTIN_BURST, BUILTIN_JOINT

    if burst and fuse_bm3d:
        raise RawlabError("--fuse-bm3d applies to single frames; drop it with --burst")
    fuse_single = _fuse_single(fuse_single, burst, fuse and guard, "--burst")
    demosaic = None if demosaic == "model" else demosaic
    if demosaic and burst:  # without --output rgb: refused by denoise_files, as for any caller
        raise RawlabError(f"--demosaic {demosaic} makes RGB from one frame; drop --burst")
    fuse = _fuse_mode(fuse, fuse_bm3d, guard)
    if click.get_current_context().get_parameter_source("model") is ParameterSource.DEFAULT:
        model = (
            BUILTIN_BURST if burst else BUILTIN_JOINT if output == "rgb" and not demosaic else model
        )  # the kind's own builtin (with --demosaic the Bayer denoiser's)
    if burst:
        return _denoise_bursts(
            list(raws), model, out, fmt, overwrite, strict, reference, scheduler, workers, ensemble,
            fuse and guard, fuse_single,
        )  # fmt: skip
    from ..cluster import RunOptions
    from ..deploy.denoise import denoise_files

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
            ensemble=ensemble,
            fuse=fuse,
            demosaic=demosaic,
        )
    for r in summary.results:
        click.echo(r.line(), err=r.failed)
    click.echo(summary.line())
    if summary.all_failed or (strict and summary.n_failed):
        raise SystemExit(1)


def _denoise_bursts(
    raws, model, out, fmt, overwrite, strict, reference, scheduler, workers, ensemble, fuse, fuse_single
):
    """``denoise --burst``: the frames of one burst here, or folders of bursts through Dask (a task each); with
    ``fuse``, each fused with VST+NL-means of its merge, and with ``fuse_single`` with the single-frame model on
    its reference (:mod:`rawlab.deploy.burst`)."""
    import os
    import time

    from ..cluster import RunOptions
    from ..deploy.burst import burst_model, burst_stages, denoise_burst_files, denoise_bursts
    from ..errors import RawlabError
    from ..outputs import output_folder
    from .burst import _bursts

    t0 = time.perf_counter()
    if fmt != "dng":
        raise RawlabError(f"--burst writes a Bayer DNG; drop --format {fmt}")
    dirs = [os.path.isdir(r) for r in raws]
    missing = [r for r in raws if not os.path.exists(r)]
    if missing:
        raise RawlabError(f"{missing[0]} does not exist; pass the frames of a burst or folders of bursts")
    if any(dirs) and not all(dirs):
        raise RawlabError("give either the frames of one burst (files) or folders of bursts, not both")
    if all(dirs):
        found = _bursts(raws)
    else:
        found = [(sorted(raws), os.path.basename(os.path.dirname(os.path.abspath(raws[0]))) or "burst")]
    if not found:
        raise RawlabError(f"no raw files found in {', '.join(raws)}; pass burst folders or the frames")
    runner = burst_model(
        model, ensemble=ensemble, fuse=fuse, fuse_single=fuse_single
    )  # a bad model fails now, before any file is read
    outdir = output_folder(out)
    outs = [os.path.join(outdir, f"{name}.dng") for _, name in found]
    if all(dirs):
        with _reporting("denoise --burst", len(found)) as report:
            results = denoise_bursts(
                [p for p, _ in found], outs, model, reference=reference, overwrite=overwrite,
                options=RunOptions(scheduler=scheduler, workers=workers, **report), ensemble=ensemble, fuse=fuse,
                fuse_single=fuse_single,
            )  # fmt: skip
    else:  # one burst here: a bar over its stages (a 12 MP burst takes minutes)
        with _reporting("denoise --burst", burst_stages(runner[0]), unit="stage") as report:
            results = [denoise_burst_files(found[0][0], outs[0], model, reference=reference, overwrite=overwrite,
                                           runner=runner, progress=report["progress"])]  # fmt: skip
    for r in results:
        click.echo(r.line(), err=r.error is not None)
    n_ok = sum(r.ok for r in results)
    n_failed = sum(r.error is not None for r in results)
    click.echo(
        f"denoise --burst: {n_ok} of {len(results)} bursts denoised to {outdir}, {n_failed} failed, "
        f"{len(results) - n_ok - n_failed} skipped (output exists) ({time.perf_counter() - t0:.1f} s)"
    )
    if n_failed and (strict or n_failed == len(results)):
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
    from ..serve import build_config
    from ..serve import serve as run

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

"""The ``rawlab`` group and what its commands share: errors as one line, progress bars, Dask options.

Heavy modules (rawpy, dask, jax, tensorflow) are imported inside the commands so ``rawlab --help`` is instant.
Exit codes (docs/architecture.md, "CLI contract"): 0 success, 1 a ``--strict`` failure, 2 a usage error or bad input;
errors a user can fix are printed as one message, never as a traceback.
"""

from __future__ import annotations

import contextlib
import sys

import click

from .._version import __version__
from ..cluster import SCHEDULER_ENV
from ..errors import RawlabError


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
def _reporting(desc: str, total: int = 0, unit: str = "file"):
    """Keyword arguments that report a library call's progress (a bar on stderr) and notes (stderr lines)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, leave=False)
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


_GUARD_HELP = (
    "With the guard (default), each tile of the network's output is blended back toward the input as far as "
    "Stein's unbiased risk estimate says is better, so the model does not make an image worse than it was "
    "(twice the inference cost); --no-guard runs the network alone."
)


_FUSE_HELP = (
    "With the guard, fuse the model's estimate with VST+NL-means at three strengths and VST+DCT tile by tile, "
    "weighted by Stein's unbiased risk estimate, so that no tile is expected to be worse than any of them alone "
    "(six NL-means and two DCT passes, about 3 s per megapixel on 2 cores); with --burst, the burst model's "
    "output with the same classical denoisers of the merge, by the merge's noise law; --no-fuse keeps the "
    "guarded model alone."
)


def _ensemble_option(f):
    """``--ensemble N``: the deploy runtime's self-ensemble (rawlab.deploy.ensemble)."""
    from ..deploy.ensemble import DEFAULT_ENSEMBLE, ENSEMBLES

    return click.option(
        "--ensemble",
        type=click.Choice([str(n) for n in ENSEMBLES]),
        default=str(DEFAULT_ENSEMBLE),
        show_default=True,
        callback=lambda _ctx, _param, value: int(value),
        help="Denoise this many rotations of each frame (the Bayer pattern kept) and average them: a model "
        "that errs differently on each errs less on their mean (the built-in model: +0.1 to +0.7 dB on held-out "
        "photographs from 4), at that many times the cost; 1 runs the frame alone. The joint model (--output rgb) too.",
    )(f)


_FUSE_BM3D_HELP = (
    "Fuse with VST+BM3D too (the optional bm3d package, pip install bm3d; its licence is non-commercial, so "
    "rawlab never installs it): on held-out photographs 0.10-0.26 dB above VST+BM3D alone at ISO 800 and up, "
    "at about 60 s per megapixel on 2 cores."
)


def _runtime_options(f):
    """How the deploy runtime runs a model, for ``denoise`` and ``eval``: ``--guard/--no-guard``,
    ``--fuse/--no-fuse``, ``--fuse-bm3d`` (VST+BM3D joins the fusion's candidates, :func:`_fuse_mode`) and
    ``--ensemble N``."""
    f = _ensemble_option(f)
    f = click.option("--fuse-bm3d", is_flag=True, help=_FUSE_BM3D_HELP)(f)
    f = click.option("--fuse/--no-fuse", default=True, show_default=True, help=_FUSE_HELP)(f)
    return click.option("--guard/--no-guard", default=True, show_default=True, help=_GUARD_HELP)(f)


def _fuse_mode(fuse: bool, fuse_bm3d: bool, guard: bool = True) -> bool | str:
    """The runtime's ``fuse`` for ``--fuse/--no-fuse`` and ``--fuse-bm3d``: ``"bm3d"`` adds VST+BM3D to the
    candidates; a clear error where that cannot run."""
    if not fuse_bm3d:
        return fuse
    if not (fuse and guard):
        raise RawlabError("--fuse-bm3d adds a candidate to the fusion; drop --no-fuse and --no-guard")
    from ..deploy.classical import bm3d_available

    if not bm3d_available():
        raise RawlabError(
            "--fuse-bm3d needs the optional bm3d package, which is not installed: pip install bm3d "
            "(non-commercial licence)"
        )
    return "bm3d"


def _fuse_single(fuse_single: bool | None, burst: bool, fusion: bool, needs: str) -> bool | None:
    """``--fuse-single/--no-fuse-single`` (None: neither given): on by default wherever a burst model runs with
    the fusion (``burst``, ``fusion``: ``--fuse`` and ``--guard``) and JAX can run the built-in single-frame model
    (None: :func:`rawlab.deploy.burst.burst_model` decides); ``needs`` names what a burst needs (``"--burst"``,
    ``"--burst-model"``). Either flag where there is no burst model, or ``--fuse-single`` without the fusion, is a
    usage error."""
    if fuse_single is None:
        return None if burst and fusion else False
    flag = "--fuse-single" if fuse_single else "--no-fuse-single"
    if not burst:
        raise RawlabError(f"{flag} applies to a burst model's output; add {needs}, or drop {flag}")
    if fuse_single and not fusion:
        raise RawlabError("--fuse-single is a fusion; drop --no-fuse or --no-guard, or drop --fuse-single")
    return fuse_single

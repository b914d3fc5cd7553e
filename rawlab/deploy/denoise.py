"""``rawlab denoise``: real raw files through a denoiser, to DNG (metadata kept) or a rendered preview.

Per file (:func:`denoise_file`): read any Bayer raw LibRaw decodes (:func:`rawlab.rawio.read_raw`; X-Trans,
Foveon, linear DNGs and other non-Bayer data are rejected there with the reason), normalise it with its own
black and white levels, find its noise parameters (the model's law, else the DNG NoiseProfile, else a
single-image estimate; :mod:`rawlab.deploy.noiseparams`), denoise tile by tile
(:mod:`rawlab.deploy.runtime`), and write

- ``dng``: a DNG of the same size, CFA pattern, black and white levels, make, model, ISO, exposure, white
  balance and colour matrix, its NoiseProfile set to the residual noise estimate
  (:func:`rawlab.deploy.noiseparams.residual_profile`); pixels rounded to DN and clipped to ``[0, white]``;
- ``png`` / ``tiff``: a rendered preview (:mod:`rawlab.deploy.render`).

With ``output="rgb"`` the model is a joint demosaic+denoise model (config ``joint``) and the result is clean
linear camera RGB (:func:`demosaic_frame`): ``dng`` a LinearRaw DNG and ``tiff`` a 16-bit linear TIFF
(:func:`rawlab.deploy.linear.write_linear_rgb`), ``png`` an sRGB preview. The SURE guard is a Bayer
denoiser's and is not applied to RGB output.

Many files (:func:`denoise_files`): one Dask task per file on a local cluster or a given scheduler (each
worker loads the model once and keeps it; :func:`rawlab.cluster.run_tasks`); a file that fails is reported
with its path and reason and the others go on. A single file runs in this process, without starting a cluster.

Where outputs go: each input's path is mirrored below the inputs' common folder (the folder given, or the
folder of a file given): ``a/x.dng b/x.dng --out D`` writes ``D/a/x.dng`` and ``D/b/x.dng``; inputs in one
folder go directly in ``D``. The suffix is the format's (``.dng``, ``.png``, ``.tiff``). An existing output is
kept and the input reported as skipped unless ``overwrite`` is set; an output is never an input file, and two
inputs never share an output (``x.dng`` and ``x.DNG``, or ``x.nef`` and ``x.dng``: the first in input order
gets it, the other is reported as failed with the reason). Outputs are compared ignoring case, as they would
collide on a case-insensitive filesystem (macOS, Windows, memory cards).
"""

from __future__ import annotations

import os
import posixpath
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._version import __version__
from ..dng import color_matrix_of
from ..errors import RawlabError
from ..outputs import exists_reason, publish
from .ensemble import DEFAULT_ENSEMBLE, check_ensemble

if TYPE_CHECKING:
    from ..cluster import RunOptions

__all__ = [
    "FORMATS",
    "DenoiseSummary",
    "Denoised",
    "FileResult",
    "demosaic_frame",
    "denoise_file",
    "denoise_files",
    "denoise_frame",
    "output_paths",
    "write_denoised_dng",
]

FORMATS = ("dng", "png", "tiff")
OUTPUTS = ("bayer", "rgb")  # a denoised raw (or its preview); or clean linear RGB from a joint model
_SUFFIX = {"dng": ".dng", "png": ".png", "tiff": ".tiff"}


@dataclass
class Denoised:
    """A denoised frame: packed normalised planes in and out, the mosaic to write, and the noise used."""

    noisy: np.ndarray  # (4, h, w) float32, normalised
    clean: np.ndarray  # (4, h, w) float32, normalised
    mosaic: np.ndarray  # (H, W) uint16 DN, the input's CFA layout
    noise: Any  # NoiseEstimate
    noise_profile: list[tuple[float, float]]  # residual (S, O) for R, G, B
    residual_factor: float
    guard_weight: float | None = None  # the SURE guard's median tile weight (1: the network's output kept)
    fuse_weights: tuple[float, float] | None = None  # median weights of the network and of the classical ones


@dataclass
class FileResult:
    """What became of one input: denoised to ``out``, ``skipped`` (its output exists), or failed (``error``)."""

    path: str
    out: str | None = None
    error: str | None = None
    error_kind: str | None = None
    skipped: str | None = None  # why nothing was written although nothing went wrong
    noise_source: str | None = None
    noise: str | None = None
    residual_factor: float | None = None
    guard_weight: float | None = None
    fuse_weights: tuple[float, float] | None = None
    fused_with: str = "NL-means and DCT"  # the classical candidates the fusion weighed
    shape: tuple[int, int] | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Denoised and written."""
        return self.error is None and self.skipped is None

    @property
    def failed(self) -> bool:
        return self.error is not None

    def line(self) -> str:
        if self.failed:
            return f"failed: {self.path}: {self.error}"
        if self.skipped is not None:
            return f"skipped: {self.path}: {self.skipped}"
        h, w = self.shape or (0, 0)
        guard = (
            ""
            if self.guard_weight is None
            else f"; guard kept {self.guard_weight:.0%} of the network's change"
        )
        if self.fuse_weights is not None:
            guard += (
                f"; fused {self.fuse_weights[0]:.0%} network, {self.fuse_weights[1]:.0%} {self.fused_with}"
            )
        residual = "" if self.residual_factor is None else f"; residual noise x{self.residual_factor:.2g}"
        return (
            f"denoised: {self.path} -> {self.out} ({w}x{h}; noise from {self.noise}{residual}{guard}; "
            f"{self.seconds:.1f} s)"
        )


@dataclass
class DenoiseSummary:
    results: list[FileResult]
    out: Path
    fmt: str
    model: str
    seconds: float
    where: str = "in-process"
    noise_sources: Counter = field(default_factory=Counter)

    @property
    def n_ok(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def n_failed(self) -> int:
        return sum(r.failed for r in self.results)

    @property
    def n_skipped(self) -> int:
        return sum(r.skipped is not None and not r.failed for r in self.results)

    @property
    def all_failed(self) -> bool:
        """Every input failed (``rawlab denoise`` exits 1)."""
        return bool(self.results) and self.n_failed == len(self.results)

    @property
    def failures(self) -> list[tuple[str, str]]:
        return [(r.path, r.error or "") for r in self.results if r.failed]

    def line(self) -> str:
        sources = ", ".join(f"{n} {s}" for s, n in sorted(self.noise_sources.items())) or "none"
        n = len(self.results)
        if self.all_failed:
            head = f"denoise: all {n} files failed, none denoised; nothing written to {self.out}"
        else:
            skipped = f", {self.n_skipped} skipped (output exists)" if self.n_skipped else ""
            head = (
                f"denoise: {self.n_ok} of {n} files denoised to {self.out} ({self.fmt}){skipped}, "
                f"{self.n_failed} failed"
            )
        return f"{head}; model {self.model}; noise from: {sources} ({self.seconds:.1f} s)"


def denoise_frame(frame, denoiser) -> Denoised:
    """Denoise one decoded :class:`rawlab.rawio.RawFrame` with a denoiser from :func:`load_denoiser`."""
    from ..bayer import levels, unpack
    from .noiseparams import noise_for_frame, residual_profile

    info = frame.info
    noisy = frame.normalized()
    est = noise_for_frame(denoiser, info, noisy)
    y = denoiser.denoise(
        np.moveaxis(noisy, 0, -1), est.a, est.b, cfa=info.cfa
    )  # the self-ensemble needs the CFA
    clean = np.ascontiguousarray(np.moveaxis(y, -1, 0))
    black, span = levels(info.black_level, info.white_level)  # the inverse of rawlab.bayer.normalise
    dn = np.round(clean * span[:, None, None] + black[:, None, None])
    mosaic = unpack(np.clip(dn, 0, info.white_level).astype(np.uint16), info.cfa)
    profile, k = residual_profile(noisy, clean, est.a, est.b)
    return Denoised(noisy, clean, mosaic, est, profile, k, *_median_weights(denoiser))


def _median_weights(denoiser) -> tuple[float | None, tuple[float, float] | None]:
    """The SURE guard's median tile weight and the fusion's median weights (network, NL-means) of the
    denoiser's last frame; None where it did not guard or fuse."""
    weights = getattr(denoiser, "guard_weights", None) if getattr(denoiser, "guard", False) else None
    guard = float(np.median(weights)) if weights else None
    fw = getattr(denoiser, "fuse_weights", None)  # empty unless the last frame fused
    fused = (
        tuple(float(v) for v in np.median(fw, axis=0))
        if guard is not None and fw is not None and len(fw)
        else None
    )
    return guard, fused


@dataclass
class Demosaiced:
    """A frame through the joint model: clean linear camera RGB and the noise used."""

    rgb: np.ndarray  # (H, W, 3) float32, normalised camera RGB before white balance
    noise: Any  # NoiseEstimate
    guard_weight: float | None = None  # a joint model that denoises first: its Bayer part's, as Denoised's
    fuse_weights: tuple[float, float] | None = None


def demosaic_frame(frame, denoiser) -> Demosaiced:
    """Demosaic and denoise one decoded :class:`rawlab.rawio.RawFrame` with a joint model (``head`` rgb)."""
    from .noiseparams import noise_for_frame

    info = frame.info
    noisy = frame.normalized()
    est = noise_for_frame(denoiser, info, noisy)
    if hasattr(denoiser, "guard_weights"):  # what an earlier frame left is not this frame's
        denoiser.guard_weights = []
    rgb = denoiser.demosaic(np.moveaxis(noisy, 0, -1), est.a, est.b, info.cfa)
    return Demosaiced(rgb, est, *_median_weights(denoiser))


def _write_rgb(path: Path, frame, result: Demosaiced, fmt: str, software: str) -> None:
    if fmt in ("dng", "tiff"):
        from .linear import write_linear_rgb

        write_linear_rgb(path, result.rgb, frame.info, fmt, software=software)
    else:
        from .render import camera_to_srgb_linear, srgb_preview, write_image

        rgb = np.clip(result.rgb, 0.0, 1.0)
        write_image(
            path, srgb_preview(camera_to_srgb_linear(rgb, frame.info, color_matrix_of(frame.info))), fmt
        )


def write_denoised_dng(
    path: str | os.PathLike[str], frame, result: Denoised, software: str = "rawlab"
) -> None:
    """Write ``result.mosaic`` as a DNG carrying ``frame``'s levels, CFA and metadata."""
    from ..dng import raw_metadata, write_dng

    try:
        write_dng(
            path,
            result.mosaic,
            **raw_metadata(frame.info),
            noise_profile=result.noise_profile,
            software=software,
        )
    except ValueError as e:  # metadata a DNG cannot hold: say so for this file, the others go on
        raise RawlabError(f"the denoised frame could not be written as a DNG ({e})") from None


def denoise_file(
    path: str,
    denoiser,
    out: str | os.PathLike[str],
    fmt: str = "dng",
    *,
    overwrite: bool = False,
    output: str = "bayer",
) -> FileResult:
    """Read, denoise and write one file; a file rawlab cannot use is returned as a failed result.

    ``output="rgb"``: demosaic and denoise with a joint model and write linear RGB (module docstring).

    An existing ``out`` is kept (the result is ``skipped``) unless ``overwrite``; the output is written whole
    to a hidden temporary file beside it and then renamed, so ``out`` is never half-written.
    """
    from ..rawio import read_raw

    t0 = time.perf_counter()
    res = FileResult(path, out=os.fspath(out))
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp{_SUFFIX[fmt]}")
    try:
        frame = read_raw(path)
        result = demosaic_frame(frame, denoiser) if output == "rgb" else denoise_frame(frame, denoiser)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RawlabError(
                f"cannot create the folder {out.parent} for {out.name}: {e.strerror or e}"
            ) from None
        software = f"rawlab {__version__} denoise ({denoiser.name}, {denoiser.kind})"
        if output == "rgb":
            _write_rgb(tmp, frame, result, fmt, software)
        elif fmt == "dng":
            write_denoised_dng(tmp, frame, result, software)
        else:
            from .render import render_preview, write_image

            write_image(tmp, render_preview(result.clean, frame.info, color_matrix_of(frame.info)), fmt)
        written = publish(tmp, out, overwrite)
    except BaseException as e:
        if isinstance(e, OSError):  # the disk or the folder refused the output: this file fails, with why
            e = RawlabError(f"cannot write {out}: {e.strerror or e}")
        elif not isinstance(e, RawlabError):
            raise
        res.error = getattr(e, "reason", None) or str(e)
        res.error_kind = getattr(e, "kind", "error")
        res.seconds = time.perf_counter() - t0
        return res
    finally:
        tmp.unlink(missing_ok=True)
    res.seconds = time.perf_counter() - t0
    if not written:
        res.skipped = exists_reason(out)
        return res
    res.noise_source = result.noise.source
    res.noise = result.noise.describe()
    res.guard_weight = result.guard_weight
    res.fuse_weights = result.fuse_weights
    if getattr(denoiser, "fuse", True) == "bm3d":
        res.fused_with = "NL-means, DCT and BM3D"
    if output == "rgb":
        res.shape = tuple(result.rgb.shape[:2])
        return res
    res.residual_factor = result.residual_factor
    res.shape = tuple(result.mosaic.shape)
    return res


@lru_cache(maxsize=2)
def _worker_denoiser(
    model: str,
    num_threads: int | None,
    guard: bool = True,
    ensemble: int = DEFAULT_ENSEMBLE,
    fuse: bool | str = True,
    demosaic: str | None = None,
):
    """One denoiser per worker process (the interpreter or JAX program is built once, then reused); with
    ``demosaic``, followed by that LibRaw demosaic (:class:`rawlab.deploy.libraw.LibRawDemosaic`)."""
    from .runtime import load_denoiser

    denoiser = load_denoiser(model, num_threads=num_threads)
    denoiser.guard, denoiser.ensemble, denoiser.fuse = guard, ensemble, fuse
    if demosaic:
        from .libraw import LibRawDemosaic

        return LibRawDemosaic(denoiser, demosaic)
    return denoiser


def _task(
    path: str,
    model: str,
    out: str,
    fmt: str,
    num_threads: int | None,
    overwrite: bool,
    guard: bool = True,
    output: str = "bayer",
    ensemble: int = DEFAULT_ENSEMBLE,
    fuse: bool | str = True,
    demosaic: str | None = None,
) -> FileResult:
    denoiser = _worker_denoiser(model, num_threads, guard, ensemble, fuse, demosaic)
    return denoise_file(path, denoiser, out, fmt, overwrite=overwrite, output=output)


def output_paths(files, out: str | os.PathLike[str], fmt: str = "dng") -> list[Path]:
    """Where each scanned file's output goes: its path below the sources' common folder, mirrored in ``out``,
    with the format's suffix (:func:`rawlab.catalog.scan.scan_sources` files; the module docstring)."""

    def root(f) -> str:  # the folder the file was found under: the folder given, or a file's own folder
        full = f.path.split("://", 1)[-1]
        base = (
            full[: -len(f.relpath)]
            if f.relpath and full.endswith("/" + f.relpath)
            else posixpath.dirname(full)
        )
        return base.rstrip("/") or "/"

    roots = [root(f) for f in files]
    try:
        common = posixpath.commonpath(roots) if roots else ""
    except ValueError:  # local files and URLs together: each keeps its whole path below out
        common = None
    outs = []
    for f, base in zip(files, roots, strict=True):
        full = posixpath.join(base, f.relpath)
        rel = posixpath.relpath(full, common) if common is not None else full.lstrip("/")
        outs.append(Path(out, *rel.split("/")).with_suffix(_SUFFIX[fmt]))
    return outs


def _plan(files, targets: list[Path], overwrite: bool) -> list[FileResult | None]:
    """What is decided before any work: an output that is an input, shared with an earlier input, or (without
    ``overwrite``) already there. ``None`` for the files to denoise."""
    inputs = {}
    for f in files:
        try:
            st = os.stat(f.path)
            inputs[(st.st_dev, st.st_ino)] = f.path
        except OSError:  # a URL, or a file that went away: reading it will say so
            pass
    claimed: dict[str, str] = {}
    plan: list[FileResult | None] = []
    for f, target in zip(files, targets, strict=True):
        res = FileResult(f.path, out=os.fspath(target))
        key = os.fspath(target).casefold()
        try:
            st = os.stat(target)
        except OSError:
            st = None
        if st is not None and (st.st_dev, st.st_ino) in inputs:
            res.error, res.error_kind = (
                f"its output {target} is the input file {inputs[(st.st_dev, st.st_ino)]}; choose an --out "
                "outside the inputs' folders", "collision",
            )  # fmt: skip
        elif key in claimed:
            res.error, res.error_kind = (
                f"its output {target} is already the output of {claimed[key]} (names that differ only in "
                "extension or case); rename one of them or denoise it into another --out", "collision",
            )  # fmt: skip
        elif st is not None and os.path.isdir(target):
            res.error, res.error_kind = (
                f"its output {target} is a folder; move it or choose another --out",
                "collision",
            )
        elif st is not None and not overwrite:
            res.skipped = exists_reason(target)
        else:
            res = None
        claimed.setdefault(key, f.path)
        plan.append(res)
    return plan


def denoise_files(
    sources: list[str],
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fmt: str = "dng",
    overwrite: bool = False,
    on_result: Callable[[FileResult], None] | None = None,
    options: RunOptions | None = None,
    guard: bool = True,
    output: str = "bayer",
    ensemble: int = DEFAULT_ENSEMBLE,
    fuse: bool | str = True,
    demosaic: str | None = None,
) -> DenoiseSummary:
    """Denoise every raw file under ``sources`` with ``model`` into the folder ``out``.

    Parameters
    ----------
    sources
        Raw files, folders (searched recursively; sidecars and previews skipped) or globs.
    model
        A model directory (JAX) or a ``.tflite`` from ``rawlab export``. With a remote scheduler, workers
        must see the same path.
    out
        Output folder (created). Each input's path below the inputs' common folder is mirrored in it, with
        the format's suffix (:func:`output_paths`).
    fmt
        ``dng``, ``png`` or ``tiff``.
    overwrite
        Replace existing outputs; without it an input whose output exists is skipped (and reported so).
    on_result
        Called with each :class:`FileResult` as it is decided (skips and refusals first, then in completion
        order); :attr:`DenoiseSummary.results` is in input order.
    options
        Where the work runs and how it reports (:class:`rawlab.cluster.RunOptions`): a client, a scheduler
        address or a local cluster's size; with none of them one file runs in this process and several on a
        local cluster. ``progress``/``set_total`` count the files denoised; ``echo`` gets the dashboard link.
    guard
        Blend each tile back toward the input as far as Stein's unbiased risk estimate says is better
        (:mod:`rawlab.deploy.guard`; doubles the cost), so the network never makes an image worse.
    output
        ``"bayer"`` (a denoised raw, or its preview) or ``"rgb"``: a joint model's clean linear camera RGB
        (``dng`` LinearRaw DNG, ``tiff`` 16-bit linear, ``png`` sRGB preview). The guard (and ``fuse``) act
        on the Bayer part of a joint model that denoises first, such as ``builtin-joint``, run from its model
        directory (:meth:`rawlab.deploy.runtime.JaxDenoiser.demosaic`); other joint models have none.
    ensemble
        Images of the self-ensemble (:mod:`rawlab.deploy.ensemble`: 1, 2, 4 or 8 rotations of each frame,
        averaged; that many times the cost), for a joint model too.
    fuse
        With the guard, blend the estimate tile by tile with VST+NL-means, VST+DCT and the input by SURE
        (:func:`rawlab.deploy.guard.sure_fuse`; NL-means at three strengths and the DCT, two passes each); a Bayer
        denoiser, or the Bayer part of a joint model that denoises first. ``"bm3d"``: VST+BM3D joins the
        candidates (the optional bm3d package; ``--fuse-bm3d``).
    demosaic
        With ``output="rgb"``: a LibRaw demosaic (:data:`rawlab.demosaic.DEMOSAICS`) run on the Bayer
        ``model``'s estimate (:class:`rawlab.deploy.libraw.LibRawDemosaic`) instead of a joint model's own.

    Raises
    ------
    RawlabError
        A source does not exist, no file was found, ``out`` cannot be written, or the model is missing,
        truncated or corrupt (all checked before any file is denoised).
    """
    from ..catalog.scan import scan_sources
    from ..cluster import RunOptions, run_tasks
    from ..outputs import output_folder
    from .runtime import describe_model, load_denoiser

    t0 = time.perf_counter()
    opts = options or RunOptions()
    if fmt not in FORMATS:
        raise RawlabError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if output not in OUTPUTS:
        raise RawlabError(f"unknown --output {output!r}; choose one of {', '.join(OUTPUTS)}")
    if demosaic and output != "rgb":
        raise RawlabError(f"--demosaic {demosaic} makes RGB; pass --output rgb with it")
    files = scan_sources([os.fspath(s) for s in sources]).files
    if not files:
        raise RawlabError(f"no raw files found in {', '.join(map(str, sources))}; pass raw files or folders")
    from ..learn.modelio import resolve_model

    label = describe_model(model)  # in this process, reading only its description: a bad path fails now
    if demosaic:
        label += f", then LibRaw's {demosaic} demosaic"
    out = output_folder(out)  # before the model is loaded and any file read
    targets = output_paths(files, out, fmt)
    results: list[FileResult | None] = _plan(files, targets, overwrite)
    todo = [i for i, r in enumerate(results) if r is None]
    for r in results:
        if r is not None and on_result:
            on_result(r)
    opts.total(len(todo))
    model_path = os.fspath(resolve_model(model).absolute())  # "builtin": the package's directory

    def done(i: int, res: FileResult) -> None:
        results[i] = res
        if on_result:
            on_result(res)

    where = "in-process"
    if todo:
        denoiser = load_denoiser(model_path)
        denoiser.guard, denoiser.ensemble, denoiser.fuse = guard, check_ensemble(ensemble), fuse
        denoiser.check()  # a truncated or corrupt model: one message now, not one failure per file
        if demosaic:
            from .libraw import LibRawDemosaic

            denoiser = LibRawDemosaic(denoiser, demosaic)  # a joint model or a missing demosaic: refused now
        _check_output(denoiser, output)
        if opts.client is None and opts.scheduler is None and opts.workers is None and len(todo) == 1:
            (i,) = todo
            done(
                i, denoise_file(files[i].path, denoiser, targets[i], fmt, overwrite=overwrite, output=output)
            )
            opts.advance(1)
        else:
            del denoiser
            with opts.session() as (client, info):
                n = max(info.n_workers, 1)
                where = f"{n} Dask workers"
                threads = max(1, _cores() // n) if (info.local or opts.client is not None) else None
                args = [
                    (
                        files[i].path,
                        model_path,
                        os.fspath(targets[i]),
                        fmt,
                        threads,
                        overwrite,
                        guard,
                        output,
                        ensemble,
                        fuse,
                        demosaic,
                    )
                    for i in todo
                ]

                def collected(outcome) -> None:
                    done(todo[outcome.index], _file_result(files[todo[outcome.index]].path, outcome))

                run_tasks(client, _task, args, name="denoise", progress=opts.progress, on_result=collected)
    summary = DenoiseSummary(results, out, fmt, label, time.perf_counter() - t0, where)  # type: ignore[arg-type]
    summary.noise_sources.update(r.noise_source for r in summary.results if r.ok)
    return summary


def _check_output(denoiser, output: str) -> None:
    """The model must make what ``output`` asks for: a joint model for RGB, a Bayer denoiser otherwise."""
    head = getattr(denoiser, "head", "bayer")
    if output == "rgb" and head != "rgb":
        raise RawlabError(
            f"--output rgb needs a joint demosaic+denoise model; {denoiser.name!r} is a Bayer denoiser: add "
            "--demosaic DHT (or another LibRaw demosaic) to run it and then LibRaw, or train a joint model with "
            "`rawlab train STORE --config joint` and pass it with --model"
        )
    if output != "rgb" and head == "rgb":
        raise RawlabError(
            f"the model {denoiser.name!r} is a joint demosaic+denoise model (it outputs RGB): pass --output rgb"
        )


def _file_result(path: str, outcome) -> FileResult:
    """A :class:`rawlab.cluster.TaskOutcome` of :func:`_task` as a :class:`FileResult`."""
    if outcome.ok:
        return outcome.value
    if outcome.killed:
        return FileResult(path, error="the worker process died while denoising this file (a crash in the raw "
                          "decoder or the runtime)", error_kind="crash")  # fmt: skip
    e = outcome.error  # a bug in rawlab for this file: report it, keep going
    return FileResult(path, error=f"{type(e).__name__}: {e}", error_kind="internal")


def _cores() -> int:
    from .runtime import _cores as cores

    return cores()

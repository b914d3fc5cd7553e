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

Many files (:func:`denoise_files`): one Dask task per file on a local cluster or a given scheduler (each
worker loads the model once and keeps it); a file that fails is reported with its path and reason and the
others go on. A single file runs in this process, without starting a cluster.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from ..errors import RawlabError

__all__ = [
    "FORMATS",
    "DenoiseSummary",
    "Denoised",
    "FileResult",
    "color_matrix",
    "denoise_file",
    "denoise_files",
    "denoise_frame",
    "write_denoised_dng",
]

FORMATS = ("dng", "png", "tiff")
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


@dataclass
class FileResult:
    path: str
    out: str | None = None
    error: str | None = None
    error_kind: str | None = None
    noise_source: str | None = None
    noise: str | None = None
    residual_factor: float | None = None
    shape: tuple[int, int] | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def line(self) -> str:
        if not self.ok:
            return f"failed: {self.path}: {self.error}"
        h, w = self.shape or (0, 0)
        return (
            f"denoised: {self.path} -> {self.out} ({w}x{h}; noise from {self.noise}; residual noise x"
            f"{self.residual_factor:.2g}; {self.seconds:.1f} s)"
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
        return sum(not r.ok for r in self.results)

    @property
    def failures(self) -> list[tuple[str, str]]:
        return [(r.path, r.error or "") for r in self.results if not r.ok]

    def line(self) -> str:
        sources = ", ".join(f"{n} {s}" for s, n in sorted(self.noise_sources.items())) or "none"
        return (
            f"denoise: {self.n_ok} of {len(self.results)} files denoised to {self.out} ({self.fmt}), "
            f"{self.n_failed} failed; model {self.model}; noise from: {sources} ({self.seconds:.1f} s)"
        )


def denoise_frame(frame, denoiser) -> Denoised:
    """Denoise one decoded :class:`rawlab.rawio.RawFrame` with a denoiser from :func:`load_denoiser`."""
    from ..bayer import unpack
    from .noiseparams import noise_for_frame, residual_profile

    info = frame.info
    noisy = frame.normalized()
    est = noise_for_frame(denoiser, info, noisy)
    y = denoiser.denoise(np.moveaxis(noisy, 0, -1), est.a, est.b)
    clean = np.ascontiguousarray(np.moveaxis(y, -1, 0))
    black = np.asarray(info.black_level, np.float64)[:, None, None]
    dn = np.round(clean * (float(info.white_level) - black) + black)
    mosaic = unpack(np.clip(dn, 0, info.white_level).astype(np.uint16), info.cfa)
    profile, k = residual_profile(noisy, clean, est.a, est.b)
    return Denoised(noisy, clean, mosaic, est, profile, k)


def color_matrix(info):
    """XYZ -> camera 3x3 of a file: LibRaw's, else (LibRaw reports none for many DNGs) the DNG ColorMatrix1."""
    if info.color_matrix is not None:
        return np.asarray(info.color_matrix, np.float64)
    if info.raw_format == "DNG":
        from ..dng import read_dng_tags

        try:
            cm = read_dng_tags(info.path).get("color_matrix1")
        except (ValueError, OSError):
            return None
        if cm is not None and np.shape(cm) == (3, 3) and np.all(np.isfinite(cm)):
            return np.asarray(cm, np.float64)
    return None


def write_denoised_dng(
    path: str | os.PathLike[str], frame, result: Denoised, software: str = "rawlab"
) -> None:
    """Write ``result.mosaic`` as a DNG carrying ``frame``'s levels, CFA and metadata."""
    from ..dng import write_dng

    info = frame.info
    iso = round(info.iso) if info.iso and 1 <= round(info.iso) <= 65535 else None
    neutral = None
    if info.wb is not None and all(v > 0 for v in info.wb):
        neutral = (1.0 / info.wb[0], 1.0 / info.wb[1], 1.0 / info.wb[3])
    try:
        write_dng(
            path,
            result.mosaic,
            cfa=info.cfa,
            black_level=list(info.black_level),
            white_level=int(info.white_level),
            make=(info.make or "Unknown").strip() or "Unknown",
            model=(info.model or info.sensor or "Unknown").strip() or "Unknown",
            iso=iso,
            exposure_time=info.exposure_time if info.exposure_time and info.exposure_time > 0 else None,
            as_shot_neutral=neutral,
            color_matrix1=color_matrix(info),
            noise_profile=result.noise_profile,
            software=software,
        )
    except ValueError as e:  # metadata a DNG cannot hold: say so for this file, the others go on
        raise RawlabError(f"the denoised frame could not be written as a DNG ({e})") from None


def denoise_file(path: str, denoiser, out: str | os.PathLike[str], fmt: str = "dng") -> FileResult:
    """Read, denoise and write one file; a file rawlab cannot use is returned as a failed result."""
    from ..rawio import read_raw

    t0 = time.perf_counter()
    res = FileResult(path)
    tmp = Path(out).with_name(f".{Path(out).name}.tmp{_SUFFIX[fmt]}")  # written whole, then renamed
    try:
        frame = read_raw(path)
        result = denoise_frame(frame, denoiser)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        if fmt == "dng":
            software = f"rawlab {__version__} denoise ({denoiser.name}, {denoiser.kind})"
            write_denoised_dng(tmp, frame, result, software)
        else:
            from .render import render_preview, write_image

            write_image(tmp, render_preview(result.clean, frame.info, color_matrix(frame.info)), fmt)
        tmp.replace(out)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if not isinstance(e, RawlabError):
            raise
        res.error = getattr(e, "reason", None) or str(e)
        res.error_kind = getattr(e, "kind", "error")
        res.seconds = time.perf_counter() - t0
        return res
    res.out = os.fspath(out)
    res.noise_source = result.noise.source
    res.noise = result.noise.describe()
    res.residual_factor = result.residual_factor
    res.shape = tuple(result.mosaic.shape)
    res.seconds = time.perf_counter() - t0
    return res


@lru_cache(maxsize=2)
def _worker_denoiser(model: str, num_threads: int | None):
    """One denoiser per worker process (the interpreter or JAX program is built once, then reused)."""
    from .runtime import load_denoiser

    return load_denoiser(model, num_threads=num_threads)


def _task(path: str, model: str, out: str, fmt: str, num_threads: int | None) -> FileResult:
    return denoise_file(path, _worker_denoiser(model, num_threads), out, fmt)


def _outputs(files, out: Path, fmt: str) -> list[Path]:
    """``OUT/<path relative to its source>`` with the format's suffix; clashes get the source extension."""
    suffix = _SUFFIX[fmt]
    names = [Path(f.relpath).with_suffix(suffix) for f in files]
    counts = Counter(names)
    outs, used = [], set()
    for f, name in zip(files, names, strict=True):
        if counts[name] > 1:  # e.g. IMG_1.CR2 and IMG_1.DNG in one folder
            ext = Path(f.relpath).suffix.lstrip(".").lower() or "raw"
            name = name.with_name(f"{name.stem}_{ext}{suffix}")
        base, i = name, 2
        while name in used:
            name = base.with_name(f"{base.stem}_{i}{suffix}")
            i += 1
        used.add(name)
        outs.append(out / name)
    return outs


def denoise_files(
    sources: list[str],
    model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fmt: str = "dng",
    client=None,
    scheduler: str | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    set_total: Callable[[int], None] | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    echo: Callable[[str], None] | None = None,
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
        Output folder (created); files keep their path relative to their source, with the new suffix.
    fmt
        ``dng``, ``png`` or ``tiff``.
    client, scheduler, workers
        An existing ``distributed.Client``, a scheduler address, or the size of a new local cluster; with
        none of them, one file runs in this process and several on a local cluster.
    progress, set_total, on_result, echo
        Called per finished file (``1``), with the number of files, with each :class:`FileResult`, and with
        messages (the dashboard link).

    Raises
    ------
    RawlabError
        A source or the model does not exist, or no file was found.
    """
    from ..catalog.scan import scan_sources
    from ..cluster import dask_client
    from .runtime import describe_model, load_denoiser

    t0 = time.perf_counter()
    if fmt not in FORMATS:
        raise RawlabError(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    label = describe_model(model)  # fails early, in this process, on a bad model path
    files = scan_sources([os.fspath(s) for s in sources]).files
    if not files:
        raise RawlabError(f"no raw files found in {', '.join(map(str, sources))}; pass raw files or folders")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RawlabError(f"--out {out} is a file; give a folder to write the denoised files into")
    targets = _outputs(files, out, fmt)
    if set_total:
        set_total(len(files))
    model_path = os.path.abspath(model)
    results: list[FileResult] = []

    def done(res: FileResult) -> None:
        results.append(res)
        if on_result:
            on_result(res)
        if progress:
            progress(1)

    where = "in-process"
    if client is None and scheduler is None and workers is None and len(files) == 1:
        denoiser = load_denoiser(model_path)
        for f, target in zip(files, targets, strict=True):
            done(denoise_file(f.path, denoiser, target, fmt))
    else:
        cluster = dask_client(scheduler, workers=workers, echo=echo) if client is None else _given(client)
        with cluster as (c, info):
            where = f"{info.n_workers} Dask workers" if info else "Dask"
            n = info.n_workers if info else 1
            threads = max(1, _cores() // n) if (info is None or info.local) else None
            _run_dask(c, files, targets, model_path, fmt, threads, done)
    order = {f.path: i for i, f in enumerate(files)}
    results.sort(key=lambda r: order.get(r.path, len(order)))
    summary = DenoiseSummary(results, out, fmt, label, time.perf_counter() - t0, where)
    summary.noise_sources.update(r.noise_source for r in results if r.ok)
    return summary


class _given:
    """Context manager yielding ``(client, None)`` for a caller's client (left open)."""

    def __init__(self, client):
        self.client = client

    def __enter__(self):
        from ..cluster import ClusterInfo

        n = len(self.client.scheduler_info(n_workers=-1).get("workers", {}))
        return self.client, ClusterInfo(self.client.scheduler.address, None, max(n, 1), local=True)

    def __exit__(self, *exc):
        return False


def _cores() -> int:
    from .runtime import _cores as cores

    return cores()


def _run_dask(client, files, targets, model: str, fmt: str, threads, done) -> None:
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    futures = {}
    for i, (f, target) in enumerate(zip(files, targets, strict=True)):
        key = f"denoise-{i}-{Path(f.path).name}"
        fut = client.submit(_task, f.path, model, os.fspath(target), fmt, threads, key=key, pure=False)
        futures[fut] = f
    for fut in as_completed(futures):
        f = futures[fut]
        try:
            res = fut.result()
        except KilledWorker:
            res = FileResult(f.path, error="the worker process died while denoising this file (a crash in the "
                             "raw decoder or the runtime)", error_kind="crash")  # fmt: skip
        except Exception as e:  # a bug in rawlab for this file: report it, keep going
            res = FileResult(f.path, error=f"{type(e).__name__}: {e}", error_kind="internal")
        finally:
            fut.release()
        done(res)

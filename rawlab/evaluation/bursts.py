"""``rawlab eval`` on bursts: the reference frame, the single-frame model, the classical merge and the burst
model, for 2, 4 and 8 frames, per sensor and ISO, on the static area and on the region a moving object covers.

What is scored (:mod:`rawlab.evaluation.burst_sources`): the bursts of a ``rawlab synth --burst`` folder, whose
``truth.json`` gives each burst's clean reference and moving object, read as ``rawlab burst merge`` reads them;
or those of a store built from such a folder (``catalog build --recipe bursts``), as its QA kept them, the truth
found through the catalog's source paths. What is written and printed: :mod:`rawlab.evaluation.burst_report`.

Per burst and frame count ``n`` (the first ``n`` frames, the reference first), every method estimates the
reference's noise-free packed planes (:func:`burst_estimates`):

- ``ref``: the reference frame itself;
- ``single``: the single-frame model on the reference alone, as ``rawlab denoise`` runs it (the deploy runtime
  with its SURE guard); the same for every ``n``;
- ``merge``: the classical merge (:func:`rawlab.burst.merge_burst`, as ``rawlab burst merge``);
- ``model``: the burst model (:func:`rawlab.deploy.burst.denoise_burst`, as ``rawlab denoise --burst``).

Every method gets the sensor's true noise law at the burst's ISO (``truth.json``'s profiles), as a calibrated
camera's NoiseProfile gives it. Scores (:func:`squared_errors`) are squared errors over the packed planes in
normalised units against the reference's noise-free planes clipped to ``[0, 1]``: on the **moving region**
(per plane, the sites the object covers in any frame of the burst, where a merge can ghost) and on the
**static area** (every other site); PSNR (peak 1 = white) is taken from the mean squared error pooled over the
bursts (scenes) of a sensor and ISO, so a scene with more static area weighs more.

Work split, as for pairs (:mod:`rawlab.evaluation.scoring`): ``ref`` and ``merge`` (CPU-heavy NumPy/SciPy) run
as one Dask task per burst (:func:`rawlab.cluster.run_tasks`); the models run in this process (JAX uses its own
threads), at the same time. ``benchmarks/burst.py`` and ``benchmarks/burst_model.py`` score bursts they
simulate in memory with the same two functions.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..cluster import RunOptions
from ..deploy.ensemble import DEFAULT_ENSEMBLE
from ..errors import RawlabError
from .burst_sources import BurstCase, find_bursts, load_case

__all__ = [
    "COUNTS",
    "METHODS",
    "SCHEMA",
    "BurstEvalResult",
    "burst_estimates",
    "evaluate_bursts",
    "psnr_db",
    "squared_errors",
]

SCHEMA = "rawlab.eval-bursts/1"
METHODS = ("ref", "single", "merge", "model")
REGIONS = ("static", "moving")
COUNTS = (2, 4, 8)


# -- scoring: one home for the benchmarks and the eval ------------------------------------------------------


def psnr_db(mse: float) -> float:
    """PSNR in dB of a mean squared error in normalised units (peak 1 = white)."""
    return float(10 * np.log10(1.0 / max(float(mse), 1e-20)))


def burst_estimates(
    planes: np.ndarray,
    a,
    b,
    cfa: str | None,
    *,
    single=None,
    burst: tuple[Any, int] | None = None,
    merge: bool = True,
    robustness: float | None = None,
    reference: int = 0,
) -> Callable[[int], dict[str, np.ndarray]]:
    """Each method's estimate of the reference's clean planes, as a function of the frame count.

    Parameters
    ----------
    planes
        ``float32 (N, 4, h, w)``: the burst's normalised packed frames, the reference at ``reference``.
    a, b
        The noise law ``Var[x] = a x + b`` per channel R, G1, G2, B (normalised units).
    cfa
        The mosaic's CFA pattern (the merge resamples alternates through it; None: each plane alone).
    single
        A single-frame denoiser (``denoise(x (h, w, 4), a, b)``, :func:`rawlab.deploy.runtime.load_denoiser`), or
        None to leave ``single`` out.
    burst
        ``(runner, K)`` of :func:`rawlab.deploy.burst.burst_model`, or None to leave ``model`` out.
    merge
        Include ``ref`` and ``merge`` (the classical methods).
    robustness
        The merge's ``c`` (:data:`rawlab.burst.merge.ROBUSTNESS` when None).

    Returns
    -------
    ``images(n)``: ``{method: float32 (4, h, w)}`` from the first ``n`` frames (the reference and the ``n - 1``
    after it in the burst's order). ``single`` runs once, on the reference.
    """
    from ..burst.merge import ROBUSTNESS, merge_burst
    from ..deploy.burst import denoise_burst

    c = ROBUSTNESS if robustness is None else robustness
    a4, b4 = (np.asarray(v, np.float32).reshape(4) for v in (a, b))
    order = [reference, *(k for k in range(len(planes)) if k != reference)]
    x = planes[order]
    one = None
    if single is not None:
        one = np.moveaxis(
            np.asarray(single.denoise(np.moveaxis(x[0], 0, -1), a4, b4, cfa=cfa), np.float32), -1, 0
        )

    def images(n: int) -> dict[str, np.ndarray]:
        out = {}
        if merge:
            out["ref"] = x[0]
        if one is not None:
            out["single"] = one
        if merge:
            out["merge"] = merge_burst(x[:n], a4, b4, robustness=c, cfa=cfa).planes
        if burst is not None:
            out["model"] = denoise_burst(burst[0], burst[1], x[:n], cfa, a4, b4)
        return out

    return images


def squared_errors(
    images: Callable[[int], dict[str, np.ndarray]],
    truth: np.ndarray,
    region: np.ndarray | None,
    counts: Sequence[int],
) -> dict[tuple[int, str, str], tuple[float, int]]:
    """Squared errors ``{(n, method, "static"|"moving"): (sum, count)}`` of ``images(n)`` for each count.

    ``truth`` is the reference's clean planes ``(4, h, w)`` (clipped to ``[0, 1]`` here); ``region`` a bool
    ``(4, h, w)`` of the sites a moving object covers, or None (no moving object: everything is static and
    there is no ``moving`` key).
    """
    truth = np.clip(np.asarray(truth, np.float64), 0.0, 1.0)
    static = np.ones(truth.shape, bool) if region is None else ~region
    out = {}
    for n in counts:
        for name, img in images(n).items():
            err = (np.asarray(img, np.float64) - truth) ** 2
            out[(n, name, "static")] = (float(err[static].sum()), int(static.sum()))
            if region is not None:
                out[(n, name, "moving")] = (float(err[region].sum()), int(region.sum()))
    return out


def merge_task(case: BurstCase, counts: Sequence[int]) -> dict:
    """Squared errors of ``ref`` and ``merge`` on one burst (runs on a Dask worker)."""
    planes, cfa, truth, region = load_case(case)
    return squared_errors(burst_estimates(planes, case.a, case.b, cfa), truth, region, counts)


def _model_errors(case: BurstCase, counts, single, burst) -> dict:
    planes, cfa, truth, region = load_case(case)
    images = burst_estimates(planes, case.a, case.b, cfa, single=single, burst=burst, merge=False)
    return squared_errors(images, truth, region, counts)


# -- the whole evaluation -----------------------------------------------------------------------------------


@dataclasses.dataclass
class BurstEvalResult:
    """Scores per sensor, ISO, frame count and method (``rows``, the JSON contract) and per burst."""

    rows: list[dict[str, Any]]
    bursts: list[dict[str, Any]]
    methods: list[str]
    counts: list[int]
    source: str
    models: dict[str, Any]
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The ``rawlab.eval-bursts/1`` document (docs/architecture.md, "File formats")."""
        from .._version import __version__

        return {
            "schema": SCHEMA,
            "source": self.source,
            "created_by": f"rawlab {__version__}",
            "models": self.models,
            "methods": self.methods,
            "frames": self.counts,
            "regions": list(REGIONS),
            "noise": "truth",
            "psnr": "dB over the packed planes against the reference's clean planes clipped to [0, 1], peak 1, "
            "from the mean squared error pooled over the bursts",
            "notes": self.notes,
            "rows": self.rows,
            "bursts": self.bursts,
        }


def _counts(counts: Sequence[int] | str | None) -> list[int]:
    if counts is None:
        return list(COUNTS)
    if isinstance(counts, str):
        try:
            counts = [int(v) for v in counts.split(",") if v.strip()]
        except ValueError:
            raise RawlabError(
                f"--frames must be whole numbers separated by commas, e.g. 2,4,8; got {counts!r}"
            ) from None
    out = sorted(set(int(c) for c in counts))
    if not out or out[0] < 1:
        raise RawlabError(f"--frames must be frame counts of at least 1, e.g. 2,4,8; got {counts!r}")
    return out


def evaluate_bursts(
    source: str | os.PathLike[str],
    *,
    single=None,
    burst_model=None,
    counts: Sequence[int] | str | None = None,
    guard: bool = True,
    options: RunOptions | None = None,
    ensemble: int = DEFAULT_ENSEMBLE,
    fuse: bool = True,
    fuse_single: bool | None = None,
) -> BurstEvalResult:
    """Score the reference, the classical merge and the models on the bursts of ``source`` (module docstring).

    Parameters
    ----------
    source
        A ``rawlab synth OUT --burst N`` folder (or its ``truth.json``), or a store built from one with
        ``catalog build --recipe bursts`` (its bursts' frames as QA kept them; :func:`find_bursts`).
    single
        The single-frame model: ``"builtin"``, a model directory or an exported file, or a loaded denoiser;
        None leaves the ``single`` column out.
    burst_model
        The burst model: a ``rawlab burst train`` workdir or its export, or ``(runner, K)``; None leaves the
        ``model`` column out.
    counts
        Frame counts (default 2, 4, 8); counts above a burst's length are left out with a note.
    guard
        Run the single-frame model with its SURE guard (default), as ``rawlab denoise`` does.
    fuse
        With the guard, fuse the single-frame model with VST+NL-means by SURE (default), and the burst model
        with VST+NL-means of its merge, as ``rawlab denoise`` (``--burst``) does.
    fuse_single
        With the guard and ``fuse`` (default), the burst model loaded here also fuses its output with the
        built-in single-frame model's on the reference, as ``rawlab denoise --burst`` does
        (:func:`rawlab.deploy.burst.denoise_burst`), where JAX can run the built-in model (None, the default;
        True: required); False: as ``--no-fuse-single`` runs it.
    ensemble
        The rotations of each frame (burst) that models loaded here average (:mod:`rawlab.deploy.ensemble`), as
        ``rawlab denoise`` (``--burst``) does.
    options
        Where the merges run and how progress is reported (:class:`rawlab.cluster.RunOptions`).

    Raises
    ------
    RawlabError
        No truth in ``source``, a missing model or one of the wrong kind, no usable frame count, or every
        burst unreadable.
    """
    from ..cluster import run_tasks
    from .scoring import load_denoiser

    t0 = time.perf_counter()
    opts = options or RunOptions()
    want = _counts(counts)
    cases, notes = find_bursts(source, opts.storage_options)
    longest = max(c.n_frames for c in cases)
    chosen = [n for n in want if n <= longest]
    if not chosen:
        raise RawlabError(
            f"the bursts of {os.fspath(source)} have at most {longest} frames; ask for --frames up to {longest}"
        )
    short = [c.folder for c in cases if c.n_frames < chosen[-1]]
    if short:
        notes.append(
            f"{len(short)} burst(s) with fewer than {chosen[-1]} usable frames are scored only at the counts they "
            f"have ({', '.join(short[:4])}{' ...' if len(short) > 4 else ''})"
        )
    if len(chosen) < len(want):
        left = ", ".join(str(n) for n in want if n > longest)
        notes.append(f"frame counts {left} left out: the bursts have at most {longest} frames")
    models: dict[str, Any] = {"single": None, "burst": None, "burst_frames": None, "burst_fuse_single": False}
    if isinstance(single, (str, os.PathLike)):
        models["single"] = os.fspath(single)
        single = load_denoiser(single, guard=guard, ensemble=ensemble, fuse=fuse)
    elif single is not None:
        models["single"] = getattr(single, "name", None) or type(single).__name__
    if isinstance(burst_model, (str, os.PathLike)):
        models["burst"] = os.fspath(burst_model)
        burst_model = _load_burst_model(burst_model, ensemble, fuse=guard and fuse, fuse_single=fuse_single)
    if burst_model is not None:
        models["burst_frames"] = int(burst_model[1])
        models["burst_fuse_single"] = getattr(burst_model[0], "single", None) is not None
        models["burst"] = models["burst"] or type(burst_model[0]).__name__
    methods = [m for m in METHODS if m in ("ref", "merge") or (m == "single" and single is not None)
               or (m == "model" and burst_model is not None)]  # fmt: skip
    has_models = single is not None or burst_model is not None

    opts.total(len(cases) * (1 + has_models))
    args = [(c, [n for n in chosen if n <= c.n_frames]) for c in cases]
    with opts.session() as (client, _info), ThreadPoolExecutor(1, thread_name_prefix="rawlab-eval") as pool:
        merged = pool.submit(run_tasks, client, merge_task, args, name="eval-bursts", progress=opts.progress)
        here: list[dict | str] = []
        for case, n in args:
            if not has_models:
                break
            try:
                here.append(_model_errors(case, n, single, burst_model))
            except RawlabError as e:  # one bad burst is recorded, the others go on
                here.append(str(e))
            opts.advance(1)
        outcomes = merged.result()

    per_burst, failed = [], []
    for i, (case, o) in enumerate(zip(cases, outcomes, strict=True)):
        if o.error is not None and not o.killed and not isinstance(o.error, RawlabError):
            raise o.error  # a bug, not a bad burst: keep its traceback
        errs = dict(o.value) if o.ok else None
        why = ("its worker died" if o.killed else str(o.error)) if not o.ok else None
        if errs is not None and has_models:
            if isinstance(here[i], str):
                errs, why = None, here[i]
            else:
                errs.update(here[i])
        if errs is None:
            failed.append({"folder": case.folder, "error": why})
            continue
        per_burst.append((case, errs))
    if failed:
        notes.append(
            f"{len(failed)} burst(s) not scored: " + "; ".join(f"{f['folder']}: {f['error']}" for f in failed)
        )
    if not per_burst:
        raise RawlabError(f"no burst of {os.fspath(source)} could be scored: {failed[0]['error']}")
    rows, bursts = _aggregate(per_burst, methods)
    models_out = {k: v for k, v in models.items()}
    result = BurstEvalResult(rows, bursts, methods, chosen, os.fspath(source), models_out, notes)
    result.seconds = time.perf_counter() - t0
    return result


def _load_burst_model(
    path: str | os.PathLike[str],
    ensemble: int = DEFAULT_ENSEMBLE,
    *,
    fuse: bool = True,
    fuse_single: bool | None = None,
) -> tuple[Any, int]:
    """``(runner, K)`` of a burst model as ``rawlab denoise --burst`` runs it (``fuse``: with VST+NL-means of
    its merge, ``fuse_single`` too: with the single-frame model on the reference, :mod:`rawlab.deploy.burst`),
    or a message naming ``--burst-model``."""
    from ..deploy.burst import NotABurstModel, burst_model
    from ..learn.modelio import resolve_model

    if not resolve_model(path).exists():
        raise RawlabError(
            f"--burst-model {os.fspath(path)} does not exist; pass the --workdir of `rawlab burst train` or its "
            "export"
        )
    try:
        return burst_model(path, ensemble=ensemble, fuse=fuse, fuse_single=fuse_single)
    except NotABurstModel:
        raise RawlabError(
            f"--burst-model {os.fspath(path)} is a single-frame denoiser, not a burst model; pass it as --model "
            "(column single) and a `rawlab burst train` workdir as --burst-model"
        ) from None


def _psnr_or_none(sse_count: tuple[float, int] | None) -> float | None:
    if sse_count is None or sse_count[1] == 0:
        return None
    return psnr_db(sse_count[0] / sse_count[1])


def _aggregate(per_burst, methods) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows per sensor, ISO, frame count and method (PSNR of the pooled MSE), and per burst."""
    pooled: dict[tuple, list[float]] = {}
    scenes: dict[tuple, set[str]] = {}
    bursts = []
    for case, errs in per_burst:
        psnr: dict[str, dict[str, dict[str, float | None]]] = {}
        for (n, m, region), (s, c) in errs.items():
            key = (case.sensor, case.iso, n, m, region)
            acc = pooled.setdefault(key, [0.0, 0])
            acc[0] += s
            acc[1] += c
            scenes.setdefault((case.sensor, case.iso, n, m), set()).add(case.scene)
            psnr.setdefault(str(n), {}).setdefault(m, {})[region] = _psnr_or_none((s, c))
        bursts.append({
            "sensor": case.sensor, "scene": case.scene, "iso": case.iso, "folder": case.folder,
            "n_frames": case.n_frames, "moving_object": case.mask is not None, "psnr": psnr,
        })  # fmt: skip
    rows = []
    for sensor, iso, n, m in sorted(
        {k[:4] for k in pooled}, key=lambda k: (k[0], k[1], k[2], methods.index(k[3]))
    ):
        st, mv = pooled.get((sensor, iso, n, m, "static")), pooled.get((sensor, iso, n, m, "moving"))
        rows.append({
            "sensor": sensor, "iso": iso, "frames": n, "method": m,
            "psnr_static": _psnr_or_none(st), "psnr_moving": _psnr_or_none(mv),
            "static_sites": st[1] if st else 0, "moving_sites": mv[1] if mv else 0,
            "n_bursts": len(scenes[(sensor, iso, n, m)]), "scenes": sorted(scenes[(sensor, iso, n, m)]),
        })  # fmt: skip
    return rows, bursts

"""``rawlab eval`` on bursts: the reference frame, the single-frame model, the classical merge and the burst
model, for 2, 4 and 8 frames, per sensor and ISO, on the static area and on the region a moving object covers.

What is scored: the bursts of a ``rawlab synth --burst`` folder (``OUT/truth.json``, ``bursts[]``), whose truth
gives each burst's frames, the reference's noise-free mosaic (``clean_reference``) and the moving object's
mask per frame (``object_mask``). A burst store (``catalog build --recipe bursts``) keeps no link to that truth
(its catalog's ``truth_path`` is the pair dataset's colour truth, found through ``scenes[]``), so the source is
the synth folder; the frames are read as ``rawlab burst merge`` reads them (:func:`rawlab.burst.read_burst`).

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
import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..cluster import RunOptions
from ..errors import RawlabError

__all__ = [
    "COUNTS",
    "METHODS",
    "SCHEMA",
    "BurstCase",
    "BurstEvalResult",
    "burst_estimates",
    "evaluate_bursts",
    "find_bursts",
    "format_burst_table",
    "is_burst_source",
    "psnr_db",
    "squared_errors",
    "write_burst_outputs",
]

SCHEMA = "rawlab.eval-bursts/1"
METHODS = ("ref", "single", "merge", "model")
REGIONS = ("static", "moving")
COUNTS = (2, 4, 8)
_TRUTH = "truth.json"
_STYLE = {"ref": "tab:gray", "single": "tab:blue", "merge": "tab:green", "model": "black"}
_MARKERS = ("o", "s", "^", "D", "v", "P")


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
        one = np.moveaxis(np.asarray(single.denoise(np.moveaxis(x[0], 0, -1), a4, b4), np.float32), -1, 0)

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


# -- bursts on disk -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BurstCase:
    """One burst of a synth folder with its truth: frame paths (the reference first), the clean reference
    (``.npy``, float32 ``(H, W)`` normalised mosaic), the object's mask (``.npy``, uint8 ``(N, H, W)``) or None,
    and the true noise law ``(a, b)`` at its ISO."""

    sensor: str
    scene: str
    iso: int
    folder: str
    paths: tuple[str, ...]
    clean: str
    mask: str | None
    a: tuple[float, ...]
    b: tuple[float, ...]

    @property
    def n_frames(self) -> int:
        return len(self.paths)


def _truth_file(source: str | os.PathLike[str]) -> Path:
    p = Path(source)
    return p if p.name == _TRUTH and p.is_file() else p / _TRUTH


def is_burst_source(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` is a ``rawlab synth --burst`` folder (or its ``truth.json``) listing bursts."""
    path = _truth_file(source)
    if not path.is_file():
        return False
    try:
        return bool(json.loads(path.read_text()).get("bursts"))
    except (OSError, ValueError, AttributeError):
        return False


def find_bursts(source: str | os.PathLike[str]) -> list[BurstCase]:
    """The bursts of a ``rawlab synth --burst`` folder, in sensor, ISO, scene order.

    Raises
    ------
    RawlabError
        ``source`` has no ``truth.json`` listing bursts, or a burst's frames or truth files are missing.
    """
    from ..noise.profile import load_profiles

    path = _truth_file(source)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise RawlabError(
            f"{os.fspath(source)} has no {_TRUTH}: burst evaluation needs the truth of a `rawlab synth OUT "
            "--burst N` folder (the clean reference and the moving object); pass that OUT"
        ) from None
    except (OSError, ValueError) as e:
        raise RawlabError(
            f"cannot read {path}: {e}; write it again with `rawlab synth OUT --burst N`"
        ) from None
    bursts = doc.get("bursts") if isinstance(doc, dict) else None
    if not bursts:
        raise RawlabError(
            f"{path} lists no bursts (a pair or calibration dataset?); burst evaluation needs a folder written "
            "by `rawlab synth OUT --burst N`"
        )
    profiles = load_profiles(path)
    root = path.parent
    cases = []
    for entry in bursts:
        folder = root / entry["folder"]
        paths = [folder / f for f in entry["frames"]]
        ref = int(entry.get("reference", 0))
        paths = [paths[ref], *(p for k, p in enumerate(paths) if k != ref)]
        clean = root / entry["clean_reference"]
        mask = root / entry["object_mask"] if entry.get("object_mask") else None
        missing = [p for p in (*paths, clean, *([mask] if mask else [])) if not p.is_file()]
        if missing:
            raise RawlabError(
                f"{missing[0]} is missing ({len(missing)} file(s) of burst {entry['folder']}); write the folder "
                "again with `rawlab synth`"
            )
        law = profiles.noise_at(entry["sensor"], entry["iso"], outside="none")
        if law is None:
            raise RawlabError(f"{path} has no noise law for {entry['sensor']} at ISO {entry['iso']}")
        case = BurstCase(
            entry["sensor"], entry["scene"], int(entry["iso"]), entry["folder"],
            tuple(map(os.fspath, paths)), os.fspath(clean), os.fspath(mask) if mask else None,
            tuple(map(float, law.a)), tuple(map(float, law.b)),
        )  # fmt: skip
        cases.append(case)
    cases.sort(key=lambda c: (c.sensor, c.iso, c.scene, c.folder))
    return cases


def load_case(case: BurstCase):
    """``(planes (N, 4, h, w) float32 normalised, cfa, truth (4, h, w), region (4, h, w) bool or None)``."""
    from ..bayer import pack
    from ..burst import read_burst

    frames = read_burst(case.paths)
    cfa = frames[0].info.cfa
    planes = np.stack([f.normalized() for f in frames]).astype(np.float32)
    truth = pack(np.load(case.clean), cfa)
    region = None
    if case.mask is not None:
        region = pack(np.load(case.mask).any(axis=0).astype(np.uint8), cfa).astype(bool)
    if truth.shape != planes.shape[1:]:
        raise RawlabError(
            f"{case.clean} is {truth.shape} packed but the frames of {case.folder} are {planes.shape[1:]}"
        )
    return planes, cfa, truth, region


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
) -> BurstEvalResult:
    """Score the reference, the classical merge and the models on the bursts of ``source`` (module docstring).

    Parameters
    ----------
    source
        A ``rawlab synth OUT --burst N`` folder (or its ``truth.json``).
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
    cases = find_bursts(source)
    longest = max(c.n_frames for c in cases)
    chosen = [n for n in want if n <= longest]
    notes = []
    if not chosen:
        raise RawlabError(
            f"the bursts of {os.fspath(source)} have at most {longest} frames; ask for --frames up to {longest}"
        )
    if len(chosen) < len(want):
        left = ", ".join(str(n) for n in want if n > longest)
        notes.append(f"frame counts {left} left out: the bursts have at most {longest} frames")
    models: dict[str, Any] = {"single": None, "burst": None, "burst_frames": None}
    if isinstance(single, (str, os.PathLike)):
        models["single"] = os.fspath(single)
        single = load_denoiser(single, guard=guard)
    elif single is not None:
        models["single"] = getattr(single, "name", None) or type(single).__name__
    if isinstance(burst_model, (str, os.PathLike)):
        models["burst"] = os.fspath(burst_model)
        burst_model = _load_burst_model(burst_model)
    if burst_model is not None:
        models["burst_frames"] = int(burst_model[1])
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


def _load_burst_model(path: str | os.PathLike[str]) -> tuple[Any, int]:
    """``(runner, K)`` of a burst model as ``rawlab denoise --burst`` runs it, or a message naming
    ``--burst-model``."""
    from ..deploy.runtime import load_denoiser as load_deployed
    from ..learn.bursttrain import burst_frames
    from ..learn.modelio import resolve_model

    if not resolve_model(path).exists():
        raise RawlabError(
            f"--burst-model {os.fspath(path)} does not exist; pass the --workdir of `rawlab burst train` or its "
            "export"
        )
    runner = load_deployed(path)
    k = burst_frames(runner.config)
    if k is None:
        raise RawlabError(
            f"--burst-model {os.fspath(path)} is a single-frame denoiser, not a burst model; pass it as --model "
            "(column single) and a `rawlab burst train` workdir as --burst-model"
        )
    return runner, k


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


# -- what the command writes and prints ----------------------------------------------------------------------


def _by_key(rows) -> dict[tuple[str, int, int], dict[str, dict[str, Any]]]:
    t: dict[tuple[str, int, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        t.setdefault((r["sensor"], r["iso"], r["frames"]), {})[r["method"]] = r
    return t


def _cell(v: float | None, width: int = 7) -> str:
    return f"{v:>{width}.2f}" if v is not None else f"{'-':>{width}}"


def format_burst_table(result: BurstEvalResult) -> list[str]:
    """One line per sensor, ISO and frame count: PSNR (dB) per method on the static area, then on the moving
    region, and the merge's gain over the reference (static)."""
    ms = result.methods
    width = max([len("sensor"), *(len(r["sensor"]) for r in result.rows)])
    head = (
        f"{'sensor':<{width}} {'ISO':>6} {'N':>2} | static: " + " ".join(f"{m:>7}" for m in ms)
        + f" {'merge-ref':>9} | moving: " + " ".join(f"{m:>7}" for m in ms)
    )  # fmt: skip
    lines = [head, "-" * len(head)]
    for (sensor, iso, n), by_m in _by_key(result.rows).items():
        st = " ".join(_cell(by_m[m]["psnr_static"] if m in by_m else None) for m in ms)
        mv = " ".join(_cell(by_m[m]["psnr_moving"] if m in by_m else None) for m in ms)
        gain = by_m["merge"]["psnr_static"] - by_m["ref"]["psnr_static"] if "merge" in by_m else None
        lines.append(f"{sensor:<{width}} {iso:>6} {n:>2} | static: {st} {_cell(gain, 9)} | moving: {mv}")
    lines.append(
        "PSNR in dB over the packed planes vs the reference's clean planes (peak 1 = white), pooled over the "
        "bursts; moving: the sites the moving object covers in any frame ('-': no moving object)"
    )
    lines += [f"note: {n}" for n in result.notes]
    return lines


def summary_line(result: BurstEvalResult, written: Sequence[Path] = ()) -> str:
    """``eval bursts: ...``: what was scored, and at the most frames the mean static gain of each method over
    the reference."""
    n = max(result.counts)
    at = [r for r in result.rows if r["frames"] == n]
    ref = {(r["sensor"], r["iso"]): r["psnr_static"] for r in at if r["method"] == "ref"}
    parts = []
    for m in result.methods:
        if m == "ref":
            continue
        gains = [r["psnr_static"] - ref[(r["sensor"], r["iso"])] for r in at if r["method"] == m]
        if gains:
            parts.append(f"{m} {np.mean(gains):+.1f} dB")
    keys = {(r["sensor"], r["iso"]) for r in result.rows}
    where = f"; wrote {', '.join(map(str, written))}" if written else ""
    return (
        f"eval bursts: {len(result.bursts)} bursts, {len(keys)} sensor-ISOs, frames {','.join(map(str, result.counts))}; "
        f"static gain over the reference at {n} frames: {', '.join(parts)}{where} ({result.seconds:.1f} s)"
    )


def plot_burst_psnr(result: BurstEvalResult, path: str | os.PathLike[str]) -> Path:
    """PSNR against ISO: one row of panels per sensor (static area, moving region), one line per method and
    frame count (``ref`` and ``single`` once: they do not depend on the count)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sensors = sorted({r["sensor"] for r in result.rows})
    fig = Figure(figsize=(10.0, 3.8 * len(sensors)), layout="constrained")
    axes = fig.subplots(len(sensors), 2, squeeze=False)
    for row, sensor in zip(axes, sensors, strict=True):
        mine = [r for r in result.rows if r["sensor"] == sensor]
        xs = sorted({r["iso"] for r in mine})
        for ax, region in zip(row, REGIONS, strict=True):
            for m in result.methods:
                counts = result.counts if m in ("merge", "model") else result.counts[:1]
                for k, n in enumerate(counts):
                    pts = [
                        (r["iso"], r[f"psnr_{region}"]) for r in mine if r["method"] == m and r["frames"] == n
                    ]
                    pts = [(x, y) for x, y in pts if y is not None]
                    if not pts:
                        continue
                    label = f"{m} N={n}" if m in ("merge", "model") else m
                    ax.plot(*zip(*sorted(pts), strict=True), color=_STYLE[m], marker=_MARKERS[k % len(_MARKERS)],
                            alpha=0.4 + 0.6 * (k + 1) / len(counts), label=label)  # fmt: skip
            ax.set_xscale("log")
            ax.set_xticks(xs, [f"{i:g}" for i in xs], minor=False)
            ax.minorticks_off()
            ax.set_xlabel("ISO")
            ax.set_ylabel("PSNR (dB, packed raw, peak 1)")
            ax.set_title(f"{sensor}: {region} {'area' if region == 'static' else 'region'}")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize="x-small")
    fig.suptitle(f"rawlab eval: bursts of {Path(result.source).name}", fontsize="medium")
    FigureCanvasAgg(fig)
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def write_burst_outputs(result: BurstEvalResult, out: str | os.PathLike[str], *, plot: bool = True):
    """Write ``out`` (JSON, ``rawlab.eval-bursts/1``) and ``<out stem>.png`` beside it; return
    :class:`rawlab.evaluation.report.EvalOutputs` (paths, table lines, summary)."""
    from .report import EvalOutputs, write_json

    out = write_json(result.to_dict(), out)
    written = [out]
    png = None
    if plot:
        png = plot_burst_psnr(
            result, out.with_suffix(".png") if out.suffix != ".png" else out.with_suffix(".plot.png")
        )
        written.append(png)
    return EvalOutputs(out, png, format_burst_table(result), summary_line(result, written))

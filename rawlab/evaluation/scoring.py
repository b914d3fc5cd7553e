"""``rawlab eval``: score a denoiser and the classical baselines on held-out noisy/clean pairs of a store.

What is scored: the noisy frames of the evaluation split (:func:`rawlab.learn.split.split_pairs`, whole scenes
held out of training) against their clean references, exposure-matched by the catalog's QA gain and aligned
by its measured shift as every consumer of pairs does (:mod:`rawlab.catalog.pairs`). Scenes the model records
as trained on (``config["split"]["train_scenes"]``) are never scored. Metrics are PSNR and SSIM on packed,
normalised planes with data range 1 (:mod:`rawlab.evaluation.metrics`), averaged over the frames of each sensor
and ISO.

Every method gets the same noise parameters ``(a, b)`` per sensor and ISO, from the first source that has
them: a ``--profile`` file, the model's own noise law, or a fit of the store (:func:`rawlab.noise.fit_store`),
each read by the one rule for noise parameters (:meth:`rawlab.noise.profile.NoiseProfileSet.noise_at`).

Work split: the classical baselines (CPU-heavy NumPy/scikit-image) run as one Dask task per frame; the model
runs in this process (JAX uses its own threads), at the same time (:func:`rawlab.cluster.run_tasks` waits in a
thread).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import numpy as np
import pandas as pd

from ..catalog.pairs import Pair
from ..cluster import RunOptions
from ..deploy.classical import BASELINES, available_baselines, bm3d_available, denoise_baseline
from ..deploy.ensemble import DEFAULT_ENSEMBLE, check_ensemble
from ..errors import RawlabError

__all__ = [
    "METHODS",
    "EvalResult",
    "evaluate_store",
    "load_denoiser",
    "load_pair",
    "noise_parameters",
    "resolve_methods",
    "select_pairs",
]

METHODS = ("model", *BASELINES)
_CLASSICAL = tuple(m for m in BASELINES if m != "identity")
_MAX_WHOLE = 1024 * 1024  # packed pixels the model denoises in one call; larger frames go tile by tile


@dataclasses.dataclass
class EvalResult:
    """Scores per sensor, ISO and method (``rows``, the JSON contract) and per frame (``frames``)."""

    rows: list[dict[str, Any]]
    frames: list[dict[str, Any]]
    methods: list[str]
    model: str | None
    store: str
    noise: list[dict[str, Any]]
    options: dict[str, Any]
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The ``rawlab.eval/1`` document (docs/architecture.md, "File formats")."""
        from .._version import __version__

        return {
            "schema": "rawlab.eval/1",
            "model": self.model,
            "store": self.store,
            "created_by": f"rawlab {__version__}",
            "methods": self.methods,
            "options": self.options,
            "noise": self.noise,
            "notes": self.notes,
            "rows": self.rows,
            "frames": self.frames,
        }


# -- inputs --------------------------------------------------------------------------------------------------


def resolve_methods(methods: Sequence[str] | str | None, *, has_model: bool) -> list[str]:
    """Validate ``--methods`` (names or one comma-separated string); None means every available method."""
    if methods is None or methods == "all" or methods == ["all"]:
        chosen = (["model"] if has_model else []) + available_baselines()
    else:
        if isinstance(methods, str):
            methods = [m for m in methods.split(",") if m.strip()]
        chosen = [m.strip() for m in methods]
        unknown = [m for m in chosen if m not in METHODS]
        if unknown:
            raise RawlabError(
                f"unknown method(s) {', '.join(map(repr, unknown))}; choose from {', '.join(METHODS)}"
            )
        if "model" in chosen and not has_model:
            raise RawlabError("method 'model' needs --model DIR|FILE")
        if "vst-bm3d" in chosen and not bm3d_available():
            raise RawlabError(
                "vst-bm3d needs the optional `bm3d` package (`pip install bm3d`; its licence allows "
                "non-commercial use only); leave vst-bm3d out of --methods"
            )
        if has_model and "model" not in chosen:
            chosen = ["model", *chosen]
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(dict.fromkeys(chosen), key=order.__getitem__)


def load_denoiser(
    path: str | os.PathLike[str],
    *,
    guard: bool = True,
    ensemble: int = DEFAULT_ENSEMBLE,
    fuse: bool | str = True,
):
    """``"builtin"``, a model directory or a ``.tflite``/``.onnx`` file, loaded as ``rawlab denoise`` runs it
    (:func:`rawlab.deploy.runtime.load_denoiser`: tile by tile, with the SURE guard unless ``guard=False``,
    ``ensemble`` rotations of each frame averaged, and fused with VST+NL-means by SURE unless ``fuse=False``),
    so that the scores are those of what users get."""
    from ..deploy.runtime import load_denoiser as load_deployed
    from ..learn.modelio import resolve_model

    p = resolve_model(path)
    if not p.exists():
        raise RawlabError(
            f"--model {os.fspath(path)!r} does not exist; pass the --workdir of `rawlab train`, an exported "
            "model, or builtin"
        )
    denoiser = load_deployed(p)
    denoiser.guard, denoiser.ensemble, denoiser.fuse = guard, check_ensemble(ensemble), fuse
    return denoiser


def _model_name(model, path) -> str | None:
    if model is None:
        return None
    if path is not None:
        return os.fspath(path)
    return getattr(model, "name", None) or type(model).__name__


def select_pairs(
    cat: pd.DataFrame,
    store: str,
    *,
    scenes: str = "heldout",
    trained: set[tuple[str, str]] | None = None,
    max_frames: int | None = None,
) -> tuple[list[Pair], list[str]]:
    """The pairs to score (:class:`rawlab.catalog.pairs.Pair`, in sensor, ISO, scene, path order) and notes.

    Raises
    ------
    RawlabError
        If nothing is left to score; the message says why and what to do.
    """
    from ..catalog.pairs import pairs_from_catalog
    from ..learn.split import split_pairs

    notes: list[str] = []
    usable = cat[(cat["role"] == "noisy") & (cat["status"] == "ok") & cat["frame_id"].notna()]
    if usable.empty:
        raise RawlabError(
            f"{store} has no usable noisy/clean pairs (role 'noisy', status 'ok'); `rawlab catalog show "
            f"{store}` lists what it holds and why pairs were excluded"
        )
    if scenes == "heldout":
        _, rows = split_pairs(cat)
        rows = rows[rows["frame_id"].notna()]
        if rows.empty:
            one = sorted(s for s, g in usable.groupby("sensor") if g["scene"].nunique() < 2)
            raise RawlabError(
                f"{store} has no held-out pairs: the evaluation split holds out a quarter of the scenes of each "
                f"sensor that has at least two scenes with pairs, and {', '.join(map(repr, one))} "
                f"{'has' if len(one) == 1 else 'have'} only one. Add scenes (e.g. `rawlab synth OUT --scenes 4`), "
                f"or pass --scenes all to score every pair (only for a model not trained on this store)"
            )
    elif scenes == "all":
        rows = usable
    else:
        raise RawlabError(f"--scenes must be 'heldout' or 'all', not {scenes!r}")
    if trained:
        keys = list(zip(rows["sensor"], rows["scene"], strict=True))
        seen = [k in trained for k in keys]
        if any(seen):
            names = sorted({f"{s}/{c}" for (s, c), v in zip(keys, seen, strict=True) if v})
            notes.append(f"left out {sum(seen)} frames of scenes the model trained on: {', '.join(names)}")
            rows = rows[~np.array(seen)]
        if rows.empty:
            raise RawlabError(
                f"every candidate scene in {store} was used to train the model; score it on scenes it has "
                f"not seen (a held-out split of its training store, or another store)"
            )
    elif trained is None and scenes == "all":
        notes.append(
            "the model does not record its training scenes: scores on scenes it trained on are optimistic"
        )
    pairs, _ = pairs_from_catalog(cat, rows)  # frames without a usable reference or ISO are not scorable
    pairs.sort(key=lambda p: (p.sensor, p.iso, p.scene, p.path))
    if max_frames is not None:
        count: dict[tuple[str, float], int] = {}
        kept = []
        for p in pairs:
            k = (p.sensor, p.iso)
            if count.get(k, 0) < max_frames:
                kept.append(p)
                count[k] = count.get(k, 0) + 1
        pairs = kept
    if not pairs:
        raise RawlabError(
            f"no scorable pairs in {store}: every candidate's clean reference is missing or failed"
        )
    return pairs, notes


def noise_parameters(
    keys: Sequence[tuple[str, float]],
    *,
    profile=None,
    model=None,
    fit: Callable[[list[str]], Any] | None = None,
) -> dict[tuple[str, float], dict[str, Any]]:
    """``(a, b)`` per ``(sensor, iso)`` and where they came from: ``profile``, ``model`` or ``fit``.

    Each source gives them by rawlab's one rule (:meth:`rawlab.noise.profile.SensorProfile.noise_at`: the
    measured ISO, else the law, extrapolated outside the profiled range); the first source that knows the
    sensor wins.
    """
    from ..noise.profile import usable

    def from_profile(profiles):
        return lambda s, i: profiles.noise_at(s, i, outside="law")

    out: dict[tuple[str, float], dict[str, Any]] = {}
    for sensor, iso in keys:
        for source, get in (
            ("profile", from_profile(profile) if profile is not None else None),
            ("model", getattr(model, "noise_params", None)),
        ):
            ab = get(sensor, iso) if get is not None else None
            if ab is not None and usable(*ab):
                a, b = ab
                out[(sensor, iso)] = {"a": np.asarray(a, float), "b": np.asarray(b, float), "source": source}
                break
    missing = sorted({s for s, i in keys if (s, i) not in out})
    if missing and fit is not None:
        fitted = from_profile(fit(missing))
        for sensor, iso in keys:
            if (sensor, iso) in out:
                continue
            ab = fitted(sensor, iso)
            if ab is not None:
                out[(sensor, iso)] = {"a": ab.a, "b": ab.b, "source": "fit"}
    lost = [f"{s} ISO {i:g}" for s, i in keys if (s, i) not in out]
    if lost:
        raise RawlabError(
            f"no noise parameters for {', '.join(lost)}; pass --profile with a `rawlab noise-fit` result that "
            f"covers them"
        )
    return out


# -- per frame -----------------------------------------------------------------------------------------------


def load_pair(store_url: str, storage_options: dict | None, pair: Pair, crop: int | None):
    """``(noisy, clean)`` packed normalised planes ``(h, w, 4)`` float32: aligned, exposure-matched
    (:func:`rawlab.catalog.pairs.read_matched`), the central ``crop x crop`` when ``crop`` is given."""
    from ..catalog.pairs import read_matched
    from ..catalog.store import FrameStore

    y, c = read_matched(FrameStore(store_url, storage_options), pair, crop=crop)
    return np.ascontiguousarray(np.moveaxis(y, 0, -1)), np.ascontiguousarray(np.moveaxis(c, 0, -1))


def _score(estimate, clean, seconds: float, mp: float) -> dict[str, float]:
    from .metrics import psnr, ssim

    return {"psnr": psnr(estimate, clean), "ssim": ssim(estimate, clean), "s_per_mp": seconds / mp}


def baseline_task(store_url, storage_options, pair: Pair, a, b, lower, methods, crop) -> dict[str, Any]:
    """Scores of the classical ``methods`` on one pair with noise ``(a, b)`` (runs on a Dask worker)."""
    noisy, clean = load_pair(store_url, storage_options, pair, crop)
    mp = noisy.size / 1e6  # mosaic megapixels: 4 mosaic pixels per packed pixel
    out = {}
    for m in methods:
        t = time.perf_counter()
        est = denoise_baseline(m, noisy, a, b, lower)
        out[m] = _score(est, clean, time.perf_counter() - t, mp)
    return out


def _denoise(model, x: np.ndarray, a, b, cfa: str, tile: int = 512, overlap: int = 32) -> np.ndarray:
    """The model on one frame ``(h, w, 4)`` of a ``cfa`` mosaic; frames over :data:`_MAX_WHOLE` packed pixels go
    tile by tile."""
    h, w = x.shape[:2]
    if hasattr(model, "tile"):  # a deployed denoiser tiles by itself, and runs its self-ensemble
        return np.asarray(model.denoise(x, a, b, cfa=cfa), np.float32)
    if h * w <= _MAX_WHOLE:
        return np.asarray(model.denoise(x, a, b), np.float32)
    out = np.empty(x.shape, np.float32)
    step = tile - 2 * overlap
    for y0 in range(0, h, step):
        for x0 in range(0, w, step):
            ya, xa = max(0, y0 - overlap), max(0, x0 - overlap)
            yb, xb = min(h, y0 + step + overlap), min(w, x0 + step + overlap)
            y = np.asarray(model.denoise(x[ya:yb, xa:xb], a, b), np.float32)
            ye, xe = min(h, y0 + step), min(w, x0 + step)
            out[y0:ye, x0:xe] = y[y0 - ya : ye - ya, x0 - xa : xe - xa]
    return out


# -- the whole evaluation ------------------------------------------------------------------------------------


def evaluate_store(
    store: str,
    model=None,
    *,
    methods: Sequence[str] | str | None = None,
    profile=None,
    scenes: str = "heldout",
    max_frames: int | None = None,
    crop: int | None = None,
    options: RunOptions | None = None,
    guard: bool = True,
    ensemble: int = DEFAULT_ENSEMBLE,
    fuse: bool | str = True,
) -> EvalResult:
    """Score ``model`` and the baselines on the held-out pairs of ``store``, per sensor and ISO.

    Parameters
    ----------
    model
        A model directory or ``.tflite`` file (path), an object with ``denoise(x, a, b)`` (a
        :class:`~rawlab.learn.modelio.TrainedModel`), or None to score the baselines only.
    methods
        Names from :data:`METHODS`; None scores every available one (``vst-bm3d`` only with bm3d installed).
    profile
        A noise profile (path or :class:`~rawlab.noise.NoiseProfileSet`) that overrides the model's noise law.
    scenes
        ``"heldout"`` (the evaluation split, default) or ``"all"`` (every pair; scenes the model records as
        trained on are left out either way).
    max_frames
        At most this many frames per sensor and ISO.
    crop
        Score the central ``crop x crop`` packed pixels of each frame (bounds the cost on large frames).
    options
        Where the baselines (and a noise fit) run and how progress is reported
        (:class:`rawlab.cluster.RunOptions`); a cluster is started only when one is needed.
    guard
        For a ``model`` given as a path: run it with the SURE guard (:mod:`rawlab.deploy.guard`), as
        ``rawlab denoise`` does (default), or the network alone.
    ensemble
        For a ``model`` given as a path: the rotations of each frame it averages (:mod:`rawlab.deploy.ensemble`),
        as ``rawlab denoise`` does.
    fuse
        For a ``model`` given as a path, with the guard: fuse its estimate with VST+NL-means by SURE
        (:func:`rawlab.deploy.guard.sure_fuse`), as ``rawlab denoise`` does (default); ``"bm3d"``: with
        VST+BM3D too (``rawlab denoise --fuse-bm3d``).

    Raises
    ------
    RawlabError
        A missing or unreadable store, model or profile; nothing to score; unknown methods.
    """
    from ..catalog import open_catalog
    from ..noise.profile import NoiseProfileSet, load_profiles

    t0 = time.perf_counter()
    opts = options or RunOptions()
    model_path = None
    if isinstance(model, (str, os.PathLike)):
        model_path, model = model, load_denoiser(model, guard=guard, ensemble=ensemble, fuse=fuse)
    if profile is not None and not isinstance(profile, NoiseProfileSet):
        profile = load_profiles(profile)
    if crop is not None and crop < 16:
        raise RawlabError(f"--crop must be at least 16 packed pixels, got {crop}")
    if max_frames is not None and max_frames < 1:
        raise RawlabError(f"--max-frames must be at least 1, got {max_frames}")
    chosen = resolve_methods(methods, has_model=model is not None)
    classical = [m for m in chosen if m in _CLASSICAL]
    cat = open_catalog(store, opts.storage_options)
    config = getattr(model, "config", None) or {}
    train_scenes = (config.get("split") or {}).get("train_scenes")
    trained = {(s, c) for s, c in train_scenes} if train_scenes is not None else None
    pairs, notes = select_pairs(cat, store, scenes=scenes, trained=trained, max_frames=max_frames)

    with ExitStack() as stack:
        clients: list = []

        def get_client():  # a cluster only when the baselines or a noise fit need one
            if not clients:
                clients.append(stack.enter_context(opts.session())[0])
            return clients[0]

        def fit(sensors: list[str]):
            from ..noise import fit_store

            opts.note(
                f"eval: fitting noise for {', '.join(sensors)} (no --profile and no model law for them)"
            )
            quiet = dataclasses.replace(opts, client=get_client(), progress=None, set_total=None, echo=None)
            fitted = [
                fit_store(store, sensor=s, bootstrap=0, options=quiet).profiles.sensors for s in sensors
            ]
            return NoiseProfileSet([sp for sps in fitted for sp in sps])

        noise = noise_parameters(
            sorted({(p.sensor, p.iso) for p in pairs}), profile=profile, model=model, fit=fit
        )
        opts.total(len(pairs) * (1 + bool(classical)))
        with ThreadPoolExecutor(1, thread_name_prefix="rawlab-eval") as pool:
            baselines = pool.submit(_run_baselines, get_client(), store, opts, pairs, noise, classical, crop) \
                if classical else None  # fmt: skip
            scores, shapes = _score_here(store, opts, pairs, noise, model, "identity" in chosen, crop)
            if baselines is not None:  # the workers ran the baselines meanwhile
                for s, got in zip(scores, baselines.result(), strict=True):
                    s.update(got)

    frames = []
    for p, s, shape in zip(pairs, scores, shapes, strict=True):
        frames.append({
            "path": p.path, "frame_id": p.frame_id, "sensor": p.sensor, "iso": _iso(p.iso),
            "scene": p.scene, "shape": shape,
            "psnr": {m: s[m]["psnr"] for m in chosen}, "ssim": {m: s[m]["ssim"] for m in chosen},
            "s_per_mp": {m: s[m]["s_per_mp"] for m in chosen},
        })  # fmt: skip
    rows = _aggregate(frames, chosen)
    noise_out = [
        {"sensor": s, "iso": _iso(i), "a": p["a"].tolist(), "b": p["b"].tolist(), "source": p["source"]}
        for (s, i), p in sorted(noise.items())
    ]
    options_out = {"scenes": scenes, "max_frames": max_frames, "crop": crop, "n_frames": len(pairs)}
    return EvalResult(rows, frames, chosen, _model_name(model, model_path), os.fspath(store), noise_out,
                      options_out, notes, time.perf_counter() - t0)  # fmt: skip


def _run_baselines(client, store: str, opts: RunOptions, pairs, noise, methods, crop) -> list[dict]:
    """The classical ``methods`` on every pair, one Dask task per pair; scores in the order of ``pairs``."""
    from ..cluster import run_tasks
    from ..noise.moments import clip_bounds

    args = []
    for p in pairs:
        n = noise[(p.sensor, p.iso)]
        lower, _, _ = clip_bounds(list(p.black_level), p.white_level)
        args.append((store, opts.storage_options, p, n["a"].tolist(), n["b"].tolist(), lower.tolist(), methods,
                     crop))  # fmt: skip
    out = run_tasks(client, baseline_task, args, name="eval-baselines", progress=opts.progress)
    for o in out:
        if not o.ok:
            raise (
                o.error
                if o.error is not None
                else RawlabError(f"a worker died scoring {pairs[o.index].path}")
            )
    return [o.value for o in out]


def _score_here(store: str, opts: RunOptions, pairs, noise, model, identity: bool, crop):
    """Identity and the model on every pair, in this process: ``(scores per pair, shape per pair)``."""
    scores: list[dict[str, dict[str, float]]] = []
    shapes = []
    for p in pairs:
        noisy, clean = load_pair(store, opts.storage_options, p, crop)
        mp = noisy.size / 1e6
        s = {}
        if identity:
            s["identity"] = _score(noisy, clean, 0.0, mp)
        if model is not None:
            n = noise[(p.sensor, p.iso)]
            t = time.perf_counter()
            est = _denoise(model, noisy, n["a"].astype(np.float32), n["b"].astype(np.float32), p.cfa)
            s["model"] = _score(est, clean, time.perf_counter() - t, mp)
        scores.append(s)
        shapes.append(list(noisy.shape))
        opts.advance(1)
    return scores, shapes


def _iso(iso: float) -> float | int:
    return int(iso) if float(iso).is_integer() else float(iso)


def _aggregate(frames: list[dict[str, Any]], methods: list[str]) -> list[dict[str, Any]]:
    """Rows of the JSON contract: per sensor, ISO and method, the mean over frames (and the spread)."""
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for f in frames:
        groups.setdefault((f["sensor"], f["iso"]), []).append(f)
    rows = []
    for (sensor, iso), fs in sorted(groups.items()):
        for m in methods:
            p = np.array([f["psnr"][m] for f in fs])
            rows.append({
                "sensor": sensor, "iso": _iso(iso), "method": m, "psnr": float(np.mean(p)),
                "ssim": float(np.mean([f["ssim"][m] for f in fs])), "n_frames": len(fs),
                "psnr_std": float(np.std(p)), "s_per_mp": float(np.median([f["s_per_mp"][m] for f in fs])),
                "scenes": sorted({f["scene"] for f in fs}),
            })  # fmt: skip
    return rows

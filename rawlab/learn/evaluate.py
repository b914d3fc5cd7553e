"""``rawlab eval``: score a denoiser and the classical baselines on held-out noisy/clean pairs of a store.

What is scored: the noisy frames of the evaluation split (:func:`rawlab.learn.split.split_pairs`, whole scenes
held out of training) against their clean references, exposure-matched by the catalog's QA gain and aligned
by its measured shift exactly as noise fitting does (:mod:`rawlab.noise.pipeline`). Scenes the model records
as trained on (``config["split"]["train_scenes"]``) are never scored. Metrics are PSNR and SSIM on packed,
normalised planes with data range 1 (:mod:`rawlab.learn.metrics`), averaged over the frames of each sensor
and ISO.

Every method gets the same noise parameters ``(a, b)`` per sensor and ISO, from the first source that has
them: a ``--profile`` file, the model's own noise law, or a fit of the store (:func:`rawlab.noise.fit_store`).

Work split: the classical baselines (CPU-heavy NumPy/scikit-image) run as one Dask task per frame; the model
runs in this process (JAX uses its own threads), at the same time.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import RawlabError
from .baselines import BASELINES, available_baselines, bm3d_available, denoise_baseline

__all__ = ["METHODS", "EvalResult", "evaluate_store", "load_denoiser", "resolve_methods"]

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
        """The ``rawlab.eval/1`` document (DESIGN.md, "Evaluation JSON")."""
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


def load_denoiser(path: str | os.PathLike[str]):
    """A model directory (:func:`rawlab.learn.load_model`) or a ``.tflite`` file (``rawlab.deploy``)."""
    p = Path(path)
    if not p.exists():
        raise RawlabError(f"--model {os.fspath(path)!r} does not exist; pass the --workdir of `rawlab train`")
    if p.is_file():
        if p.suffix.lower() != ".tflite":
            raise RawlabError(
                f"--model {os.fspath(path)!r} is a file but not a .tflite model; pass a model directory"
            )
        try:
            from ..deploy import load_denoiser as load_tflite
        except ImportError:
            try:
                from ..deploy.runtime import load_denoiser as load_tflite
            except ImportError:
                raise RawlabError(
                    f"scoring a .tflite file needs rawlab.deploy (issue #7), which this rawlab does not have; "
                    f"pass the model directory it was exported from instead of {os.fspath(path)!r}"
                ) from None
        return load_tflite(p)
    from .modelio import load_model

    return load_model(p)


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
) -> tuple[list[dict[str, Any]], list[str]]:
    """The frames to score as jobs (noisy frame, reference, gain, shift, levels) and notes for the user.

    Raises
    ------
    RawlabError
        If nothing is left to score; the message says why and what to do.
    """
    from ..noise.pipeline import _gain, _shift
    from .split import split_pairs

    notes: list[str] = []
    usable = cat[(cat["role"] == "noisy") & (cat["status"] == "ok") & cat["frame_id"].notna()]
    if usable.empty:
        raise RawlabError(
            f"{store} has no usable noisy/clean pairs (role 'noisy', status 'ok'); `rawlab catalog show "
            f"{store}` lists what it holds and why pairs were excluded"
        )
    if scenes == "heldout":
        _, pairs = split_pairs(cat)
        pairs = pairs[pairs["frame_id"].notna()]
        if pairs.empty:
            one = sorted(s for s, g in usable.groupby("sensor") if g["scene"].nunique() < 2)
            raise RawlabError(
                f"{store} has no held-out pairs: the evaluation split holds out a quarter of the scenes of each "
                f"sensor that has at least two scenes with pairs, and {', '.join(map(repr, one))} "
                f"{'has' if len(one) == 1 else 'have'} only one. Add scenes (e.g. `rawlab synth OUT --scenes 4`), "
                f"or pass --scenes all to score every pair (only for a model not trained on this store)"
            )
    elif scenes == "all":
        pairs = usable
    else:
        raise RawlabError(f"--scenes must be 'heldout' or 'all', not {scenes!r}")
    if trained:
        keys = list(zip(pairs["sensor"], pairs["scene"], strict=True))
        seen = [k in trained for k in keys]
        if any(seen):
            names = sorted({f"{s}/{c}" for (s, c), v in zip(keys, seen, strict=True) if v})
            notes.append(f"left out {sum(seen)} frames of scenes the model trained on: {', '.join(names)}")
            pairs = pairs[~np.array(seen)]
        if pairs.empty:
            raise RawlabError(
                f"every candidate scene in {store} was used to train the model; score it on scenes it has "
                f"not seen (a held-out split of its training store, or another store)"
            )
    elif trained is None and scenes == "all":
        notes.append(
            "the model does not record its training scenes: scores on scenes it trained on are optimistic"
        )
    by_path = cat.set_index("path")
    jobs = []
    for r in pairs.sort_values(["sensor", "iso", "scene", "path"]).to_dict("records"):
        if r.get("clean_path") not in by_path.index or not np.isfinite(r["iso"]):
            continue
        ref = by_path.loc[r["clean_path"]]
        if ref["status"] != "ok" or not isinstance(ref["frame_id"], str):
            continue
        jobs.append({
            "frame_id": r["frame_id"], "ref_id": ref["frame_id"], "path": r["path"], "sensor": r["sensor"],
            "scene": r["scene"], "iso": float(r["iso"]), "gain": _gain(r), "shift": _shift(r),
            "black_level": list(r["black_level"]), "white_level": float(r["white_level"]),
            "ref_black_level": list(ref["black_level"]), "ref_white_level": float(ref["white_level"]),
        })  # fmt: skip
    if max_frames is not None:
        count: dict[tuple[str, float], int] = {}
        kept = []
        for j in jobs:
            k = (j["sensor"], j["iso"])
            if count.get(k, 0) < max_frames:
                kept.append(j)
                count[k] = count.get(k, 0) + 1
        jobs = kept
    if not jobs:
        raise RawlabError(
            f"no scorable pairs in {store}: every candidate's clean reference is missing or failed"
        )
    return jobs, notes


def _valid(a, b) -> bool:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return (
        a.shape == (4,)
        and b.shape == (4,)
        and bool(np.all(np.isfinite(a)) and np.all(a > 0) and np.all(np.isfinite(b)))
    )


def _noise_from_profile(profiles, sensor: str, iso: float):
    """``(a, b)`` at ``iso`` from a profile set: the measured ISO, else the ISO law, else the nearest ISO."""
    from ..noise.isolaw import ISOLaw

    try:
        sp = profiles.sensor(sensor)
    except RawlabError:
        return None
    good = [p for p in sp.profiles if _valid(p.a, p.b)]  # a fit can leave an ISO undetermined (NaN)
    for p in good:
        if np.isclose(p.iso, iso):
            return np.asarray(p.a, float), np.asarray(p.b, float)
    if sp.iso_model.get("segments"):
        a, b = ISOLaw.from_dict(sp.iso_model).predict(iso)
        if _valid(a, b):
            return np.asarray(a, float), np.asarray(b, float)
    if not good:
        return None
    near = min(good, key=lambda p: abs(np.log(p.iso / iso)))
    return np.asarray(near.a, float), np.asarray(near.b, float)


def noise_parameters(
    keys: Sequence[tuple[str, float]],
    *,
    profile=None,
    model=None,
    fit: Callable[[list[str]], Any] | None = None,
) -> dict[tuple[str, float], dict[str, Any]]:
    """``(a, b)`` per ``(sensor, iso)`` and where they came from: ``profile``, ``model`` or ``fit``."""
    out: dict[tuple[str, float], dict[str, Any]] = {}
    for sensor, iso in keys:
        for source, get in (
            ("profile", (lambda s, i: _noise_from_profile(profile, s, i)) if profile is not None else None),
            ("model", getattr(model, "noise_params", None)),
        ):
            ab = get(sensor, iso) if get is not None else None
            if ab is not None and _valid(*ab):
                out[(sensor, iso)] = {
                    "a": np.asarray(ab[0], float),
                    "b": np.asarray(ab[1], float),
                    "source": source,
                }
                break
    missing = sorted({s for s, i in keys if (s, i) not in out})
    if missing and fit is not None:
        fitted = fit(missing)
        for sensor, iso in keys:
            if (sensor, iso) in out:
                continue
            ab = _noise_from_profile(fitted, sensor, iso)
            if ab is not None:
                out[(sensor, iso)] = {"a": ab[0], "b": ab[1], "source": "fit"}
    lost = [f"{s} ISO {i:g}" for s, i in keys if (s, i) not in out]
    if lost:
        raise RawlabError(
            f"no noise parameters for {', '.join(lost)}; pass --profile with a `rawlab noise-fit` result that "
            f"covers them"
        )
    return out


# -- per frame -----------------------------------------------------------------------------------------------


def load_pair(store_url: str, storage_options: dict | None, job: dict[str, Any], crop: int | None):
    """``(noisy, clean)`` packed normalised planes ``(h, w, 4)`` float32: aligned, exposure-matched, cropped."""
    from ..catalog.qa import normalise
    from ..catalog.store import FrameStore

    fs = FrameStore(store_url, storage_options)
    noisy = fs.read_frame(job["frame_id"])
    ref = fs.read_frame(job["ref_id"])
    sy, sx = job["shift"]  # packed px: noisy(y, x) = ref(y - sy, x - sx)
    h, w = min(noisy.shape[1], ref.shape[1]), min(noisy.shape[2], ref.shape[2])
    noisy = noisy[:, max(sy, 0) : h + min(sy, 0), max(sx, 0) : w + min(sx, 0)]
    ref = ref[:, max(-sy, 0) : h + min(-sy, 0), max(-sx, 0) : w + min(-sx, 0)]
    if crop:
        h, w = noisy.shape[1:]
        y0, x0 = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        noisy = noisy[:, y0 : y0 + crop, x0 : x0 + crop]
        ref = ref[:, y0 : y0 + crop, x0 : x0 + crop]
    y = normalise(noisy, job["black_level"], job["white_level"])
    c = normalise(ref, job["ref_black_level"], job["ref_white_level"])
    c = c * np.asarray(job["gain"], np.float32)[:, None, None]
    return np.ascontiguousarray(np.moveaxis(y, 0, -1)), np.ascontiguousarray(np.moveaxis(c, 0, -1))


def _score(estimate, clean, seconds: float, mp: float) -> dict[str, float]:
    from .metrics import psnr, ssim

    return {"psnr": psnr(estimate, clean), "ssim": ssim(estimate, clean), "s_per_mp": seconds / mp}


def baseline_task(store_url, storage_options, job: dict[str, Any], methods, crop) -> dict[str, Any]:
    """Scores of the classical ``methods`` on one frame (runs on a Dask worker)."""
    noisy, clean = load_pair(store_url, storage_options, job, crop)
    mp = noisy.size / 1e6  # mosaic megapixels: 4 mosaic pixels per packed pixel
    out = {}
    for m in methods:
        t = time.perf_counter()
        est = denoise_baseline(m, noisy, job["a"], job["b"], job["lower"])
        out[m] = _score(est, clean, time.perf_counter() - t, mp)
    return {"key": job["key"], "scores": out}


def _denoise(model, x: np.ndarray, a, b, tile: int = 512, overlap: int = 32) -> np.ndarray:
    """The model on one frame ``(h, w, 4)``; frames over :data:`_MAX_WHOLE` packed pixels go tile by tile."""
    h, w = x.shape[:2]
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
    client=None,
    scheduler: str | None = None,
    workers: int | None = None,
    storage_options: dict | None = None,
    progress: Callable[[int], None] | None = None,
    set_total: Callable[[int], None] | None = None,
    echo: Callable[[str], None] | None = None,
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
    client, scheduler, workers
        Where the baselines run: a Dask client, a scheduler address, or a local cluster of ``workers``.

    Raises
    ------
    RawlabError
        A missing or unreadable store, model or profile; nothing to score; unknown methods.
    """
    from ..catalog import open_catalog
    from ..noise.moments import clip_bounds
    from ..noise.profile import NoiseProfileSet, load_profiles

    t0 = time.perf_counter()
    model_path = None
    if isinstance(model, (str, os.PathLike)):
        model_path, model = model, load_denoiser(model)
    if profile is not None and not isinstance(profile, NoiseProfileSet):
        profile = load_profiles(profile)
    if crop is not None and crop < 16:
        raise RawlabError(f"--crop must be at least 16 packed pixels, got {crop}")
    if max_frames is not None and max_frames < 1:
        raise RawlabError(f"--max-frames must be at least 1, got {max_frames}")
    chosen = resolve_methods(methods, has_model=model is not None)
    classical = [m for m in chosen if m in _CLASSICAL]
    cat = open_catalog(store, storage_options)
    config = getattr(model, "config", None) or {}
    train_scenes = (config.get("split") or {}).get("train_scenes")
    trained = {(s, c) for s, c in train_scenes} if train_scenes is not None else None
    jobs, notes = select_pairs(cat, store, scenes=scenes, trained=trained, max_frames=max_frames)
    keys = sorted({(j["sensor"], j["iso"]) for j in jobs})
    so = storage_options or {}

    with ExitStack() as stack:
        cluster_client = client

        def get_client():
            nonlocal cluster_client
            if cluster_client is None:
                from ..cluster import dask_client

                cluster_client, _ = stack.enter_context(dask_client(scheduler, workers=workers, echo=echo))
            return cluster_client

        def fit(sensors: list[str]):
            from ..noise.pipeline import fit_store

            if echo:
                echo(f"eval: fitting noise for {', '.join(sensors)} (no --profile and no model law for them)")
            profiles = []
            for s in sensors:
                profiles += fit_store(store, sensor=s, client=get_client(), bootstrap=0,
                                      storage_options=storage_options).profiles.sensors  # fmt: skip
            return NoiseProfileSet(profiles)

        noise = noise_parameters(keys, profile=profile, model=model, fit=fit)
        for i, j in enumerate(jobs):
            p = noise[(j["sensor"], j["iso"])]
            lower, _, _ = clip_bounds(j["black_level"], j["white_level"])
            j.update(key=i, a=p["a"].tolist(), b=p["b"].tolist(), lower=lower.tolist())
        if set_total:
            set_total(len(jobs) * (1 + bool(classical)))
        futures = {}
        if classical:
            c = get_client()
            futures = {
                c.submit(baseline_task, store, so, j, classical, crop, pure=False): j["key"] for j in jobs
            }
        scores: dict[int, dict[str, dict[str, float]]] = {j["key"]: {} for j in jobs}
        for j in jobs:  # identity and the model here, while the workers run the baselines
            noisy, clean = load_pair(store, so, j, crop)
            mp = noisy.size / 1e6
            if "identity" in chosen:
                scores[j["key"]]["identity"] = _score(noisy, clean, 0.0, mp)
            if model is not None:
                t = time.perf_counter()
                est = _denoise(model, noisy, np.asarray(j["a"], np.float32), np.asarray(j["b"], np.float32))
                scores[j["key"]]["model"] = _score(est, clean, time.perf_counter() - t, mp)
            j["shape"] = list(noisy.shape)
            if progress:
                progress(1)
        if futures:
            from distributed import as_completed

            for fut in as_completed(futures):
                r = fut.result()
                scores[r["key"]].update(r["scores"])
                fut.release()
                if progress:
                    progress(1)

    frames = []
    for j in jobs:
        s = scores[j["key"]]
        frames.append({
            "path": j["path"], "frame_id": j["frame_id"], "sensor": j["sensor"], "iso": _iso(j["iso"]),
            "scene": j["scene"], "shape": j["shape"],
            "psnr": {m: s[m]["psnr"] for m in chosen}, "ssim": {m: s[m]["ssim"] for m in chosen},
            "s_per_mp": {m: s[m]["s_per_mp"] for m in chosen},
        })  # fmt: skip
    rows = _aggregate(frames, chosen)
    noise_out = [
        {"sensor": s, "iso": _iso(i), "a": p["a"].tolist(), "b": p["b"].tolist(), "source": p["source"]}
        for (s, i), p in sorted(noise.items())
    ]
    options = {"scenes": scenes, "max_frames": max_frames, "crop": crop, "n_frames": len(jobs)}
    return EvalResult(rows, frames, chosen, _model_name(model, model_path), os.fspath(store), noise_out,
                      options, notes, time.perf_counter() - t0)  # fmt: skip


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

"""``rawlab noise-fit``: walk a store with Dask, accumulate noise moments, fit per ISO and over ISO.

One pass over the pixels: one task per frame (or pair) reads its chunks from the store and returns binned
partial sums (:mod:`rawlab.noise.moments`, :mod:`rawlab.noise.single`) — a few kilobytes — plus the statistics
of held-out tiles for validation. Memory stays bounded by one frame per worker, whatever the store size. The
fits (:mod:`rawlab.noise.fit`, :mod:`rawlab.noise.isolaw`) then run on the reduced sums in this process.

Pairs use the catalog's QA: excluded pairs are left out, the measured per-channel gain exposure-matches the
reference, and an alignment shift of a mosaic pixel or more is undone (to the nearest even mosaic pixel,
i.e. whole packed pixels) by cropping both frames to their overlap.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..catalog.qa import normalise
from ..errors import RawlabError
from .moments import N_STATS, clip_bounds

__all__ = ["NoiseFitResult", "fit_store", "select_sensors"]

HOLDOUT_EVERY = 5  # one chunk in five is held out of the fit and used to validate it
_TILE = 128  # packed px: a quarter of a store chunk; the unit of the hold-out split


@dataclass
class NoiseFitResult:
    profiles: Any  # NoiseProfileSet
    laws: dict[str, Any]  # sensor -> ISOLaw
    binned: dict[str, dict[float, dict[str, np.ndarray]]]  # sensor -> iso -> mean/var/n (4, n_bins) for plots
    validation: dict[str, dict[str, Any]]
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def select_sensors(cat: pd.DataFrame, sensor: str, store: str) -> list[str]:
    """Resolve ``--sensor NAME|all`` against the catalog, with an error that lists what is there."""
    present = sorted(cat.loc[cat["status"] != "failed", "sensor"].dropna().unique())
    if not present:
        raise RawlabError(f"{store} holds no readable frames; nothing to fit")
    if sensor == "all":
        return present
    if sensor in present:
        return [sensor]
    folded = {s.casefold(): s for s in present}
    if sensor.casefold() in folded:
        return [folded[sensor.casefold()]]
    raise RawlabError(
        f"sensor {sensor!r} is not in {store}; sensors present: " + ", ".join(repr(s) for s in present)
    )


def _holdout(fid: str, i: int, j: int) -> bool:
    """Whether chunk (i, j) of frame ``fid`` is held out: deterministic, spread over every frame."""
    return zlib.crc32(f"{fid}:{i}:{j}".encode()) % HOLDOUT_EVERY == 0


def _tiles(h: int, w: int):
    for i, y in enumerate(range(0, h, _TILE)):
        for j, x in enumerate(range(0, w, _TILE)):
            yield i, j, slice(y, min(y + _TILE, h)), slice(x, min(x + _TILE, w))


def _pair_task(store_url, storage_options, job: dict[str, Any]) -> dict[str, Any]:
    """Moments of one noisy/reference pair (runs on a worker)."""
    from ..catalog.store import FrameStore
    from .moments import pair_moments

    store = FrameStore(store_url, storage_options)
    noisy = store.read_frame(job["frame_id"])
    ref = store.read_frame(job["ref_id"])
    sy, sx = job["shift"]  # packed px: noisy(y, x) = ref(y - sy, x - sx)
    h, w = noisy.shape[1:]
    noisy = noisy[:, max(sy, 0) : h + min(sy, 0), max(sx, 0) : w + min(sx, 0)]
    ref = ref[:, max(-sy, 0) : h + min(-sy, 0), max(-sx, 0) : w + min(-sx, 0)]
    lower, upper, _ = clip_bounds(job["black_level"], job["white_level"])
    gain = np.asarray(job["gain"], dtype=np.float64)
    total = None
    tiles = []
    for i, j, ys, xs in _tiles(*noisy.shape[1:]):
        y = normalise(noisy[:, ys, xs], job["black_level"], job["white_level"])
        c = normalise(ref[:, ys, xs], job["ref_black_level"], job["ref_white_level"])
        m = pair_moments(y, c, gain=gain, lower=lower, upper=upper)
        if job["holdout"] and _holdout(job["frame_id"], i, j):
            tiles.append(m.sum(axis=1))  # per channel: n, sum gc, sum gc^2, sum r, sum r^2 over the tile
        else:
            total = m if total is None else total + m
    return {"moments": total, "tiles": np.array(tiles) if tiles else np.zeros((0, 4, N_STATS)), **job}


def _single_task(store_url, storage_options, job: dict[str, Any]) -> dict[str, Any]:
    from ..catalog.store import FrameStore
    from .single import single_moments

    planes = FrameStore(store_url, storage_options).read_frame(job["frame_id"])
    lower, upper, _ = clip_bounds(job["black_level"], job["white_level"])
    total = None
    for _i, _j, ys, xs in _tiles(*planes.shape[1:]):
        m = single_moments(
            normalise(planes[:, ys, xs], job["black_level"], job["white_level"]), lower=lower, upper=upper
        )
        total = m if total is None else total + m
    return {"moments": total, **job}


def _gain(row) -> list[float]:
    g = [row.get("gain_r"), row.get("gain_g1"), row.get("gain_g2"), row.get("gain_b")]
    if any(v is None or not np.isfinite(v) for v in g):
        overall = row.get("gain")
        overall = overall if overall is not None and np.isfinite(overall) else 1.0
        return [float(overall)] * 4
    return [float(v) for v in g]


def _shift(row) -> tuple[int, int]:
    def packed(d):
        return 0 if d is None or not np.isfinite(d) or abs(d) < 1.0 else round(d / 2.0)

    return packed(row.get("align_dy")), packed(row.get("align_dx"))


def _jobs(cat: pd.DataFrame, sensor: str, method: str) -> tuple[list[dict], list[dict]]:
    rows = cat[(cat["sensor"] == sensor) & (cat["status"] == "ok") & cat["frame_id"].notna()]
    by_path = cat.set_index("path")
    pairs, singles = [], []
    if method in ("paired", "auto"):
        for r in rows[(rows["role"] == "noisy") & rows["clean_path"].notna()].to_dict("records"):
            ref = by_path.loc[r["clean_path"]]
            if ref["status"] != "ok" or not (np.isfinite(r["iso"]) and np.isfinite(ref["iso"])):
                continue  # fits are per ISO: a pair without one cannot be placed
            pairs.append({
                "frame_id": r["frame_id"], "ref_id": ref["frame_id"], "iso": float(r["iso"]),
                "ref_iso": float(ref["iso"]), "gain": _gain(r), "shift": _shift(r), "n_ref": 1,
                "black_level": list(r["black_level"]), "white_level": float(r["white_level"]),
                "ref_black_level": list(ref["black_level"]), "ref_white_level": float(ref["white_level"]),
                "holdout": True,
            })  # fmt: skip
    if method == "single" or (method == "auto" and not pairs):
        # Every readable frame stands alone here, including noisy frames whose pair QA excluded.
        readable = cat[
            (cat["sensor"] == sensor) & cat["status"].isin(["ok", "excluded"]) & cat["frame_id"].notna()
        ]
        for r in readable.drop_duplicates("frame_id").to_dict("records"):
            if r["iso"] is None or not np.isfinite(r["iso"]):
                continue
            singles.append({"frame_id": r["frame_id"], "iso": float(r["iso"]), "black_level": list(r["black_level"]),
                            "white_level": float(r["white_level"])})  # fmt: skip
    return pairs, singles


def fit_store(
    store: str,
    *,
    sensor: str = "all",
    method: str = "auto",
    client=None,
    scheduler: str | None = None,
    workers: int | None = None,
    bootstrap: int = 200,
    seed: int = 0,
    storage_options: dict | None = None,
    progress: Callable[[int], None] | None = None,
    set_total: Callable[[int], None] | None = None,
    echo: Callable[[str], None] | None = None,
) -> NoiseFitResult:
    """Fit the noise of ``sensor`` (or every sensor) in ``store``.

    Parameters
    ----------
    method
        ``"paired"`` (noisy frames against their clean references), ``"single"`` (each frame alone, Foi et al.
        2008) or ``"auto"`` (pairs where the sensor has them, single frames otherwise).
    bootstrap
        Bootstrap resamples over frames for the standard errors.

    Raises
    ------
    RawlabError
        Unknown sensor (the message lists those present), or no usable frames for the method.
    """
    from ..catalog import open_catalog
    from ..cluster import dask_client

    if method not in ("paired", "single", "auto"):
        raise RawlabError(f"--method must be paired, single or auto, not {method!r}")
    t0 = time.perf_counter()
    cat = open_catalog(store, storage_options)
    sensors = select_sensors(cat, sensor, store)
    jobs = {s: _jobs(cat, s, method) for s in sensors}
    empty = [s for s, (p, q) in jobs.items() if not p and not q]
    if empty and len(empty) == len(sensors):
        hint = " (it has no noisy/clean pairs: try --method single)" if method == "paired" else ""
        raise RawlabError(f"no usable frames for {', '.join(map(repr, empty))} in {store}{hint}")
    if set_total:
        set_total(sum(len(p) + len(q) for p, q in jobs.values()))
    fstore_url = store
    timings: dict[str, float] = {}

    def run(c):
        futures = {}
        for s, (pairs, singles) in jobs.items():
            for job in pairs:
                futures[c.submit(_pair_task, fstore_url, storage_options or {}, job, pure=False)] = (
                    s,
                    "pair",
                )
            for job in singles:
                futures[c.submit(_single_task, fstore_url, storage_options or {}, job, pure=False)] = (
                    s,
                    "single",
                )
        from distributed import as_completed

        out: dict[str, dict[str, list]] = {s: {"pair": [], "single": []} for s in jobs}
        for fut in as_completed(futures):
            s, kind = futures[fut]
            out[s][kind].append(fut.result())
            fut.release()
            if progress:
                progress(1)
        return out

    t = time.perf_counter()
    if client is not None:
        results = run(client)
    else:
        with dask_client(scheduler, workers=workers, echo=echo) as (c, _info):
            results = run(c)
    timings["moments"] = time.perf_counter() - t
    t = time.perf_counter()
    fitted = _fit_all(results, cat, bootstrap=bootstrap, seed=seed)
    timings["fit"] = time.perf_counter() - t
    fitted.timings = timings
    fitted.timings["total"] = time.perf_counter() - t0
    return fitted


def _fit_all(results, cat, *, bootstrap: int, seed: int) -> NoiseFitResult:
    from .fit import FrameMoments, fit_pairs
    from .isolaw import fit_iso_law
    from .profile import ISOProfile, NoiseProfileSet, SensorProfile
    from .single import fit_single

    sensors, laws, binned, validation, notes = [], {}, {}, {}, []
    for s, parts in results.items():
        if parts["pair"]:
            frames = [
                FrameMoments(
                    iso=p["iso"],
                    ref_iso=p["ref_iso"],
                    gain=np.asarray(p["gain"]),
                    n_ref=p["n_ref"],
                    moments=p["moments"],
                    lower=bounds[0],
                    upper=bounds[1],
                    dn_step=bounds[2],
                    frame_id=p["frame_id"],
                )
                for p in parts["pair"]
                if p["moments"] is not None
                for bounds in [clip_bounds(p["black_level"], p["white_level"])]
            ]
            fits = fit_pairs(frames, bootstrap=bootstrap, seed=seed)
            method = "paired"
            binned[s] = _binned_pairs(parts["pair"], fits)
            validation[s] = _validate_pairs(parts["pair"], fits)
        else:
            by_iso: dict[float, list] = {}
            for p in parts["single"]:
                by_iso.setdefault(p["iso"], []).append(p)
            fits = {}
            for iso, ps in sorted(by_iso.items()):
                lower, upper, step = clip_bounds(ps[0]["black_level"], ps[0]["white_level"])
                fits[iso] = fit_single(
                    [p["moments"] for p in ps], lower=lower, upper=upper, iso=iso, dn_step=step, seed=seed
                )
            method = "single"
            binned[s] = {}
            validation[s] = {"note": "validation needs held-out pairs; single-image fits are not validated"}
        profiles = []
        for iso, f in sorted(fits.items()):
            profiles.append(ISOProfile(iso, list(f.a), list(f.b), list(f.a_stderr), list(f.b_stderr),
                                       n_frames=int(f.n_frames), n_pixels=int(f.n_pixels),
                                       extra={"flags": list(f.flags)} if f.flags else {}))  # fmt: skip
        rows = cat[(cat["sensor"] == s) & (cat["status"] != "failed")]
        span = float(
            np.median([float(r["white_level"]) - np.mean(r["black_level"]) for r in rows.to_dict("records")])
        )
        law = None
        usable = [p for p in profiles if np.isfinite(p.a).any()]
        if len(usable) >= 2:
            law = fit_iso_law([p.iso for p in profiles], [p.a for p in profiles], [p.b for p in profiles],
                              [p.a_stderr for p in profiles], [p.b_stderr for p in profiles],
                              white_minus_black=span)  # fmt: skip
            laws[s] = law
        else:
            notes.append(f"{s}: fewer than two ISOs with a fit; no ISO law")
        extra = {"cfa": sorted(rows["cfa"].dropna().unique().tolist()), "white_minus_black": span,
                 "n_frames": int(sum(p.n_frames for p in profiles))}  # fmt: skip
        sensors.append(SensorProfile(s, method, profiles, law.to_dict() if law is not None else {}, extra))
    return NoiseFitResult(NoiseProfileSet(sensors), laws, binned, validation, notes=notes)


def _binned_pairs(parts, fits) -> dict[float, dict[str, np.ndarray]]:
    """Per ISO: mean signal, noisy-frame variance and count per bin and channel (for the variance-mean plot).

    The residual variance of a pair includes the reference's noise; the fitted reference contribution is
    subtracted so the points show the noisy frame's own variance, comparable with its ``a * x + b`` line.
    """
    sums: dict[float, np.ndarray] = {}
    ref_terms: dict[float, list] = {}
    for p in parts:
        if p["moments"] is None:
            continue
        sums[p["iso"]] = sums.get(p["iso"], 0) + p["moments"]
        ref_terms.setdefault(p["iso"], []).append((np.asarray(p["gain"]), p["ref_iso"], p["n_ref"]))
    out = {}
    for iso, m in sums.items():
        n = m[..., 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = m[..., 1] / n
            var = (m[..., 4] - m[..., 3] ** 2 / n) / (n - 1)
        g, ref_iso, k = ref_terms[iso][0]
        g = np.mean([t[0] for t in ref_terms[iso]], axis=0)
        ref = fits.get(ref_iso)
        if ref is not None and np.all(np.isfinite(ref.a)):
            var = var - ((g * np.asarray(ref.a))[:, None] * mean + (g**2 * np.asarray(ref.b))[:, None]) / k
        out[iso] = {"mean": mean, "var": var, "n": n}
    return out


def _validate_pairs(parts, fits) -> dict[str, Any]:
    """Held-out tiles against the fit, as Android CameraITS checks a noise model, with stricter tolerances.

    A residual tile's expected variance is ``a_eff * mean + b_eff`` with the reference's share included
    (``a_eff = a_i + g a_ref / K``, ``b_eff = b_i + g^2 b_ref / K``), different for every pair, so each tile's
    prediction is computed here and handed to :func:`validate_tiles` as its "mean" with ``a = 1, b = 0``.
    Tiles whose signal reaches the clipping bounds (3 sigma) are left out, as the model does not hold there.
    """
    from .validate import validate_tiles

    pred, var, count = [], [], []
    for p in parts:
        fi, fr = fits.get(p["iso"]), fits.get(p["ref_iso"])
        if fi is None or fr is None or len(p["tiles"]) == 0:
            continue
        g = np.asarray(p["gain"])
        a_eff = np.asarray(fi.a) + g * np.asarray(fr.a) / p["n_ref"]
        b_eff = np.asarray(fi.b) + g**2 * np.asarray(fr.b) / p["n_ref"]
        lower = clip_bounds(p["black_level"], p["white_level"])[0]
        for t in p["tiles"]:  # (4, 5): n, sum gc, sum gc^2, sum r, sum r^2 over the tile
            n = t[:, 0]
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = t[:, 1] / n
                v = (t[:, 4] - t[:, 3] ** 2 / n) / (n - 1)
                spread = np.sqrt(np.maximum(t[:, 2] / n - mean**2, 0.0))  # signal spread inside the tile
            model = a_eff * mean + b_eff
            sigma = np.sqrt(np.maximum(a_eff * (mean + spread) + b_eff, 0.0))
            clipped = (mean - spread - 3 * sigma < lower) | (mean + spread + 3 * sigma > 1.0)
            ok = (n > 100) & np.isfinite(model) & ~clipped
            pred.append(np.where(ok, model, np.nan))
            var.append(np.where(ok, v, np.nan))
            count.append(n)
    if not pred:
        return {"note": "no held-out tiles with a fitted ISO and reference"}
    pred, var, count = (np.array(x).T for x in (pred, var, count))
    return validate_tiles(np.ones(4), np.zeros(4), pred, var, count, exclude_clipped=False)

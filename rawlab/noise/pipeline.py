"""``rawlab noise-fit``: walk a store with Dask, accumulate noise moments, fit per ISO and over ISO.

One pass over the pixels: one task per frame (or pair) reads its chunks from the store and returns binned
partial sums (:mod:`rawlab.noise.moments`, :mod:`rawlab.noise.quincunx`) — a few kilobytes — plus the statistics
of held-out tiles for validation. Memory stays bounded by one frame per worker, whatever the store size. The
fits (:mod:`rawlab.noise.fit`, :mod:`rawlab.noise.isolaw`) then run on the reduced sums in this process.

Pairs are :mod:`rawlab.catalog.pairs`' records: excluded pairs are left out, the measured per-channel gain
exposure-matches the reference, and an alignment shift of a mosaic pixel or more is undone in whole packed
pixels by cropping both frames to their overlap (:func:`rawlab.catalog.pairs.align`). Results come back in
input order and are reduced in a fixed order, so a fit does not depend on which task finished first.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..bayer import normalise
from ..catalog.pairs import align
from ..errors import RawlabError
from .moments import N_STATS, clip_bounds

if TYPE_CHECKING:
    from ..cluster import RunOptions

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
    pair = job["pair"]
    noisy, ref = align(store.read_frame(pair.frame_id), store.read_frame(pair.ref_id), pair.shift)
    lower, upper, _ = clip_bounds(pair.black_level, pair.white_level)
    gain = np.asarray(pair.gain, dtype=np.float64)
    total = None
    tiles = []
    for i, j, ys, xs in _tiles(*noisy.shape[1:]):
        y = normalise(noisy[:, ys, xs], pair.black_level, pair.white_level)
        c = normalise(ref[:, ys, xs], pair.ref_black_level, pair.ref_white_level)
        m = pair_moments(y, c, gain=gain, lower=lower, upper=upper)
        if job["holdout"] and _holdout(pair.frame_id, i, j):
            tiles.append(m.sum(axis=1))  # per channel: n, sum gc, sum gc^2, sum r, sum r^2 over the tile
        else:
            total = m if total is None else total + m
    return {"moments": total, "tiles": np.array(tiles) if tiles else np.zeros((0, 4, N_STATS)), **job}


def _single_task(store_url, storage_options, job: dict[str, Any]) -> dict[str, Any]:
    """Green quincunx moments of one frame (runs on a worker): the whole frame at once, since a tile would
    lose its border to the stencil and the ring (:mod:`rawlab.noise.quincunx`); one frame per worker."""
    from ..catalog.store import FrameStore
    from .quincunx import green_moments, green_offset

    planes = FrameStore(store_url, storage_options).read_frame(job["frame_id"])
    cfa = job.get("cfa")
    offset = green_offset(cfa) if isinstance(cfa, str) and cfa else None  # None: found from the data
    x = normalise(planes, job["black_level"], job["white_level"])
    return {"moments": green_moments(x, offset=offset), **job}


def _masked_b(frames: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray] | None:
    """``b`` per channel at one ISO from its frames' masked borders (:func:`rawlab.noise.masked.
    masked_read_noise`), and its standard error: the median over the frames, its error from their spread
    (1.2533 sd / sqrt(n)), or from one frame's own sampling error (each channel's variance from a quarter of
    the pixels); None unless every frame's border gives ``b`` (one frame without must not be outvoted)."""
    from .masked import masked_read_noise

    bs = []
    for p in frames:
        b, _ = masked_read_noise(p.get("masked"), p["black_level"], p["white_level"])
        if b is None:
            return None
        bs.append(b)
    b = np.median(bs, axis=0)
    if len(bs) >= 2:
        return b, 1.2533 * np.std(bs, axis=0, ddof=1) / math.sqrt(len(bs))
    return b, b * math.sqrt(2.0 / max(frames[0]["masked"].count / 4, 1))


def _jobs(cat: pd.DataFrame, sensor: str, method: str) -> tuple[list[dict], list[dict], list[str]]:
    """The sensor's pair jobs and single-frame jobs, each in a fixed order, and notes on pairs left out.

    Pairs come from :func:`rawlab.catalog.pairs.pairs_from_catalog` (sorted by scene, ISO and frame; gain and
    shift from QA); single frames are sorted by frame id, so nothing depends on the catalog's row order.
    """
    from ..catalog.ingest import masked_from_row
    from ..catalog.pairs import pairs_from_catalog

    pairs, singles, notes = [], [], []
    if method in ("paired", "auto"):
        noisy = cat[
            (cat["sensor"] == sensor)
            & (cat["status"] == "ok")
            & (cat["role"] == "noisy")
            & cat["clean_path"].notna()
        ]
        found, notes = pairs_from_catalog(cat, noisy)
        ref_iso = cat.drop_duplicates("path").set_index("path")["iso"]
        for p in found:
            r_iso = float(ref_iso.get(p.ref_path, np.nan))
            if not np.isfinite(r_iso):
                notes.append(f"{p.path}: its clean reference has no ISO; fits are per ISO, so it is left out")
                continue
            pairs.append({"pair": p, "frame_id": p.frame_id, "iso": p.iso, "ref_iso": r_iso, "n_ref": 1,
                          "gain": list(p.gain), "black_level": list(p.black_level),
                          "white_level": p.white_level, "holdout": True})  # fmt: skip
    if method == "single" or (method == "auto" and not pairs):
        notes = []  # the pairs are not used: what was left out of them does not matter
        # Every readable frame stands alone here, including noisy frames whose pair QA excluded.
        readable = cat[
            (cat["sensor"] == sensor) & cat["status"].isin(["ok", "excluded"]) & cat["frame_id"].notna()
        ]
        for r in readable.drop_duplicates("frame_id").sort_values("frame_id").to_dict("records"):
            if r["iso"] is None or not np.isfinite(r["iso"]):
                continue
            singles.append({"frame_id": r["frame_id"], "iso": float(r["iso"]), "black_level": list(r["black_level"]),
                            "white_level": float(r["white_level"]), "cfa": r.get("cfa"),
                            "masked": masked_from_row(r)})  # fmt: skip
    return pairs, singles, [f"{sensor}: {n}" for n in notes]


def fit_store(
    store: str,
    *,
    sensor: str = "all",
    method: str = "auto",
    bootstrap: int = 200,
    seed: int = 0,
    options: RunOptions | None = None,
) -> NoiseFitResult:
    """Fit the noise of ``sensor`` (or every sensor) in ``store``.

    The result depends only on the store and the arguments, never on which task finished first: tasks come
    back in input order (:func:`rawlab.cluster.run_tasks`), pairs and frames are in a fixed order, and the
    bootstrap is seeded with ``seed``.

    Parameters
    ----------
    method
        ``"paired"`` (noisy frames against their clean references), ``"single"`` (each frame alone: the green
        quincunx, :func:`rawlab.noise.quincunx.fit_frames`) or ``"auto"`` (pairs where the sensor has them,
        single frames otherwise).
    bootstrap
        Bootstrap resamples over frames for the standard errors.
    options
        Where the Dask work runs and how it reports (:class:`rawlab.cluster.RunOptions`; default: a local
        cluster, silent).

    Raises
    ------
    RawlabError
        Unknown sensor (the message lists those present), no usable frames for the method, or a frame that
        cannot be read from the store.
    """
    from ..catalog import open_catalog
    from ..cluster import RunOptions, run_tasks

    if method not in ("paired", "single", "auto"):
        raise RawlabError(f"--method must be paired, single or auto, not {method!r}")
    opts = options or RunOptions()
    t0 = time.perf_counter()
    cat = open_catalog(store, opts.storage_options)
    sensors = select_sensors(cat, sensor, store)
    jobs = {s: _jobs(cat, s, method) for s in sensors}
    empty = [s for s, (p, q, _n) in jobs.items() if not p and not q]
    if empty and len(empty) == len(sensors):
        hint = " (it has no noisy/clean pairs: try --method single)" if method == "paired" else ""
        raise RawlabError(f"no usable frames for {', '.join(map(repr, empty))} in {store}{hint}")
    tasks = [(s, kind, job) for s, (pairs, singles, _n) in jobs.items()
             for kind, js in (("pair", pairs), ("single", singles)) for job in js]  # fmt: skip
    opts.total(len(tasks))
    storage = opts.storage_options or {}
    timings: dict[str, float] = {}
    t = time.perf_counter()
    with opts.session() as (client, _info):
        outcomes = run_tasks(
            client,
            _run_job,
            [(kind, store, storage, job) for _s, kind, job in tasks],
            name="noise-moments",
            progress=opts.progress,
        )
    failed = [(tasks[o.index][2]["frame_id"], o) for o in outcomes if not o.ok]
    if failed:
        fid, o = failed[0]
        raise RawlabError(
            f"{len(failed)} of {len(tasks)} frames of {store} could not be read for the noise fit, first "
            f"{fid!r} ({o.why}); check the store with `rawlab catalog show` or rebuild it"
        )
    results: dict[str, dict[str, list]] = {s: {"pair": [], "single": []} for s in jobs}
    for (s, kind, _job), o in zip(tasks, outcomes, strict=True):  # input order: fixed, not completion order
        results[s][kind].append(o.value)
    timings["moments"] = time.perf_counter() - t
    t = time.perf_counter()
    fitted = _fit_all(results, cat, bootstrap=bootstrap, seed=seed)
    fitted.notes = [n for _p, _q, notes in jobs.values() for n in notes] + fitted.notes
    timings["fit"] = time.perf_counter() - t
    fitted.timings = timings
    fitted.timings["total"] = time.perf_counter() - t0
    return fitted


def _run_job(kind: str, store_url: str, storage_options: dict, job: dict[str, Any]) -> dict[str, Any]:
    """One task: the moments of a pair (``kind="pair"``) or of a single frame."""
    return (_pair_task if kind == "pair" else _single_task)(store_url, storage_options, job)


def _fit_all(results, cat, *, bootstrap: int, seed: int) -> NoiseFitResult:
    from .fit import FrameMoments, fit_pairs
    from .isolaw import fit_iso_law
    from .profile import ISOProfile, NoiseProfileSet, SensorProfile
    from .quincunx import fit_frames

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
            fits, with_border = {}, []
            for iso, ps in sorted(by_iso.items()):
                lower, upper, step = clip_bounds(ps[0]["black_level"], ps[0]["white_level"])
                fits[iso] = fit_frames(
                    [p["moments"] for p in ps],
                    lower=lower,
                    upper=upper,
                    dn_step=step,
                    iso=iso,
                    bootstrap=bootstrap,
                    seed=seed,
                )
                masked = _masked_b(ps)
                if masked is not None:
                    fits[iso].b, fits[iso].b_stderr = masked
                    fits[iso].flags.append(f"b from the masked border of {len(ps)} frames")
                    with_border.append(iso)
            method = "single"
            notes.append(
                f"{s}: single-image fits of the green quincunx; R and B carried over through their span"
            )
            if with_border:
                notes.append(
                    f"{s}: b from the frames' masked border (the median over each ISO's frames) at ISO "
                    + ", ".join(f"{v:g}" for v in with_border)
                )
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

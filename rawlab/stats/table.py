"""The tables of ``rawlab stats``: one row per sensor and ISO (``sensors.csv``), and the dataset's composition.

Catalog-level numbers (counts, exposure times, QA outcomes) come from the catalog, which is small; pixel-level
numbers (levels, saturation) from the Dask pixel pass (:mod:`rawlab.stats.pixels`); noise from a profile
(:mod:`rawlab.noise.profile`). Derived quantities and their definitions are in :mod:`rawlab.stats.metrics`.
Summary values use green, the mean of G1 and G2 (as darktable and DNG ``NoiseProfile`` do); ``a`` and ``b``
per channel are in their own columns.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..bayer import CHANNELS
from .metrics import (
    GREY,
    crossover,
    dynamic_range_stops,
    iso_invariant_from,
    photon_transfer,
    snr_db,
    snr_db_stderr,
)

__all__ = [
    "UNKNOWN_SENSOR",
    "balance_table",
    "composition_table",
    "green",
    "noise_columns",
    "sensor_summary",
    "sensor_table",
    "white_minus_black",
]

UNKNOWN_SENSOR = "(unknown)"  # files that could not be read have no make/model
ROLES = ("clean", "noisy", "single")
STATUSES = ("ok", "excluded", "failed")


def green(values) -> float:
    """Green of a per-channel R, G1, G2, B list: the mean of G1 and G2."""
    v = np.asarray(values, dtype=np.float64)
    return float(0.5 * (v[1] + v[2]))


def _labelled(cat: pd.DataFrame) -> pd.DataFrame:
    cat = cat.copy()
    cat["sensor"] = cat["sensor"].where(cat["sensor"].notna() & (cat["sensor"] != ""), UNKNOWN_SENSOR)
    cat["iso"] = pd.to_numeric(cat["iso"], errors="coerce")
    return cat


def white_minus_black(cat: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per sensor, ``white - black`` per channel R, G1, G2, B in DN (median over its readable frames)."""
    out = {}
    ok = cat[cat["status"] != "failed"]
    for sensor, rows in ok.groupby("sensor", sort=True):
        black = np.stack([np.asarray(b, dtype=np.float64) for b in rows["black_level"]])
        white = rows["white_level"].to_numpy(dtype=np.float64)[:, None]
        out[sensor] = np.median(white - black, axis=0)
    return out


def _iso_key(iso) -> float:
    return float(iso) if iso is not None and np.isfinite(iso) else math.nan


def _groups(cat: pd.DataFrame):
    """``(sensor, iso, rows)`` sorted by sensor then ISO; frames without an ISO last, with ISO NaN."""
    key = cat["iso"].fillna(np.inf)
    for (sensor, k), rows in cat.groupby([cat["sensor"], key], sort=True):
        yield sensor, (math.nan if k == np.inf else float(k)), rows


def composition_table(cat: pd.DataFrame) -> pd.DataFrame:
    """Counts per sensor, ISO, role and status: ``frames``, ``scenes`` and ``megapixels`` (mosaic)."""
    cat = _labelled(cat)
    cat["megapixels"] = (
        pd.to_numeric(cat["width"], errors="coerce") * pd.to_numeric(cat["height"], errors="coerce") / 1e6
    )
    cat["role"] = cat["role"].fillna("(none)")
    keys = ["sensor", cat["iso"].fillna(-1).rename("iso"), "role", "status"]
    out = (
        cat.groupby(keys, sort=True)
        .agg(frames=("path", "size"), scenes=("scene", "nunique"), megapixels=("megapixels", "sum"))
        .reset_index()
    )
    out["iso"] = out["iso"].where(out["iso"] != -1, np.nan)
    return out


def balance_table(cat: pd.DataFrame) -> pd.DataFrame:
    """Per sensor: how evenly its usable frames (status ``ok``) spread over ISOs and scenes.

    For a denoising dataset what counts is noisy frames (each one a training pair), so a sensor with pairs is
    judged on its noisy frames (``basis = "noisy"``; its clean references are counted in ``references``);
    one without pairs on all its usable frames (``basis = "usable"``). ``iso_evenness`` is the Shannon entropy
    of those frames' ISO distribution over ``log(n_isos)``: 1 when every ISO has the same number of frames,
    towards 0 when one ISO holds them all. ``imbalance`` is the most populated ISO's frame count over the
    least populated one's.
    """
    cat = _labelled(cat)
    rows = []
    for sensor, r in cat.groupby("sensor", sort=True):
        ok = r[r["status"] == "ok"]
        noisy = ok[ok["role"] == "noisy"]
        pool = noisy if len(noisy) else ok
        counts = pool["iso"].dropna().value_counts().sort_index()
        p = counts.to_numpy(dtype=float) / max(counts.sum(), 1)
        even = float(-(p * np.log(p)).sum() / math.log(len(p))) if len(p) > 1 else math.nan
        rows.append({
            "sensor": sensor,
            "frames": len(r),
            "usable": len(ok),
            "basis": "noisy" if len(noisy) else "usable",
            "counted": len(pool),
            "references": int((ok["role"] == "clean").sum()),
            "excluded": int((r["status"] == "excluded").sum()),
            "failed": int((r["status"] == "failed").sum()),
            "scenes": int(r["scene"].nunique()),
            "n_isos": len(counts),
            "iso_min": float(counts.index.min()) if len(counts) else math.nan,
            "iso_max": float(counts.index.max()) if len(counts) else math.nan,
            "frames_per_iso_min": int(counts.min()) if len(counts) else 0,
            "frames_per_iso_max": int(counts.max()) if len(counts) else 0,
            "most_frames_iso": float(counts.idxmax()) if len(counts) else math.nan,
            "least_frames_iso": float(counts.idxmin()) if len(counts) else math.nan,
            "imbalance": float(counts.max() / counts.min()) if len(counts) else math.nan,
            "iso_evenness": even,
            "no_iso": int(pool["iso"].isna().sum()),
            "cfa": ", ".join(sorted(r["cfa"].dropna().astype(str).unique())),
            "sizes": ", ".join(sorted({f"{int(w)}x{int(h)}" for w, h in zip(r["width"].dropna(), r["height"].dropna(), strict=False)})),
            "megapixels": float((ok["width"] * ok["height"]).sum() / 1e6),
        })  # fmt: skip
    return pd.DataFrame(rows)


def noise_columns(profile, white_minus_black_dn) -> dict[str, Any]:
    """The noise columns of one ISO profile (``None`` gives NaN): per-channel ``a``/``b``, green summaries and
    the derived SNR, dynamic range, crossover and photon-transfer values (:mod:`rawlab.stats.metrics`).

    ``white_minus_black_dn`` is ``V`` per channel (or NaN), for the conversion gain.
    """
    nan4 = [math.nan] * 4
    a = list(profile.a) if profile is not None else nan4
    b = list(profile.b) if profile is not None else nan4
    sa = list(profile.a_stderr) if profile is not None else nan4
    sb = list(profile.b_stderr) if profile is not None else nan4
    ag, bg = green(a), green(b)
    # Stderr of the mean of two greens, taken as fully correlated (the bootstrap resamples whole frames).
    sag, sbg = green(sa), green(sb)
    v = np.broadcast_to(np.asarray(white_minus_black_dn, dtype=float), (4,))
    cx, cstops = crossover(ag, bg)
    pt = photon_transfer(ag, bg, green(v))
    out: dict[str, Any] = {"a": ag, "b": bg, "a_stderr": sag, "b_stderr": sbg}
    out |= {f"a_{c}": float(x) for c, x in zip(CHANNELS, a, strict=True)}
    out |= {f"b_{c}": float(x) for c, x in zip(CHANNELS, b, strict=True)}
    out |= {
        "snr18_db": float(snr_db(ag, bg, GREY)),
        "snr18_db_stderr": float(snr_db_stderr(ag, bg, sag, sbg, GREY)),
        "dr_stops": float(dynamic_range_stops(bg)),
        "crossover_level": float(cx),
        "crossover_stops": float(cstops),
    }
    out |= {k: float(v) for k, v in pt.items()}
    out["fit_frames"] = int(profile.n_frames) if profile is not None else 0
    out["fit_pixels"] = int(profile.n_pixels) if profile is not None else 0
    return out


def _qa(rows: pd.DataFrame) -> dict[str, Any]:
    noisy = rows[rows["role"] == "noisy"]
    checked = noisy[noisy["status"].isin(["ok", "excluded"])]
    excluded = checked[checked["status"] == "excluded"]
    reasons = (
        excluded["qa_reason"].dropna().astype(str) if "qa_reason" in excluded else pd.Series([], dtype=str)
    )
    reasons = reasons[reasons != ""].map(lambda s: s.split(":")[0])
    shift = np.hypot(pd.to_numeric(checked.get("align_dy"), errors="coerce"),
                     pd.to_numeric(checked.get("align_dx"), errors="coerce"))  # fmt: skip
    ratio = pd.to_numeric(checked.get("gain"), errors="coerce") / pd.to_numeric(
        checked.get("expected_gain"), errors="coerce"
    )
    return {
        "qa_checked": len(checked),
        "qa_passed": int((checked["status"] == "ok").sum()),
        "qa_excluded": len(excluded),
        "qa_main_reason": reasons.mode().iloc[0] if len(reasons) else "",
        "align_shift_median_px": float(np.nanmedian(shift)) if np.isfinite(shift).any() else math.nan,
        "gain_ratio_median": float(np.nanmedian(ratio)) if np.isfinite(ratio).any() else math.nan,
    }


def _nanstat(values, fn) -> float:
    v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return float(fn(v)) if v.size else math.nan


def sensor_table(
    cat: pd.DataFrame,
    frames: pd.DataFrame | None,
    profiles,
    noise_source: dict[str, str] | None = None,
) -> pd.DataFrame:
    """``sensors.csv``: one row per sensor and ISO (frames without an ISO: one row with ISO NaN).

    Parameters
    ----------
    cat
        The store's catalog.
    frames
        Per-frame pixel statistics from :func:`rawlab.stats.pixels.frame_stats` (``None``: those columns NaN).
    profiles
        A :class:`~rawlab.noise.profile.NoiseProfileSet` (``None``: noise columns NaN). ISOs a sensor's profile
        has but the store lacks get a row too (counts 0).
    noise_source
        Per sensor, where its noise came from (e.g. ``"fit (paired)"``, ``"profile noise.json"``).

    Columns
    -------
    Counts: ``n_frames``, ``n_clean``/``n_noisy``/``n_single`` (role), ``n_ok``/``n_excluded``/``n_failed``
    (status), ``n_scenes``. Exposure: ``exposure_time_min``/``_median``/``_max`` (s), ``mean_level_median``
    and ``level_p99_median`` (normalised), ``headroom_stops`` (stops from the median 99th-percentile level to
    white). Saturation: ``saturated_frac_mean``/``_max``, ``zero_frac_mean`` (0..1). QA of noisy frames:
    ``qa_checked``, ``qa_passed``, ``qa_excluded``, ``qa_main_reason``, ``align_shift_median_px`` (mosaic
    px), ``gain_ratio_median`` (measured over ISO x exposure). Noise: see :func:`noise_columns`.
    """
    cat = _labelled(cat)
    spans = white_minus_black(cat)
    noise_source = noise_source or {}
    by_path = frames.set_index("path") if frames is not None and len(frames) else None
    seen, rows = set(), []
    for sensor, iso, r in _groups(cat):
        seen.add((sensor, iso))
        rows.append(_row(sensor, iso, r, by_path, profiles, spans, noise_source))
    if profiles is not None:  # profiled ISOs that the store does not have
        for sp in profiles.sensors:
            if sp.sensor not in set(cat["sensor"]):
                continue
            for p in sp.profiles:
                if (sp.sensor, float(p.iso)) not in seen:
                    rows.append(
                        _row(sp.sensor, float(p.iso), cat.iloc[0:0], None, profiles, spans, noise_source)
                    )
    out = pd.DataFrame(rows)
    return out.sort_values(["sensor", "iso"], na_position="last", kind="stable").reset_index(drop=True)


def _profile_at(profiles, sensor: str, iso: float):
    if profiles is None or not np.isfinite(iso):
        return None, None
    for sp in profiles.sensors:
        if sp.sensor == sensor:
            for p in sp.profiles:
                if math.isclose(float(p.iso), iso):
                    return sp, p
            return sp, None
    return None, None


def _row(sensor, iso, r, by_path, profiles, spans, noise_source) -> dict[str, Any]:
    span = spans.get(sensor, np.full(4, np.nan))
    out: dict[str, Any] = {"sensor": sensor, "iso": iso}
    out["cfa"] = ", ".join(sorted(r["cfa"].dropna().astype(str).unique())) if len(r) else ""
    out["white_minus_black_dn"] = green(span)
    out["n_frames"] = len(r)
    out |= {f"n_{k}": int((r["role"] == k).sum()) for k in ROLES}
    out |= {f"n_{k}": int((r["status"] == k).sum()) for k in STATUSES}
    out["n_scenes"] = int(r["scene"].nunique()) if len(r) else 0
    exp = r.loc[r["status"] != "failed", "exposure_time"] if len(r) else []
    out |= {
        "exposure_time_min": _nanstat(exp, np.min),
        "exposure_time_median": _nanstat(exp, np.median),
        "exposure_time_max": _nanstat(exp, np.max),
    }
    px = by_path.loc[by_path.index.intersection(r["path"])] if by_path is not None else None
    if px is not None and len(px):
        p99 = _nanstat(px["level_p99"], np.median)
        out |= {
            "mean_level_median": _nanstat(px["mean_level"], np.median),
            "level_p99_median": p99,
            "headroom_stops": -math.log2(p99) if p99 > 0 else math.nan,
            "saturated_frac_mean": _nanstat(px["saturated_frac"], np.mean),
            "saturated_frac_max": _nanstat(px["saturated_frac"], np.max),
            "zero_frac_mean": _nanstat(px["zero_frac"], np.mean),
        }
    else:
        out |= dict.fromkeys(
            ("mean_level_median", "level_p99_median", "headroom_stops", "saturated_frac_mean",
             "saturated_frac_max", "zero_frac_mean"), math.nan)  # fmt: skip
    out |= _qa(r)
    sp, p = _profile_at(profiles, sensor, iso)
    out["noise_source"] = noise_source.get(sensor, "") if p is not None else ""
    out["noise_method"] = sp.method if p is not None else ""
    out |= noise_columns(p, span)
    return out


def sensor_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per sensor, from ``sensors.csv``: base-ISO dynamic range, ISO invariance, best and worst SNR."""
    rows = []
    for sensor, r in table.groupby("sensor", sort=True):
        r = r[np.isfinite(r["iso"])].sort_values("iso")
        fit = r[np.isfinite(r["a"])]
        rows.append({
            "sensor": sensor,
            "n_isos_fitted": len(fit),
            "base_iso": float(fit["iso"].iloc[0]) if len(fit) else math.nan,
            "dr_stops_base": float(fit["dr_stops"].iloc[0]) if len(fit) else math.nan,
            "iso_invariant_from": iso_invariant_from(fit["iso"], fit["read_noise_e"]),
            "read_noise_e_min": _nanstat(fit["read_noise_e"], np.min),
            "full_well_e_base": float(fit["full_well_e"].iloc[0]) if len(fit) else math.nan,
        })  # fmt: skip
    return pd.DataFrame(rows)

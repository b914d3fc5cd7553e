"""Sentences that say what each table and figure shows, computed from the numbers (never canned text).

Each function takes the tables it describes (the fields of a :class:`~rawlab.stats.pipeline.StatsResult`, or
the same tables built on their own in a notebook) and returns a list of sentences; :func:`all_findings` runs
them all on a result, by report section.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .metrics import GREY
from .table import UNKNOWN_SENSOR

__all__ = [
    "all_findings",
    "composition_findings",
    "external_findings",
    "iso_findings",
    "qa_findings",
    "range_findings",
    "snr_findings",
    "variance_findings",
]


def _iso(v) -> str:
    return "no ISO" if v is None or not np.isfinite(v) else f"ISO {v:g}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def composition_findings(catalog: pd.DataFrame, balance: pd.DataFrame) -> list[str]:
    """How many frames, how usable, and how evenly each sensor's frames spread over ISOs (``balance``:
    :func:`rawlab.stats.balance_table`)."""
    status = catalog["status"].value_counts()
    balance = balance[balance["sensor"] != UNKNOWN_SENSOR] if len(balance) else balance
    n_sensors = int(balance["sensor"].nunique()) if len(balance) else 0
    out = [
        f"The store holds {_plural(len(catalog), 'file')} from {_plural(n_sensors, 'sensor')}: "
        f"{int(status.get('ok', 0))} usable, {int(status.get('excluded', 0))} excluded by QA and "
        f"{int(status.get('failed', 0))} that could not be read."
    ]
    for r in balance.itertuples():
        if r.n_isos == 0:
            out.append(f"{r.sensor}: {r.usable} usable frames, none with an ISO in its metadata.")
            continue
        verdict = (
            "evenly spread"
            if r.imbalance <= 1.5
            else f"unbalanced: {_iso(r.most_frames_iso)} has "
            f"{r.imbalance:.1f}x the frames of {_iso(r.least_frames_iso)}"
        )
        what = "noisy frames (training pairs)" if r.basis == "noisy" else "usable frames"
        s = (
            f"{r.sensor}: {r.counted} {what} over {_plural(r.n_isos, 'ISO')} ({r.iso_min:g}–{r.iso_max:g}) and "
            f"{_plural(r.scenes, 'scene')}, {verdict} (ISO evenness {r.iso_evenness:.2f}, 1 = the same number "
            "of frames at every ISO)"
            if r.n_isos > 1
            else f"{r.sensor}: {r.counted} {what}, all at {_iso(r.iso_min)}"
        )
        s += f", plus {_plural(r.references, 'clean reference')}." if r.references else "."
        if r.no_iso:
            s += f" {_plural(r.no_iso, 'frame')} have no ISO and cannot be placed on the ISO axis."
        out.append(s)
    return out


def qa_findings(sensors: pd.DataFrame, frames: pd.DataFrame) -> list[str]:
    """QA outcomes of noisy frames (``sensors``: :func:`rawlab.stats.sensor_table`), exposure level and
    saturation per sensor (``frames``: :func:`rawlab.stats.frame_stats`)."""
    t, out = sensors, []
    checked, passed = int(t["qa_checked"].sum()), int(t["qa_passed"].sum())
    if checked:
        reasons = t.loc[t["qa_main_reason"] != "", "qa_main_reason"]
        why = f" (most often: {reasons.mode().iloc[0]})" if len(reasons) else ""
        out.append(
            f"Pair QA checked {_plural(checked, 'noisy frame')} against their clean references: {passed} "
            f"passed and {checked - passed} were excluded{why}."
        )
    else:
        out.append(
            "No noisy/clean pairs: pair QA (alignment, exposure gain, saturation) had nothing to check."
        )
    for sensor, r in frames.groupby("sensor", sort=True):
        worst = r.loc[r["saturated_frac"].idxmax()] if r["saturated_frac"].notna().any() else None
        p99 = float(np.nanmedian(r["level_p99"]))
        head = f"{-math.log2(p99):.1f} stops below white" if p99 > 0 else "at black"
        s = (
            f"{sensor}: the median frame averages {np.nanmedian(r['mean_level']):.1%} of white and its "
            f"99th-percentile level sits {head}; {np.nanmean(r['saturated_frac']):.2%} of samples are saturated "
            f"on average"
        )
        if worst is not None and worst["saturated_frac"] > 0:
            s += f" (most: {worst['saturated_frac']:.2%} in {worst['path'].rsplit('/', 1)[-1]})"
        out.append(s + ".")
    return out


def variance_findings(
    profiles, binned: dict, noise_source: dict | None = None, zero_frac: dict | None = None
) -> list[str]:
    """How well ``a·x + b`` follows the measured variances (``binned``: ``NoiseFitResult.binned``, empty for a
    profile file) and how much of the noise at 18% grey is shot noise, per sensor of ``profiles``.
    ``zero_frac`` (``{sensor: share of samples at 0 DN}``) names the sensors that clip black."""
    out, noise_source = [], noise_source or {}
    for sensor, share in sorted((zero_frac or {}).items()):
        if share > 1e-3:
            out.append(
                f"{sensor} clips black ({share:.1%} of its samples sit at 0 DN): near black its measured variance "
                "falls below the line because clipping censors the noise; the fit models the clipping (Foi et "
                "al. 2008) rather than following those points."
            )
    for sp in profiles.sensors:
        data = binned.get(sp.sensor)
        fitted = [p for p in sp.profiles if np.isfinite(p.a[1]) and np.isfinite(p.b[1])]
        if not fitted:
            out.append(f"{sp.sensor}: no ISO could be fitted, so there is no noise model to show.")
            continue
        if data:
            dev, worst = [], (0.0, None)
            for p in fitted:
                d = data.get(float(p.iso))
                if d is None:
                    continue
                for c in (1, 2):
                    m, v, n = (np.asarray(d[k])[c] for k in ("mean", "var", "n"))
                    pred = p.a[c] * m + p.b[c]
                    ok = (n >= 1000) & np.isfinite(v) & (pred > 0) & (m > 0.002) & (m < 0.9)
                    rel = np.abs(v[ok] / pred[ok] - 1)
                    dev += list(rel)
                    if rel.size and np.median(rel) > worst[0]:
                        worst = (float(np.median(rel)), p.iso)
            if dev:
                s = (
                    f"{sp.sensor} ({noise_source.get(sp.sensor, sp.method)}): the binned green variances "
                    f"follow the fitted line a·x + b within {np.median(dev):.1%} (median over {len(dev)} bins "
                    f"of at least 1,000 pixels)"
                )
                out.append(s + (f"; the loosest ISO is {worst[1]:g} ({worst[0]:.1%})." if worst[1] else "."))
        else:
            out.append(
                f"{sp.sensor}: noise from {noise_source.get(sp.sensor, 'a profile')}; a profile file holds no "
                "binned variances, so the figure shows the fitted lines only (run without --profile to see them)."
            )
        lo, hi = fitted[0], fitted[-1]
        share = [p.a[1] * GREY / (p.a[1] * GREY + p.b[1]) for p in (lo, hi)]
        out.append(
            f"{sp.sensor}: at 18% grey shot noise is {share[0]:.0%} of the variance at ISO {lo.iso:g} and "
            f"{share[1]:.0%} at ISO {hi.iso:g}."
        )
    return out


def iso_findings(laws: dict, shapes: pd.DataFrame) -> list[str]:
    """How ``a`` and ``b`` grow with ISO per sensor (``shapes``: :func:`rawlab.stats.shape_table`), and the
    gain steps and flags of each one's law (``laws``: ``{sensor: ISOLaw}``)."""
    out = []
    shapes = shapes.set_index("sensor") if len(shapes) else pd.DataFrame()
    for sensor in sorted(laws):
        if sensor not in shapes.index:
            continue
        s = shapes.loc[sensor]
        text = (
            f"{sensor}: the shot term a grows as ISO^{s['a_exponent']:.2f} (1 = proportional to ISO, as when ISO "
            f"is analog gain) and the read term b as ISO^{s['b_exponent']:.2f} over ISO "
            f"{s['iso_min']:g}–{s['iso_max']:g}"
        )
        flags = getattr(laws[sensor], "flags", [])
        steps = [f["message"] for f in flags if f.get("kind") == "gain_step"]
        other = [f["message"] for f in flags if f.get("kind") != "gain_step"]
        text += "; " + "; ".join(steps) if steps else "; no gain step"
        out.append(text + ".")
        out += [f"{sensor}: {m}." for m in other]
    return out


def snr_findings(sensors: pd.DataFrame, ranking: pd.DataFrame, overall: pd.DataFrame) -> list[str]:
    """SNR gaps between sensors at the same ISO and signal (lowest and highest compared ISO; ``ranking`` and
    ``overall``: :func:`rawlab.stats.rank_sensors`, :func:`rawlab.stats.overall_ranking`), and each
    sensor's SNR span over ISO (``sensors``)."""
    out, r = [], ranking
    if r.empty:
        out.append("No ISO is covered by two or more sensors, so no sensors are ranked against each other.")
    else:
        isos = sorted(r["iso"].unique())
        for iso in sorted({isos[0], isos[-1]}, reverse=True):
            at = r[np.isclose(r["iso"], iso)].sort_values("rank")
            best = at.iloc[0]
            for row in at.iloc[1:].itertuples():
                via = " (from its ISO law)" if row.basis == "law" or best["basis"] == "law" else ""
                out.append(
                    f"At ISO {iso:g} {row.sensor} is {-row.delta_db:.1f} dB noisier than {best['sensor']} at 18% "
                    f"grey{via}."
                )
        o = overall
        if len(o):
            lead = o.iloc[0]
            out.append(
                f"Over the {_plural(len(isos), 'ISO')} compared, {lead['sensor']} ranks first at "
                f"{lead['wins']} of {lead['n_isos']}" + "".join(
                    f"; {row.sensor} trails the best by {-row.mean_delta_db:.1f} dB on average"
                    for row in o.iloc[1:].itertuples()
                ) + "."
            )  # fmt: skip
    t = sensors[np.isfinite(sensors["snr18_db"]) & np.isfinite(sensors["iso"])]
    for sensor, g in t.groupby("sensor", sort=True):
        g = g.sort_values("iso")
        if len(g) > 1:
            lo, hi = g.iloc[0], g.iloc[-1]
            per = (lo["snr18_db"] - hi["snr18_db"]) / math.log2(hi["iso"] / lo["iso"])
            out.append(
                f"{sensor}: SNR at 18% grey falls from {lo['snr18_db']:.1f} dB at ISO {lo['iso']:g} to "
                f"{hi['snr18_db']:.1f} dB at ISO {hi['iso']:g}, {per:.1f} dB per stop of ISO."
            )
    return out


def range_findings(sensors: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    """Dynamic range, the read-noise crossover and photon transfer per sensor (``summary``:
    :func:`rawlab.stats.sensor_summary`, for the ISO-invariance point)."""
    out = []
    t = sensors[np.isfinite(sensors["dr_stops"]) & np.isfinite(sensors["iso"])]
    summ = summary.set_index("sensor") if len(summary) else pd.DataFrame()
    for sensor, g in t.groupby("sensor", sort=True):
        g = g.sort_values("iso")
        lo, hi = g.iloc[0], g.iloc[-1]
        out.append(
            f"{sensor}: {lo['dr_stops']:.1f} stops of read-noise-limited dynamic range at ISO {lo['iso']:g} and "
            f"{hi['dr_stops']:.1f} at ISO {hi['iso']:g}. Read noise stops mattering (shot noise dominates) above "
            f"{lo['crossover_level']:.2%} of white ({lo['crossover_stops']:.1f} stops below white) at ISO "
            f"{lo['iso']:g}, and above {hi['crossover_level']:.2%} ({hi['crossover_stops']:.1f} stops below) at "
            f"ISO {hi['iso']:g}."
        )
        if np.isfinite(lo["read_noise_e"]):
            s = (
                f"{sensor}: photon transfer gives {lo['gain_e_per_dn']:.2f} e-/DN and a full well of "
                f"{lo['full_well_e']:,.0f} e- at ISO {lo['iso']:g}; input-referred read noise goes from "
                f"{lo['read_noise_e']:.1f} e- at ISO {lo['iso']:g} to {hi['read_noise_e']:.1f} e- at ISO "
                f"{hi['iso']:g}"
            )
            inv = summ.loc[sensor, "iso_invariant_from"] if sensor in summ.index else math.nan
            if np.isfinite(inv):
                s += (
                    f"; it is ISO-invariant from ISO {inv:g} (higher ISOs lower the read noise by at most 10% "
                    f"more, so brightening an ISO {inv:g} raw later costs little)"
                )
            out.append(s + ".")
    return out


def external_findings(shapes: pd.DataFrame, anchor_shapes: pd.DataFrame | None, anchors) -> list[str]:
    """Where the store's ISO-law shapes (``shapes``, with percentiles) sit among the external profiles'."""
    if anchors is None or anchor_shapes is None:
        return []
    a, out = anchor_shapes, []
    name = "darktable" if anchors.kind == "darktable" else "anchor"
    for col, what in (("a_exponent", "a grows as ISO^p"), ("b_vs_a_exponent", "b grows as a^m")):
        v = a[col].to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if not v.size:
            continue
        p10, p50, p90 = np.percentile(v, [10, 50, 90])
        s = (
            f"Across {len(v)} {name} devices {what} with {what[-1]} = {p50:.2f} (median; middle 80%: "
            f"{p10:.2f}–{p90:.2f})"
        )
        ours = [
            f"{r.sensor} {getattr(r, col):.2f} (percentile {getattr(r, col + '_percentile'):.0f})"
            for r in shapes.itertuples()
            if np.isfinite(getattr(r, col))
        ]
        out.append(s + ("; " + ", ".join(ours) if ours else "") + ".")
    if not anchors.absolute:
        out.append(
            "darktable fits demosaiced data, so its absolute a and b are not raw-mosaic values: only these shapes "
            "are compared, and its cameras are not ranked against the store's sensors."
        )
    return out


def all_findings(res) -> dict[str, list[str]]:
    """Every finding of a :class:`~rawlab.stats.pipeline.StatsResult`, by report section."""
    return {
        "composition": composition_findings(res.catalog, res.balance),
        "qa": qa_findings(res.sensors, res.frames),
        "variance": variance_findings(
            res.profiles,
            res.binned,
            res.noise_source,
            res.frames.groupby("sensor")["zero_frac"].mean().to_dict(),
        ),
        "iso": iso_findings(res.laws, res.shapes),
        "snr": snr_findings(res.sensors, res.ranking, res.overall),
        "range": range_findings(res.sensors, res.summary),
        "external": external_findings(res.shapes, res.anchor_shapes, res.anchors),
    }

"""From group statistics to the calibration figures of one sensor and ISO (EMVA 1288 definitions).

Everything is per channel R, G1, G2, B in DN above the declared black level, computed for the whole plane
and for each band (:data:`rawlab.calibrate.stats.BANDS`); a figure's standard error is the spread of its band
values over ``sqrt(BANDS)``.

- **dark line**: the darks' frame means against exposure time (least squares): the intercept is the black
  offset, the slope the **dark current** (DN/s); the scatter of the frame means about the line, less what
  row and pixel noise explain, is the **black-level drift** (one offset per frame);
- **row noise** (``sigma_row``): from the variance ``V`` of the row means of the reference darks' residuals
  and the temporal variance ``T``: ``sigma_row**2 = (V - T / C) / (1 - 1 / C)`` with ``C`` columns;
- **read noise**: ``sqrt(T - sigma_row**2 - 1/12 - dark shot)`` of the reference darks (the series with the
  most frames, shortest exposure): the pixel-independent temporal noise without row noise and rounding;
- **DSNU** (EMVA 1288): the spatial standard deviation of the averaged darks, less the temporal noise left in
  the average, ``sqrt(s2 - T / L)``;
- **photon transfer** (EMVA 1288): per flat level ``mu = mean - dark(t)``, ``sigma2 = T - T_dark(t)``;
  **saturation** is ``mu`` where ``sigma2`` peaks; the **system gain** ``K`` is the slope of ``sigma2``
  against ``mu`` through the origin, up to 70% of saturation, on unclipped levels;
- **linearity error** (EMVA 1288): a line ``mu = a0 + a1 * t`` through the levels between 5% and 95% of
  saturation; ``(max(delta) - min(delta)) / 2`` with ``delta`` the relative deviation in percent;
- **PRNU** (EMVA 1288's ``sqrt(s2_y - s2_dark) / (mu_y - mu_dark)``): each flat level's spatial variance
  of the averaged pair, less its temporal part and the DSNU, is ``PRNU**2 * mu**2``; ``PRNU**2`` is the
  weighted least-squares slope over the levels between 10% and 70% of saturation (EMVA's single 50% level
  is one of them: at high ISO shot noise buries the pattern, so every level counts);
- **SNR and dynamic range**: ``DR = mu_sat / sigma_dark`` and ``SNR_max = sqrt(mu_sat / K)`` (electrons),
  in dB.
"""

from __future__ import annotations

import math

import numpy as np

from .stats import BANDS

__all__ = ["FIGURES", "fit_iso", "linearity_error"]

# name -> unit; every figure has 4 values (R, G1, G2, B) and 4 standard errors
FIGURES = {
    "read_noise_dn": "DN",
    "tukey_lambda": "",
    "tukey_ppcc": "",
    "row_noise_dn": "DN",
    "dsnu_dn": "DN",
    "prnu_percent": "%",
    "dark_current_dn_per_s": "DN/s",
    "black_offset_dn": "DN",
    "black_drift_dn": "DN",
    "system_gain_dn_per_e": "DN/e-",
    "saturation_dn": "DN",
    "saturation_e": "e-",
    "linearity_error_percent": "%",
    "dynamic_range_db": "dB",
    "snr_max_db": "dB",
    "dark_noise_dn": "DN",
}


def linearity_error(times, means, saturation) -> float:
    """EMVA 1288 linearity error (percent) of mean responses ``means`` at exposures ``times``.

    Uses the levels between 5% and 95% of ``saturation``; NaN with fewer than 3.
    """
    t = np.asarray(times, float)
    m = np.asarray(means, float)
    keep = (m >= 0.05 * saturation) & (m <= 0.95 * saturation)
    if keep.sum() < 3:
        return float("nan")
    a1, a0 = np.polyfit(t[keep], m[keep], 1)
    fit = a0 + a1 * t[keep]
    delta = 100 * (m[keep] - fit) / fit
    return float((delta.max() - delta.min()) / 2)


def _line(x, y, w=None):
    """Least-squares line: (intercept, slope); slope 0 with a single distinct x."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(np.unique(x)) < 2:
        return float(np.average(y, weights=w)), 0.0
    slope, icpt = np.polyfit(x, y, 1, w=None if w is None else np.sqrt(w))
    return float(icpt), float(slope)


def _view(darks, flats, v: int, c: int) -> dict:
    """All figures of one channel ``c`` in view ``v`` (0 whole plane, 1.. bands); NaN where not measurable."""
    nan = float("nan")
    out = dict.fromkeys(FIGURES, nan)
    curve = {"t": [], "mu": [], "sigma2": [], "s2": [], "clipped": []}
    if not darks:
        return out | {"curve": curve}
    t_all, m_all = [], []
    for g in darks:
        for m in g["means"][v]:
            t_all.append(g["exposure_time"])
            m_all.append(m[c])
    d0, dc = _line(t_all, m_all)
    multi = [g for g in darks if g["n"] >= 2]
    ref = max(multi or darks, key=lambda g: (g["n"], -g["exposure_time"]))
    h, w = ref["shape"]
    hv = h if v == 0 else h / BANDS
    out["dark_current_dn_per_s"], out["black_offset_dn"] = dc, d0
    if multi:
        t0, s_t = _line([g["exposure_time"] for g in multi], [g["temporal"][v][c] for g in multi],
                        [g["n"] - 1 for g in multi])  # fmt: skip
        T, V, L = ref["temporal"][v][c], ref["row"][v][c], ref["n"]
        row2 = max((V - T / w) / (1 - 1 / w), 0.0)
        read2 = T - row2 - 1 / 12 - s_t * ref["exposure_time"]
        dsnu2 = ref["spatial"][v][c] - T / L
        out["row_noise_dn"] = math.sqrt(row2)
        out["read_noise_dn"] = math.sqrt(max(read2, 0.0))
        out["dsnu_dn"] = math.sqrt(max(dsnu2, 0.0))
        dark_t0 = T - s_t * ref["exposure_time"]
        out["dark_noise_dn"] = math.sqrt(max(dark_t0, 0.0))
        resid = np.asarray(m_all) - (d0 + dc * np.asarray(t_all))
        if len(resid) > 2:
            explained = row2 / hv + (T - row2) / (hv * w)
            out["black_drift_dn"] = math.sqrt(max(float(resid.var(ddof=2)) - explained, 0.0))
        if v == 0 and "tukey" in ref:
            out["tukey_lambda"] = ref["tukey"][c]["lambda"]
            out["tukey_ppcc"] = ref["tukey"][c]["ppcc"]
        elif "tukey" in ref:  # bands: raw maxima (the de-biasing shift is common to all)
            tk = ref["tukey"][c]
            out["tukey_lambda"] = tk["lambda_raw_bands"][v - 1] + tk["lambda"] - tk["lambda_raw"]
            out["tukey_ppcc"] = tk["ppcc"]
    else:
        return out | {"curve": curve}
    levels = sorted((g for g in flats if g["n"] >= 2), key=lambda g: g["exposure_time"])
    for g in levels:
        t = g["exposure_time"]
        mu = float(np.mean([m[c] for m in g["means"][v]])) - (d0 + dc * t)
        curve["t"].append(t)
        curve["mu"].append(mu)
        curve["sigma2"].append(g["temporal"][v][c] - (t0 + s_t * t))
        curve["s2"].append(g["spatial"][v][c] - g["temporal"][v][c] / g["n"] - dsnu2)
        curve["clipped"].append(g["clipped"][v][c])
    if len(levels) < 3:
        return out | {"curve": curve}
    mu, s2t, s2x = (np.asarray(curve[k]) for k in ("mu", "sigma2", "s2"))
    clipped = np.asarray(curve["clipped"])
    k_sat = int(np.argmax(s2t))
    sat = float(mu[k_sat])
    out["saturation_dn"] = sat
    fit = (mu > 0) & (mu <= 0.7 * sat) & (clipped < 1e-4)
    if fit.sum() >= 2:
        K = float(np.sum(s2t[fit] * mu[fit]) / np.sum(mu[fit] ** 2))
        out["system_gain_dn_per_e"] = K
        out["saturation_e"] = sat / K
        out["snr_max_db"] = 10 * math.log10(sat / K)
    out["linearity_error_percent"] = linearity_error(curve["t"], mu, sat)
    sel = (mu >= 0.1 * sat) & (mu <= 0.7 * sat) & (clipped < 1e-4)
    if sel.sum() >= 1:
        n_pix = hv * w
        var = 2 / n_pix * (s2x[sel] + s2t[sel] / 2) ** 2  # sampling variance of each level's s2
        x = mu[sel] ** 2
        p2 = float(np.sum(x * s2x[sel] / var) / np.sum(x**2 / var))
        out["prnu_percent"] = 100 * math.sqrt(max(p2, 0.0))
    if out["dark_noise_dn"] > 0:
        out["dynamic_range_db"] = 20 * math.log10(sat / out["dark_noise_dn"])
    return out | {"curve": curve}


def fit_iso(darks: list[dict], flats: list[dict]) -> dict:
    """Figures of one sensor and ISO from its dark and flat groups (stats of :func:`group_stats` plus
    ``exposure_time``): ``{figure: {"value": [4], "stderr": [4]}}``, the curves and the frame counts."""
    views = [[_view(darks, flats, v, c) for c in range(4)] for v in range(1 + BANDS)]
    figures = {}
    for name, unit in FIGURES.items():
        vals = np.array([[views[v][c][name] for c in range(4)] for v in range(1 + BANDS)], float)
        band = vals[1:]
        ok = np.isfinite(band).sum(axis=0) >= 2
        se = np.where(
            ok,
            np.nanstd(np.where(np.isfinite(band), band, np.nan), axis=0, ddof=1) / math.sqrt(BANDS),
            np.nan,
        )
        figures[name] = {"value": _clean(vals[0]), "stderr": _clean(se), "unit": unit}
    curves = [views[0][c]["curve"] for c in range(4)]
    dark_points = [
        {"exposure_time": g["exposure_time"], "means": [m for m in g["means"][0]], "n": g["n"]} for g in darks
    ]
    return {
        "figures": figures,
        "ptc": curves,
        "dark_points": dark_points,
        "n_darks": sum(g["n"] for g in darks),
        "n_flats": sum(g["n"] for g in flats),
    }


def _clean(a) -> list:
    return [None if not np.isfinite(x) else float(x) for x in np.asarray(a, float)]

"""Figures of ``rawlab stats``: composition, exposure, noise against ISO, SNR, dynamic range, law shapes.

Every function returns a matplotlib ``Figure`` built with the object API (no ``pyplot``), so it works headless,
in worker threads and in notebooks (``display(fig)``) without touching the notebook's backend; :func:`to_png`
renders one. Signal is normalised (0 = black, 1 = white), noise ``Var = a·x + b`` (green: mean of G1, G2).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd

from .metrics import GREY, snr_db
from .pixels import _NF, HIST_EDGES

__all__ = [
    "plot_composition",
    "plot_dynamic_range",
    "plot_exposure",
    "plot_law_shapes",
    "plot_noise_vs_iso",
    "plot_snr",
    "plot_variance_mean",
    "sensor_colours",
    "to_png",
]

_ROLE_COLOURS = {"clean": "tab:blue", "noisy": "tab:orange", "single": "tab:green", "(none)": "tab:grey"}


def _figure(nrows: int, ncols: int, size: tuple[float, float]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    return fig, np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()


def _legend(ax, **kwargs) -> None:
    """A legend when the axes has labelled artists (matplotlib warns otherwise)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def to_png(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def sensor_colours(sensors) -> dict[str, str]:
    """A fixed colour per sensor (tab10, in sorted order), the same in every figure."""
    return {s: f"C{i % 10}" for i, s in enumerate(sorted(sensors))}


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 2) or 1
    return math.ceil(max(n, 1) / cols), cols


def _iso_label(iso: float) -> str:
    return "no ISO" if not np.isfinite(iso) else f"{iso:g}"


def plot_composition(composition: pd.DataFrame):
    """Frames per ISO for each sensor, stacked by role; excluded and failed frames hatched on top."""
    sensors = sorted(composition["sensor"].unique())
    nr, nc = _grid(len(sensors))
    fig, axes = _figure(nr, nc, (6.0 * nc, 3.6 * nr))
    for ax, sensor in zip(axes, sensors, strict=False):
        rows = composition[composition["sensor"] == sensor]
        isos = sorted(rows["iso"].unique(), key=lambda v: (not np.isfinite(v), v))
        pos = np.arange(len(isos))
        bottom = np.zeros(len(isos))
        for role, col in _ROLE_COLOURS.items():
            r = rows[(rows["role"] == role) & (rows["status"] == "ok")]
            h = np.array([r.loc[_same(r["iso"], i), "frames"].sum() for i in isos], float)
            if h.any():
                ax.bar(pos, h, bottom=bottom, color=col, label=f"{role} (ok)")
                bottom += h
        for status, hatch in (("excluded", "//"), ("failed", "xx")):
            r = rows[rows["status"] == status]
            h = np.array([r.loc[_same(r["iso"], i), "frames"].sum() for i in isos], float)
            if h.any():
                ax.bar(pos, h, bottom=bottom, color="white", edgecolor="crimson", hatch=hatch, label=status)
                bottom += h
        ax.set_xticks(pos, [_iso_label(i) for i in isos])
        ax.set_xlabel("ISO")
        ax.set_ylabel("frames")
        ax.set_title(sensor)
        _legend(ax, fontsize=8)
        ax.grid(True, axis="y", alpha=0.25)
    for ax in axes[len(sensors) :]:
        ax.set_visible(False)
    fig.suptitle("Dataset composition: frames per ISO, by role and status")
    return fig


def _same(series: pd.Series, iso: float) -> pd.Series:
    return series.isna() if not np.isfinite(iso) else np.isclose(series.astype(float), iso)


def plot_exposure(hists: dict[tuple[str, float], np.ndarray]):
    """Distribution of signal levels in stops below white, per sensor and ISO (all channels pooled)."""
    from matplotlib import colormaps

    sensors = sorted({s for s, _ in hists})
    nr, nc = _grid(len(sensors))
    fig, axes = _figure(nr, nc, (6.0 * nc, 3.6 * nr))
    centres = 0.5 * (HIST_EDGES[1:] + HIST_EDGES[:-1])
    for ax, sensor in zip(axes, sensors, strict=False):
        isos = sorted((i for s, i in hists if s == sensor), key=lambda v: (not np.isfinite(v), v))
        cmap = colormaps["viridis"]
        for k, iso in enumerate(isos):
            h = hists[(sensor, iso)]
            total = h[:, 0].sum()
            dens = h[:, _NF:].sum(axis=0) / total if total else np.zeros(len(centres))
            sat, under = (h[:, j].sum() / total if total else 0 for j in (3, 5))
            ax.plot(centres, 100 * dens, color=cmap(0.9 * k / max(len(isos) - 1, 1)),
                    label=f"ISO {_iso_label(iso)}: {sat:.2%} saturated, {under:.1%} at or below black")  # fmt: skip
        ax.set_xlabel("signal, stops below white (log2 x)")
        ax.set_ylabel("% of samples per 1/4 stop")
        ax.set_title(sensor)
        ax.set_xlim(HIST_EDGES[0], 0.2)
        ax.axvline(0, color="crimson", lw=1)
        _legend(ax, fontsize=7)
        ax.grid(True, alpha=0.25)
    for ax in axes[len(sensors) :]:
        ax.set_visible(False)
    fig.suptitle("Exposure: where the samples sit below white (red line: white level)")
    return fig


def plot_variance_mean(profiles, binned: dict, noise_source: dict | None = None):
    """Variance against mean in G1, one panel per sensor: binned data (where the fit was done here) and each
    ISO's fitted line ``a·x + b``. ``binned`` is ``NoiseFitResult.binned`` (``{sensor: {iso: {"mean", "var",
    "n"}}}``); per-channel detail is in ``rawlab noise-fit``'s own plots."""
    from matplotlib import colormaps

    sensors = list(profiles.sensors)
    nr, nc = _grid(len(sensors))
    fig, axes = _figure(nr, nc, (6.0 * nc, 4.2 * nr))
    cmap = colormaps["viridis"]
    for ax, sp in zip(axes, sensors, strict=False):
        data = binned.get(sp.sensor) or {}
        ps = sorted(sp.profiles, key=lambda p: p.iso)
        for k, p in enumerate(ps):
            col = cmap(0.9 * k / max(len(ps) - 1, 1))
            lo = 1e-4
            d = data.get(float(p.iso))
            if d is not None:
                m, v, n = (np.asarray(d[key], dtype=float)[1] for key in ("mean", "var", "n"))
                ok = np.isfinite(m) & np.isfinite(v) & (m > 0) & (v > 0) & (n > 100)
                ax.plot(m[ok], v[ok], "o", ms=2.5, color=col, alpha=0.6)
                lo = m[ok].min() if ok.any() else lo
            if np.isfinite(p.a[1]) and np.isfinite(p.b[1]):
                x = np.geomspace(lo, 1.0, 60)
                ax.plot(x, p.a[1] * x + p.b[1], "-", color=col, lw=1.2, label=f"ISO {p.iso:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("mean signal x (G1, normalised: 1 = white)")
        ax.set_ylabel("variance of x (normalised²)")
        how = (noise_source or {}).get(sp.sensor, sp.method)
        ax.set_title(f"{sp.sensor} ({how}{'' if data else '; fitted lines only'})")
        ax.grid(True, which="both", alpha=0.25)
        _legend(ax, fontsize=7, ncol=2)
    for ax in axes[len(sensors) :]:
        ax.set_visible(False)
    fig.suptitle("Variance against mean: points binned data, lines Var = a·x + b per ISO")
    return fig


def _law_curve(law, lo: float, hi: float):
    """Green ``a`` and ``b`` of ``law`` from ISO ``lo`` to ``hi``; ``b`` broken (NaN) at each gain step."""
    grid = np.geomspace(lo, hi, 200)
    a, b = law.predict(grid)
    b = 0.5 * (b[:, 1] + b[:, 2])
    if getattr(law, "b_form", "two-term") == "two-term":
        for seg in law.segments[1:]:
            b[np.searchsorted(grid, seg.iso_min) - 1] = np.nan
    return grid, 0.5 * (a[:, 1] + a[:, 2]), b


def plot_noise_vs_iso(table: pd.DataFrame, laws: dict | None = None, shapes: pd.DataFrame | None = None):
    """Shot term ``a`` and read term ``b`` (green) against ISO for every sensor, with each one's ISO law."""
    fig, axes = _figure(1, 2, (12.5, 4.8))
    t = table[np.isfinite(table["a"]) & np.isfinite(table["iso"])]
    colours = sensor_colours(t["sensor"].unique())
    for sensor, r in t.groupby("sensor", sort=True):
        col = colours[sensor]
        law = (laws or {}).get(sensor)
        curve = _law_curve(law, r["iso"].min(), r["iso"].max()) if law is not None and len(r) > 1 else None
        for k, (ax, name) in enumerate(zip(axes, ("a", "b"), strict=True)):
            y, err = r[name].to_numpy(), r[f"{name}_stderr"].to_numpy()
            ok = y > 0
            label = sensor
            if shapes is not None and sensor in set(shapes["sensor"]):
                p = shapes.set_index("sensor").loc[sensor, f"{name}_exponent"]
                label += f" (~ISO^{p:.2f})"
            ax.errorbar(r["iso"][ok], y[ok], yerr=np.minimum(np.nan_to_num(err[ok]), 0.99 * y[ok]),
                        fmt="o", color=col, label=label)  # fmt: skip
            if curve is not None:
                ax.plot(curve[0], curve[1 + k], "-", color=col, lw=1, alpha=0.8)
    for ax, name, unit in zip(axes, ("shot term a", "read term b"), ("", "²"), strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("ISO")
        ax.set_ylabel(f"{name} (green, normalised{unit})")
        ax.set_title(f"{name} vs ISO (points: measured; lines: law over ISO)")
        ax.grid(True, which="both", alpha=0.25)
        _legend(ax, fontsize=8)
    fig.suptitle("Noise against ISO across sensors, Var = a·x + b")
    return fig


def plot_snr(table: pd.DataFrame, ranking: pd.DataFrame, iso: float | None):
    """Left: SNR against signal at one common ISO; right: SNR at 18% grey against ISO, every sensor."""
    fig, axes = _figure(1, 2, (12.5, 4.8))
    colours = sensor_colours(set(table["sensor"]) | set(ranking["sensor"]))
    x = np.geomspace(1e-3, 1.0, 200)
    if iso is not None:
        at = ranking[np.isclose(ranking["iso"], iso)]
        for r in at.itertuples():
            ls = "-" if r.basis == "measured" else "--"
            axes[0].plot(x, snr_db(r.a, r.b, x), ls, color=colours[r.sensor],
                         label=f"{r.sensor}: {r.snr_db:.1f} dB at 18%" + (" (law)" if r.basis == "law" else ""))  # fmt: skip
        axes[0].axvline(GREY, color="grey", ls=":", lw=1)
        axes[0].set_title(f"SNR against signal at ISO {iso:g}")
    else:
        axes[0].set_title("SNR against signal: no ISO that two sensors share")
    axes[0].set_xscale("log")
    axes[0].set_xlabel("signal x (normalised: 1 = white)")
    t = table[np.isfinite(table["snr18_db"]) & np.isfinite(table["iso"])]
    for sensor, r in t.groupby("sensor", sort=True):
        axes[1].errorbar(r["iso"], r["snr18_db"], yerr=np.nan_to_num(r["snr18_db_stderr"]), fmt="o-",
                         color=colours[sensor], label=sensor)  # fmt: skip
    axes[1].set_xscale("log")
    axes[1].set_xlabel("ISO")
    axes[1].set_title("SNR at 18% grey against ISO")
    for ax in axes:
        ax.set_ylabel("SNR, dB = 20·log10(x / σ)")
        ax.grid(True, which="both", alpha=0.25)
        _legend(ax, fontsize=8)
    fig.suptitle("Signal-to-noise ratio (green), same ISO and signal level = same exposure")
    return fig


def plot_dynamic_range(table: pd.DataFrame, summary: pd.DataFrame | None = None):
    """Left: read-noise-limited dynamic range and read-noise crossover against ISO; right: read noise in
    electrons against ISO (photon transfer), with each sensor's ISO-invariance point."""
    fig, axes = _figure(1, 2, (12.5, 4.8))
    t = table[np.isfinite(table["dr_stops"]) & np.isfinite(table["iso"])]
    colours = sensor_colours(t["sensor"].unique())
    inv = summary.set_index("sensor")["iso_invariant_from"] if summary is not None and len(summary) else {}
    for sensor, r in t.groupby("sensor", sort=True):
        col = colours[sensor]
        axes[0].plot(r["iso"], r["dr_stops"], "o-", color=col, label=f"{sensor}: DR = log2(1/√b)")
        axes[0].plot(r["iso"], r["crossover_stops"], "s--", color=col, ms=4, alpha=0.7,
                     label=f"{sensor}: shot = read noise at log2(a/b) stops below white")  # fmt: skip
        ok = np.isfinite(r["read_noise_e"])
        if ok.any():
            axes[1].plot(r["iso"][ok], r["read_noise_e"][ok], "o-", color=col, label=sensor)
            v = inv.get(sensor, math.nan) if hasattr(inv, "get") else math.nan
            if np.isfinite(v):
                axes[1].axvline(v, color=col, ls=":", lw=1.2, label=f"{sensor}: ISO-invariant from {v:g}")
    axes[0].set_ylabel("stops")
    axes[0].set_title("Dynamic range (read-noise-limited) and read-noise crossover")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("read noise, electrons (input-referred)")
    axes[1].set_title("Photon transfer: read noise = √b / a")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("ISO")
        ax.grid(True, which="both", alpha=0.25)
        _legend(ax, fontsize=7)
    fig.suptitle("Where read noise matters")
    return fig


def plot_law_shapes(ours: pd.DataFrame, anchors: pd.DataFrame, anchor_name: str):
    """Histograms of the anchors' ISO-law exponents, with the store's sensors as vertical lines."""
    fig, axes = _figure(1, 3, (15, 4.2))
    colours = sensor_colours(ours["sensor"])
    cols = [("a_exponent", "a ~ ISO^p: p"), ("b_exponent", "b ~ ISO^q: q"), ("b_vs_a_exponent", "b ~ a^m: m")]
    for ax, (col, label) in zip(axes, cols, strict=True):
        ref = anchors[col].to_numpy(dtype=float)
        ref = ref[np.isfinite(ref)]
        if ref.size:
            lo, hi = np.percentile(ref, [1, 99])
            ax.hist(np.clip(ref, lo, hi), bins=40, color="lightgrey", edgecolor="grey",
                    label=f"{anchor_name} ({ref.size} devices)")  # fmt: skip
        for r in ours.itertuples():
            v = getattr(r, col)
            if np.isfinite(v):
                ax.axvline(v, color=colours[r.sensor], lw=2, label=f"{r.sensor}: {v:.2f}")
        ax.set_xlabel(label)
        ax.set_ylabel("devices")
        _legend(ax, fontsize=7)
        ax.grid(True, alpha=0.25)
    fig.suptitle("Shape of the noise law over ISO: the store's sensors among external profiles")
    return fig

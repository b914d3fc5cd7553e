"""Plots a person reads to judge a noise fit: variance against mean, and the law over ISO.

Figures are drawn with matplotlib's object API (``Figure`` and its Agg canvas, never ``pyplot``), so they work
on headless machines and in worker threads and leave a notebook's backend alone. matplotlib is imported only
when a plot is drawn.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..bayer import CHANNELS
from .profile import ISOProfile, SensorProfile

__all__ = ["plot_iso_law", "plot_variance_mean"]

_CHANNEL_COLOURS = ("tab:red", "tab:green", "tab:olive", "tab:blue")
_X_LABEL = "mean signal x (normalised: 0 = black, 1 = white)"
_V_LABEL = "variance of x (normalised²)"


def _figure(nrows: int, ncols: int, size: tuple[float, float]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    return fig, np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()


def _fit_table(fits: Any) -> dict[float, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Normalise the accepted forms to ``{iso: (a, b, a_stderr, b_stderr)}``, each 4 values."""
    if fits is None:
        return {}
    if isinstance(fits, SensorProfile):
        fits = fits.profiles
    if isinstance(fits, Mapping):
        out = {}
        for iso, v in fits.items():
            a, b = np.asarray(v[0], float), np.asarray(v[1], float)
            se = [np.asarray(v[i], float) if len(v) > i else np.full(4, np.nan) for i in (2, 3)]
            out[float(iso)] = (a, b, *se)
        return out
    if isinstance(fits, Sequence) and all(isinstance(p, ISOProfile) for p in fits):
        return {
            float(p.iso): tuple(np.asarray(v, float) for v in (p.a, p.b, p.a_stderr, p.b_stderr))
            for p in fits
        }
    raise TypeError(
        "fits must be a SensorProfile, a list of ISOProfile, or a mapping iso -> (a, b[, a_stderr, b_stderr])"
    )


def _bins(entry: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(entry, Mapping):
        entry = (entry["mean"], entry["var"], entry["n"])
    mean, var, n = (np.asarray(v, dtype=np.float64).reshape(4, -1) for v in entry)
    return mean, var, n


def _iso_colours(isos: Sequence[float]) -> dict[float, Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    span = max(len(isos) - 1, 1)
    return {iso: cmap(0.9 * i / span) for i, iso in enumerate(sorted(isos))}


def plot_variance_mean(
    binned: Mapping[float, Any],
    fits: Any,
    out_png: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Binned variance against mean, with the fitted ``a * x + b`` line, one panel per channel.

    Parameters
    ----------
    binned
        ``{iso: (mean, var, n)}`` (or ``{iso: {"mean": ..., "var": ..., "n": ...}}``). Each is an array
        ``(4, n_bins)`` per channel R, G1, G2, B: the bin's mean signal and variance (normalised units), and
        its pixel count. Bins with no pixels or non-positive mean or variance are not drawn (log axes).
    fits
        The fitted parameters: a :class:`SensorProfile`, a list of :class:`ISOProfile`, or
        ``{iso: (a, b)}``; ``None`` to draw the data alone.
    out_png
        Output file (PNG).

    Returns
    -------
    Path
        ``out_png``.
    """
    from matplotlib.lines import Line2D

    table = _fit_table(fits)
    data = {float(iso): _bins(v) for iso, v in binned.items()}
    isos = sorted(set(data) | set(table))
    colours = _iso_colours(isos)
    fig, axes = _figure(2, 2, (11, 8.5))
    for c, ax in enumerate(axes):
        for iso in isos:
            col, span = colours[iso], (1e-4, 1.0)
            if iso in data:
                m, v, k = (arr[c] for arr in data[iso])
                ok = np.isfinite(m) & np.isfinite(v) & (m > 0) & (v > 0) & (k > 1)
                err = v[ok] * np.sqrt(2.0 / (k[ok] - 1))  # sampling error of a variance
                ax.errorbar(
                    m[ok], v[ok], yerr=np.minimum(err, 0.99 * v[ok]), fmt="o", ms=3, color=col, alpha=0.6
                )
                span = (m[ok].min(), m[ok].max()) if ok.any() else span
            if iso in table:
                x = np.geomspace(*span, 200)
                ax.plot(x, table[iso][0][c] * x + table[iso][1][c], "-", color=col, lw=1.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"channel {CHANNELS[c]}")
        ax.set_xlabel(_X_LABEL)
        ax.set_ylabel(_V_LABEL)
        ax.grid(True, which="both", alpha=0.25)
    handles = [Line2D([], [], color=colours[i], marker="o", ls="-", label=f"ISO {i:g}") for i in isos]
    handles += [
        Line2D([], [], color="grey", marker="o", ls="none", label="binned data (±1σ sampling error)"),
        Line2D([], [], color="grey", ls="-", label="fit: Var = a·x + b"),
    ]
    fig.legend(handles=handles, loc="outside right center", title="ISO")
    fig.suptitle(title or "Noise: variance against mean, per ISO and channel")
    out = Path(out_png)
    fig.savefig(out, dpi=110)
    return out


def plot_iso_law(law, fits: Any, out_png: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """``a`` and ``b`` against ISO: measured points, the fitted law, gain steps and flagged ISOs.

    Parameters
    ----------
    law
        An :class:`~rawlab.noise.isolaw.ISOLaw`.
    fits
        The per-ISO measurements (same forms as :func:`plot_variance_mean`); ``None`` uses the ones the law
        was fitted to.
    out_png
        Output file (PNG).
    """
    from matplotlib.lines import Line2D

    table = _fit_table(fits)
    if not table and law.data is not None:
        d = law.data
        table = {
            float(i): (d["a"][k], d["b"][k], d["a_stderr"][k], d["b_stderr"][k])
            for k, i in enumerate(d["iso"])
        }
    isos = np.array(sorted(table))
    flagged = {}
    for f in law.flags:
        if f["kind"] != "gain_step":
            flagged.setdefault(float(f["iso"]), []).append(f["kind"].replace("_", " "))
    lo = isos.min() / 1.5 if isos.size else 50.0
    hi = isos.max() * 1.5 if isos.size else 12800.0
    grid = np.geomspace(lo, hi, 300)
    pa, pb = law.predict(grid)
    breaks = [seg.iso_min for seg in law.segments[1:]] if law.b_form == "two-term" else []
    fig, axes = _figure(1, 2, (13, 5.5))
    for p, (ax, name, unit) in enumerate(zip(axes, ("a", "b"), ("shot term a", "read term b"), strict=True)):
        pred = (pa, pb)[p]
        for c in range(4):
            col = _CHANNEL_COLOURS[c]
            if isos.size:
                y = np.array([table[i][p][c] for i in isos])
                err = np.array([table[i][p + 2][c] for i in isos])
                ok = np.isfinite(y) & (y > 0)
                yerr = np.where(np.isfinite(err[ok]), np.minimum(err[ok], 0.99 * y[ok]), 0)
                ax.errorbar(
                    isos[ok], y[ok], yerr=yerr, fmt="o", ms=4, color=col, label=f"{CHANNELS[c]} measured"
                )
            for piece in np.split(
                np.arange(grid.size), np.searchsorted(grid, breaks)
            ):  # no line across a step
                ax.plot(grid[piece], pred[piece, c], "-", color=col, lw=1, alpha=0.8)
        for iso, kinds in flagged.items():
            y = max(
                (table[iso][p][c] for c in range(4) if iso in table and table[iso][p][c] > 0), default=None
            )
            if y is not None:
                ax.plot([iso], [y], "o", ms=14, mfc="none", mec="crimson", mew=2)
                ax.annotate(
                    ", ".join(sorted(set(kinds))),
                    (iso, y),
                    xytext=(6, 10),
                    textcoords="offset points",
                    color="crimson",
                    fontsize=8,
                )
        for seg in law.segments[1:]:
            ax.axvline(seg.iso_min, color="grey", ls="--", lw=1)
            ax.annotate(
                f"gain step at ISO {seg.iso_min:g}",
                (seg.iso_min, 0.02),
                xycoords=("data", "axes fraction"),
                rotation=90,
                fontsize=8,
                color="grey",
                xytext=(3, 0),
                textcoords="offset points",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("ISO")
        ax.set_ylabel(f"{unit} (normalised{'²' if name == 'b' else ''} units)")
        law_name = (
            "a = ga·ISO"
            if name == "a"
            else ("b = b0 + b1·ISO²" if law.b_form == "two-term" else "log b = m·log a + c")
        )
        ax.set_title(f"{unit}: {law_name}")
        ax.grid(True, which="both", alpha=0.25)
        handles, _ = ax.get_legend_handles_labels()
        handles += [
            Line2D([], [], color="black", lw=1, label="fitted law"),
            Line2D([], [], color="crimson", marker="o", mfc="none", ls="none", ms=10, label="flagged ISO"),
        ]
        ax.legend(handles=handles, fontsize=8, loc="upper left")
    fig.suptitle(title or "Noise law over ISO")
    out = Path(out_png)
    fig.savefig(out, dpi=110)
    return out

"""What ``rawlab eval`` on bursts writes and prints (:mod:`rawlab.evaluation.bursts`): the
``rawlab.eval-bursts/1`` JSON, a PSNR-vs-ISO plot (static area and moving region, per sensor), a table, a
summary line. The plot uses matplotlib's object API (``Figure``, never ``pyplot``), as :mod:`.report` does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .bursts import REGIONS, BurstEvalResult

__all__ = ["format_burst_table", "plot_burst_psnr", "summary_line", "write_burst_outputs"]

_STYLE = {"ref": "tab:gray", "single": "tab:blue", "merge": "tab:green", "model": "black"}
_MARKERS = ("o", "s", "^", "D", "v", "P")


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
        f"{'sensor':<{width}} {'ISO':>6} {'N':>2} {'B':>3} | static: " + " ".join(f"{m:>7}" for m in ms)
        + f" {'merge-ref':>9} | moving: " + " ".join(f"{m:>7}" for m in ms)
    )  # fmt: skip
    lines = [head, "-" * len(head)]
    for (sensor, iso, n), by_m in _by_key(result.rows).items():
        st = " ".join(_cell(by_m[m]["psnr_static"] if m in by_m else None) for m in ms)
        mv = " ".join(_cell(by_m[m]["psnr_moving"] if m in by_m else None) for m in ms)
        gain = by_m["merge"]["psnr_static"] - by_m["ref"]["psnr_static"] if "merge" in by_m else None
        nb = max(r["n_bursts"] for r in by_m.values())
        lines.append(
            f"{sensor:<{width}} {iso:>6} {n:>2} {nb:>3} | static: {st} {_cell(gain, 9)} | moving: {mv}"
        )
    lines.append(
        "PSNR in dB over the packed planes vs the reference's clean planes (peak 1 = white), pooled over the B "
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
    from .report import write_eval

    return write_eval(
        result, out, plot=plot, plotter=plot_burst_psnr, table=format_burst_table, summary=summary_line
    )

"""What ``rawlab eval`` writes and prints: the ``rawlab.eval/1`` JSON, a PSNR-vs-ISO plot, a table, a summary.

The plot is drawn with matplotlib's object API (``Figure``, never ``pyplot``), like the noise plots, so it
works headless and in worker threads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .scoring import EvalResult

__all__ = ["EvalOutputs", "format_table", "margins", "summary_line", "write_json", "write_outputs"]

_STYLE = {
    "model": ("black", "o", "-"),
    "identity": ("tab:gray", "x", ":"),
    "vst-wavelet": ("tab:blue", "s", "--"),
    "vst-nlm": ("tab:green", "^", "--"),
    "vst-dct": ("tab:orange", "v", "--"),
    "vst-bm3d": ("tab:purple", "D", "--"),
}


@dataclass
class EvalOutputs:
    json_path: Path
    plot_path: Path | None
    lines: list[str]
    summary: str


def _table(rows: list[dict[str, Any]]) -> dict[str, dict[float, dict[str, dict[str, Any]]]]:
    t: dict[str, dict[float, dict[str, dict[str, Any]]]] = {}
    for r in rows:
        t.setdefault(r["sensor"], {}).setdefault(r["iso"], {})[r["method"]] = r
    return t


def margins(result: EvalResult) -> dict[str, dict[float, tuple[str, float]]]:
    """Per sensor and ISO: the best classical baseline (not ``identity``) and the model's margin over it, dB."""
    out: dict[str, dict[float, tuple[str, float]]] = {}
    for sensor, isos in _table(result.rows).items():
        for iso, by_m in isos.items():
            base = {m: r["psnr"] for m, r in by_m.items() if m not in ("model", "identity")}
            if "model" not in by_m or not base:
                continue
            best = max(base, key=base.__getitem__)
            out.setdefault(sensor, {})[iso] = (best, by_m["model"]["psnr"] - base[best])
    return out


def format_table(result: EvalResult) -> list[str]:
    """One line per sensor and ISO: PSNR (dB) per method, and the model's margin over the best baseline."""
    methods = result.methods
    marg = margins(result)
    width = max([len("sensor"), *(len(r["sensor"]) for r in result.rows)])
    head = f"{'sensor':<{width}} {'ISO':>6} {'n':>3} " + " ".join(f"{m:>11}" for m in methods)
    if marg:
        head += "  model-best"
    lines = [head]
    for sensor, isos in _table(result.rows).items():
        for iso, by_m in sorted(isos.items()):
            n = next(iter(by_m.values()))["n_frames"]
            cells = " ".join(f"{by_m[m]['psnr']:>11.2f}" for m in methods)
            line = f"{sensor:<{width}} {iso:>6g} {n:>3} {cells}"
            if iso in marg.get(sensor, {}):
                line += f"  {marg[sensor][iso][1]:>+10.2f}"
            lines.append(line)
    ssim = " ".join(
        f"{m} {np.mean([r['ssim'] for r in result.rows if r['method'] == m]):.4f}" for m in methods
    )
    speed = " ".join(
        f"{m} {np.median([r['s_per_mp'] for r in result.rows if r['method'] == m]):.2f}"
        for m in methods
        if m != "identity"
    )
    lines.append(f"PSNR in dB vs the clean reference (data range 1); mean SSIM: {ssim}")
    if speed:
        lines.append(f"seconds per mosaic megapixel (median): {speed}")
    lines += [f"note: {n}" for n in result.notes]
    return lines


def summary_line(result: EvalResult, written: list[Path] | None = None) -> str:
    """``eval: ...``: frames scored, and per sensor the model (or best method) against the best baseline."""
    n_sensors = len({r["sensor"] for r in result.rows})
    n_keys = len({(r["sensor"], r["iso"]) for r in result.rows})
    parts = []
    for sensor, isos in _table(result.rows).items():
        mean = {m: float(np.mean([isos[i][m]["psnr"] for i in isos])) for m in result.methods}
        base = {m: v for m, v in mean.items() if m not in ("model", "identity")}
        if "model" in mean and base:
            best = max(base, key=base.__getitem__)
            worst = min(d for _, d in margins(result)[sensor].values())
            parts.append(
                f"{sensor}: model {mean['model']:.1f} dB vs {best} {base[best]:.1f} "
                f"({mean['model'] - base[best]:+.1f}, worst ISO {worst:+.1f})"
            )
        elif "model" in mean and "identity" in mean:
            parts.append(
                f"{sensor}: model {mean['model']:.1f} dB vs noisy {mean['identity']:.1f} "
                f"({mean['model'] - mean['identity']:+.1f})"
            )
        else:
            best = max(mean, key=mean.__getitem__)
            noisy = f" (noisy {mean['identity']:.1f})" if "identity" in mean and best != "identity" else ""
            parts.append(f"{sensor}: {best} {mean[best]:.1f} dB{noisy}")
    where = f"; wrote {', '.join(map(str, written))}" if written else ""
    return (
        f"eval: {result.options['n_frames']} frames, {n_sensors} sensors, {n_keys} sensor-ISOs; "
        + "; ".join(parts)
        + f"{where} ({result.seconds:.1f} s)"
    )


def plot_psnr(result: EvalResult, path: str | os.PathLike[str]) -> Path:
    """PSNR against ISO, one panel per sensor, one line per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    table = _table(result.rows)
    n = max(1, len(table))
    fig = Figure(figsize=(5.0 * n, 3.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, n, squeeze=False)).ravel()
    for ax, (sensor, isos) in zip(axes, table.items(), strict=False):
        xs = sorted(isos)
        for m in result.methods:
            colour, marker, ls = _STYLE.get(m, (None, ".", "-"))
            ax.plot(xs, [isos[i][m]["psnr"] for i in xs], color=colour, marker=marker, ls=ls, label=m)
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{i:g}" for i in xs], minor=False)
        ax.minorticks_off()
        ax.set_xlabel("ISO")
        ax.set_ylabel("PSNR (dB, packed raw, data range 1)")
        ax.set_title(sensor)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    model = f" — model {Path(result.model).name}" if result.model else ""
    fig.suptitle(f"rawlab eval: held-out pairs of {Path(result.store).name}{model}", fontsize="medium")
    FigureCanvasAgg(fig)
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def write_json(doc: dict[str, Any], out: str | os.PathLike[str]) -> Path:
    """Write an eval document to ``out`` through a temporary file beside it (never half-written)."""
    from ..errors import RawlabError

    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(out)
    except OSError as e:
        raise RawlabError(f"cannot write {out}: {e.strerror}; choose another --out") from None
    return out


def write_eval(result, out: str | os.PathLike[str], *, plot: bool, plotter, table, summary) -> EvalOutputs:
    """Write an evaluation ``result`` (its ``to_dict()``) to ``out`` as JSON and, with ``plot``, its
    ``plotter(result, path)`` to ``<out stem>.png`` beside it; ``table(result)`` and ``summary(result,
    written)`` give the lines to print. One home for the pair and the burst evaluations' outputs."""
    out = write_json(result.to_dict(), out)
    written = [out]
    png = None
    if plot:
        png = plotter(
            result, out.with_suffix(".png") if out.suffix != ".png" else out.with_suffix(".plot.png")
        )
        written.append(png)
    return EvalOutputs(out, png, table(result), summary(result, written))


def write_outputs(result: EvalResult, out: str | os.PathLike[str], *, plot: bool = True) -> EvalOutputs:
    """Write ``out`` (JSON, schema ``rawlab.eval/1``) and ``<out stem>.png`` beside it."""
    return write_eval(result, out, plot=plot, plotter=plot_psnr, table=format_table, summary=summary_line)

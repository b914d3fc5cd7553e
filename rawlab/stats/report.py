"""Write what ``rawlab stats`` computed: CSV tables, PNG figures and a self-contained ``report.html``.

The report embeds its figures as base64 PNG (one file to mail or archive) and puts under each figure the
sentences :mod:`rawlab.stats.findings` computed from the numbers. Files written to ``DIR``:

- ``sensors.csv``: one row per sensor and ISO (:func:`rawlab.stats.table.sensor_table` lists the columns);
- ``composition.csv`` (counts per sensor, ISO, role, status), ``balance.csv`` (per sensor),
  ``frames.csv`` (per-frame pixel statistics), ``ranking.csv`` (per ISO and sensor), ``shapes.csv`` (ISO-law
  shapes of the store's sensors and of the anchors);
- ``noise.json``: the noise profile used (rawlab JSON), so a re-run can pass it as ``--profile``;
- ``report.html`` and its figures as ``*.png``.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .._version import __version__
from .findings import all_findings
from .metrics import GREY
from .table import UNKNOWN_SENSOR

__all__ = ["Written", "render_html", "write_outputs"]


@dataclass
class Written:
    files: list[Path]
    lines: list[str]
    summary: str


_DEFINITIONS = f"""
<ul>
<li><b>Signal</b> x is normalised per CFA channel: x = (DN − black) / (white − black), 0 = black, 1 = white.
Summary numbers use green, the mean of G1 and G2.</li>
<li><b>Noise</b>: Var[x] = a·x + b (a: shot term, b: read term), σ(x) = √(a·x + b).</li>
<li><b>SNR</b> at 18% grey, in dB (amplitude convention): 20·log10(x / σ(x)) = 10·log10(x² / (a·x + b)) at
x = {GREY}.</li>
<li><b>Dynamic range</b> (read-noise-limited), in stops: log2(1 / √b), from the read-noise σ up to white.</li>
<li><b>Read-noise crossover</b>: x = b / a, where shot and read variance are equal; above it read noise stops
mattering. It sits log2(a / b) stops below white.</li>
<li><b>Photon transfer</b>, where the data allow (a &gt; 0, b &gt; 0, raw-mosaic data): conversion gain
1 / (a·(white − black)) e-/DN, full well 1 / a e-, read noise √b / a e- (input-referred, everything not
proportional to the signal).</li>
<li><b>ISO-invariant from</b>: the lowest ISO whose read noise in electrons is within 10% of the lowest that any
higher ISO reaches.</li>
<li><b>Common footing</b>: sensors are compared at the same ISO and the same signal x; by the definition of ISO
speed that is also the same exposure. Between profiled ISOs a sensor's law over ISO fills in ("law").</li>
</ul>
"""

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1250px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
p.finding { background: #f3f7fb; border-left: 4px solid #4a7fb5; padding: .4em .8em; margin: .4em 0; }
img { max-width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: .85em; margin: .8em 0; }
th, td { border: 1px solid #ddd; padding: .2em .5em; text-align: right; } th { background: #f5f5f5; }
td:first-child, th:first-child { text-align: left; }
.note { color: #666; font-size: .9em; }
"""


def _table(df: pd.DataFrame, columns: list[str] | None = None, digits: int = 3) -> str:
    if df is None or df.empty:
        return "<p class='note'>(no rows)</p>"
    df = df[[c for c in (columns or list(df.columns)) if c in df.columns]]

    def fmt(v):
        if isinstance(v, float | np.floating):
            if not np.isfinite(v):
                return "–"
            if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5):
                return f"{v:.{digits}g}"
            return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:,.{max(digits - 2, 1)}f}"
        return str(v)

    return df.to_html(index=False, escape=True, formatters={c: fmt for c in df.columns}, border=0)


def _findings(lines: list[str]) -> str:
    return "".join(f"<p class='finding'>{html.escape(s)}</p>" for s in lines)


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _composition_pivot(res) -> pd.DataFrame:
    c = res.composition
    if c.empty:
        return c
    c = c.assign(iso=c["iso"].map(lambda v: "no ISO" if not np.isfinite(v) else f"{v:g}"))
    c = c.assign(kind=np.where(c["status"] == "ok", c["role"], c["status"]))
    p = c.pivot_table(index=["sensor", "iso"], columns="kind", values="frames", aggfunc="sum", fill_value=0)
    p = p.reset_index()
    p["_order"] = p["iso"].map(lambda s: float("inf") if s == "no ISO" else float(s))
    return p.sort_values(["sensor", "_order"]).drop(columns="_order")


_SENSOR_COLS = [
    "sensor", "iso", "n_frames", "n_ok", "n_excluded", "a", "b", "snr18_db", "dr_stops", "crossover_stops",
    "gain_e_per_dn", "read_noise_e", "full_well_e", "mean_level_median", "headroom_stops", "saturated_frac_mean",
    "noise_source",
]  # fmt: skip
_BALANCE_COLS = [
    "sensor", "usable", "excluded", "failed", "references", "basis", "counted", "scenes", "n_isos", "iso_min",
    "iso_max", "frames_per_iso_min",
    "frames_per_iso_max", "iso_evenness", "cfa", "sizes",
]  # fmt: skip
_RANK_COLS = ["iso", "rank", "sensor", "source", "basis", "snr_db", "delta_db", "dr_stops", "read_noise_e"]


def render_html(res, figures: dict[str, bytes]) -> str:
    """The report as one HTML string (figures: ``{name: png bytes}`` from :func:`write_outputs`)."""
    found = all_findings(res)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>rawlab stats: "
        f"{html.escape(res.store)}</title><style>{_CSS}</style></head><body>",
        f"<h1>rawlab stats: {html.escape(res.store)}</h1>",
        f"<p class='note'>rawlab {__version__}; {len(res.catalog)} files, "
        f"{len(set(res.sensors['sensor']) - {UNKNOWN_SENSOR}) if len(res.sensors) else 0} sensors; noise: "
        + html.escape("; ".join(f"{k}: {v}" for k, v in sorted(res.noise_source.items())) or "none fitted")
        + (f"; external profiles: {html.escape(res.anchors.source)}" if res.anchors is not None else "")
        + "</p>",
        "<h2>Definitions</h2>",
        _DEFINITIONS,
        "<h2>Dataset composition</h2>",
        _findings(found["composition"]),
    ]
    if "composition" in figures:
        parts.append(_img(figures["composition"], "frames per ISO, by role and status"))
    parts.append(_table(_composition_pivot(res)))
    parts.append(_table(res.balance, _BALANCE_COLS))
    parts += ["<h2>Quality checks and exposure</h2>", _findings(found["qa"])]
    if "exposure" in figures:
        parts.append(_img(figures["exposure"], "distribution of signal levels below white"))
    parts += ["<h2>Variance against mean: the noise fits</h2>", _findings(found["variance"])]
    if "variance_mean" in figures:
        parts.append(_img(figures["variance_mean"], "variance against mean with the fitted lines"))
    parts += ["<h2>Noise against ISO, across sensors</h2>", _findings(found["iso"])]
    if "noise_vs_iso" in figures:
        parts.append(_img(figures["noise_vs_iso"], "a and b against ISO"))
    parts += ["<h2>SNR: sensors on a common footing</h2>", _findings(found["snr"])]
    if "snr" in figures:
        parts.append(_img(figures["snr"], "SNR curves"))
    parts.append(_table(res.ranking, _RANK_COLS))
    parts += ["<h2>Dynamic range and where read noise matters</h2>", _findings(found["range"])]
    if "dynamic_range" in figures:
        parts.append(_img(figures["dynamic_range"], "dynamic range and read noise against ISO"))
    if res.anchors is not None:
        parts += ["<h2>Against external profiles</h2>", _findings(found["external"])]
        if "law_shapes" in figures:
            parts.append(_img(figures["law_shapes"], "ISO-law shapes"))
        parts.append(_table(res.shapes))
    parts += ["<h2>Per sensor and ISO (sensors.csv, main columns)</h2>", _table(res.sensors, _SENSOR_COLS)]
    if res.notes:
        parts.append(
            "<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in res.notes) + "</ul>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def _figures(res, out: Path) -> dict[str, bytes]:
    from . import plots

    figs = {"composition": plots.plot_composition(res.composition)} if len(res.composition) else {}
    if res.hists:
        figs["exposure"] = plots.plot_exposure(res.hists)
    if np.isfinite(res.sensors["a"]).any() if len(res.sensors) else False:
        figs["noise_vs_iso"] = plots.plot_noise_vs_iso(res.sensors, res.laws, res.shapes)
        top = float(res.ranking["iso"].max()) if len(res.ranking) else None
        figs["snr"] = plots.plot_snr(res.sensors, res.ranking, top)
        figs["dynamic_range"] = plots.plot_dynamic_range(res.sensors, res.summary)
    if res.anchor_shapes is not None and len(res.anchor_shapes) and len(res.shapes):
        figs["law_shapes"] = plots.plot_law_shapes(res.shapes, res.anchor_shapes, res.anchors.kind)
    if res.profiles.sensors:
        figs["variance_mean"] = plots.plot_variance_mean(res.profiles, res.binned, res.noise_source)
    return {name: plots.to_png(fig) for name, fig in figs.items()}


def write_outputs(res, out_dir: str | Path) -> Written:
    """Write the tables, figures, profile and ``report.html`` of ``res`` into ``out_dir`` (created).

    Raises
    ------
    RawlabError
        If ``out_dir`` cannot be written (:func:`rawlab.outputs.output_folder`; ``rawlab stats`` checks
        it before the long work too), or writing fails for the machine's reasons (disk full).
    """
    from ..errors import RawlabError
    from ..outputs import output_folder

    out = output_folder(out_dir)
    try:
        return _write(res, out)
    except OSError as e:
        raise RawlabError(
            f"cannot write {e.filename or out}: {e.strerror or e}; free space or choose another --out"
        ) from None


def _write(res, out: Path) -> Written:
    from ..noise.profile import save_profiles

    files = []
    tables = {
        "sensors.csv": res.sensors, "composition.csv": res.composition, "balance.csv": res.balance,
        "frames.csv": res.frames, "ranking.csv": res.ranking,
        "shapes.csv": pd.concat([res.shapes, res.anchor_shapes]) if res.anchor_shapes is not None else res.shapes,
    }  # fmt: skip
    for name, df in tables.items():
        df.to_csv(out / name, index=False)
        files.append(out / name)
    if res.profiles.sensors:
        save_profiles(res.profiles, out / "noise.json")
        files.append(out / "noise.json")
    figures = _figures(res, out)
    for name, png in figures.items():
        (out / f"{name}.png").write_bytes(png)
        files.append(out / f"{name}.png")
    report = out / "report.html"
    report.write_text(render_html(res, figures), encoding="utf-8")
    files.append(report)

    found = all_findings(res)
    lines = found["snr"][:4] + found["range"][:2]
    n_rows = len(res.sensors)
    n_sensors = len(set(res.sensors["sensor"]) - {UNKNOWN_SENSOR}) if n_rows else 0
    summary = (
        f"stats: {n_sensors} sensors, {n_rows} sensor/ISO rows, "
        f"{len(res.frames)} frames -> {out / 'sensors.csv'}, {report} "
        f"({res.timings.get('total', 0):.1f} s)"
    )
    return Written(files, lines, summary)

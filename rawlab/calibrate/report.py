"""Write a calibration: ``calibration.json`` (``rawlab.calibration/1``), ``figures.json`` (every figure with
its uncertainty, one row each), ``report.html`` (self-contained: plots embedded as PNG data) and, per sensor
and ISO, an EMVA 1288 descriptor for the open ``emva1288`` package (``emva1288/<sensor>_iso<ISO>.txt``).

The descriptor uses the package's photon-count sweep at one exposure: the flats' exposure times stand in for
the photon counts (relative units: no irradiance was measured, so quantum efficiency and responsivity
computed from it mean nothing; K, dark noise, DSNU, PRNU, saturation and linearity do). The package reads
one image per file; give its loader a function that returns one CFA plane of a raw (``rawlab.rawio``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import numpy as np

from ..bayer import CHANNELS
from ..errors import RawlabError
from ..outputs import output_folder
from .fit import FIGURES

__all__ = ["write_calibration"]

_HEADLINE = [
    "system_gain_dn_per_e",
    "read_noise_dn",
    "tukey_lambda",
    "row_noise_dn",
    "dsnu_dn",
    "prnu_percent",
    "dark_current_dn_per_s",
    "saturation_dn",
    "linearity_error_percent",
    "dynamic_range_db",
]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


def figure_rows(doc: dict) -> list[dict]:
    """One row per sensor, ISO, channel and figure: value, standard error and unit."""
    rows = []
    for s in doc["sensors"]:
        for i in s["isos"]:
            for name, f in i["figures"].items():
                for c, ch in enumerate(CHANNELS):
                    rows.append({"sensor": s["sensor"], "iso": i["iso"], "channel": ch, "figure": name,
                                 "value": f["value"][c], "stderr": f["stderr"][c], "unit": f["unit"]})  # fmt: skip
    return rows


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plots(sensor: dict) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = []
    isos = sensor["isos"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i in isos:
        c = i["ptc"][1]
        mu, s2 = np.asarray(c["mu"]), np.asarray(c["sigma2"])
        (line,) = axes[0].plot(mu, s2, "o", ms=4, label=f"ISO {i['iso']}")
        k = i["figures"]["system_gain_dn_per_e"]["value"][1]
        if k:
            x = np.linspace(0, mu.max(), 50)
            axes[0].plot(x, k * x, "-", color=line.get_color(), lw=1)
        snr = mu / np.sqrt(np.clip(s2 + i["figures"]["dark_noise_dn"]["value"][1] ** 2, 1e-9, None))
        ok = mu > 0
        axes[1].loglog(mu[ok], snr[ok], "o-", ms=3, color=line.get_color(), label=f"ISO {i['iso']}")
    axes[0].set(xlabel="mean above dark (DN)", ylabel="temporal variance above dark (DN²)",
                title="Photon transfer (G1); lines: K up to 70% of saturation")  # fmt: skip
    axes[1].set(xlabel="mean above dark (DN)", ylabel="SNR", title="SNR (G1)")
    axes[0].legend()
    out.append(("Photon transfer curve and SNR", _png(fig)))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i in isos:
        c = i["ptc"][1]
        t, mu = np.asarray(c["t"]), np.asarray(c["mu"])
        sat = i["figures"]["saturation_dn"]["value"][1] or mu.max()
        keep = (mu >= 0.05 * sat) & (mu <= 0.95 * sat)
        axes[0].plot(t * 1e3, mu, "o-", ms=3, label=f"ISO {i['iso']}")
        if keep.sum() >= 3:
            a1, a0 = np.polyfit(t[keep], mu[keep], 1)
            axes[1].plot(mu[keep], 100 * (mu[keep] - (a0 + a1 * t[keep])) / (a0 + a1 * t[keep]), "o-", ms=3,
                         label=f"ISO {i['iso']}")  # fmt: skip
    axes[0].set(xlabel="exposure time (ms)", ylabel="mean above dark (DN)", title="Linearity (G1)")
    axes[1].set(xlabel="mean above dark (DN)", ylabel="deviation from the line (%)",
                title="Linearity deviation, 5-95% of saturation")  # fmt: skip
    axes[0].legend()
    out.append(("Linearity", _png(fig)))

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    iso_axis = [i["iso"] for i in isos]
    for name, marker in (("read_noise_dn", "o"), ("row_noise_dn", "s"), ("dsnu_dn", "^")):
        for c, ch in enumerate(CHANNELS):
            vals = [i["figures"][name]["value"][c] for i in isos]
            errs = [i["figures"][name]["stderr"][c] or 0 for i in isos]
            vals = [np.nan if v is None else v for v in vals]
            axes[0].errorbar(iso_axis, vals, yerr=errs, fmt=marker + "-", ms=4, lw=0.8,
                             label=f"{name.replace('_dn', '')} {ch}" if c in (0, 3) else None)  # fmt: skip
    axes[0].set(xscale="log", yscale="log", xlabel="ISO", ylabel="DN", title="Noise components")
    axes[0].legend(fontsize=7)
    for i in isos:
        pts = i["dark_points"]
        t = [p["exposure_time"] for p in pts for _ in p["means"]]
        m = [mm[1] for p in pts for mm in p["means"]]
        (line,) = axes[1].plot(t, m, "o", ms=3, label=f"ISO {i['iso']}")
        f = i["figures"]
        x = np.linspace(0, max(t), 20)
        axes[1].plot(x, f["black_offset_dn"]["value"][1] + f["dark_current_dn_per_s"]["value"][1] * x, "-",
                     color=line.get_color(), lw=1)  # fmt: skip
    axes[1].set(xlabel="exposure time (s)", ylabel="dark mean above black (DN)", title="Dark current (G1)")
    axes[1].legend()
    out.append(("Noise components and dark current", _png(fig)))
    return out


def _fmt(v, se) -> str:
    if v is None:
        return "–"
    return f"{v:.4g}" + (f" ± {se:.2g}" if se is not None else "")


def _html(doc: dict) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>rawlab calibration</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#eee}"
        "img{max-width:100%}</style></head><body>",
        "<h1>Sensor calibration (EMVA 1288 figures)</h1>",
        f"<p>{html.escape(doc['units'])}. Standard errors from the spread over {8} horizontal bands. "
        f"Schema <code>{doc['schema']}</code>, rawlab {doc['rawlab_version']}.</p>",
    ]
    for s in doc["sensors"]:
        parts.append(f"<h2>{html.escape(s['sensor'])}</h2><p>CFA {s['cfa']}, black {s['black_level']}, "
                     f"white {s['white_level']}, {s['size'][0]}x{s['size'][1]}</p>")  # fmt: skip
        parts.append("<table><tr><th>ISO</th><th>channel</th>"
                     + "".join(f"<th>{n} ({FIGURES[n]})</th>" for n in _HEADLINE) + "</tr>")  # fmt: skip
        for i in s["isos"]:
            for c, ch in enumerate(CHANNELS):
                cells = "".join(
                    f"<td>{_fmt(i['figures'][n]['value'][c], i['figures'][n]['stderr'][c])}</td>"
                    for n in _HEADLINE
                )
                parts.append(f"<tr><td>{i['iso']}</td><td>{ch}</td>{cells}</tr>")
        parts.append("</table>")
        for title, png in _plots(s):
            parts.append(
                f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>"
            )
    if doc["rejected"]:
        parts.append("<h2>Rejected frames</h2><ul>")
        parts += [f"<li>{html.escape(r['path'])}: {html.escape(r['reason'])}</li>" for r in doc["rejected"]]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def emva_descriptor(sensor: dict, iso_entry: dict, frames: list[dict], bits: int) -> str | None:
    """The ``emva1288`` descriptor text of one sensor and ISO (module docstring), or None without a dark series
    of 3+ frames, a dark pair and a flat series of 3+ frames."""
    darks = [f for f in frames if f["kind"] == "dark"]
    flats = [f for f in frames if f["kind"] == "flat"]
    by_t: dict[float, list[str]] = {}
    for f in darks:
        by_t.setdefault(f["exposure_time"], []).append(f["path"])
    if not by_t:
        return None
    t_ref, ref = max(by_t.items(), key=lambda kv: (len(kv[1]), -kv[0]))
    levels: dict[float, list[str]] = {}
    for f in flats:
        levels.setdefault(f["exposure_time"], []).append(f["path"])
    spatial = [(t, p) for t, p in levels.items() if len(p) > 2]
    if len(ref) < 3 or not spatial:
        return None
    w, h = sensor["size"]
    ns = round(t_ref * 1e9)
    lines = [f"# rawlab calibration: {sensor['sensor']} ISO {iso_entry['iso']}; photon counts are the flats' "
             "exposure times in microseconds (relative units)", "v 3.0", f"n {bits} {w // 2} {h // 2}"]  # fmt: skip
    lines.append(f"d {ns}")
    lines += [f"i {p}" for p in ref[:2]]
    for t, paths in sorted(levels.items()):
        lines.append(f"b {ns} {t * 1e6:.3f}")
        lines += [f"i {p}" for p in paths[:2]]
    lines.append(f"d {ns}")
    lines += [f"i {p}" for p in ref]
    t_s, paths = max(spatial, key=lambda tp: len(tp[1]))
    lines.append(f"b {ns} {t_s * 1e6:.3f}")
    lines += [f"i {p}" for p in paths]
    return "\n".join(lines) + "\n"


def write_calibration(result, out) -> list[Path]:
    """Write ``result`` (:class:`~rawlab.calibrate.pipeline.CalibrationResult`) into the folder ``out``.

    Raises
    ------
    RawlabError
        If ``out`` cannot be written.
    """
    out = output_folder(out)
    doc = result.doc
    try:
        files = [out / "calibration.json", out / "figures.json", out / "report.html"]
        files[0].write_text(json.dumps(doc, indent=1) + "\n")
        files[1].write_text(
            json.dumps({"schema": doc["schema"], "figures": figure_rows(doc)}, indent=1) + "\n"
        )
        files[2].write_text(_html(doc))
        for s in doc["sensors"]:
            bits = int(np.ceil(np.log2(s["white_level"] + 1)))
            for i in s["isos"]:
                frames = []
                for f in result.groups.get((s["sensor"], float(i["iso"])), {}).get("frames", []):
                    frames.append(f)
                text = emva_descriptor(s, i, frames, bits)
                if text:
                    p = out / "emva1288" / f"{_slug(s['sensor'])}_iso{i['iso']}.txt"
                    p.parent.mkdir(exist_ok=True)
                    p.write_text(text)
                    files.append(p)
    except OSError as e:
        raise RawlabError(
            f"cannot write {e.filename or out}: {e.strerror or e}; free space or choose another --out"
        ) from None
    return files

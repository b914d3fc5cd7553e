"""Write the notebooks of analyses/ from the cells below (the source of truth; outputs cleared).

    python analyses/make_notebooks.py          # rewrite the .ipynb files
    python analyses/make_notebooks.py --check  # exit 1 if a notebook differs from what this script writes

Edit the cells here, not in Jupyter, and re-run: tests/test_stats.py checks that the committed notebooks are
exactly what this script writes, and executes them against a small synthetic store.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
%matplotlib inline
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
from IPython.display import Image, Markdown, display

import rawlab
import rawlab.noise
import rawlab.noise.plots
import rawlab.stats
import rawlab.stats.findings
import rawlab.stats.plots
from rawlab.cluster import RunOptions, dask_client

# The store: $RAWLAB_STORE, else the quick start's demo store (`make demo` writes rawlab-demo/store.zarr).
STORE = os.environ.get("RAWLAB_STORE") or next(
    (str(p) for p in (Path("rawlab-demo/store.zarr"), Path("../rawlab-demo/store.zarr")) if p.exists()),
    "../rawlab-demo/store.zarr",
)
pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 30)
STORE"""

CLIENT = """\
# Attach to $RAWLAB_SCHEDULER when it is set, else start a local cluster (one worker per core).
stack = ExitStack()
client, info = stack.enter_context(dask_client(echo=print))
display(Markdown(f"**Dask dashboard:** [{info.dashboard}]({info.dashboard}) (open it to watch the tasks)"))"""

CLOSE = """\
stack.close()  # closes the client (and the local cluster, if this notebook started one)"""


def qa_notebook():
    return [
        new_markdown_cell(
            "# Dataset QA\n\n"
            "Is the dataset balanced across ISOs? Which files failed or were excluded, and why? How are the "
            "frames exposed, and how much is clipped?\n\n"
            "Counts come from the catalog (a small table); levels and saturation from one Dask pass over the "
            "pixels (`rawlab.stats.frame_stats`), one task per 512x512 chunk, never a whole store in memory."
        ),
        new_code_cell(SETUP),
        new_code_cell(CLIENT),
        new_markdown_cell("## Composition: frames per sensor, ISO, role and status"),
        new_code_cell(
            "cat = rawlab.open_catalog(STORE)\n"
            "composition = rawlab.stats.composition_table(cat)\n"
            "balance = rawlab.stats.balance_table(cat)\n"
            'print(f"{len(cat)} files, {cat.sensor.nunique()} sensors; status: {cat.status.value_counts().to_dict()}")\n'
            "for line in rawlab.stats.findings.composition_findings(cat, balance):\n"
            "    print(line)\n"
            "balance"
        ),
        new_code_cell("display(rawlab.stats.plots.plot_composition(composition))"),
        new_markdown_cell("## Problems: failed files and pairs excluded by QA, with the reason"),
        new_code_cell(
            'problems = cat[cat.status != "ok"][["path", "sensor", "iso", "role", "status", "error", "qa_reason"]]\n'
            'print(f"{len(problems)} problem files")\n'
            "problems"
        ),
        new_markdown_cell(
            "## Pair QA: alignment and exposure gain of every noisy frame against its reference\n\n"
            "`gain` is the measured brightness ratio, `expected_gain` the one ISO x exposure predicts."
        ),
        new_code_cell(
            'noisy = cat[cat.role == "noisy"]\n'
            'noisy.groupby(["sensor", "iso"]).agg(frames=("path", "size"), excluded=("status", lambda s: (s == "excluded").sum()),\n'
            '                                     max_shift_px=("align_dx", lambda s: s.abs().max()),\n'
            '                                     gain=("gain", "median"), expected_gain=("expected_gain", "median"))'
        ),
        new_markdown_cell("## Exposure and saturation, from a Dask pass over every pixel"),
        new_code_cell(
            "frames, hists = rawlab.stats.frame_stats(STORE, cat, options=RunOptions(client=client))\n"
            "table = rawlab.stats.sensor_table(cat, frames, None)  # no noise profile needed here\n"
            "for line in rawlab.stats.findings.qa_findings(table, frames):\n"
            "    print(line)\n"
            'table[["sensor", "iso", "n_frames", "exposure_time_median", "mean_level_median", "headroom_stops",\n'
            '       "saturated_frac_mean", "saturated_frac_max", "zero_frac_mean", "qa_checked", "qa_excluded"]]'
        ),
        new_code_cell("display(rawlab.stats.plots.plot_exposure(hists))"),
        new_code_cell(
            "# The frames with the most clipping, to look at first\n"
            'frames.sort_values("saturated_frac", ascending=False).head(5)[\n'
            '    ["path", "sensor", "iso", "mean_level", "level_p99", "saturated_frac", "zero_frac"]]'
        ),
        new_code_cell(CLOSE),
    ]


def noise_notebook():
    return [
        new_markdown_cell(
            "# Noise against ISO for one sensor\n\n"
            "Fits `Var[x] = a·x + b` (normalised signal, 1 = white) per ISO and channel with "
            "`rawlab.noise.fit_store` on the Dask cluster, then the law over ISO, and reads off what it means: "
            "SNR at 18% grey, read-noise-limited dynamic range, where read noise stops mattering, and gain and "
            "read noise in electrons. Choose the sensor with `$RAWLAB_SENSOR` (default: the first in the store)."
        ),
        new_code_cell(SETUP),
        new_code_cell(CLIENT),
        new_code_cell(
            "cat = rawlab.open_catalog(STORE)\n"
            'SENSOR = os.environ.get("RAWLAB_SENSOR") or sorted(cat.loc[cat.status == "ok", "sensor"].unique())[0]\n'
            "fit = rawlab.noise.fit_store(STORE, sensor=SENSOR, bootstrap=50, options=RunOptions(client=client))\n"
            "profile, law = fit.profiles.sensor(SENSOR), fit.laws.get(SENSOR)\n"
            'print(f"{SENSOR}: {profile.method} fit at {len(profile.profiles)} ISOs")'
        ),
        new_markdown_cell("## Variance against mean, per ISO and channel"),
        new_code_cell(
            "figures = Path(tempfile.mkdtemp(prefix='rawlab-nb-'))\n"
            "path = rawlab.noise.plots.plot_variance_mean(fit.binned.get(SENSOR, {}), profile, figures / 'variance.png')\n"
            "display(Image(filename=str(path)))\n"
            "for line in rawlab.stats.findings.variance_findings(fit.profiles, fit.binned):\n"
            "    print(line)"
        ),
        new_markdown_cell(
            "## What the noise means, per ISO\n\n"
            "SNR = 20·log10(x / σ) at x = 0.18; dynamic range = log2(1 / √b) stops; read noise stops mattering "
            "above x = b / a (log2(a / b) stops below white); gain = 1 / (a·(white − black)) e-/DN; read noise "
            "= √b / a electrons."
        ),
        new_code_cell(
            "rows = rawlab.stats.sensor_table(cat[cat.sensor == SENSOR], None, fit.profiles)\n"
            "summary = rawlab.stats.sensor_summary(rows)\n"
            "for line in rawlab.stats.findings.range_findings(rows, summary):\n"
            "    print(line)\n"
            'rows[["iso", "a", "a_stderr", "b", "b_stderr", "snr18_db", "dr_stops", "crossover_level", "crossover_stops",\n'
            '      "gain_e_per_dn", "full_well_e", "read_noise_e", "fit_frames"]]'
        ),
        new_code_cell("display(rawlab.stats.plots.plot_dynamic_range(rows, summary))"),
        new_markdown_cell(
            "## The law over ISO\n\n"
            "`a = ga·ISO` and `b = b0 + b1·ISO²` per conversion-gain segment; gain steps and ISOs off the law "
            "are flagged. `law.predict(iso)` gives `a, b` at any ISO, e.g. one that was not shot."
        ),
        new_code_cell(
            "if law is not None:\n"
            "    display(Image(filename=str(rawlab.noise.plots.plot_iso_law(law, profile, figures / 'isolaw.png'))))\n"
            "    shapes = rawlab.stats.shape_table(fit.profiles, 'store', min_isos=2)\n"
            "    for line in rawlab.stats.findings.iso_findings({SENSOR: law}, shapes):\n"
            "        print(line)\n"
            "    isos = [p.iso for p in profile.profiles]\n"
            "    between = (isos[0] * isos[1]) ** 0.5  # an ISO between the first two profiled ones\n"
            "    a, b = law.predict(between)\n"
            "    snr = rawlab.stats.snr_db(a, b)\n"
            '    print(f"law at ISO {between:.0f}: a(G1) = {a[1]:.3e}, b(G1) = {b[1]:.3e}, SNR at 18% grey {snr[1]:.1f} dB")\n'
            "else:\n"
            '    print("fewer than two ISOs were fitted: no law over ISO")'
        ),
        new_code_cell(CLOSE),
    ]


def compare_notebook():
    return [
        new_markdown_cell(
            "# Cross-device comparison\n\n"
            "How much noisier is one sensor than another at the same ISO? `rawlab.stats.compute_stats` puts "
            "every sensor of the store on a common footing (same ISO, same signal level: 18% grey; by the "
            "definition of ISO that is also the same exposure), ranks them, and compares the shape of their "
            "noise laws with published profiles when `$RAWLAB_ANCHORS` (or `../shared/noise-anchors`) has "
            "darktable's `noiseprofiles.json`. The same numbers are in `rawlab stats STORE --out DIR`."
        ),
        new_code_cell(SETUP),
        new_code_cell(CLIENT),
        new_code_cell(
            "# Published profiles to compare the laws' shapes with: $RAWLAB_ANCHORS, else ../shared if present.\n"
            'candidates = [Path(d, "noise-anchors", "darktable-noiseprofiles.json") for d in ("../shared", "../../shared")]\n'
            'ANCHORS = os.environ.get("RAWLAB_ANCHORS") or next((str(p) for p in candidates if p.is_file()), None)\n'
            "res = rawlab.stats.compute_stats(STORE, anchors=ANCHORS, bootstrap=50, options=RunOptions(client=client))\n"
            "print(f\"anchors: {ANCHORS or 'none'}; noise: {res.noise_source}\")\n"
            "res.overall"
        ),
        new_markdown_cell("## SNR at 18% grey, sensor by sensor and ISO by ISO (dB, 20·log10(x / σ))"),
        new_code_cell(
            "for line in rawlab.stats.findings.snr_findings(res.sensors, res.ranking, res.overall):\n"
            "    print(line)\n"
            'res.ranking.pivot_table(index="iso", columns="sensor", values="snr_db")'
        ),
        new_code_cell(
            "# The question in one line: how much noisier is the runner-up than the best, at the highest common ISO?\n"
            "if len(res.ranking):\n"
            "    iso = res.ranking.iso.max()\n"
            '    at = res.ranking[res.ranking.iso == iso].sort_values("rank")\n'
            "    best, other = at.sensor.iloc[0], at.sensor.iloc[-1]\n"
            "    gap = rawlab.stats.snr_gap(res.ranking, iso, other, best)\n"
            '    print(f"At ISO {iso:g} {other} is {gap:.1f} dB noisier than {best} at 18% grey.")'
        ),
        new_code_cell(
            "top = res.ranking.iso.max() if len(res.ranking) else None\n"
            "display(rawlab.stats.plots.plot_snr(res.sensors, res.ranking, top))"
        ),
        new_markdown_cell("## Noise against ISO, and where read noise matters"),
        new_code_cell(
            "for line in rawlab.stats.findings.iso_findings(res.laws, res.shapes) + "
            "rawlab.stats.findings.range_findings(res.sensors, res.summary):\n"
            "    print(line)\n"
            "display(rawlab.stats.plots.plot_noise_vs_iso(res.sensors, res.laws, res.shapes))\n"
            "display(rawlab.stats.plots.plot_dynamic_range(res.sensors, res.summary))"
        ),
        new_markdown_cell("## Against published profiles (shape of the ISO laws)"),
        new_code_cell(
            "if res.anchor_shapes is not None:\n"
            "    for line in rawlab.stats.findings.external_findings(res.shapes, res.anchor_shapes, res.anchors):\n"
            "        print(line)\n"
            "    display(rawlab.stats.plots.plot_law_shapes(res.shapes, res.anchor_shapes, res.anchors.kind))\n"
            "else:\n"
            '    print("no external profiles: set RAWLAB_ANCHORS to a darktable noiseprofiles.json")\n'
            "res.shapes"
        ),
        new_markdown_cell("## The report: tables, figures and report.html in one folder"),
        new_code_cell(
            'out = os.environ.get("RAWLAB_REPORT") or tempfile.mkdtemp(prefix="rawlab-report-")\n'
            "written = rawlab.stats.write_outputs(res, out)\n"
            "print(written.summary)"
        ),
        new_code_cell(CLOSE),
    ]


NOTEBOOKS = {
    "01_dataset_qa.ipynb": qa_notebook,
    "02_noise_vs_iso.ipynb": noise_notebook,
    "03_cross_device.ipynb": compare_notebook,
}


def build(name: str) -> str:
    """The notebook ``name`` as the exact text this script writes."""
    nb = new_notebook(cells=NOTEBOOKS[name]())
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    for i, cell in enumerate(nb.cells):  # stable ids: regenerating changes nothing
        cell.id = f"{Path(name).stem.split('_')[0]}-{i:02d}"
    return nbformat.writes(nb) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for name in NOTEBOOKS:
        text, path = build(name), HERE / name
        if "--check" in argv:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python analyses/make_notebooks.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""The README's main job, `rawlab demo`, end to end in a subprocess, as a new user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_every_stage_and_leaves_what_the_readme_promises(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run(
        [sys.executable, "-m", "rawlab", "demo", str(out)], capture_output=True, text=True, timeout=900
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stdout + res.stderr
    for stage in ("[1/7] synth", "[2/7] catalog build", "[3/7] noise-fit", "[4/7] stats", "[5/7] train",
                  "[6/7] eval", "[7/7] export"):  # fmt: skip
        assert stage in res.stdout
    assert res.stdout.strip().splitlines()[-1].startswith("demo: ")
    report = (out / "report" / "report.html").read_text()
    assert "data:image/png;base64," in report
    rows = json.loads((out / "eval.json").read_text())["rows"]
    assert {r["method"] for r in rows} >= {"model", "identity", "vst-wavelet"}
    assert (out / "model" / "config.json").exists() and (out / "denoiser.tflite").exists()
    dngs = list((out / "denoised").glob("*.dng"))
    pngs = [p for p in (out / "denoised").glob("*.png") if not p.stem.endswith("_input")]
    assert len(dngs) == 1 and len(pngs) == 1
    # the built-in model on the same high-ISO frame: it helps there (ISO 6400 of a sensor it trained on)
    line = next(line for line in res.stdout.splitlines() if "built-in model (no --model)" in line)
    before, after = (float(v) for v in line.split(": ", 1)[1].split(" dB")[0].split(" -> "))
    assert after > before + 1.0, line

    import rawpy  # the denoised DNG opens in LibRaw with the input's dimensions

    with rawpy.imread(str(dngs[0])) as raw:
        assert raw.raw_image_visible.shape == (384, 512)

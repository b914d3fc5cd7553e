"""``rawlab noise-fit`` end to end: synthetic DNGs -> store -> fit, checked against synth's truth.json."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from rawlab.catalog.build import build_catalog
from rawlab.cluster import RunOptions
from rawlab.errors import RawlabError
from rawlab.noise.pipeline import fit_store
from rawlab.noise.profile import load_profiles
from rawlab.synth import write_dataset


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory, client):
    """Two sensors (one clips black in-camera), 3 scenes each incl. the chart, noisy clean references."""
    root = tmp_path_factory.mktemp("noise")
    summary = write_dataset(root / "data", seed=21, size=(640, 480), n_sensors=2, n_scenes=3)
    store = root / "store.zarr"
    build_catalog([str(root / "data")], str(store), options=RunOptions(client=client))
    return store, load_profiles(summary.truth_path)


@pytest.fixture(scope="module")
def paired(synth_store, client):
    store, _ = synth_store
    return fit_store(
        str(store), sensor="all", method="paired", bootstrap=50, options=RunOptions(client=client)
    )


def _errors(fit, truth):
    da, db = [], []
    for st in truth.sensors:
        sf = fit.sensor(st.sensor)
        for pt in st.profiles:
            pf = sf.at_iso(pt.iso)
            da += list(np.abs(np.array(pf.a) / np.array(pt.a) - 1))
            db += list(np.abs(np.array(pf.b) / np.array(pt.b) - 1))
    return np.array(da), np.array(db)


def test_paired_fit_meets_the_accuracy_targets(paired, synth_store):
    _, truth = synth_store
    da, db = _errors(paired.profiles, truth)
    assert np.all(np.isfinite(da)) and np.all(np.isfinite(db))
    # The targets: median |da|/a <= 2 %, |db|/b <= 5 %; worst <= 5 % and <= 15 %.
    assert np.median(da) <= 0.02 and np.median(db) <= 0.05, (np.median(da), np.median(db))
    assert da.max() <= 0.05 and db.max() <= 0.15, (da.max(), db.max())


def test_paired_fit_reports_uncertainty_law_and_validation(paired, synth_store):
    _, truth = synth_store
    for sp in paired.profiles.sensors:
        assert sp.method == "paired"
        for p in sp.profiles:
            assert p.n_frames >= 3 and p.n_pixels > 100_000
            assert all(s > 0 for s in p.a_stderr) and all(s > 0 for s in p.b_stderr)
        law = paired.laws[sp.sensor]
        true_a = np.array([p.a for p in truth.sensor(sp.sensor).profiles])
        isos = [p.iso for p in truth.sensor(sp.sensor).profiles]
        pred_a = np.array([law.predict(iso)[0] for iso in isos])
        np.testing.assert_allclose(pred_a, true_a, rtol=0.05)
        assert "ksigma" in sp.iso_model
        overall = paired.validation[sp.sensor]["overall"]
        assert overall["n_tiles"] > 20
        assert overall["share_within_tol"] >= 0.9 and abs(overall["median_ratio"] - 1) < 0.05
    # MP-2's dual conversion gain at ISO 800 shows up in its law.
    mp2 = paired.profiles.sensor("SynthCam MP-2").iso_model
    assert any(f.get("kind") == "gain_step" for f in mp2["flags"]) or len(mp2["segments"]) == 2


def test_single_image_method_on_the_same_data(synth_store, client):
    store, truth = synth_store
    fit = fit_store(
        str(store), sensor="SynthCam PG-1", method="single", bootstrap=20, options=RunOptions(client=client)
    )
    sp = fit.profiles.sensor("SynthCam PG-1")
    assert sp.method == "single"
    da, _ = _errors(fit.profiles, type(truth)([truth.sensor("SynthCam PG-1")]))
    assert np.median(da) <= 0.15, np.median(da)  # no target in the issue; reported in the closing note


def test_unknown_sensor_lists_the_sensors_present(synth_store, client):
    store, _ = synth_store
    with pytest.raises(RawlabError, match=r"sensors present: 'SynthCam MP-2', 'SynthCam PG-1'"):
        fit_store(str(store), sensor="IMX455", options=RunOptions(client=client))


@pytest.mark.parametrize("fmt", ["rawlab", "darktable", "dng"])
def test_cli_writes_profile_and_plots(synth_store, tmp_path, fmt):
    store, _ = synth_store
    out = tmp_path / "noise.json"
    res = subprocess.run(
        [sys.executable, "-m", "rawlab", "noise-fit", str(store), "--sensor", "SynthCam MP-2", "--out", str(out),
         "--format", fmt, "--workers", "2", "--bootstrap", "20"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("noise-fit: 1 sensors, 7 ISO profiles")
    doc = json.loads(out.read_text())
    if fmt == "rawlab":
        assert (
            doc["schema"] == "rawlab.noise/1" and doc["validation"]["SynthCam MP-2"]["overall"]["n_tiles"] > 0
        )
    elif fmt == "darktable":
        assert doc["noiseprofiles"][0]["models"][0]["profiles"][0]["a"]
    for png in ("variance", "isolaw"):
        path = tmp_path / f"noise_SynthCam_MP-2_{png}.png"
        assert path.stat().st_size > 10_000


def test_cli_unknown_sensor_exit_2(synth_store, tmp_path):
    store, _ = synth_store
    res = subprocess.run(
        [sys.executable, "-m", "rawlab", "noise-fit", str(store), "--sensor", "Nope", "--out", str(tmp_path / "n.json")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 2 and "sensors present" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.samples
def test_single_image_estimates_agree_across_the_eight_s40_frames(samples_dir):
    """One real camera at one ISO, eight scenes: the single-image shot term should agree across them.

    The issue's target is a coefficient of variation of 10 %. With the green quincunx (``noise-fit --method
    single``: :func:`rawlab.noise.quincunx.fit_frames`, one frame at a time here) we measure 4.9 % (Foi et al.
    per plane, before: 9 to 15 %); the bound leaves room for the sampling spread. R and B are the green
    carried over by span.
    """
    from rawlab.noise.moments import clip_bounds
    from rawlab.noise.quincunx import fit_frames, green_moments, green_offset
    from rawlab.rawio import read_raw

    estimates = []
    for path in sorted(samples_dir.glob("bayer/canon_powershot-s40_*.CRW")):
        frame = read_raw(path)
        lower, upper, step = clip_bounds(frame.info.black_level, frame.info.white_level)
        m = green_moments(frame.normalized(), offset=green_offset(frame.info.cfa))
        fit = fit_frames([m], lower=lower, upper=upper, dn_step=step, iso=50, bootstrap=0)
        estimates.append(fit.a)
    a = np.array(estimates)
    assert a.shape == (8, 4) and np.all(np.isfinite(a))
    # 10-bit CRW at ISO 50: a few 1e-4 in normalised units (about 0.1 DN per electron).
    assert np.all((a > 5e-5) & (a < 5e-4))
    cv = a.std(axis=0, ddof=1) / a.mean(axis=0)
    print(f"\nS40, 8 frames, ISO 50: a (G1) {np.round(a[:, 1] * 1e4, 2)} x 1e-4, cv {cv[1]:.1%}")
    assert np.all(cv < 0.1), cv


@pytest.mark.samples
def test_auto_falls_back_to_single_frames_on_real_samples(samples_dir, tmp_path, client):
    """Real CRWs whose same-folder 'pairs' QA excluded (different scenes) are still fitted frame by frame."""
    build_catalog([str(samples_dir / "bayer")], str(tmp_path / "s.zarr"), options=RunOptions(client=client))
    fit = fit_store(
        str(tmp_path / "s.zarr"),
        sensor="Canon PowerShot S40",
        bootstrap=20,
        options=RunOptions(client=client),
    )
    sp = fit.profiles.sensor("Canon PowerShot S40")
    assert sp.method == "single" and len(sp.profiles) == 1
    prof = sp.profiles[0]
    assert prof.iso == 50 and prof.n_frames == 8
    assert all(1e-5 < a < 1e-3 for a in prof.a)

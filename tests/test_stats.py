"""``rawlab stats`` end to end: synthetic DNGs -> store -> statistics, checked against the sensors' true physics.

The virtual sensors' physics (``rawlab/synth/sensors.py``: full well, read noise before and after the gain,
bit depth) gives every derived number in closed form, independently of the ``a``/``b`` formulas under test:
full well = FW / (ISO / base ISO) / channel gain electrons; conversion gain = 1/g e-/DN with g = V / full well
DN per electron; input-referred read noise = sqrt(s_pre^2 + (s_post^2 + 1/12) / g^2) electrons; SNR = S /
sqrt(S + read^2) for S electrons at 18% grey.
"""

from __future__ import annotations

import base64
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rawlab.catalog.build import build_catalog
from rawlab.cluster import RunOptions
from rawlab.errors import RawlabError
from rawlab.noise.profile import NoiseProfileSet, load_profiles, save_profiles
from rawlab.stats import (
    compute_stats,
    dynamic_range_stops,
    iso_invariant_from,
    load_anchors,
    photon_transfer,
    rank_sensors,
    shape_table,
    snr_db,
    snr_gap,
    write_outputs,
)
from rawlab.stats.metrics import crossover
from rawlab.synth import SENSORS, write_dataset

ANCHORS = Path(__file__).resolve().parents[2] / "shared" / "noise-anchors" / "darktable-noiseprofiles.json"
ANALYSES = Path(__file__).resolve().parents[1] / "analyses"
BY_NAME = {s.name: s for s in SENSORS}

# The noise fit's accuracy on this kind of store (the targets test_noise_pipeline holds noise-fit to): every
# per-ISO, per-channel a within 5 % and b within 15 % of the truth. What they imply for each statistic is
# derived below, so the tolerances follow from the fit accuracy rather than from what this run happened to get.
EPS_A, EPS_B = 0.05, 0.15


def physics(sensor, iso: float) -> dict[str, float]:
    """Green-channel statistics from the sensor's physical description alone (module docstring)."""
    k = iso / sensor.base_iso
    cg = 0.5 * (sensor.channel_gain[1] + sensor.channel_gain[2])
    v = 0.5 * (sensor.dn_range[1] + sensor.dn_range[2])
    full_well = sensor.full_well / (k * cg)  # electrons at white
    g = v / full_well  # DN per electron
    read = math.sqrt(sensor.read_noise_pre(iso) ** 2 + (sensor.read_post**2 + 1 / 12) / g**2)
    s = 0.18 * full_well
    return {
        "full_well_e": full_well,
        "gain_e_per_dn": 1 / g,
        "read_noise_e": read,
        "snr18_db": 20 * math.log10(s / math.sqrt(s + read**2)),
        "dr_stops": math.log2(full_well / read),
    }


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory, client):
    """Two sensors (one clips black in-camera, one with dual conversion gain), three scenes each."""
    root = tmp_path_factory.mktemp("stats")
    summary = write_dataset(root / "data", seed=21, size=(480, 360), n_sensors=2, n_scenes=3)
    store = root / "store.zarr"
    build_catalog([str(root / "data")], str(store), options=RunOptions(client=client))
    return store, summary.truth_path


@pytest.fixture(scope="module")
def fitted(synth_store, client):
    """Statistics with the noise fitted here (no profile given)."""
    store, _ = synth_store
    return compute_stats(str(store), bootstrap=30, options=RunOptions(client=client))


@pytest.fixture(scope="module")
def from_truth(synth_store, client):
    """Statistics with synth's truth.json as the profile."""
    store, truth = synth_store
    return compute_stats(str(store), profile=truth, options=RunOptions(client=client))


def test_metrics_are_the_documented_formulas():
    a, b = np.array([1e-3, 2e-4]), np.array([1e-5, 4e-7])
    np.testing.assert_allclose(snr_db(a, b), 20 * np.log10(0.18 / np.sqrt(a * 0.18 + b)))
    np.testing.assert_allclose(dynamic_range_stops(b), np.log2(1 / np.sqrt(b)))
    xc, stops = crossover(a, b)
    np.testing.assert_allclose(a * xc, b)
    np.testing.assert_allclose(2.0**-stops, xc)
    pt = photon_transfer(a, b, 4095.0)
    np.testing.assert_allclose(pt["gain_e_per_dn"], 1 / (a * 4095))
    np.testing.assert_allclose(pt["read_noise_e"], np.sqrt(b) * 4095 * pt["gain_e_per_dn"])
    # Only where the data allow: no electrons from a non-positive or missing term.
    bad = photon_transfer([0.0, 1e-3, np.nan], [1e-6, -1e-7, 1e-6], 1000.0)
    assert all(np.isnan(v).all() for v in bad.values())
    assert np.isnan(dynamic_range_stops(-1e-7)) and np.isnan(snr_db(np.nan, 1e-6))
    assert iso_invariant_from([100, 400, 800, 1600], [7.5, 2.9, 2.4, 2.2]) == 800
    assert math.isnan(iso_invariant_from([100], [3.0]))


def test_truth_profile_gives_the_physics(from_truth):
    """With the true a, b every derived statistic equals the closed-form physics of the virtual sensor."""
    t = from_truth.sensors
    assert len(t) == 13 and set(t["sensor"]) == {"SynthCam PG-1", "SynthCam MP-2"}
    for r in t.itertuples():
        expect = physics(BY_NAME[r.sensor], r.iso)
        # PG-1's channels are identical: exact. MP-2's greens differ in black level (958 and 960 DN of range)
        # and analog gain (1.00, 0.99), and the table summarises green as the mean of the two: 0.5 % then.
        rtol = 1e-9 if r.sensor == "SynthCam PG-1" else 5e-3
        for k in ("full_well_e", "gain_e_per_dn", "read_noise_e"):
            assert getattr(r, k) == pytest.approx(expect[k], rel=rtol), (r.sensor, r.iso, k)
        assert r.snr18_db == pytest.approx(expect["snr18_db"], abs=1e-9 if rtol < 1e-6 else 0.03)
        assert r.dr_stops == pytest.approx(expect["dr_stops"], abs=1e-9 if rtol < 1e-6 else 0.01)
        assert r.noise_source == "profile truth.json"
    inv = from_truth.summary.set_index("sensor")["iso_invariant_from"]
    assert inv["SynthCam PG-1"] == 800 and inv["SynthCam MP-2"] == 800  # MP-2: its dual-gain switch


def test_ranking_at_common_isos_uses_the_law_between_profiled_isos(from_truth):
    r = from_truth.ranking
    pg1 = BY_NAME["SynthCam PG-1"]
    assert sorted(r["iso"].unique()) == [
        100,
        200,
        400,
        800,
        1600,
        3200,
    ]  # MP-2 stops at 3200, PG-1 starts at 100
    at200 = r[(r["iso"] == 200) & (r["sensor"] == "SynthCam PG-1")].iloc[0]
    assert at200["basis"] == "law"  # PG-1 was not shot at ISO 200; its (true) law fills in
    assert at200["snr_db"] == pytest.approx(physics(pg1, 200)["snr18_db"], abs=1e-6)
    assert (r.groupby("iso")["rank"].min() == 1).all() and (r["delta_db"] <= 0).all()
    gap = snr_gap(r, 3200, "SynthCam MP-2", "SynthCam PG-1")
    expect = physics(pg1, 3200)["snr18_db"] - physics(BY_NAME["SynthCam MP-2"], 3200)["snr18_db"]
    assert gap == pytest.approx(expect, abs=0.03)
    with pytest.raises(RawlabError, match="not compared at ISO 6400"):
        snr_gap(r, 6400, "SynthCam MP-2", "SynthCam PG-1")


def test_fitted_statistics_agree_with_truth_within_the_fit_accuracy(fitted, synth_store):
    _, truth_path = synth_store
    truth = load_profiles(truth_path)
    t = fitted.sensors
    assert set(fitted.noise_source.values()) == {"fit (paired)"} and fitted.binned
    for r in t.itertuples():
        p = truth.sensor(r.sensor).at_iso(r.iso)
        a, b = 0.5 * (p.a[1] + p.a[2]), 0.5 * (p.b[1] + p.b[2])
        # Var(0.18) = a*0.18 + b is off by at most eps_var relatively, so SNR by at most -10 log10(1 - eps_var).
        eps_var = (EPS_A * a * 0.18 + EPS_B * b) / (a * 0.18 + b)
        assert abs(r.snr18_db - float(snr_db(a, b))) <= -10 * math.log10(1 - eps_var), (r.sensor, r.iso)
        assert abs(r.dr_stops - float(dynamic_range_stops(b))) <= -0.5 * math.log2(1 - EPS_B)
        pt = photon_transfer(a, b, r.white_minus_black_dn)
        assert r.gain_e_per_dn / pt["gain_e_per_dn"] - 1 == pytest.approx(0, abs=EPS_A / (1 - EPS_A))
        assert r.read_noise_e / pt["read_noise_e"] - 1 == pytest.approx(
            0, abs=math.sqrt(1 + EPS_B) / (1 - EPS_A) - 1
        )
        assert r.fit_frames >= 3 and r.fit_pixels > 100_000 and r.snr18_db_stderr > 0
    inv = fitted.summary.set_index("sensor")["iso_invariant_from"]
    assert inv["SynthCam PG-1"] == 800 and inv["SynthCam MP-2"] == 800
    # The ranking holds on fitted data too: the phone sensor is the noisier one at every common ISO.
    assert (fitted.ranking[fitted.ranking["rank"] == 1]["sensor"] == "SynthCam PG-1").all()


def test_counts_exposure_and_qa_come_from_catalog_and_pixels(fitted):
    t, cat = fitted.sensors.set_index(["sensor", "iso"]), fitted.catalog
    assert t["n_frames"].sum() == len(cat) == 45
    base = t.loc[("SynthCam PG-1", 100.0)]
    assert (base.n_clean, base.n_noisy, base.n_ok, base.n_scenes) == (3, 3, 6, 3)
    assert t.loc[("SynthCam MP-2", 3200.0)].qa_checked == 3
    assert (t["qa_passed"] + t["qa_excluded"] == t["qa_checked"]).all()
    # The exposure ladder: each ISO step halves the exposure time, so the median level stays put.
    pg = fitted.sensors[fitted.sensors["sensor"] == "SynthCam PG-1"]
    np.testing.assert_allclose(
        pg["exposure_time_median"] * pg["iso"], pg["exposure_time_median"].iloc[0] * 100
    )
    assert np.ptp(pg["mean_level_median"]) < 0.01
    # The Dask pixel pass agrees with what ingest measured per frame (catalog's saturated_frac, mean_level).
    m = cat.merge(fitted.frames, on="path", suffixes=("_cat", "_px"))
    assert len(m) == 45
    np.testing.assert_array_equal(m["saturated_frac_cat"], m["saturated_frac_px"])
    np.testing.assert_allclose(m["mean_level_cat"], m["mean_level_px"], rtol=1e-6)
    comp = fitted.composition
    assert comp["frames"].sum() == 45 and set(comp["role"]) == {"clean", "noisy"}
    bal = fitted.balance.set_index("sensor")
    assert (
        (bal["basis"] == "noisy").all() and (bal["imbalance"] == 1).all() and (bal["references"] == 3).all()
    )


def test_report_is_self_contained_and_says_what_it_shows(fitted, tmp_path):
    written = write_outputs(fitted, tmp_path / "out")
    out = tmp_path / "out"
    for name in ("sensors.csv", "composition.csv", "balance.csv", "frames.csv", "ranking.csv", "noise.json"):
        assert (out / name).stat().st_size > 100, name
    csv = pd.read_csv(out / "sensors.csv")
    for col in ("sensor", "iso", "a", "b", "snr18_db", "dr_stops", "gain_e_per_dn", "read_noise_e", "n_clean",
                "n_noisy", "n_excluded", "exposure_time_median", "saturated_frac_mean", "qa_passed"):  # fmt: skip
        assert col in csv.columns, col
    html = (out / "report.html").read_text()
    assert "http://" not in html and "https://" not in html  # nothing fetched from elsewhere
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(images) >= 6 and all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    for section in (
        "Variance against mean",
        "Noise against ISO",
        "SNR",
        "Dataset composition",
        "Definitions",
    ):
        assert section in html
    gap = -fitted.ranking.query("iso == 3200 and sensor == 'SynthCam MP-2'")["delta_db"].iloc[0]
    sentence = f"At ISO 3200 SynthCam MP-2 is {gap:.1f} dB noisier than SynthCam PG-1 at 18% grey."
    assert sentence in html and sentence in written.lines
    assert "ISO-invariant from ISO 800" in html and "20·log10(x / σ(x))" in html
    assert written.summary.startswith("stats: 2 sensors, 13 sensor/ISO rows, 45 frames")


def test_profile_for_some_sensors_fits_the_rest(synth_store, client, tmp_path):
    store, truth_path = synth_store
    truth = load_profiles(truth_path)
    only_pg1 = tmp_path / "pg1.json"
    save_profiles(NoiseProfileSet([truth.sensor("SynthCam PG-1")]), only_pg1)
    res = compute_stats(str(store), profile=only_pg1, bootstrap=10, options=RunOptions(client=client))
    assert res.noise_source == {"SynthCam PG-1": "profile pg1.json", "SynthCam MP-2": "fit (paired)"}
    assert set(res.binned) == {"SynthCam MP-2"}  # a profile file has no variance-mean points
    other = tmp_path / "other.json"
    profile = truth.sensor("SynthCam PG-1")
    profile.sensor = "Nikon D850"
    save_profiles(NoiseProfileSet([profile]), other)
    with pytest.raises(RawlabError, match=r"has no sensor of .*it has 'Nikon D850'.*drop --profile"):
        compute_stats(str(store), profile=other, options=RunOptions(client=client))


def test_rawlab_profiles_as_anchors_join_the_ranking(fitted, synth_store):
    _, truth_path = synth_store
    anchors = load_anchors(truth_path)
    assert anchors.kind == "rawlab" and anchors.absolute
    r = rank_sensors(fitted.profiles, fitted.laws, anchors=anchors)
    at = r[(r["iso"] == 1600) & (r["sensor"] == "SynthCam PG-1")].set_index("source")["snr_db"]
    assert set(at.index) == {"store", "anchor"} and abs(at["store"] - at["anchor"]) < 0.3


def test_darktable_anchors_compare_shapes_only(fitted):
    if not ANCHORS.is_file():
        pytest.skip("../shared/noise-anchors is not present beside this checkout")
    anchors = load_anchors(ANCHORS)
    assert anchors.kind == "darktable" and not anchors.absolute
    shapes = shape_table(anchors.profiles, "darktable")
    assert len(shapes) > 300
    # Real cameras: a grows about proportionally with ISO (darktable's fits scatter around it).
    assert 0.8 < shapes["a_exponent"].median() < 1.05
    r = rank_sensors(fitted.profiles, fitted.laws, anchors=anchors)
    assert set(r["source"]) == {"store"}  # demosaiced values are not ranked against raw-mosaic ones
    ours = shape_table(fitted.profiles, "store", min_isos=2).set_index("sensor")
    assert ours["a_exponent"].between(0.98, 1.02).all()  # the synth's a is proportional to ISO


def test_cli_stats_writes_the_report(synth_store, client, tmp_path):
    store, truth = synth_store
    out = tmp_path / "report"
    res = subprocess.run(
        [sys.executable, "-m", "rawlab", "stats", str(store), "--out", str(out), "--profile", str(truth),
         "--scheduler", client.scheduler.address],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stdout.strip().splitlines()[-1].startswith("stats: 2 sensors, 13 sensor/ISO rows, 45 frames")
    assert (out / "report.html").stat().st_size > 50_000 and (out / "sensors.csv").is_file()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["{tmp}/nope.zarr", "--out", "{tmp}/o"], "is not a rawlab store"),
        (["{store}", "--out", "{tmp}/o", "--profile", "{tmp}/none.json"], "does not exist"),
        (["{store}", "--out", "{tmp}/o", "--anchors", "{dng}"], "not valid JSON"),
        (["{store}"], "Missing option '--out'"),
    ],
)
def test_cli_stats_usage_errors_exit_2(synth_store, tmp_path, args, needle):
    from click.testing import CliRunner

    from rawlab.cli import main

    store, truth = synth_store
    dng = next(truth.parent.rglob("*.dng"))
    args = [a.format(tmp=tmp_path, store=store, dng=dng) for a in args]
    res = CliRunner().invoke(main, ["stats", *args])
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output, res.output


def _load_generator():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_notebooks", ANALYSES / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_notebooks_are_generated_cleared_and_use_the_public_api():
    pytest.importorskip("nbformat")
    gen = _load_generator()
    assert len(gen.NOTEBOOKS) >= 3
    for name in gen.NOTEBOOKS:
        path = ANALYSES / name
        assert path.read_text() == gen.build(name), f"{name} is stale: run python analyses/make_notebooks.py"
        import nbformat

        nb = nbformat.reads(path.read_text(), as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
        assert not re.search(r"rawlab(\.\w+)*\._|from rawlab[\w.]* import _", code), name  # no private names
        assert "RAWLAB_STORE" in code and "dask_client" in code and "info.dashboard" in code


@pytest.mark.slow
def test_notebooks_run_top_to_bottom(synth_store, client, monkeypatch, tmp_path):
    """Executed as CI runs them: against the small synthetic store, attached to the test's Dask cluster."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    store, _ = synth_store
    monkeypatch.setenv("RAWLAB_STORE", str(store))
    monkeypatch.setenv("RAWLAB_SCHEDULER", client.scheduler.address)
    monkeypatch.setenv("RAWLAB_REPORT", str(tmp_path / "report"))
    texts = {}
    for path in sorted(ANALYSES.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(ANALYSES)}}).execute()  # fmt: skip
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        texts[path.name] = "\n".join(
            o.get("text", "") + str(o.get("data", {}).get("text/markdown", "")) for o in outputs
        )
        assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2, path.name
        assert (
            f"attached to {client.scheduler.address}" in texts[path.name]
        )  # the cluster given, not a new one
        assert "Dask dashboard" in texts[path.name]
    assert "noisy frames (training pairs) over 6 ISOs" in texts["01_dataset_qa.ipynb"]
    assert "ISO-invariant from ISO 800" in texts["02_noise_vs_iso.ipynb"]
    assert re.search(
        r"At ISO 3200 SynthCam MP-2 is \d+\.\d dB noisier than SynthCam PG-1", texts["03_cross_device.ipynb"]
    )
    assert (tmp_path / "report" / "report.html").is_file()

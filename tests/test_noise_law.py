"""rawlab.noise.isolaw and rawlab.noise.validate: the law over ISO, k-sigma parameters, held-out validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chi2

from rawlab.errors import RawlabError
from rawlab.noise.isolaw import ISOLaw, fit_iso_law, fit_sensor_law, ksigma
from rawlab.noise.model import sample_poisson_gaussian
from rawlab.noise.profile import ISOProfile, SensorProfile
from rawlab.noise.validate import validate_tiles
from rawlab.synth.sensors import SENSORS

ANCHORS = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "noise-anchors" / "darktable-noiseprofiles.json"
)


def exact(sensor, isos=None):
    """The sensor's true (iso, a, b) at its ISO ladder: (n,), (n, 4), (n, 4)."""
    isos = np.array(sensor.iso_ladder if isos is None else isos, dtype=float)
    ab = [sensor.noise_params(i) for i in isos]
    return isos, np.array([p[0] for p in ab]), np.array([p[1] for p in ab])


def noisy(sensor, seed, rel_a=0.005, rel_b=0.01):
    """Per-ISO fits with realistic relative standard errors (0.5% on a, 1% on b), and those stderr."""
    isos, a, b = exact(sensor)
    rng = np.random.default_rng(seed)
    sa, sb = rel_a * a, rel_b * b
    return isos, a + sa * rng.standard_normal(a.shape), b + sb * rng.standard_normal(b.shape), sa, sb


def assert_matches_truth(law: ISOLaw, sensor, rtol_ga=0.01, rtol_b=0.05):
    truth = sensor.iso_model()
    np.testing.assert_allclose(law.ga, truth["ga"], rtol=rtol_ga)
    assert [s.iso_min for s in law.segments] == [s["iso_min"] for s in truth["segments"]]
    assert [s.iso_max_exclusive for s in law.segments] == [s["iso_max_exclusive"] for s in truth["segments"]]
    for got, want in zip(law.segments, truth["segments"], strict=True):
        np.testing.assert_allclose(got.b0, want["b0"], rtol=rtol_b)
        np.testing.assert_allclose(got.b1, want["b1"], rtol=rtol_b)


def sensor_profile(sensor, isos=None) -> SensorProfile:
    isos, a, b = exact(sensor, isos)
    profiles = [ISOProfile(i, a[k], b[k]) for k, i in enumerate(isos)]
    extra = {"white_level": sensor.white_level, "black_level": list(sensor.black_level)}
    return SensorProfile(sensor.name, "truth", profiles, sensor.iso_model(), extra)


# ----------------------------------------------------------------------------------------------------------
# The law over ISO
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sensor", SENSORS, ids=lambda s: s.model)
def test_recovers_closed_form_law_from_exact_params(sensor):
    law = fit_iso_law(*exact(sensor))
    assert_matches_truth(law, sensor, rtol_ga=1e-9, rtol_b=1e-6)
    assert law.b_form == "two-term"
    assert [f["kind"] for f in law.flags] == (["gain_step"] if sensor.model == "MP-2" else [])
    np.testing.assert_allclose(law.alternatives["power_a"]["p"], 1.0, rtol=1e-9)  # a is proportional to ISO


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("sensor", SENSORS, ids=lambda s: s.model)
def test_recovers_law_from_noisy_fits(sensor, seed):
    law = fit_iso_law(*noisy(sensor, seed))
    assert_matches_truth(law, sensor)  # ga within 1%, b0 and b1 within 5%, segments exact
    assert not [f for f in law.flags if f["kind"] != "gain_step"]


def test_dual_conversion_gain_step_is_a_segment_boundary():
    mp2 = SENSORS[1]
    for law in (fit_iso_law(*exact(mp2)), fit_iso_law(*noisy(mp2, 0, rel_b=0.02))):
        assert [s.iso_min for s in law.segments] == [0, 800]
        assert law.segments[0].isos == [50, 100, 200, 400] and law.segments[1].isos == [800, 1600, 3200]
        assert law.b0_shared  # post-gain read noise is the same in both modes
        (step,) = [f for f in law.flags if f["kind"] == "gain_step"]
        assert step["iso"] == 800 and step["between"] == [400, 800]
        np.testing.assert_allclose(step["b1_ratio"], (1.3 / 2.8) ** 2, rtol=0.1)
        assert "between ISO 400 and 800" in step["message"]


@pytest.mark.parametrize(("sensor", "iso"), [(SENSORS[0], 800), (SENSORS[1], 400), (SENSORS[1], 1600)])
@pytest.mark.parametrize("b_follows", ["labelled", "implied"])
def test_mislabelled_iso_is_flagged_and_left_out(sensor, iso, b_follows):
    isos, a, b = exact(sensor)
    i = list(isos).index(iso)
    a[i] *= 2  # the frames were shot at twice the ISO their EXIF says
    if b_follows == "implied":
        b[i] = sensor.noise_params(2 * iso)[1]
    law = fit_iso_law(isos, a, b)
    (flag,) = [f for f in law.flags if f["kind"] == "iso_mislabel_suspected"]
    assert flag["iso"] == iso and flag["implied_iso"] == 2 * iso and flag["b_follows"] == b_follows
    np.testing.assert_allclose(flag["ratio"], 2.0)
    assert law.residuals[i]["used"] == {"a": [False] * 4, "b": [False] * 4}
    assert_matches_truth(law, sensor, rtol_ga=1e-9, rtol_b=1e-6)  # the rest still gives the exact law


def test_a_off_law_by_other_factor_and_lone_b_outlier():
    isos, a, b = exact(SENSORS[0])
    a[2, 0] *= 1.3  # R only, not a power of two: a bad measurement, not a mislabel
    b[3] *= 1.5  # one ISO's read term: an outlier, not a gain step
    law = fit_iso_law(isos, a, b)
    kinds = {(f["kind"], f["iso"]) for f in law.flags}
    assert kinds == {("a_off_law", 800), ("b_off_law", 1600)}
    (bflag,) = [f for f in law.flags if f["kind"] == "b_off_law"]
    assert bflag["excluded"] and bflag["ratio"] == pytest.approx([1.5] * 4)
    assert len(law.segments) == 1
    assert_matches_truth(law, SENSORS[0], rtol_ga=1e-9, rtol_b=1e-6)


def test_predict_matches_profiled_isos_and_interpolates():
    for sensor in SENSORS:
        law = fit_iso_law(*exact(sensor))
        isos, a, b = exact(sensor)
        pa, pb = law.predict(isos)
        assert pa.shape == pb.shape == (len(isos), 4)
        np.testing.assert_allclose(pa, a, rtol=1e-9)
        np.testing.assert_allclose(pb, b, rtol=1e-9)
        between = np.sqrt(isos[:-1] * isos[1:])  # geometric midpoints, never profiled
        _, ta, tb = exact(sensor, between)
        np.testing.assert_allclose(law.predict(between)[0], ta, rtol=1e-9)
        np.testing.assert_allclose(law.predict(between)[1], tb, rtol=1e-9)
        one = law.predict(float(isos[0]))
        assert one[0].shape == one[1].shape == (4,)
    # beyond the ladder the law extrapolates the outer segment
    law = fit_iso_law(*exact(SENSORS[1]))
    for iso in (25, 12800):
        np.testing.assert_allclose(law.predict(iso), SENSORS[1].noise_params(iso), rtol=1e-9)


def test_iso_model_json_round_trip_and_virtual_sensor_form():
    law = fit_sensor_law(sensor_profile(SENSORS[1]))
    d = json.loads(json.dumps(law.to_dict(), allow_nan=False))
    assert d["form"] == "a = ga * iso; b = b0 + b1 * iso^2 (per conversion-gain segment)"
    assert {"ga", "segments", "flags", "residuals", "alternatives", "ksigma"} <= d.keys()
    assert d["alternatives"]["loglog_b"]["form"] == "log b = m * log a + c"
    assert d["alternatives"]["selected_b"] == "two-term"
    back = ISOLaw.from_dict(d)
    grid = np.geomspace(40, 4000, 17)
    np.testing.assert_allclose(back.predict(grid), law.predict(grid), rtol=1e-12)
    assert back.to_dict()["ksigma"]["pmrid"] == d["ksigma"]["pmrid"]
    for sensor in SENSORS:  # the closed form the synthetic sensors publish reads as an ISOLaw
        truth = ISOLaw.from_dict(sensor.iso_model())
        _, a, b = exact(sensor)
        np.testing.assert_allclose(truth.predict(sensor.iso_ladder), (a, b), rtol=1e-12)
    with pytest.raises(RawlabError, match="unknown ISO-law form"):
        ISOLaw.from_dict({"form": "b = a^2"})
    with pytest.raises(RawlabError, match="malformed"):
        ISOLaw.from_dict({"form": d["form"], "ga": [1, 1, 1, 1]})


def test_missing_values_and_bad_input():
    isos, a, b = exact(SENSORS[0])
    a[1, 2] = np.nan  # one channel not fitted at one ISO
    b[4] = np.nan  # no read term at one ISO
    a[:, 3] = b[:, 3] = np.nan  # a channel never fitted
    law = fit_iso_law(isos, a, b)
    d = json.loads(json.dumps(law.to_dict(), allow_nan=False))  # NaN are written as null
    assert d["ga"][3] is None and d["residuals"][4]["b_rel"] == [None] * 4
    pa, pb = law.predict(1000)
    assert np.isnan(pa[3]) and np.isnan(pb[3])
    want = SENSORS[0].noise_params(1000)
    np.testing.assert_allclose((pa[:3], pb[:3]), (want[0][:3], want[1][:3]), rtol=1e-9)
    with pytest.raises(RawlabError, match="at least two"):
        fit_iso_law([100], a[:1], b[:1])
    with pytest.raises(RawlabError, match="shape"):
        fit_iso_law(isos, a[:, :3], b[:, :3])


@settings(max_examples=25, deadline=None)
@given(
    ga=st.floats(1e-8, 1e-5),
    b0=st.floats(1e-9, 1e-5),
    b1_scale=st.floats(0.01, 100.0),
    isos=st.lists(
        st.sampled_from([50, 64, 100, 125, 200, 400, 640, 800, 1600, 3200, 6400, 12800]),
        min_size=3,
        max_size=8,
        unique=True,
    ),
)
def test_property_exact_two_term_law_is_recovered(ga, b0, b1_scale, isos):
    """Any proportional a and two-term b, sampled at any ISO ladder, is recovered exactly with no flags."""
    iso = np.array(sorted(isos), dtype=float)
    b1 = b1_scale * b0 / iso[-1] ** 2  # the pre-gain term is 1% to 100x b0 at the top ISO
    a = np.repeat((ga * iso)[:, None], 4, axis=1)
    b = np.repeat((b0 + b1 * iso**2)[:, None], 4, axis=1)
    law = fit_iso_law(iso, a, b)
    assert law.flags == [] and len(law.segments) == 1
    np.testing.assert_allclose(law.ga, ga, rtol=1e-9)
    np.testing.assert_allclose(law.predict(iso)[1], b, rtol=1e-6)


def test_real_cameras_have_proportional_shot_noise():
    """darktable's published profiles: a grows in proportion to ISO (free exponent near 1) on real cameras."""
    if not ANCHORS.is_file():
        pytest.skip("../shared/noise-anchors is not present beside this checkout")
    doc = json.loads(ANCHORS.read_text())
    exponents = []
    for model in [m for mk in doc["noiseprofiles"] for m in mk["models"]][:80]:
        ps = [p for p in model["profiles"] if not p.get("skip")]
        if len(ps) < 5 or len({p["iso"] for p in ps}) < len(ps):
            continue
        a = np.array([[p["a"][0], p["a"][1], p["a"][1], p["a"][2]] for p in ps])
        b = np.array([[p["b"][0], p["b"][1], p["b"][1], p["b"][2]] for p in ps])
        law = fit_iso_law([p["iso"] for p in ps], a, b, 0.02 * a, 0.05 * np.abs(b))
        json.dumps(law.to_dict(), allow_nan=False)  # real data (negative b, zeros) still give valid JSON
        exponents.append(law.alternatives["power_a"]["p"][1])
    assert len(exponents) > 40
    assert 0.93 < np.median(exponents) < 1.05


# ----------------------------------------------------------------------------------------------------------
# k-sigma (Wang et al., ECCV 2020)
# ----------------------------------------------------------------------------------------------------------


def test_ksigma_is_gain_and_read_variance_in_dn():
    pg1 = SENSORS[0]  # 12-bit, black 0: white - black = 4095 DN, full well 26000 e- at ISO 100
    a, b = pg1.noise_params(400)
    k, s2 = ksigma(a, b, pg1.dn_range)
    gain = 4095 / 26000 * 4  # DN per electron at ISO 400
    np.testing.assert_allclose(k, gain, rtol=1e-12)
    np.testing.assert_allclose(s2, (2.2 * gain) ** 2 + 1.1**2 + 1 / 12, rtol=1e-12)  # read noise in DN^2
    np.testing.assert_allclose(ksigma(1e-4, 2e-6, 959.0), (0.0959, 2e-6 * 959**2))  # PMRID's default V
    with pytest.raises(RawlabError, match="positive"):
        ksigma(a, b, 0)


def test_ksigma_table_for_every_profiled_iso():
    mp2 = SENSORS[1]
    law = fit_sensor_law(sensor_profile(mp2))  # white - black from the profile's levels
    table = law.to_dict()["ksigma"]
    assert [row["iso"] for row in table["per_iso"]] == list(mp2.iso_ladder)
    for row in table["per_iso"]:
        a, b = mp2.noise_params(row["iso"])
        np.testing.assert_allclose(row["k"], a * mp2.dn_range, rtol=1e-9)
        np.testing.assert_allclose(row["sigma2"], b * mp2.dn_range**2, rtol=1e-9)
        np.testing.assert_allclose(row["k_measured"], row["k"], rtol=1e-9)
        seg = table["pmrid"][0 if row["iso"] < 800 else 1]  # PMRID's poly1d coefficients, per segment
        for c in range(4):
            assert np.poly1d(seg["K_coeff"][c])(row["iso"]) == pytest.approx(row["k"][c], rel=1e-9)
            assert np.poly1d(seg["B_coeff"][c])(row["iso"]) == pytest.approx(row["sigma2"][c], rel=1e-9)
    assert "X = DN - black" in table["convention"]
    sp = sensor_profile(mp2)
    sp.extra = {"white_minus_black": 959.0}  # noise-fit's field: one range for all channels
    assert fit_sensor_law(sp).to_dict()["ksigma"]["white_minus_black"] == [959.0] * 4
    assert "ksigma" not in fit_iso_law(*exact(mp2)).to_dict()  # no levels given, no k-sigma


# ----------------------------------------------------------------------------------------------------------
# Validation on held-out tiles
# ----------------------------------------------------------------------------------------------------------


def tiles(a, b, n_tiles, side, seed):
    """Flat tiles drawn from the true model; their means, variances and pixel counts, (4, n_tiles) each."""
    rng = np.random.default_rng(seed)
    levels = rng.uniform(0.05, 0.8, (4, n_tiles))
    x = sample_poisson_gaussian(np.broadcast_to(levels[..., None], (4, n_tiles, side * side)), a, b, rng)
    return x.mean(axis=-1), x.var(axis=-1, ddof=1), np.full((4, n_tiles), side * side)


def test_validation_on_tiles_from_the_true_model():
    a, b = SENSORS[0].noise_params(1600)
    report = validate_tiles(a, b, *tiles(a, b, 50, 64, seed=1))
    json.dumps(report, allow_nan=False)
    for name, ch in report["channels"].items():
        assert ch["n_tiles"] == 50, name
        assert ch["share_within_rel"] > 0.9 and ch["passed"]
        assert ch["median_ratio"] == pytest.approx(1.0, abs=0.02)
    assert report["overall"]["n_tiles"] == 200 and report["overall"]["all_channels_passed"]


def test_validation_rejects_a_wrong_model_that_camera_its_accepts():
    a, b = SENSORS[0].noise_params(1600)
    report = validate_tiles(1.25 * a, b, *tiles(a, b, 50, 64, seed=2))
    overall = report["overall"]
    assert overall["share_within_rel"] < 0.1 and not overall["passed"] and not overall["all_channels_passed"]
    assert overall["median_ratio"] == pytest.approx(0.8, abs=0.02)
    assert overall["share_camera_its"] == 1.0  # CameraITS's 0.0012 absolute floor hides a 25% error


def test_validation_counts_constructed_tiles_exactly():
    a, b = np.full(4, 1e-3), np.full(4, 1e-5)
    mean = np.array([0.2, 0.3, 0.4, 0.5, 0.6, 0.0005])  # the last tile's distribution crosses black
    pred = a[0] * mean + b[0]
    ratio = np.array([1.0, 1.05, 1.2, 0.85, 0.95, 1.0])
    n = np.full(6, 10**6)
    report = validate_tiles(a, b, [mean] * 4, [ratio * pred] * 4, [n] * 4)
    r = report["channels"]["G2"]
    assert r["n_tiles"] == 5 and r["n_excluded_clipped"] == 1
    assert r["share_within_rel"] == pytest.approx(3 / 5) and r["share_within_tol"] == pytest.approx(3 / 5)
    assert r["median_ratio"] == pytest.approx(1.0)
    assert not r["passed"]  # 60% within tolerance
    # small tiles: the sampling-aware tolerance widens; the expected share comes from chi2(n - 1)
    small = np.full(6, 51)
    r = validate_tiles(a, b, [mean] * 4, [ratio * pred] * 4, [small] * 4)["channels"]["R"]
    assert r["share_within_tol"] == pytest.approx(5 / 5)  # 2 * sqrt(2 / 50) = 40% tolerance
    want = chi2.cdf(1.1 * 50, 50) - chi2.cdf(0.9 * 50, 50)
    assert r["expected_share_within_rel"] == pytest.approx(want)
    # ragged channels are fine; three channels are not
    ragged = validate_tiles(
        a,
        b,
        [mean, mean[:3], mean, mean],
        [ratio * pred, (ratio * pred)[:3], ratio * pred, ratio * pred],
        [n, n[:3], n, n],
    )
    assert ragged["channels"]["G1"]["n_tiles"] == 3 and ragged["overall"]["n_tiles"] == 18
    empty = validate_tiles(a, b, [mean, mean * np.nan, mean, mean], [ratio * pred] * 4, [n] * 4)["channels"][
        "G1"
    ]
    assert empty["n_tiles"] == 0 and empty["share_within_rel"] is None and empty["passed"] is None
    with pytest.raises(RawlabError, match="R, G1, G2, B"):
        validate_tiles(a, b, [mean] * 3, [mean] * 3, [n] * 3)

"""Physics-based noise from a calibration (``rawlab.noise.physics``; #15 part 3): the sampler's statistics against
the figures it was given, its ISO interpolation and equivalent law, training and ``synth`` with it.

Tolerances are derived, not tuned: a sample variance ``s2`` of ``n`` draws has standard error
``sqrt((m4 - s2**2) / n)`` (``m4`` the sample's fourth central moment, so heavy tails widen it), and every
check allows 5 standard errors (a false failure about once in 1.7 million per check).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rawlab.errors import RawlabError
from rawlab.noise.physics import (
    PhysicsNoise,
    equivalent_profiles,
    load_calibration,
    physics_noise,
    tukey_lambda_noise,
)

Z = 5.0  # standard errors allowed (module docstring)
BLACK, WHITE = 512, 16383


def _fig(v):
    return {"value": [float(x) for x in np.broadcast_to(np.asarray(v, float), (4,))], "stderr": [0.0] * 4,
            "unit": ""}  # fmt: skip


def _iso(iso, *, k, read=0.0, lam=0.14, row=0.0, dsnu=0.0, prnu=0.0, dc=0.0, offset=0.0, drift=0.0):
    names = ("system_gain_dn_per_e", "read_noise_dn", "tukey_lambda", "row_noise_dn", "dsnu_dn", "prnu_percent",
             "dark_current_dn_per_s", "black_offset_dn", "black_drift_dn")  # fmt: skip
    values = (k, read, lam, row, dsnu, prnu, dc, offset, drift)
    return {"iso": iso, "figures": {n: _fig(v) for n, v in zip(names, values, strict=True)}}


def _doc(*isos, sensor="SynthCam X", cfa="RGGB", black=BLACK, white=WHITE):
    return {"schema": "rawlab.calibration/1", "sensors": [{"sensor": sensor, "make": "SynthCam", "model": "X",
            "cfa": cfa, "black_level": [black] * 4, "white_level": white, "isos": list(isos)}]}  # fmt: skip


def _noise(*isos, **kw) -> PhysicsNoise:
    return PhysicsNoise(_doc(*isos, **kw)["sensors"][0])


def _var_se(x: np.ndarray) -> tuple[float, float]:
    """A sample's variance and its standard error (module docstring)."""
    d = np.asarray(x, np.float64).ravel()
    d = d - d.mean()
    s2 = float(np.mean(d**2))
    return s2, float(np.sqrt((np.mean(d**4) - s2**2) / d.size))


def _flat(level: float, shape=(4, 256, 256)) -> np.ndarray:
    return np.full(shape, level)


def test_variance_against_signal_gives_the_gain_and_the_read_noise():
    k, read = 2.0, 6.0  # DN/e, DN; nothing else, so Var = K * mu + read^2 + 1/12 (rounding)
    noise = _noise(_iso(800, k=k, read=read))
    mus, vs, ses = [], [], []
    for i, level in enumerate((0.02, 0.1, 0.25, 0.45, 0.7)):
        dn = noise.sample(_flat(level), 800, np.random.default_rng([1, i]))[1]
        v, se = _var_se(dn)
        mus.append(dn.mean() - BLACK)
        vs.append(v)
        ses.append(se)
    mus, vs, ses = map(np.asarray, (mus, vs, ses))
    # weighted least squares Var = K mu + c; the parameters' standard errors from the covariance
    design = np.stack([mus, np.ones_like(mus)], axis=1) / ses[:, None]
    (k_hat, c_hat), *_ = np.linalg.lstsq(design, vs / ses, rcond=None)
    cov = np.linalg.inv(design.T @ design)
    assert abs(k_hat - k) < Z * np.sqrt(cov[0, 0]), (k_hat, np.sqrt(cov[0, 0]))
    assert abs(c_hat - (read**2 + 1 / 12)) < Z * np.sqrt(cov[1, 1]), (c_hat, np.sqrt(cov[1, 1]))


def test_row_noise_is_the_variance_of_a_dark_frames_row_means_and_shared_along_mosaic_rows():
    row, read, w = 4.0, 5.0, 128
    noise = _noise(_iso(1600, k=4.0, read=read, row=row), cfa="RGGB")
    dn = np.concatenate([noise.sample(np.zeros((4, 512, w)), 1600, np.random.default_rng([2, i])) for i in range(4)],
                        axis=1)  # fmt: skip
    means = dn.mean(axis=2)  # (4, rows): one mean per packed row and channel
    # each row mean is row offset + the mean of w pixels' white noise (read and rounding)
    want = row**2 + (read**2 + 1 / 12) / w
    for c in range(4):
        v = means[c].var(ddof=1)
        se = v * np.sqrt(2 / (means.shape[1] - 1))  # Gaussian row means: Var(s2) = 2 s2^2 / (n - 1)
        assert abs(v - want) < Z * se, (c, v, want, se)
    # RGGB: R and G1 lie on one mosaic row and share its offset; R and G2 do not
    r_g1 = np.corrcoef(means[0], means[1])[0, 1]
    r_g2 = np.corrcoef(means[0], means[2])[0, 1]
    n = means.shape[1]
    assert r_g1 > row**2 / want - Z / np.sqrt(n), r_g1  # the expected correlation, less 5 of its errors
    assert abs(r_g2) < Z / np.sqrt(n), r_g2  # a null correlation's standard error is 1 / sqrt(n)


def test_dsnu_and_prnu_add_their_calibrated_spread():
    dsnu = 7.0
    dark = _noise(_iso(100, k=1.0, dsnu=dsnu)).sample(np.zeros((4, 256, 256)), 100, np.random.default_rng(3))
    v, se = _var_se(dark)
    assert abs(v - (dsnu**2 + 1 / 12)) < Z * se, (v, se)
    # PRNU: a relative gain per pixel on the photo-signal, so Var = K mu + (p mu)^2 (+ rounding)
    k, prnu, level = 0.05, 1.5, 0.4
    noise = _noise(_iso(100, k=k, prnu=prnu))
    flat = noise.sample(_flat(level), 100, np.random.default_rng(4))
    mu = level * (WHITE - BLACK)
    v, se = _var_se(flat)
    assert abs(v - (k * mu + (prnu / 100 * mu) ** 2 + 1 / 12)) < Z * se, (v, se)


def test_tukey_lambda_shape_is_recovered_by_a_fit():
    from scipy import stats

    lam, read, black = -0.15, 50.0, 4096  # heavy tails (CAL-2's); 50 DN makes rounding negligible, and the
    # black level, 80 sigma down, keeps the tails unclipped
    noise = _noise(_iso(3200, k=1.0, read=read, lam=lam), black=black)
    x = noise.sample(np.zeros((4, 128, 128)), 3200, np.random.default_rng(5)).ravel() - black
    v, se = _var_se(x)
    assert abs(v - (read**2 + 1 / 12)) < Z * se  # scaled to the calibrated sigma
    # the probability-plot fit of lambda on 8 independent blocks: their mean within 5 standard errors
    fits = [stats.ppcc_max(b, brack=(-0.5, 0.5), dist="tukeylambda") for b in np.array_split(x, 8)]
    se_lam = np.std(fits, ddof=1) / np.sqrt(len(fits))
    assert abs(np.mean(fits) - lam) < Z * se_lam, (fits, se_lam)
    assert stats.kurtosis(x) > 0  # heavier tails than a Gaussian


def test_unit_variance_tukey_noise_and_the_same_draws_as_before():
    from scipy import stats

    x = tukey_lambda_noise(np.random.default_rng(6), -0.1, 200_000)
    v, se = _var_se(x)
    assert abs(v - 1) < Z * se
    # the draws synth's calibration sets were written with before this module held them: same bytes
    u = np.clip(np.random.default_rng(6).uniform(size=200_000), 1e-12, 1 - 1e-12)
    before = (u**-0.1 - (1 - u) ** -0.1) / -0.1 / np.sqrt(stats.tukeylambda(-0.1).var())
    assert np.array_equal(x, before)


def test_interpolation_between_calibrated_isos_and_refusal_outside():
    noise = _noise(_iso(100, k=0.5, read=3.0, row=1.0, lam=-0.1, prnu=1.0, dc=0.05),
                   _iso(1600, k=8.0, read=24.0, row=9.0, lam=0.0, prnu=1.0, dc=0.8))  # fmt: skip
    p = noise.params(100)
    assert np.allclose(p.gain, 0.5) and np.allclose(p.read, 3.0) and np.allclose(p.tukey_lambda, -0.1)
    mid = noise.params(400)
    assert np.allclose(mid.gain, 0.5 + (8.0 - 0.5) * 300 / 1500)  # K linear in ISO
    frac = (400**2 - 100**2) / (1600**2 - 100**2)  # variances linear in ISO^2
    assert np.allclose(mid.read**2, 9 + (576 - 9) * frac) and np.allclose(mid.row**2, 1 + 80 * frac)
    assert np.allclose(mid.tukey_lambda, -0.1 * (1 - np.log(4) / np.log(16)))  # lambda linear in log ISO
    assert np.allclose(mid.dark_current, 0.1)  # electrons/s, as calibrated at both ends
    with pytest.raises(RawlabError, match="outside the calibrated ISOs"):
        noise.params(3200)


def test_equivalent_law_is_the_sampled_variance_and_the_rule_reads_it_between_isos():
    doc = _doc(_iso(100, k=0.5, read=3.0, row=1.5, dsnu=2.0, drift=0.5, lam=-0.1),
               _iso(800, k=4.0, read=14.0, row=6.0, dsnu=4.0, drift=0.5, lam=-0.1),
               _iso(3200, k=16.0, read=40.0, row=15.0, dsnu=9.0, drift=0.5, lam=-0.1))  # fmt: skip
    noise = PhysicsNoise(doc["sensors"][0])
    law = equivalent_profiles(doc).sensor("SynthCam X")
    span = WHITE - BLACK
    level = 0.3
    for iso in (100.0, 800.0, 1600.0):
        got = law.noise_at(iso)
        p = noise.params(iso)
        a, b = p.equivalent(span)
        assert np.allclose(got.b, b, rtol=1e-9)  # exact: b is linear in ISO^2 between calibrated ISOs
        assert np.allclose(got.a, a, rtol=1e-9)  # a = ga * ISO: K is exactly linear in ISO here
        # Sampled on tall one-pixel-wide frames every pixel has its own row, so the pixels of a frame are
        # independent but for the frame's black drift: deviations from each frame's mean have the law's
        # variance less the drift's.
        frames = [noise.sample(_flat(level, (4, 4096, 1)), iso, np.random.default_rng([7, int(iso), i]))[1]
                  for i in range(8)]  # fmt: skip
        dev = np.concatenate([(f - f.mean()) / span for f in frames])
        v, se = _var_se(dev)
        want = a[1] * level + b[1] - (p.black_drift[1] / span) ** 2
        assert abs(v - want) < Z * se, (iso, v, want, se)


def test_sampling_is_reproducible_by_seed_and_draws_patterns_per_frame():
    noise = _noise(_iso(400, k=2.0, read=4.0, row=2.0, dsnu=3.0, prnu=1.0, lam=-0.1))
    x = _flat(0.2, (4, 32, 32))
    one = noise.sample(x, 400, np.random.default_rng(8))
    assert np.array_equal(one, noise.sample(x, 400, np.random.default_rng(8)))
    assert not np.array_equal(one, noise.sample(x, 400, np.random.default_rng(9)))
    assert one.dtype == np.float64 and np.all(one == np.rint(one)) and one.min() >= 0 and one.max() <= WHITE
    last = noise.sample(np.moveaxis(x, 0, -1), 400, np.random.default_rng(8), channel_axis=-1)
    assert np.array_equal(np.moveaxis(last, -1, 0), one)


def test_calibration_errors_name_the_remedy(tmp_path):
    with pytest.raises(RawlabError, match="rawlab calibrate"):
        load_calibration(tmp_path / "none.json")
    (tmp_path / "x.json").write_text(json.dumps({"schema": "rawlab.noise/1"}))
    with pytest.raises(RawlabError, match="not a sensor calibration"):
        load_calibration(tmp_path / "x.json")
    (tmp_path / "calibration.json").write_text(json.dumps(_doc(_iso(100, k=1.0))))
    assert load_calibration(tmp_path)["sensors"][0]["sensor"] == "SynthCam X"  # the folder works too
    with pytest.raises(RawlabError, match="no calibration of sensor 'Other Cam'"):
        physics_noise(_doc(_iso(100, k=1.0)), ["Other Cam"])
    with pytest.raises(RawlabError, match="lambda"):
        _noise(_iso(100, k=1.0, lam=-0.6))
    with pytest.raises(RawlabError, match="system gain"):
        _noise(_iso(100, k=0.0))


# -- training and synth with physics noise --------------------------------------------------------------------


def _calibration_for(truth_path, out):
    """A calibration of the learn store's sensors whose equivalent law is their true (a, b): K = a * R, and the
    signal-independent part split into read noise, row noise and DSNU; heavy-tailed read noise."""
    from rawlab.noise.profile import load_profiles

    truth = load_profiles(truth_path)
    sensors = []
    for sp in truth.sensors:
        span = np.asarray(sp.extra["white_level"], float) - np.asarray(sp.extra["black_level"], float)
        isos = []
        for p in sp.profiles:
            k = np.asarray(p.a) * span
            var = np.clip(np.asarray(p.b) * span**2 - 1 / 12, 0, None)
            isos.append(_iso(p.iso, k=k, read=np.sqrt(0.6 * var), row=np.sqrt(0.25 * var),
                             dsnu=np.sqrt(0.15 * var), lam=-0.1))  # fmt: skip
        sensors.append({"sensor": sp.sensor, "cfa": sp.extra["cfa"], "black_level": sp.extra["black_level"],
                        "white_level": sp.extra["white_level"], "isos": isos})  # fmt: skip
    out.write_text(json.dumps({"schema": "rawlab.calibration/1", "sensors": sensors}))
    return out


def test_pipeline_draws_physics_noise_with_the_profiles_noise_map(learn_store, tmp_path):
    from rawlab.catalog import open_catalog
    from rawlab.catalog.pairs import pairs_from_catalog
    from rawlab.catalog.store import FrameStore
    from rawlab.learn.input_pipeline import Pipeline
    from rawlab.learn.synthnoise import sensor_noise
    from rawlab.noise.profile import load_profiles

    store, truth = learn_store
    cal = _calibration_for(truth, tmp_path / "calibration.json")
    pairs, _ = pairs_from_catalog(open_catalog(store))
    sensors = {p.sensor for p in pairs}
    pg = sensor_noise(load_profiles(truth), sensors, truth)
    ph = sensor_noise(load_profiles(truth), sensors, truth, kind="physics", calibration=cal)
    kw = {"crop": 32, "batch_size": 8, "seed": 11, "synthetic_fraction": 1.0, "workers": 0}
    b_pg = Pipeline(FrameStore(store), pairs, pg, **kw).batch(0)
    b_ph = Pipeline(FrameStore(store), pairs, ph, **kw).batch(0)
    again = Pipeline(FrameStore(store), pairs, ph, **kw).batch(0)
    for key in (
        "clean",
        "a",
        "b",
        "iso",
        "sensor_idx",
    ):  # same crops, ISOs and noise map: only the noise differs
        np.testing.assert_array_equal(b_pg[key], b_ph[key])
    assert not np.array_equal(b_pg["noisy"], b_ph["noisy"])
    np.testing.assert_array_equal(b_ph["noisy"], again["noisy"])  # reproducible by seed
    with pytest.raises(RawlabError, match=r"needs noise\.calibration"):
        sensor_noise(load_profiles(truth), sensors, truth, kind="physics")


@pytest.mark.slow
def test_train_with_physics_noise_runs_from_the_cli(learn_store, tmp_path):
    from rawlab.cli import main

    store, truth = learn_store
    cal = _calibration_for(truth, tmp_path / "calibration.json")
    args = ["train", str(store), "--config", "tiny", "--workdir", str(tmp_path / "run"), "--steps", "4",
            "--batch-size", "4", "--noise", str(truth), "--calibration", str(cal)]  # fmt: skip
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert f"synthetic noise: physics, drawn from the calibration {cal}" in r.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["training"]["noise"]["kind"] == "physics" and config["step"] == 4
    assert config["training"]["noise"]["calibration"] == str(cal)
    r = CliRunner().invoke(main, [*args[:-1], str(tmp_path / "missing.json")])
    assert r.exit_code == 2 and "rawlab calibrate" in r.output
    # without --noise the noise map is the calibration's own law, written beside the model
    r = CliRunner().invoke(
        main, [a for a in args if a not in ("--noise", str(truth))] + ["--workdir", str(tmp_path / "own")]
    )
    assert r.exit_code == 0, r.output
    config = json.loads((tmp_path / "own" / "config.json").read_text())
    assert config["training"]["noise"]["profile"] == str(tmp_path / "own" / "calibration-noise.json")
    assert config["noise"]["sensors"][0]["method"] == "calibration"


def test_synth_writes_a_calibrated_sensors_frames_with_physics_noise(tmp_path):
    from rawlab.noise.profile import load_profiles
    from rawlab.rawio import read_raw
    from rawlab.synth.physics import plan_physics_dataset, write_physics_dataset

    cal = tmp_path / "calibration.json"
    cal.write_text(json.dumps(_doc(_iso(100, k=0.4, read=3.0, row=1.0, lam=-0.1),
                                   _iso(1600, k=6.4, read=30.0, row=12.0, dsnu=5.0, lam=-0.1))))  # fmt: skip
    s = write_physics_dataset(tmp_path / "out", cal, seed=1, size=(64, 48), n_scenes=2, n_clean=1)
    files = sorted((tmp_path / "out").rglob("*.dng"))
    assert s.n_files == len(files) == 4  # 2 scenes x (a clean ISO 100 frame + ISO 1600)
    assert len(plan_physics_dataset(cal, seed=1, n_scenes=2, n_clean=1)) == 4
    raw = read_raw(files[0])
    assert raw.info.sensor == "SynthCam X" and raw.info.white_level == WHITE and raw.info.iso in (100, 1600)
    truth = load_profiles(s.truth_path).sensor("SynthCam X")
    assert [p.iso for p in truth.profiles] == [100, 1600] and len(truth.extra["scenes"]) == 2
    again = write_physics_dataset(tmp_path / "again", cal, seed=1, size=(64, 48), n_scenes=2, n_clean=1)
    assert [f.read_bytes() for f in files] == [f.read_bytes() for f in sorted(again.out.rglob("*.dng"))]
    with pytest.raises(RawlabError, match="outside the calibrated ISOs"):
        write_physics_dataset(tmp_path / "bad", cal, isos=[100, 6400], size=(64, 48))


def test_synth_cli_physics_writes_what_the_library_writes(tmp_path):
    from rawlab.cli import main

    cal = tmp_path / "calibration.json"
    cal.write_text(json.dumps(_doc(_iso(100, k=0.4, read=3.0, row=1.0, lam=-0.1),
                                   _iso(1600, k=6.4, read=30.0, row=12.0, dsnu=5.0, lam=-0.1))))  # fmt: skip
    from rawlab.synth.physics import write_physics_dataset

    args = ["synth", str(tmp_path / "cli"), "--physics", str(cal), "--size", "64x48", "--scenes", "2"]
    r = CliRunner().invoke(main, [*args, "--clean-frames", "1", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "physics noise" in r.output
    lib = write_physics_dataset(tmp_path / "lib", cal, seed=1, size=(64, 48), n_scenes=2, n_clean=1)
    cli_files = sorted((tmp_path / "cli").rglob("*.dng"))
    assert [f.read_bytes() for f in cli_files] == [f.read_bytes() for f in sorted(lib.out.rglob("*.dng"))]
    both = CliRunner().invoke(main, [*args, "--burst", "4"])
    assert both.exit_code == 2 and "choose one of --burst and --physics" in both.output
    assert "Traceback" not in both.output

"""``rawlab synth --calibration``: dark and flat DNGs with calibration truth; the default dataset unchanged."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner

from rawlab.cli import main
from rawlab.noise.profile import load_profiles
from rawlab.rawio import read_raw
from rawlab.synth import write_dataset
from rawlab.synth.calibration import (
    CALIBRATION_SENSORS,
    DARK_FRAMES,
    DARK_TIMES,
    FLAT_LEVELS,
    plan_calibration,
    write_calibration_set,
)

SIZE = (64, 48)


def test_default_dataset_is_bit_identical_to_before_calibration_sets(tmp_path):
    """Golden digests of `rawlab synth` (no --calibration) taken before calibration sets existed."""
    write_dataset(tmp_path, seed=3, size=(64, 48), n_sensors=2, n_scenes=2)
    h = hashlib.sha256()
    for p in sorted(tmp_path.rglob("*.dng")):
        h.update(p.relative_to(tmp_path).as_posix().encode())
        h.update(p.read_bytes())
    assert h.hexdigest() == "b4224ee116224c42db7afcd0cfbe302f397927d9f26e3e8226bd898849441d2a"
    sensors = json.loads((tmp_path / "truth.json").read_text())["sensors"]
    assert all(sp["scenes"] for sp in sensors)  # added later (issue 13): each scene's colour truth
    sensors = [{k: v for k, v in sp.items() if k != "scenes"} for sp in sensors]  # the rest is unchanged
    digest = hashlib.sha256(json.dumps(sensors, sort_keys=True).encode()).hexdigest()
    assert digest == "564f06478e64f1eba7c53ed9cc20d1dc83fff40c456657f5c93bfd0ad70e308c"


@pytest.fixture(scope="module")
def calset(tmp_path_factory):
    out = tmp_path_factory.mktemp("calset")
    return write_calibration_set(out, seed=1, size=SIZE, n_sensors=2)


def test_layout_metadata_and_levels(calset):
    files = sorted(calset.out.rglob("*.dng"))
    assert len(files) == calset.n_files == len(plan_calibration(CALIBRATION_SENSORS))
    per_iso = sum(DARK_FRAMES) + 2 * (len(FLAT_LEVELS) - 1) + 8
    assert calset.n_files == per_iso * sum(len(s.base.iso_ladder) for s in CALIBRATION_SENSORS)
    s = CALIBRATION_SENSORS[1]
    dark = read_raw(calset.out / "SynthCam_CAL-2/darks/iso800/dark_iso800_32000ms_0.dng")
    flat = read_raw(calset.out / "SynthCam_CAL-2/flats/iso800/flat_iso800_052_0.dng")
    for f in (dark, flat):
        assert f.info.sensor == "SynthCam CAL-2" and f.info.iso == 800 and f.info.cfa == s.base.cfa
        assert f.info.white_level == s.base.white_level
    assert dark.info.exposure_time == pytest.approx(DARK_TIMES[-1])
    assert flat.info.exposure_time == pytest.approx(0.52 * 0.04)
    rng = s.base.white_level - np.asarray(s.base.black_level)
    dark_level = (dark.packed().reshape(4, -1).mean(axis=1) - s.base.black_level) / rng
    flat_level = (flat.packed().reshape(4, -1).mean(axis=1) - s.base.black_level) / rng
    # The longest dark at the highest ISO stays a dark (below 2% of the range); flats follow their level.
    assert np.all(dark_level < 0.02) and np.all(dark_level > 0)
    assert np.all(np.abs(flat_level - 0.52 * np.asarray(s.base.channel_gain)) < 0.02)


def test_truth_is_a_valid_noise_profile_with_calibration_figures(calset):
    truth = load_profiles(calset.truth_path)
    assert [t.sensor for t in truth.sensors] == [s.name for s in CALIBRATION_SENSORS]
    for t, s in zip(truth.sensors, CALIBRATION_SENSORS, strict=True):
        assert [p.iso for p in t.profiles] == list(s.base.iso_ladder)
        for p in t.profiles:
            cal = p.extra["calibration"]
            k = np.asarray(cal["system_gain_dn_per_e"])
            np.testing.assert_allclose(p.a, k / s.base.dn_range)  # a = K / range, the shot term
            assert cal["tukey_lambda"] == [s.tukey_lambda] * 4
            # the realised DSNU is close to its parameter (pixel part scales with K, column part does not)
            expected = np.hypot(s.dsnu_pixel * k, s.dsnu_column)
            assert np.all(np.abs(np.asarray(cal["dsnu_dn"]) / expected - 1) < 0.25)
            assert np.all(np.abs(np.asarray(cal["prnu_percent"]) / (100 * s.prnu) - 1) < 0.1)
        params = t.noise_at(s.base.iso_ladder[1])  # the law over ISO reproduces the measured point
        np.testing.assert_allclose(params.b, t.profiles[1].b, rtol=1e-9)


def test_deterministic_for_a_seed(tmp_path):
    sensors = (CALIBRATION_SENSORS[0],)
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_calibration_set(tmp_path / name, seed=seed, size=(32, 32), sensors=sensors)

    def digest(root):
        return [p.read_bytes() for p in sorted(root.rglob("*.dng"))]

    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")


def test_cli_synth_calibration_and_bad_sensor_count(tmp_path):
    r = CliRunner().invoke(
        main, ["synth", str(tmp_path / "c"), "--calibration", "--sensors", "1", "--size", "32x32"]
    )
    assert r.exit_code == 0, r.output
    assert "calibration sensors" in r.output
    assert {p.parts[-4] for p in (tmp_path / "c").rglob("*.dng")} == {"SynthCam_CAL-1"}
    r = CliRunner().invoke(main, ["synth", str(tmp_path / "d"), "--calibration", "--sensors", "3"])
    assert r.exit_code == 2 and "calibration sensors" in r.output

"""``rawlab calibrate``: EMVA 1288 figures from real dark and flat DNGs against the calibration truth.

The set is the heavy-tailed, strong-row-noise sensor CAL-2 at 384x256 (24576 pixels per channel plane, 8
reference darks, 9 flat pairs and 8 frames at half range per ISO). With those sample sizes the standard errors
are about 0.3% for K and read noise, 1% for DSNU, 2-4% for row noise and PRNU at the highest ISO, 0.01 for the
Tukey lambda and 1% for the dark current (the per-band spread the fit reports); the issue's targets (5% median,
0.05, 10%) are several standard errors wide, so the test is not flaky for any seed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rawlab.calibrate import calibrate
from rawlab.calibrate.report import write_calibration
from rawlab.cli import main
from rawlab.cluster import RunOptions
from rawlab.dng import write_dng
from rawlab.errors import RawlabError
from rawlab.noise.profile import load_profiles
from rawlab.synth.calibration import CALIBRATION_SENSORS, write_calibration_set


@pytest.fixture(scope="module")
def cal2(tmp_path_factory, client):
    out = tmp_path_factory.mktemp("cal2")
    write_calibration_set(out, seed=7, size=(384, 256), sensors=(CALIBRATION_SENSORS[1],))
    result = calibrate([str(out)], options=RunOptions(client=client))
    return out, result


def _errors(out, result, name):
    truth = load_profiles(out / "truth.json").sensor("SynthCam CAL-2")
    (sensor,) = result.doc["sensors"]
    est, tru = [], []
    for entry in sensor["isos"]:
        est.append(entry["figures"][name]["value"])
        tru.append(truth.at_iso(entry["iso"]).extra["calibration"][name])
    return np.asarray(est, float), np.asarray(tru, float)


@pytest.mark.parametrize(
    "name", ["system_gain_dn_per_e", "read_noise_dn", "row_noise_dn", "dsnu_dn", "prnu_percent"]
)
def test_figures_within_5_percent_of_truth(cal2, name):
    est, tru = _errors(*cal2, name)
    assert est.shape == (3, 4)
    rel = np.abs(est / tru - 1)
    assert np.median(rel) < 0.05, (name, rel)
    assert np.all(rel < 0.2), (name, rel)  # and no single channel far off


def test_tukey_lambda_and_dark_current(cal2):
    est, tru = _errors(*cal2, "tukey_lambda")
    assert np.all(np.abs(est - tru) < 0.05), est
    est, tru = _errors(*cal2, "dark_current_dn_per_s")
    assert np.median(np.abs(est / tru - 1)) < 0.10
    est, tru = _errors(*cal2, "saturation_dn")
    assert np.all(np.abs(est / tru - 1) < 0.01)
    est, tru = _errors(*cal2, "linearity_error_percent")
    assert np.all(np.abs(est - tru) < 0.3)


def test_every_figure_has_a_standard_error_and_the_errors_are_honest(cal2):
    out, result = cal2
    (sensor,) = result.doc["sensors"]
    assert result.doc["schema"] == "rawlab.calibration/1" and not result.rejected
    z = []
    for entry in sensor["isos"]:
        for name in ("read_noise_dn", "tukey_lambda", "row_noise_dn", "dsnu_dn", "prnu_percent",
                     "dark_current_dn_per_s", "system_gain_dn_per_e", "saturation_dn", "linearity_error_percent"):  # fmt: skip
            f = entry["figures"][name]
            assert all(v is not None and np.isfinite(v) for v in f["value"]), name
            assert all(s is not None and s > 0 for s in f["stderr"]), name
    for name in ("system_gain_dn_per_e", "read_noise_dn", "dsnu_dn"):
        est, tru = _errors(out, result, name)
        se = np.array([e["figures"][name]["stderr"] for e in sensor["isos"]], float)
        z += list(np.abs(est - tru) / se)
    assert np.median(z) < 2.5  # errors of the size the standard errors say (median |z| is 0.67 for normal z)


def test_report_files(cal2, tmp_path):
    _, result = cal2
    files = write_calibration(result, tmp_path / "cal")
    doc = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert doc["schema"] == "rawlab.calibration/1" and doc["channels"] == ["R", "G1", "G2", "B"]
    rows = json.loads((tmp_path / "cal" / "figures.json").read_text())["figures"]
    assert {r["figure"] for r in rows} >= {"read_noise_dn", "prnu_percent", "system_gain_dn_per_e"}
    assert all("stderr" in r for r in rows)
    page = (tmp_path / "cal" / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == 3 and "Photon transfer" in page
    descriptors = [f for f in files if f.suffix == ".txt"]
    assert len(descriptors) == 3
    text = descriptors[0].read_text().splitlines()
    assert text[1] == "v 3.0" and text[2].startswith("n 14 192 128")
    assert (
        sum(line.startswith("d ") for line in text) == 2 and sum(line.startswith("b ") for line in text) >= 9
    )


def test_emva1288_package_agrees_on_the_same_frames(cal2, tmp_path, monkeypatch):
    """Cross-check with the open emva1288 package (GPL, a test-only tool) on one ISO's G1 plane."""
    pytest.importorskip("emva1288")
    # emva1288 1.0.2 still calls np.asfarray, which NumPy 2 removed: give it back for this test only.
    monkeypatch.setattr(np, "asfarray", lambda a, dtype=float: np.asarray(a, dtype=dtype), raising=False)
    from emva1288.process import Data1288, LoadImageData, ParseEmvaDescriptorFile, Results1288

    from rawlab.rawio import read_raw

    _, result = cal2
    files = write_calibration(result, tmp_path / "cal")
    desc = next(f for f in files if f.name.endswith("iso800.txt"))
    parser = ParseEmvaDescriptorFile(str(desc))
    loaded = LoadImageData(parser.images, fload=lambda path: read_raw(path).packed()[1].astype(np.int64))
    data = Data1288(loaded.data)
    res = Results1288(data.data, pixel_area=1, loglevel=30)
    ours = next(e for e in result.doc["sensors"][0]["isos"] if e["iso"] == 800)["figures"]
    assert res.K == pytest.approx(ours["system_gain_dn_per_e"]["value"][1], rel=0.05)
    assert res.DSNU1288_DN() == pytest.approx(ours["dsnu_dn"]["value"][1], rel=0.1)


def _scene_dng(path, sensor):
    """A DNG of the same sensor that is neither dark nor flat: a gradient."""
    h, w = 256, 384
    mosaic = (sensor.base.black_level[0] + np.linspace(0, 8000, w)[None, :] * np.ones((h, 1))).astype(
        np.uint16
    )
    write_dng(path, mosaic, cfa=sensor.base.cfa, black_level=sensor.base.black_level,
              white_level=sensor.base.white_level, make="SynthCam", model="CAL-2", iso=800,
              exposure_time=0.01)  # fmt: skip


def test_cli_rejects_a_frame_that_is_neither_dark_nor_flat(cal2, client, tmp_path):
    out, _ = cal2
    extra = tmp_path / "scene"
    extra.mkdir()
    _scene_dng(extra / "scene.dng", CALIBRATION_SENSORS[1])
    addr = client.scheduler.address
    args = ["calibrate", str(out / "SynthCam_CAL-2/darks/iso800"), str(out / "SynthCam_CAL-2/flats/iso800"),
            str(extra), "--out", str(tmp_path / "o"), "--scheduler", addr]  # fmt: skip
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert f"rejected: {extra / 'scene.dng'}: neither dark nor flat: not uniform" in r.output
    assert "calibrate: 1 sensors, 1 ISOs, 1 frames rejected" in r.output
    doc = json.loads((tmp_path / "o" / "calibration.json").read_text())
    assert doc["rejected"][0]["path"] == str(extra / "scene.dng")
    r = CliRunner().invoke(main, [*args, "--strict"])
    assert r.exit_code == 1
    # Only the scene: no sensor has darks and flats -> one line naming the frame and the reason, exit 2.
    r = CliRunner().invoke(main, ["calibrate", str(extra), "--out", str(tmp_path / "p"), "--scheduler", addr])
    assert r.exit_code == 2 and "scene.dng: neither dark nor flat" in r.output
    assert "Traceback" not in r.output


def test_user_mistakes_are_rawlab_errors(cal2, client, tmp_path):
    out, _ = cal2
    with pytest.raises(RawlabError, match="no frames given"):
        calibrate([])
    with pytest.raises(RawlabError, match="not among the frames' sensors"):
        calibrate(
            [str(out / "SynthCam_CAL-2/darks/iso100")], sensor="Nope X", options=RunOptions(client=client)
        )
    with pytest.raises(RawlabError, match=r"does not exist|no such"):
        calibrate([str(tmp_path / "missing")], options=RunOptions(client=client))


@pytest.mark.parametrize("lam", [-0.15, 0.0, 0.14])
def test_the_tukey_ppcc_fit_is_scipys(lam):
    """The closed-form PPCC maximum finds what ``scipy.stats.ppcc_max`` and ``probplot`` find on the same sample
    (both run Brent on 1 - r over the same Filliben medians; they differ by float rounding only)."""
    from scipy import stats

    from rawlab.calibrate.stats import _ppcc

    x = stats.tukeylambda(lam).rvs(size=20000, random_state=np.random.default_rng(3))
    ref = float(stats.ppcc_max(x, brack=(-0.3, 0.3), dist="tukeylambda"))
    (_, _), (_, _, r) = stats.probplot(x, sparams=(ref,), dist="tukeylambda")
    got, quality = _ppcc(x)
    assert got == pytest.approx(ref, abs=1e-5) and quality == pytest.approx(r, abs=1e-9)


def test_a_damaged_frame_is_rejected_and_the_others_go_on(cal2, client, tmp_path):
    """The metadata pass reads headers only; a frame whose pixels are cut off is still rejected with its path."""
    import shutil

    out, _ = cal2
    for kind in ("darks", "flats"):
        shutil.copytree(out / f"SynthCam_CAL-2/{kind}/iso800", tmp_path / kind)
    bad = sorted((tmp_path / "darks").glob("*.dng"))[-1]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    result = calibrate([str(tmp_path)], options=RunOptions(client=client))
    assert [r["path"] for r in result.rejected] == [str(bad)]
    assert result.rejected[0]["reason"].startswith("cannot read: ")
    (sensor,) = result.doc["sensors"]
    assert sensor["black_level"] == [1024.0] * 4 and sensor["size"] == [384, 256] and sensor["cfa"] == "BGGR"
    assert [e["iso"] for e in sensor["isos"]] == [800]

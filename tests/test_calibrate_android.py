"""One fit, every format: the Android camera noise model (``noise-fit --format android``) and its CTS check."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from rawlab.errors import RawlabError
from rawlab.noise.export import ANDROID_TOLERANCE, save, to_android
from rawlab.noise.profile import ISOProfile, NoiseProfileSet, SensorProfile
from rawlab.synth import SENSORS


def _truth_profiles(sensor, scale_b=1.0) -> NoiseProfileSet:
    ps = []
    for iso in sensor.iso_ladder:
        a, b = sensor.noise_params(iso)
        ps.append(ISOProfile(iso, a.tolist(), (b * scale_b).tolist()))
    return NoiseProfileSet(
        [SensorProfile(sensor.name, "truth", ps, {}, {"make": sensor.make, "model": sensor.model})]
    )


def test_android_model_recovers_the_two_term_law_and_passes_cts():
    sensor = SENSORS[0]  # one conversion gain: a = ga * ISO, b = b0 + b1 * ISO^2 exactly
    doc = to_android(_truth_profiles(sensor))
    (entry,) = doc["sensors"]
    law = sensor.iso_model()
    np.testing.assert_allclose(entry["A"], law["ga"], rtol=1e-9)
    np.testing.assert_allclose(entry["B"], 0, atol=1e-12)
    np.testing.assert_allclose(entry["C"], law["segments"][0]["b1"], rtol=1e-6)
    np.testing.assert_allclose(entry["D"], law["segments"][0]["b0"], rtol=1e-6)
    assert entry["validation"]["cts_pass"] and entry["validation"]["max_relative_difference"] < 1e-6
    assert doc["planes"] == ["R", "Gr", "Gb", "B"] and doc["tolerance"] == ANDROID_TOLERANCE


def test_cts_check_fails_a_model_that_cannot_follow_the_profile():
    # MP-2 has dual conversion gain: b drops at ISO 800, which the one-segment Android O cannot follow.
    # Scaling b up 2000x makes that miss larger than the CTS tolerance of max(0.0012, 20%).
    doc = to_android(_truth_profiles(SENSORS[1], scale_b=2000.0))
    v = doc["sensors"][0]["validation"]
    assert not v["cts_pass"] and v["max_relative_difference"] > ANDROID_TOLERANCE["rtol"]
    assert any(not p["passed"] for p in v["per_iso"])


def test_needs_two_isos():
    s = SENSORS[0]
    a, b = s.noise_params(100)
    one = NoiseProfileSet([SensorProfile(s.name, "x", [ISOProfile(100, a.tolist(), b.tolist())], {}, {})])
    with pytest.raises(RawlabError, match="at least two profiled ISOs"):
        to_android(one)


def test_save_android_writes_json_and_c_that_compiles_and_agrees(tmp_path):
    sensor = SENSORS[0]
    files = save(_truth_profiles(sensor), tmp_path / "android.json", "android")
    assert [f.name for f in files] == ["android.json", "android_SynthCam-PG-1.c"]
    doc = json.loads(files[0].read_text())
    assert doc["schema"] == "rawlab.android-noise-model/1"
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to check the generated functions")
    main_c = tmp_path / "main.c"
    main_c.write_text(
        "#include <stdio.h>\ndouble compute_noise_model_entry_S(int, int);\n"
        "double compute_noise_model_entry_O(int, int);\n"
        'int main(void) { for (int p = 0; p < 4; p++) printf("%.12e %.12e\\n", '
        "compute_noise_model_entry_S(p, 800), compute_noise_model_entry_O(p, 800)); return 0; }\n"
    )
    exe = tmp_path / "model"
    subprocess.run([cc, "-O0", "-o", str(exe), str(main_c), str(files[1])], check=True)
    got = np.array([line.split() for line in subprocess.run([str(exe)], capture_output=True, text=True,
                                                             check=True).stdout.splitlines()], float)  # fmt: skip
    a, b = sensor.noise_params(800)
    np.testing.assert_allclose(got[:, 0], a, rtol=1e-8)
    np.testing.assert_allclose(got[:, 1], b, rtol=1e-6)

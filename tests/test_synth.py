"""``rawlab synth``: real DNGs that rawpy reads with the right metadata, and noise that matches truth.json."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import rawpy

from rawlab.bayer import pack
from rawlab.noise.profile import load_profiles
from rawlab.rawio import read_raw
from rawlab.synth import SENSORS, write_dataset
from rawlab.synth.generate import plan_dataset
from rawlab.synth.scenes import chart


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_and_truth(small_synth):
    out = small_synth.out
    files = sorted(out.rglob("*.dng"))
    assert len(files) == small_synth.n_files
    # OUT/<sensor>/<scene>/*.dng
    assert {f.relative_to(out).parts[0] for f in files} == {"SynthCam_PG-1", "SynthCam_MP-2"}
    assert all(len(f.relative_to(out).parts) == 3 for f in files)
    truth = load_profiles(small_synth.truth_path)
    assert [s.sensor for s in truth.sensors] == ["SynthCam PG-1", "SynthCam MP-2"]
    for s, sensor in zip(truth.sensors, SENSORS, strict=False):
        assert [p.iso for p in s.profiles] == list(sensor.iso_ladder)
        assert len(sensor.iso_ladder) >= 4
        a = np.array([p.a for p in s.profiles])
        # Shot noise grows with ISO; every value is a plausible normalised variance.
        assert np.all(np.diff(a[:, 1]) > 0)
        assert np.all((a > 1e-6) & (a < 0.1))
        assert s.iso_model["form"].startswith("a = ga * iso")


def test_sensors_differ_in_cfa_depth_black_and_law():
    pg, mp = SENSORS[:2]
    assert pg.cfa != mp.cfa and pg.bits != mp.bits and pg.black_level != mp.black_level
    assert {s.cfa for s in SENSORS} == {"RGGB", "BGGR", "GRBG", "GBRG"}
    # MP-2 has dual conversion gain: read noise b drops at ISO 800 although a doubles.
    assert mp.noise_params(800)[1][0] < mp.noise_params(400)[1][0]


def test_deterministic_for_a_seed(tmp_path):
    kw = dict(size=(64, 48), n_sensors=1, n_scenes=2)
    write_dataset(tmp_path / "a", seed=3, **kw)
    write_dataset(tmp_path / "b", seed=3, **kw)
    write_dataset(tmp_path / "c", seed=4, **kw)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_files_open_in_rawpy_with_right_metadata(small_synth):
    plans = plan_dataset(SENSORS[:2], seed=7, n_scenes=2, n_clean=2)
    assert len(plans) == small_synth.n_files
    for plan in plans:
        sensor = SENSORS[plan.sensor_index]
        path = small_synth.out / plan.relpath
        with rawpy.imread(str(path)) as raw:
            assert raw.raw_image_visible.shape == (96, 128)
            assert raw.other.iso_speed == plan.iso
            assert raw.other.shutter_speed == pytest.approx(plan.exposure_time, rel=1e-3)
            assert raw.white_level == sensor.white_level
        frame = read_raw(path)
        assert frame.info.cfa == sensor.cfa
        assert frame.info.sensor == sensor.name
        assert frame.info.black_level == tuple(float(b) for b in sensor.black_level)
        assert frame.info.iso == plan.iso


def test_same_brightness_up_the_iso_ladder(small_synth):
    # Exposure x ISO is constant within a scene, and so is the mean level of the frames.
    plans = [p for p in plan_dataset(SENSORS[:2], seed=7, n_scenes=2, n_clean=2) if p.sensor_index == 1]
    for scene in {p.scene for p in plans}:
        group = [p for p in plans if p.scene == scene]
        ev = {round(p.iso * p.exposure_time, 9) for p in group}
        assert len(ev) == 1
        means = [read_raw(small_synth.out / p.relpath).normalized().mean() for p in group]
        assert np.ptp(means) < 0.02 * np.mean(means) + 2e-3


@pytest.mark.parametrize("sensor_index", [0, 1])
def test_measured_noise_matches_truth(tmp_path, sensor_index):
    """Variance of flat chart patches, measured in the DNG files, against a*x + b from truth.json."""
    sensor = SENSORS[sensor_index]
    w, h = 768, 512
    summary = write_dataset(tmp_path, seed=11, size=(w, h), n_sensors=sensor_index + 1, n_scenes=1, n_clean=1)
    truth = load_profiles(summary.truth_path).sensor(sensor.name)
    clean = chart(sensor, h, w)  # chart brightness is 1.0: the true signal of every pixel
    levels = np.unique(clean[:, : h // 4])  # the flat-patch half of the chart
    checked = 0
    for prof in truth.profiles:
        path = summary.out / sensor.name.replace(" ", "_") / "chart" / f"chart_iso{prof.iso}_0.dng"
        x = read_raw(path).normalized().astype(np.float64)
        for c in range(4):
            a, b = prof.a[c], prof.b[c]
            pooled = {"shadows": [0.0, 0], "highlights": [0.0, 0]}  # sum of n * ratio, n
            for level in levels:
                sigma = np.sqrt(a * level + b)
                black_frac = sensor.black_level[c] / (sensor.white_level - sensor.black_level[c])
                if level - 4 * sigma < -black_frac or level + 4 * sigma > 1.0:
                    continue  # clipped at 0 DN or at white: the variance is censored by design
                sel = x[c][clean[c] == level]
                if sel.size < 400:
                    continue
                measured = sel.var(ddof=1)
                expected = a * level + b
                rel_se = np.sqrt(2.0 / (sel.size - 1))
                assert abs(measured / expected - 1) < 5 * rel_se + 0.01, (prof.iso, c, level)
                assert abs(sel.mean() - level) < 5 * sigma / np.sqrt(sel.size) + 1e-6
                part = pooled["shadows" if a * level < b else "highlights"]
                part[0] += sel.size * measured / expected
                part[1] += sel.size
                checked += 1
            # Pooled over patches the ratio is known to ~0.5%: this pins a (highlights) and b (shadows).
            for name, (total, n) in pooled.items():
                if n:
                    assert abs(total / n - 1) < 4 * np.sqrt(2.0 / n) + 0.005, (prof.iso, c, name, total / n)
    # Every ISO and channel contributes patches from the shadows to the highlights.
    assert checked >= len(truth.profiles) * 4 * 15


def test_synth_pack_matches_written_mosaic(small_synth):
    f = sorted(small_synth.out.rglob("*.dng"))[0]
    frame = read_raw(f)
    np.testing.assert_array_equal(frame.packed(), pack(frame.mosaic, frame.info.cfa))


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "rawlab", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def _one_line_error(res) -> str:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


def test_synth_refuses_a_size_that_cannot_fit_in_memory(tmp_path):
    """#17.8: 100000x100000 died in a MemoryError traceback; it is refused up front, before any allocation."""
    import time

    from rawlab.errors import RawlabError
    from rawlab.synth.generate import BYTES_PER_PIXEL, available_memory, check_size

    have = available_memory()
    assert have is not None and have > 0  # /proc/meminfo (or psutil) is readable here
    assert 100_000 * 100_000 * BYTES_PER_PIXEL > have  # 1.6 TB: no test machine has it
    t = time.perf_counter()
    line = _one_line_error(_cli("synth", tmp_path / "out", "--size", "100000x100000"))
    assert time.perf_counter() - t < 60  # no attempt to allocate or to simulate
    assert "--size 100000x100000 needs about" in line and "smaller --size" in line, line
    assert not any((tmp_path / "out").rglob("*.dng"))
    with pytest.raises(RawlabError, match="GB is available"):
        check_size(100_000, 100_000)
    check_size(4000, 3000)  # 12 MP needs about 1.9 GB: fine on any machine the suite runs on


def test_synth_refuses_an_unwritable_out(tmp_path):
    """#17.5: an OUT below a regular file gave a traceback (root ignores permission bits; a file does not)."""
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    line = _one_line_error(
        _cli("synth", blocker / "out", "--size", "64x48", "--sensors", "1", "--scenes", "1")
    )
    assert "afile" in line and "not a folder" in line, line
    assert blocker.read_text() == "x"

"""``rawlab synth --burst``: real DNG sequences whose motion, moving object, clean reference and noise match
truth.json."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from rawlab.cli import main
from rawlab.noise.profile import load_profiles
from rawlab.rawio import read_raw
from rawlab.synth.burst import simulate_burst, write_bursts
from rawlab.synth.sensors import SENSORS


@pytest.fixture(scope="module")
def bursts(tmp_path_factory):
    """Two sensors (PG-1, and MP-2 whose black level keeps its noise unclipped), the chart, bursts of 4."""
    out = tmp_path_factory.mktemp("bursts")
    result = CliRunner().invoke(
        main, ["synth", str(out), "--burst", "4", "--size", "128x96", "--sensors", "2", "--scenes", "1"]
    )
    assert result.exit_code == 0, result.output
    return out


def test_layout_truth_schema_and_rawpy(bursts):
    truth = json.loads((bursts / "truth.json").read_text())
    profiles = load_profiles(bursts / "truth.json")  # still a valid rawlab.noise/1 file
    assert [s.sensor for s in profiles.sensors] == ["SynthCam PG-1", "SynthCam MP-2"]
    n_isos = sum(len(s.iso_ladder) for s in SENSORS[:2])
    assert len(truth["bursts"]) == n_isos  # one burst per sensor, scene (the chart) and ISO
    for b in truth["bursts"]:
        assert len(b["frames"]) == 4 and b["reference"] == 0
        assert b["motion"][0] == {"dx": 0.0, "dy": 0.0, "rotation_deg": 0.0}
        assert all(
            abs(m["dx"]) <= 4 and abs(m["dy"]) <= 4 and abs(m["rotation_deg"]) <= 0.25 for m in b["motion"]
        )
        assert len(b["moving_object"]) == 4
        ref = np.load(bursts / b["clean_reference"])
        assert ref.dtype == np.float32 and ref.shape == (96, 128)
        mask = np.load(bursts / b["object_mask"])
        assert mask.shape == (4, 96, 128)
        for k, (name, obj) in enumerate(zip(b["frames"], b["moving_object"], strict=True)):
            frame = read_raw(bursts / b["folder"] / name)  # rawpy (LibRaw) decodes it
            assert frame.info.iso == b["iso"] and (frame.info.width, frame.info.height) == (128, 96)
            x0, y0, x1, y1 = obj["box"]
            inside = mask[k, y0:y1, x0:x1].sum()
            assert inside == mask[k].sum() == obj["pixels"] > 0  # the box holds the whole mask


def test_same_seed_same_bytes_and_no_burst_unchanged(tmp_path):
    def digest(root):
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.is_file():
                h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
        return h.hexdigest()

    for name in ("a", "b"):
        write_bursts(tmp_path / name, n_frames=2, seed=3, size=(64, 48), n_sensors=1, n_scenes=1)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    # Without --burst the pair dataset is what it was: no bursts in its truth (tests/test_synth.py pins its bytes).
    from rawlab.synth import write_dataset

    write_dataset(tmp_path / "c", seed=3, size=(64, 48), n_sensors=1, n_scenes=1)
    assert "bursts" not in json.loads((tmp_path / "c" / "truth.json").read_text())


def test_frames_noise_matches_the_law(bursts):
    """Each frame minus its clean planes has the variance ``a x + b`` of truth.json. Checked on the
    reference, whose clean planes are on disk: per channel, the mean squared residual over pixels between 5%
    and 90% of white against the mean predicted variance. With ~3000 pixels per channel, the relative standard
    error of a variance estimate is sqrt(2 / n) ~ 2.6%; 4 sigma gives 10%."""
    truth = json.loads((bursts / "truth.json").read_text())
    profiles = load_profiles(bursts / "truth.json")
    b = next(b for b in truth["bursts"] if b["sensor"] == "SynthCam MP-2" and b["iso"] == 3200)
    frame = read_raw(bursts / b["folder"] / b["frames"][0])
    from rawlab.bayer import pack

    clean = pack(np.load(bursts / b["clean_reference"]), frame.info.cfa)
    noisy = frame.normalized()
    law = profiles.noise_at("SynthCam MP-2", 3200)
    for c in range(4):
        ok = (clean[c] > 0.05) & (clean[c] < 0.9)
        measured = float(np.mean((noisy[c][ok] - clean[c][ok]) ** 2))
        predicted = float(np.mean(law.a[c] * clean[c][ok] + law.b[c]))
        assert abs(measured / predicted - 1) < 0.10, (c, measured, predicted)


def test_motion_moves_the_content_exactly():
    """A whole-Bayer-period translation moves every clean plane by exactly that many packed pixels (the
    supersampled scene is sampled on its own grid then), in the direction the truth says:
    ``frame(y, x) = ref(y - dy, x - dx)``."""
    from rawlab.synth.burst import FrameMotion

    motion = [FrameMotion(0.0, 0.0, 0.0), FrameMotion(2.0, -4.0, 0.0)]
    burst = simulate_burst(SENSORS[1], "coffee", 800, 2, (96, 64), seed=5, moving=False, motion=motion)
    ref, moved = burst.clean
    # packed shift (dy, dx) = (-2, 1): moved[:, y, x] = ref[:, y + 2, x - 1]
    np.testing.assert_allclose(moved[:, :-2, 1:], ref[:, 2:, :-1], rtol=0, atol=1e-6)
    assert not np.allclose(moved, ref)


def test_aligner_recovers_the_true_shake():
    """rawlab.burst's aligner, on the written frames' kind of data (noisy, ISO 3200, rotation included), finds
    each frame's true translation: the median of its per-tile displacements lies within 0.25 mosaic pixels.
    Tolerance: a tile's Lucas-Kanade estimate on noisy, aliased planes is off by a few tenths of a pixel and
    the median over ~100 tiles shrinks that; a rotation of at most 0.25 degrees moves the tiles of a 192x128
    frame by at most +-0.3 pixels about the centre, symmetrically, which the median cancels. The worst error
    measured over 15 draws of this scene was 0.15; 0.25 is an eighth of a Bayer period."""
    from rawlab.burst import align_frame, grey

    burst = simulate_burst(SENSORS[1], "coffee", 3200, 4, (192, 128), seed=5, moving=False)
    x = burst.normalized()
    for k in range(1, 4):
        dy, dx = align_frame(grey(x[0]), grey(x[k])).median_shift()
        m = burst.motion[k]
        assert math.hypot(dy - m.dy, dx - m.dx) < 0.25, (k, (dy, dx), (m.dy, m.dx))


def test_reference_is_the_unmoved_scene_and_object_moves():
    """The reference frame is the scene itself (no resampling), and the object's centre moves by its step."""
    burst = simulate_burst(SENSORS[0], "chart", 1600, 3, (128, 96), seed=2, moving=True)
    still = simulate_burst(SENSORS[0], "chart", 1600, 3, (128, 96), seed=2, moving=False)
    outside = ~burst.masks[0]
    from rawlab.bayer import unpack

    ref, ref_still = unpack(burst.clean[0], "RGGB"), unpack(still.clean[0], "RGGB")
    np.testing.assert_array_equal(ref[outside], ref_still[outside])  # the object only adds itself
    steps = [math.hypot(q.x - p.x, q.y - p.y) for p, q in zip(burst.objects, burst.objects[1:], strict=False)]
    # half the radius a frame, in the scene; the camera's shake moves the image by up to a few pixels more
    assert all(abs(s - 0.5 * burst.objects[0].radius) < 8 for s in steps)

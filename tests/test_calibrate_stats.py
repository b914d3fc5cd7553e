"""The streaming group statistics (rawlab.calibrate.stats) against their definitions computed directly.

The reference below is the statistics' first implementation, which held the group's frames as one float
stack and computed each definition with numpy. On small integer stacks both must agree to float rounding
(1e-9 relative: the streaming sums are exact integers, the direct ones float64 sums of a few thousand values).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rawlab.bayer import pack, unpack
from rawlab.calibrate.stats import (
    BANDS,
    GroupAccumulator,
    classify_frame,
    frame_sums,
    group_stats,
    sample_positions,
)


def _views(h):
    edges = np.linspace(0, h, BANDS + 1).astype(int)
    return [slice(0, h)] + [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def _reference(stack, white_above_black):
    """The definitions (module docstring of rawlab.calibrate.stats) on a float stack (L, 4, h, w) above black."""
    n = stack.shape[0]
    acc = {k: [] for k in ("means", "temporal", "spatial", "row", "clipped")}
    for v in _views(stack.shape[2]):
        y = stack[:, :, v, :]
        means = y.mean(axis=(2, 3))
        avg = y.mean(axis=0)
        acc["means"].append(means)
        acc["spatial"].append(avg.reshape(4, -1).var(axis=1, ddof=1))
        acc["clipped"].append((y >= white_above_black[None, :, None, None] - 0.5).mean(axis=(0, 2, 3)))
        acc["temporal"].append(y.var(axis=0, ddof=1).reshape(4, -1).mean(axis=1) - means.var(axis=0, ddof=1))
        rows = (y - avg[None]).mean(axis=3)
        rows = rows - rows.mean(axis=2, keepdims=True)
        acc["row"].append((rows**2).sum(axis=2).mean(axis=0) / (rows.shape[2] - 1) * n / (n - 1))
    return {k: np.asarray(v) for k, v in acc.items()}


def _loo(y):
    n = y.shape[0]
    r = y - (y.sum(axis=0)[None] - y) / (n - 1)
    return r - r.mean(axis=2, keepdims=True)


def _stack(seed, n=6, h=40, w=30, white=4095, level=300.0):
    """Integer frames (L, 4, h, w): a fixed pattern, row noise, drift, pixel noise and, at a high level, clipping."""
    rng = np.random.default_rng(seed)
    fixed = rng.normal(0, 3, (4, h, w)) + rng.normal(0, 2, (4, 1, w))
    frames = []
    for _ in range(n):
        y = level + fixed + rng.normal(0, 2, (4, h, 1)) + rng.normal(0, 1) + rng.standard_t(5, (4, h, w)) * 4
        frames.append(np.clip(np.rint(y), 0, white).astype(np.uint16))
    return np.stack(frames)


@pytest.mark.parametrize(("level", "w"), [(300.0, 30), (4080.0, 33)])
def test_streaming_statistics_equal_the_definitions(level, w):
    black, white = np.array([256.0, 250.0, 260.0, 256.0]), 4095.0
    y = _stack(1, w=w, level=level)
    got = group_stats(list(y), black=black, white=white, dark=False)
    ref = _reference(y.astype(np.float64) - black[:, None, None], white - black)
    assert got["n"] == 6 and got["shape"] == [40, w]
    for k, v in ref.items():
        np.testing.assert_allclose(np.asarray(got[k]), v, rtol=1e-9, atol=1e-12, err_msg=k)
    if level > 4000:
        assert 0.01 < got["clipped"][0][0] < 0.9  # the clipped count is exercised


def test_the_same_from_mosaics():
    """Packing and conversion channel by channel (frame_sums) gives the planes rawlab.bayer.pack gives."""
    y = _stack(2, n=3)
    mosaics = [unpack(p, "GRBG") for p in y]
    planes, _ = frame_sums(mosaics[0], white=4095, positions=sample_positions(40, 30, 3), cfa="GRBG")
    np.testing.assert_array_equal(planes, pack(mosaics[0], "GRBG"))
    black = np.full(4, 64.0)
    a = group_stats(mosaics, black=black, white=4095, dark=False, cfa="GRBG")
    b = group_stats(list(y), black=black, white=4095, dark=False)
    assert a == b


def test_tukey_residual_is_the_leave_one_out_residual():
    """With every pixel sampled (L * pixels <= 60000) the fit sees exactly the residual of the definition:
    the raw PPCC maximum, its correlation and the band maxima equal those of the directly built residual."""
    from rawlab.calibrate.stats import _ppcc

    y = _stack(3, n=8, level=40.0)
    black = np.zeros(4)
    got = group_stats(list(y), black=black, white=4095, dark=True)
    assert len(got["tukey"]) == 4
    c = 1
    r = _loo(y[:, c].astype(np.float64))
    raw, quality = _ppcc(r.reshape(-1))
    tk = got["tukey"][c]
    assert tk["n_samples"] == r.size
    assert tk["lambda_raw"] == pytest.approx(raw, abs=1e-7) and tk["ppcc"] == pytest.approx(quality, abs=1e-9)
    bands = [_ppcc(r[:, v].reshape(-1), near=raw)[0] for v in _views(r.shape[1])[1:]]
    np.testing.assert_allclose(tk["lambda_raw_bands"], bands, atol=1e-7)


def test_tukey_pixel_variance_is_exact(monkeypatch):
    """The residual variance the accumulator hands tukey_shape (from row sums) is the residual's own."""
    y = _stack(4, n=5)
    planes = [p.astype(np.float64) for p in y]
    pos = sample_positions(40, 30, 5)
    acc = GroupAccumulator(np.zeros(4), 4095.0, pos)
    for p in planes:
        acc.add(frame_sums(p, white=4095.0, positions=pos)[1], p)
    seen = {}

    def spy(*args, var_pix, seed):
        seen[seed] = var_pix
        return {}

    import rawlab.calibrate.stats as stats

    monkeypatch.setattr(stats, "tukey_shape", spy)
    acc.result(dark=True)
    for c in range(4):
        r = _loo(y[:, c].astype(np.float64))
        assert seen[c] == pytest.approx(float(r.var()) * 4 / 5, rel=1e-9)


def _old_classify(planes, black, white):
    x = planes.astype(np.float64) - black[:, None, None]
    _, h, w = x.shape
    bh, bw = h // 4, w // 4
    blocks = x[:, : bh * 4, : bw * 4].reshape(4, 4, bh, 4, bw).mean(axis=(2, 4))
    noise = x.reshape(4, -1).std(axis=1)
    spread = blocks.reshape(4, -1).std(axis=1)
    allowed = 5 * noise / np.sqrt(bh * bw) + 0.05 * np.abs(x.reshape(4, -1).mean(axis=1)) + 2.0
    level = float(np.mean(x.reshape(4, -1).mean(axis=1) / (white - black)))
    return spread, allowed, level


@pytest.mark.parametrize("kind", ["dark", "flat", "scene"])
def test_classification_from_row_sums(kind):
    """Block means, noise and level from the row sums equal the direct ones; the decision follows them."""
    black, white = np.full(4, 256.0), 4095.0
    level = {"dark": 270.0, "flat": 2000.0, "scene": 1000.0}[kind]
    y = _stack(5, n=1, h=41, w=37, level=level)[0].astype(np.int64)
    if kind == "scene":
        y = y + np.linspace(0, 1500, 37).astype(np.int64)[None, None, :]
    planes = y.astype(np.float64)
    _, sums = frame_sums(planes, white=white, positions=sample_positions(41, 37, 1))
    got, note = classify_frame(sums, black, white)
    spread, allowed, lvl = _old_classify(y, black, white)
    expected = None if np.any(spread > allowed) else ("dark" if lvl <= 0.02 else "flat")
    assert got == expected == (None if kind == "scene" else kind), note
    if kind == "scene":
        c = int(np.argmax(spread / allowed))
        assert f"spread {spread[c]:.1f} DN, a dark or flat field allows {allowed[c]:.1f} DN" in note
    else:
        assert note == f"level {lvl:.1%} of the range"


def test_a_group_of_mixed_frames_is_measured_kind_by_kind(tmp_path):
    """A group task adds each frame to the sum of the kind it guesses (the last frame's) as it reads it; a
    wrong guess or a rejected frame is taken back out: darks, a flat, a scene and darks again in one group
    give the statistics of the darks alone and of the flat alone."""
    from rawlab.calibrate.pipeline import _measure_group
    from rawlab.dng import write_dng

    black, white = np.full(4, 256.0), 4095
    darks = _stack(6, n=5, level=262.0)
    flat = _stack(7, n=1, level=2000.0)[0]
    scene = flat.astype(np.int64) + np.linspace(0, 1500, 30).astype(np.int64)[None, None, :]
    order = [darks[0], darks[1], flat, scene.astype(np.uint16), darks[2], darks[3], darks[4]]
    paths = []
    for k, planes in enumerate(order):
        path = tmp_path / f"f{k}.dng"
        write_dng(path, unpack(planes, "RGGB"), cfa="RGGB", black_level=[256] * 4, white_level=white,
                  make="SynthCam", model="MIX", iso=100, exposure_time=0.01)  # fmt: skip
        paths.append(str(path))
    out = _measure_group(paths, [None] * len(paths), 0.02)
    assert [f["kind"] for f in out["frames"]] == ["dark", "dark", "flat", "dark", "dark", "dark"]
    assert [r["path"] for r in out["rejected"]] == [paths[3]]
    np.testing.assert_equal(out["dark"], group_stats(list(darks), black=black, white=white, dark=True))
    np.testing.assert_equal(out["flat"], group_stats([flat], black=black, white=white, dark=False))

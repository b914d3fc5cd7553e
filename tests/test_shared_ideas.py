"""The ideas every package shares, each with one implementation (docs/architecture.md, "One home for each idea"):
normalisation, the (a, b) rule, pairs (gain, shift, alignment, exposure matching) and per-item Dask work."""

from __future__ import annotations

import time

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rawlab.bayer import normalise
from rawlab.catalog.pairs import align, matched_planes, pair_gain, pair_shift, pairs_from_catalog
from rawlab.cluster import run_tasks
from rawlab.errors import RawlabError
from rawlab.noise.isolaw import ISOLaw
from rawlab.noise.profile import ISOProfile, NoiseProfileSet, SensorProfile

# -- normalisation -----------------------------------------------------------------------------------------


def test_normalise_every_layout_the_same_way():
    rng = np.random.default_rng(0)
    dn = rng.integers(0, 4096, (4, 6, 8)).astype(np.uint16)
    black, white = (64, 65, 63, 66), 4095
    x = normalise(dn, black, white)
    want = (dn.astype(np.float64) - np.array(black)[:, None, None]) / (white - np.array(black)[:, None, None])
    assert x.dtype == np.float32 and np.max(np.abs(x - want)) < 1e-6
    np.testing.assert_array_equal(normalise(np.moveaxis(dn, 0, -1), black, white, channel_axis=-1),
                                  np.moveaxis(x, 0, -1))  # fmt: skip
    stack = np.stack([dn, dn // 2])
    per_frame = normalise(stack, [black, (0, 0, 0, 0)], [white, 2047], channel_axis=1)
    np.testing.assert_array_equal(per_frame[0], x)
    np.testing.assert_array_equal(per_frame[1], normalise(dn // 2, 0, 2047))
    lazy = normalise(da.from_array(dn, chunks=(4, 3, 4)), black, white)
    np.testing.assert_array_equal(lazy.compute(), x)
    assert normalise(dn, black, white, dtype=np.float64).dtype == np.float64
    with pytest.raises(RawlabError, match="must exceed every black level"):
        normalise(dn, 100, 50)
    with pytest.raises(ValueError, match="4 channels"):
        normalise(dn[:3], black, white)


# -- the (a, b) rule ---------------------------------------------------------------------------------------


def _sensor(law: bool = True, bad_iso: float | None = None) -> SensorProfile:
    """Profiles at ISO 100, 400, 1600 on the law a = 1e-6 * iso, b = 1e-7 + 1e-12 * iso^2; the ISO-400 entry
    is measured 10% off the law so that 'measured' and 'law' can be told apart."""
    ga, b0, b1 = 1e-6, 1e-7, 1e-12
    profiles = []
    for iso in (100, 400, 1600):
        a, b = ga * iso, b0 + b1 * iso**2
        if iso == 400:
            a, b = 1.1 * a, 1.1 * b
        if iso == bad_iso:
            a = float("nan")
        profiles.append(ISOProfile(iso, [a] * 4, [b] * 4))
    model = {}
    if law:
        model = {"form": "a = ga * iso; b = b0 + b1 * iso^2", "ga": [ga] * 4,
                 "segments": [{"iso_min": 0, "iso_max_exclusive": None, "b0": [b0] * 4, "b1": [b1] * 4}]}  # fmt: skip
        ISOLaw.from_dict(model)  # the form the noise fit writes
    return SensorProfile("Cam X", "paired", profiles, model)


def test_measured_then_law_inside_the_range():
    s = _sensor()
    got = s.noise_at(400)
    assert got.basis == "measured" and got.a[0] == pytest.approx(1.1 * 400e-6)
    got = s.noise_at(800)
    assert (
        got.basis == "law" and got.a[0] == pytest.approx(800e-6) and got.b[0] == pytest.approx(1e-7 + 0.64e-6)
    )
    a, b = got  # unpacks as a pair
    assert a is got.a and b is got.b


def test_outside_the_range_by_the_chosen_rule():
    s = _sensor()
    ext = s.noise_at(6400)
    assert ext.basis == "extrapolated" and ext.a[0] == pytest.approx(6400e-6)
    near = s.noise_at(6400, outside="nearest")
    assert near.basis == "nearest" and near.iso == 6400 and near.a[0] == pytest.approx(1600e-6)
    assert s.noise_at(50, outside="nearest").a[0] == pytest.approx(100e-6)
    assert s.noise_at(6400, outside="none") is None
    assert s.noise_at(800, outside="none").basis == "law"  # inside the range the law holds either way
    with pytest.raises(ValueError, match="outside"):
        s.noise_at(800, outside="clamp")


def test_without_a_law_the_nearest_iso_and_unusable_values_are_skipped():
    s = _sensor(law=False)
    got = s.noise_at(700)  # log-nearest of 400 and 1600 is 400 (ln 700/400 < ln 1600/700)
    assert got.basis == "nearest" and got.a[0] == pytest.approx(1.1 * 400e-6)
    bad = _sensor(law=False, bad_iso=400)
    got = bad.noise_at(400)  # the measured ISO has a NaN: not used
    assert got.basis == "nearest" and got.a[0] == pytest.approx(100e-6)


def test_b_is_floored_at_zero_and_unknown_sensors_give_none():
    s = SensorProfile("Cam Y", "paired", [ISOProfile(100, [1e-4] * 4, [-1e-7] * 4)])
    assert np.all(s.noise_at(100).b == 0.0)
    assert (
        SensorProfile("Cam Z", "paired", [ISOProfile(100, [float("nan")] * 4, [1e-7] * 4)]).noise_at(100)
        is None
    )
    profiles = NoiseProfileSet([_sensor()])
    assert profiles.noise_at("Cam X", 800).basis == "law"
    assert profiles.noise_at("Cam Q", 800) is None


# -- pairs -------------------------------------------------------------------------------------------------


def test_gain_and_shift_from_catalog_rows():
    assert pair_gain({"gain_r": 0.9, "gain_g1": 1.0, "gain_g2": 1.0, "gain_b": 1.1, "gain": 1.0}) == (
        0.9,
        1.0,
        1.0,
        1.1,
    )
    assert pair_gain({"gain_r": np.nan, "gain": 0.97}) == (0.97,) * 4
    assert pair_gain({}) == (1.0,) * 4
    assert pair_shift({"align_dy": 0.6, "align_dx": -0.9}) == (0, 0)  # under a mosaic pixel: left alone
    assert pair_shift({"align_dy": 4.2, "align_dx": -2.0}) == (2, -1)  # whole packed pixels
    assert pair_shift({"align_dy": None, "align_dx": np.nan}) == (0, 0)


@given(sy=st.integers(-3, 3), sx=st.integers(-3, 3))
def test_align_lines_up_the_same_scene_points(sy, sx):
    rng = np.random.default_rng(1)
    scene = rng.random((4, 20, 24))
    ref = scene[:, 3:17, 3:21]
    noisy = scene[:, 3 - sy : 17 - sy, 3 - sx : 21 - sx]  # noisy(y, x) = ref(y - sy, x - sx)
    a, b = align(noisy, ref, (sy, sx))
    assert a.shape == b.shape == (4, 14 - abs(sy), 18 - abs(sx))
    np.testing.assert_array_equal(a, b)


def test_matched_planes_scale_the_reference_by_the_gain():
    ref = np.full((4, 8, 8), 1064, np.uint16)
    noisy = np.full((4, 8, 8), 1034, np.uint16)
    row = {"frame_id": "n", "path": "n.dng", "clean_path": "r.dng", "sensor": "S", "scene": "s", "iso": 400.0,
           "cfa": "RGGB", "height": 16, "width": 16, "black_level": [64] * 4, "white_level": 4095.0,
           "gain": 0.97, "align_dy": 0.0, "align_dx": 0.0, "role": "noisy", "status": "ok"}  # fmt: skip
    cat = pd.DataFrame([row, {**row, "frame_id": "r", "path": "r.dng", "clean_path": None, "role": "clean"}])
    pairs, notes = pairs_from_catalog(cat)
    assert len(pairs) == 1 and not notes and pairs[0].gain == (0.97,) * 4
    y, c = matched_planes(noisy, ref, pairs[0])
    np.testing.assert_allclose(c, 0.97 * 1000 / 4031, rtol=1e-6)
    np.testing.assert_allclose(y, 970 / 4031, rtol=1e-6)
    bad = pd.DataFrame([{**row, "iso": np.nan}, cat.iloc[1].to_dict()])
    assert pairs_from_catalog(bad)[1] == ["n.dng: no ISO, so no noise parameters for it"]


# -- per-item Dask work ------------------------------------------------------------------------------------


def _slow_square(i: int, delay: float) -> int:
    time.sleep(delay)
    if i == 2:
        raise ValueError("item 2 is bad")
    return i * i


def test_run_tasks_returns_outcomes_in_input_order_whatever_finishes_first(client):
    args = [(i, 0.3 * (4 - i)) for i in range(5)]  # the first items take longest
    seen = []
    out = run_tasks(client, _slow_square, args, name="sq", on_result=lambda o: seen.append(o.index))
    assert [o.index for o in out] == [0, 1, 2, 3, 4]
    assert [o.value for o in out] == [0, 1, None, 9, 16]
    assert isinstance(out[2].error, ValueError) and not out[2].ok and out[0].ok
    assert out[2].why == "ValueError: item 2 is bad" and out[0].why == ""
    assert sorted(seen) == [0, 1, 2, 3, 4]

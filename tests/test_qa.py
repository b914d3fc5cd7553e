"""Pair quality checks (rawlab.catalog.qa) against frames whose shift and gain are known by construction.

Shifted frames are made the way a camera makes them: a smooth full-resolution linear RGB scene (a bundled
photograph, blurred by a 1-px Gaussian standing in for lens and anti-aliasing filter) is moved by a Fourier
shift, then sampled through the Bayer pattern and packed. An odd mosaic shift therefore changes the CFA
phase, as it does on a sensor. Noise is the sensor's Poisson-Gaussian law at its ISO, rounded to DN and
clipped, as in ``rawlab synth``.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rawlab.bayer import channel_offsets
from rawlab.catalog.qa import (
    QA_COLUMNS,
    QAThresholds,
    check_pair,
    estimate_gain,
    estimate_shift,
    expected_gain,
    frame_stats,
    normalise,
    saturation_fraction,
)
from rawlab.errors import RawlabError
from rawlab.synth.generate import simulate_frame
from rawlab.synth.sensors import SENSORS

H, W = 384, 512  # mosaic px of the test frames: (4, 192, 256) packed
MARGIN = 48  # mosaic px of scene beyond the frame on every side, so shifted content comes from the scene
PG1, MP2 = SENSORS[0], SENSORS[1]  # RGGB clipping black at 0 DN; BGGR with per-channel black and gain


@lru_cache(maxsize=8)
def _scene_rgb(name: str) -> np.ndarray:
    """Linear camera RGB (H + 2 MARGIN, W + 2 MARGIN, 3), 99th percentile 1.0, optically smooth."""
    import skimage.data
    from scipy.ndimage import gaussian_filter
    from skimage.transform import resize

    img = getattr(skimage.data, name)()[..., :3].astype(np.float64) / 255.0
    img = resize(img, (H + 2 * MARGIN, W + 2 * MARGIN), order=3, anti_aliasing=True)
    camera = np.clip(img, 0.0, 1.0) ** 2.2 / np.array([2.1, 1.0, 1.55])  # gamma and white balance undone
    camera = gaussian_filter(camera, (1.0, 1.0, 0.0))
    return camera / np.percentile(camera, 99.0)


def _fourier_shift(rgb: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``out(y, x) = rgb(y - dy, x - dx)``, band-limited; mirror padding keeps the borders free of wrap."""
    pad = 32
    p = np.pad(rgb, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    fy = np.fft.fftfreq(p.shape[0])[:, None, None]
    fx = np.fft.fftfreq(p.shape[1])[None, :, None]
    out = np.fft.ifft2(np.fft.fft2(p, axes=(0, 1)) * np.exp(-2j * np.pi * (fy * dy + fx * dx)), axes=(0, 1))
    return out.real[pad:-pad, pad:-pad]


def _packed(rgb: np.ndarray, cfa: str) -> np.ndarray:
    """Sample the frame window of a full-resolution RGB scene through the CFA: packed planes R, G1, G2, B."""
    frame = rgb[MARGIN : MARGIN + H, MARGIN : MARGIN + W]
    colour = (0, 1, 1, 2)
    return np.stack([frame[oy::2, ox::2, colour[c]] for c, (oy, ox) in enumerate(channel_offsets(cfa))])


def _clean_pair(dy: float, dx: float, *, scene: str = "astronaut", cfa: str = "RGGB"):
    """Noise-free normalised planes of a reference and of the same scene moved by (dy, dx) mosaic px."""
    rgb = _scene_rgb(scene)
    return _packed(rgb, cfa), _packed(_fourier_shift(rgb, dy, dx), cfa)


def _meta(sensor, iso=None, exposure=None) -> dict:
    return {
        "black_level": sensor.black_level,
        "white_level": sensor.white_level,
        "iso": iso,
        "exposure_time": exposure,
    }


def _dn_pair(sensor, dy, dx, *, iso, level=0.8, gains=(1.0, 1.0, 1.0, 1.0), scene="astronaut", seed=0):
    """DN planes: the reference at base ISO and the moved frame at ``iso``, brighter by per-channel ``gains``."""
    rng = np.random.default_rng(seed)
    ref, mov = _clean_pair(dy, dx, scene=scene, cfa=sensor.cfa)
    g = np.asarray(gains, dtype=np.float64)[:, None, None]
    return simulate_frame(ref * level, sensor, sensor.base_iso, rng), simulate_frame(
        mov * level * g, sensor, iso, rng
    )


# -- alignment -------------------------------------------------------------------------------------------------

SHIFTS = [
    (0.0, 0.0),
    (2.0, -4.0),  # even: CFA phase kept
    (1.0, 0.0),  # odd: CFA phase swapped
    (0.0, -3.0),
    (5.0, 7.0),
    (0.5, -0.25),  # sub-pixel
    (-0.35, 0.15),
    (2.7, -0.4),
    (-7.3, 12.6),
    (16.0, -16.0),  # the edge of the default search window
    (-15.5, 9.3),
]


@pytest.mark.parametrize("shift", SHIFTS, ids=str)
@pytest.mark.parametrize(
    ("sensor", "iso", "level"),
    [(PG1, 100, 0.8), (PG1, 6400, 0.8), (PG1, 6400, 0.05), (MP2, 3200, 0.8)],
    ids=["PG1-iso100", "PG1-iso6400", "PG1-iso6400-dark", "MP2-iso3200"],
)
def test_shift_recovers_known_shifts(shift, sensor, iso, level):
    ref, mov = _dn_pair(sensor, *shift, iso=iso, level=level)
    dy, dx, match = estimate_shift(
        normalise(ref, sensor.black_level, sensor.white_level),
        normalise(mov, sensor.black_level, sensor.white_level),
    )
    # Reached: <= 0.05 mosaic px at ISO 100, <= 0.15 at ISO 3200-6400 on a frame 2% of full scale.
    assert abs(dy - shift[0]) <= 0.15 and abs(dx - shift[1]) <= 0.15, (dy, dx)
    assert match > 0.85


def test_shift_sign_convention():
    """moving(y, x) = ref(y - dy, x - dx): a spot that moves down and left gives dy > 0, dx < 0."""
    yy, xx = np.mgrid[0:96, 0:128]

    def spot(y, x):  # packed coordinates; the same spot in all four planes
        return np.repeat((0.1 + 0.5 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 18.0))[None], 4, axis=0)

    # A lone spot is pulled slightly toward the centre by the analysis window: hence 0.15 px, not 0.05.
    dy, dx, match = estimate_shift(spot(47.0, 65.0), spot(50.0, 63.0))
    assert (dy, dx) == pytest.approx((6.0, -4.0), abs=0.15)  # mosaic px: twice the packed move
    assert match > 0.95
    dy, dx, _ = estimate_shift(spot(47.0, 65.0), spot(46.75, 65.5))
    assert (dy, dx) == pytest.approx((-0.5, 1.0), abs=0.15)


@pytest.mark.parametrize("g", [2.5, 4.0])
@pytest.mark.parametrize("scene", ["astronaut", "coffee"])
def test_shift_is_robust_to_gain_and_saturation(g, scene):
    """Moving frame 2.5-4x brighter (8-40% of it clipped) and noisy. Clipping both luminances at one scene
    level is what keeps this exact: without it the edges of the clipped areas pull the peak by up to 0.9 px."""
    for shift in [(3.4, -1.2), (-0.7, 0.5)]:
        ref, mov = _dn_pair(PG1, *shift, iso=6400, gains=(g,) * 4, scene=scene)
        assert saturation_fraction(mov, PG1.white_level) > 0.05
        dy, dx, match = estimate_shift(normalise(ref, 0, PG1.white_level), normalise(mov, 0, PG1.white_level))
        assert (dy, dx) == pytest.approx(shift, abs=0.15)
        assert match > 0.9


def test_shift_search_is_restricted_to_the_window():
    rgb = _scene_rgb("astronaut")
    ref, mov = _packed(rgb, "RGGB"), _packed(_fourier_shift(rgb, 24.0, -5.0), "RGGB")
    dy, dx, _ = estimate_shift(ref, mov, max_shift=16.0)
    assert abs(dy) <= 16.0 and abs(dx) <= 16.0
    dy, dx, match = estimate_shift(ref, mov, max_shift=32.0)  # a wider search finds it
    assert (dy, dx) == pytest.approx((24.0, -5.0), abs=0.1) and match > 0.95
    # A double exposure: a faint copy moved by (1.5, -0.5) and a stronger one by (30, 26). Only the faint copy
    # is inside the window, and it is the one reported (an unrestricted peak search would report the other).
    ghost = 0.35 * _packed(_fourier_shift(rgb, 1.5, -0.5), "RGGB") + 0.65 * _packed(
        _fourier_shift(rgb, 30, 26), "RGGB"
    )
    dy, dx, _ = estimate_shift(ref, ghost, max_shift=16.0)
    assert (dy, dx) == pytest.approx((1.5, -0.5), abs=0.25)  # the other copy perturbs it slightly


@pytest.mark.parametrize("shift", [(24.0, 0.0), (0.0, -30.0), (20.0, 20.0), (-40.0, 13.0)], ids=str)
@pytest.mark.parametrize("scene", ["astronaut", "coffee", "chelsea"])
def test_shift_beyond_search_window_is_never_passed_as_small(shift, scene):
    ref, mov = _dn_pair(PG1, *shift, iso=400, scene=scene)
    meta = _meta(PG1)
    out = check_pair(ref, mov, ref_meta=meta, meta=meta)
    small = math.hypot(out["align_dy"], out["align_dx"]) <= QAThresholds().max_shift
    assert not (small and out["align_match"] >= QAThresholds().min_match), out
    assert out["status"] == "excluded"
    assert "misaligned" in out["reason"] or "no reliable alignment" in out["reason"]


@pytest.mark.parametrize(
    ("a", "b"), [("astronaut", "coffee"), ("rocket", "immunohistochemistry"), ("chelsea", "astronaut")]
)
def test_unrelated_scenes_have_no_reliable_alignment(a, b):
    """Unrelated scenes that share a large-scale layout (low-passed correlation up to 0.45) score below 0.25:
    the match ignores scales coarser than ~30 px."""
    ref, _ = _dn_pair(PG1, 0, 0, iso=400, scene=a)
    _, mov = _dn_pair(PG1, 0, 0, iso=400, scene=b)
    out = check_pair(ref, mov, ref_meta=_meta(PG1), meta=_meta(PG1))
    assert out["align_match"] < 0.25
    assert out["status"] == "excluded" and out["reason"].startswith("no reliable alignment: match ")


# -- gain ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("g", [0.5, 0.8, 1.3, 2.0])
@pytest.mark.parametrize(
    ("sensor", "iso"),
    [(PG1, 6400), (MP2, 1600), (SENSORS[3], 3200)],
    ids=["PG1-6400", "MP2-1600", "GB4-3200"],
)
def test_gain_recovers_known_per_channel_gains(g, sensor, iso):
    gains = g * np.array([1.04, 1.0, 0.98, 0.95])
    ref, mov = _dn_pair(
        sensor, 1.3, -0.6, iso=iso, level=0.7, gains=tuple(gains), scene="coffee", seed=int(g * 10)
    )
    out = check_pair(ref, mov, ref_meta=_meta(sensor), meta=_meta(sensor))
    measured = np.array([out[k] for k in ("gain_r", "gain_g1", "gain_g2", "gain_b")])
    np.testing.assert_allclose(measured, gains, rtol=0.01)  # reached: <= 0.7% worst case
    assert gains.min() * 0.99 <= out["gain"] <= gains.max() * 1.01


@pytest.mark.parametrize("g", [0.8, 1.3])
@pytest.mark.parametrize(
    ("sensor", "iso"),
    [(SENSORS[2], 800), (SENSORS[3], 200), (SENSORS[3], 3200)],
    ids=["GR3-800", "GB4-200", "GB4-3200"],
)
def test_gain_on_sparse_bright_sources_with_subpixel_shift(g, sensor, iso):
    """A star field: most flux in small, partly clipped spots, so a residual sub-pixel misalignment moves
    flux across block borders. Moving the reference's block sums by the sub-pixel shift and dropping the
    neighbours of clipped blocks keeps the gain within 1.5% (without either: up to 3-5%)."""
    ref, mov = _dn_pair(sensor, 1.3, -2.7, iso=iso, level=0.7, gains=(g,) * 4, scene="hubble_deep_field")
    out = check_pair(ref, mov, ref_meta=_meta(sensor), meta=_meta(sensor))
    measured = [out[k] for k in ("gain_r", "gain_g1", "gain_g2", "gain_b")]
    np.testing.assert_allclose(measured, g, rtol=0.015)


@pytest.mark.parametrize("g", [0.5, 1.7])
def test_global_gain_with_clipping_in_the_brighter_frame(g):
    ref, mov = _dn_pair(PG1, 0.0, 0.0, iso=3200, level=0.9, gains=(g,) * 4, scene="chelsea", seed=3)
    gain, per = estimate_gain(normalise(ref, 0, PG1.white_level), normalise(mov, 0, PG1.white_level))
    assert gain == pytest.approx(g, rel=0.01)
    np.testing.assert_allclose(per, g, rtol=0.01)


def _smooth_planes(seed: int, h: int = 64, w: int = 80) -> np.ndarray:
    """Positive smooth random planes (4, h, w) in 0.05..0.35, unclipped."""
    from scipy.ndimage import gaussian_filter

    x = gaussian_filter(np.random.default_rng(seed).standard_normal((4, h, w)), (0, 3, 3))
    return (0.2 + 0.15 * x / np.abs(x).max()).astype(np.float32)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.floats(0.25, 2.5))
def test_gain_of_a_scaled_frame_is_the_scale(seed, k):
    x = _smooth_planes(seed)
    gain, per = estimate_gain(x, (x * np.float32(k)).astype(np.float32))
    assert gain == pytest.approx(k, rel=1e-5)
    np.testing.assert_allclose(per, k, rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), k=st.floats(0.25, 4.0), white_noise=st.booleans())
def test_shift_of_a_frame_against_itself_is_zero(seed, k, white_noise):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.5, (4, 48, 64)).astype(np.float32) if white_noise else _smooth_planes(seed, 48, 64)
    assert estimate_shift(x, x) == (0.0, 0.0, pytest.approx(1.0))
    dy, dx, match = estimate_shift(x, x * np.float32(k))  # brightness does not move anything
    assert (dy, dx) == (0.0, 0.0) and match == pytest.approx(1.0, abs=1e-4)


# -- the pair check --------------------------------------------------------------------------------------------


def test_check_pair_ok_pair_fills_every_column():
    ref, mov = _dn_pair(MP2, 0.4, -0.3, iso=800, gains=(16.0,) * 4, level=0.05)
    out = check_pair(ref, mov, ref_meta=_meta(MP2, 50, 1 / 10), meta=_meta(MP2, 800, 1 / 10))
    assert tuple(out) == QA_COLUMNS
    assert out["status"] == "ok" and out["reason"] == ""
    assert out["expected_gain"] == pytest.approx(16.0)
    assert out["gain"] == pytest.approx(16.0, rel=0.01)  # differs from 1 but matches the metadata: ok
    assert (out["align_dy"], out["align_dx"]) == pytest.approx((0.4, -0.3), abs=0.15)
    assert all(isinstance(out[k], float) for k in QA_COLUMNS[:-2])


def test_check_pair_gain_matching_metadata_ratio_2_is_ok():
    ref, mov = _dn_pair(PG1, 0.0, 0.0, iso=800, gains=(2.0,) * 4, level=0.4)
    out = check_pair(ref, mov, ref_meta=_meta(PG1, 100, 1 / 50), meta=_meta(PG1, 800, 1 / 200))
    assert out["expected_gain"] == pytest.approx(2.0)
    assert out["status"] == "ok", out["reason"]


def test_check_pair_exposure_mismatch_is_excluded_with_reason():
    ref, mov = _dn_pair(PG1, 0.0, 0.0, iso=800, gains=(1.5,) * 4, level=0.4)
    out = check_pair(ref, mov, ref_meta=_meta(PG1, 100, 1 / 50), meta=_meta(PG1, 800, 1 / 400))
    assert out["status"] == "excluded"
    assert re.match(
        r"exposure mismatch: measured gain 1\.[45]\d* vs 1 from ISO x exposure time \(off by [45]\d%",
        out["reason"],
    )
    assert "gain_tolerance 25%" in out["reason"]
    # Missing metadata (old formats): gain measured, not compared.
    out = check_pair(ref, mov, ref_meta=_meta(PG1), meta=_meta(PG1, 800, None))
    assert (
        out["status"] == "ok"
        and math.isnan(out["expected_gain"])
        and out["gain"] == pytest.approx(1.5, rel=0.01)
    )
    # A looser tolerance lets the pair through.
    out = check_pair(
        ref,
        mov,
        ref_meta=_meta(PG1, 100, 1 / 50),
        meta=_meta(PG1, 800, 1 / 400),
        thresholds={"gain_tolerance": 0.6},
    )
    assert out["status"] == "ok"


def test_check_pair_saturated_frame_is_excluded_unless_threshold_loosened():
    ref, mov = _dn_pair(PG1, 0.0, 0.0, iso=400, gains=(3.0,) * 4, level=0.8)
    meta_ref, meta = _meta(PG1, 100, 0.03), _meta(PG1, 400, 0.0225)
    out = check_pair(ref, mov, ref_meta=meta_ref, meta=meta)
    assert out["saturated_frac"] > 0.2 and out["ref_saturated_frac"] < 0.02
    assert out["status"] == "excluded"
    assert (
        out["reason"].startswith("saturated: ")
        and "of the noisy frame is clipped, above max_saturated 10.0%" in out["reason"]
    )
    assert out["gain"] == pytest.approx(3.0, rel=0.01)  # still measured on the unclipped part
    loose = check_pair(ref, mov, ref_meta=meta_ref, meta=meta, thresholds=QAThresholds(max_saturated=0.5))
    assert loose["status"] == "ok", loose["reason"]


def test_check_pair_excludes_a_pair_identical_to_its_reference():
    """A copy of the reference (zero residual) would pass every other check (gain 1, shift 0) and tell the
    noise fit the sensor has no noise: it is excluded, with the reason."""
    ref, _ = _dn_pair(PG1, 0.0, 0.0, iso=400)
    out = check_pair(ref, ref.copy(), ref_meta=_meta(PG1), meta=_meta(PG1))
    assert out["status"] == "excluded" and out["reason"].startswith("identical to its reference")
    assert out["gain"] == pytest.approx(1.0) and out["align_dy"] == 0 and out["align_dx"] == 0


def test_check_pair_misaligned_pair_passes_looser_max_shift():
    ref, mov = _dn_pair(PG1, 3.0, -1.0, iso=400)
    out = check_pair(ref, mov, ref_meta=_meta(PG1), meta=_meta(PG1))
    assert out["status"] == "excluded"
    # the limit applies to the shift's length, hypot(3, -1) = 3.16 px, and the message says so
    assert out["reason"] == "misaligned: shift (3.0, -1.0) px, length 3.16 px, exceeds max_shift 2 px"
    assert (
        check_pair(ref, mov, ref_meta=_meta(PG1), meta=_meta(PG1), thresholds=QAThresholds(max_shift=4))[
            "status"
        ]
        == "ok"
    )


def test_check_pair_dark_frame_and_size_mismatch_are_excluded():
    ref, _ = _dn_pair(MP2, 0.0, 0.0, iso=100)
    dark = simulate_frame(np.zeros((4, H // 2, W // 2)), MP2, 3200, np.random.default_rng(1))
    out = check_pair(ref, dark, ref_meta=_meta(MP2), meta=_meta(MP2))
    assert out["status"] == "excluded" and out["reason"].startswith("too dark to check: mean level ")
    out = check_pair(ref, ref[:, :-2], ref_meta=_meta(MP2), meta=_meta(MP2))
    assert out["status"] == "excluded" and out["reason"].startswith("size mismatch")


def test_check_pair_flat_field_pair_needs_no_alignment():
    """A flat-field pair (the photon-transfer measurement) has no structure to align: its shift and match are
    noise and must not exclude it; a structured frame against a flat one is still a failed alignment."""
    yy, xx = np.mgrid[0 : H // 2, 0 : W // 2]
    vignetting = 1 - 0.05 * ((yy - H / 4) ** 2 + (xx - W / 4) ** 2) / ((H / 4) ** 2 + (W / 4) ** 2)
    flat = np.repeat(0.4 * vignetting[None], 4, axis=0)
    rng = np.random.default_rng(5)
    for sensor in (PG1, SENSORS[2]):
        ref = simulate_frame(flat, sensor, sensor.base_iso, rng)
        mov = simulate_frame(flat, sensor, sensor.iso_ladder[-1], rng)
        out = check_pair(ref, mov, ref_meta=_meta(sensor), meta=_meta(sensor))
        assert out["align_match"] < 0.4  # nothing to correlate ...
        assert out["status"] == "ok", out["reason"]  # ... and nothing to exclude for
        assert out["gain"] == pytest.approx(1.0, rel=0.005)
    scene, _ = _dn_pair(PG1, 0.0, 0.0, iso=400)
    out = check_pair(scene, simulate_frame(flat, PG1, 400, rng), ref_meta=_meta(PG1), meta=_meta(PG1))
    assert out["status"] == "excluded" and out["reason"].startswith("no reliable alignment")


def test_check_pair_needs_levels():
    ref, mov = _dn_pair(PG1, 0.0, 0.0, iso=400)
    with pytest.raises(RawlabError, match="lacks white_level"):
        check_pair(ref, mov, ref_meta=_meta(PG1), meta={"black_level": (0, 0, 0, 0)})


# -- thresholds, per-frame statistics --------------------------------------------------------------------------


def test_thresholds_round_trip_and_reject_unknown_keys():
    t = QAThresholds(max_shift=1.5, min_match=0.2)
    assert QAThresholds.from_dict(t.to_dict()) == t
    assert QAThresholds.from_dict({}) == QAThresholds()
    with pytest.raises(
        RawlabError, match=r"unknown QA threshold\(s\) 'max_shfit'; allowed keys: max_shift, min_match"
    ):
        QAThresholds.from_dict({"max_shfit": 1.0})
    with pytest.raises(RawlabError, match="max_saturated must be a number >= 0"):
        QAThresholds(max_saturated=-0.1)
    with pytest.raises(RawlabError, match="must be a number"):
        QAThresholds.from_dict({"max_shift": "two"})


def test_frame_stats_normalise_and_saturation_are_exact():
    planes = np.empty((4, 10, 20), dtype=np.uint16)
    planes[:] = np.array([64, 65, 63, 64], dtype=np.uint16)[:, None, None] + 96
    planes[2, :5, :10] = 1023  # 50 saturated samples out of 800
    x = normalise(planes, (64, 65, 63, 64), 1023)
    assert x.dtype == np.float32
    assert x[0, 0, 0] == pytest.approx(96 / (1023 - 64))
    assert x[2, 0, 0] == pytest.approx(1.0)
    assert saturation_fraction(planes, 1023) == 50 / 800
    assert saturation_fraction(planes, 1023, margin=1000) == 1.0
    stats = frame_stats(planes, (64, 65, 63, 64), 1023)
    assert stats["saturated_frac"] == 50 / 800
    assert stats["mean_level"] == pytest.approx(float(np.mean(x, dtype=np.float64)), rel=1e-6)


def test_expected_gain():
    assert expected_gain(100, 1 / 50, 800, 1 / 200) == pytest.approx(2.0)
    for missing in [
        (None, 0.1, 800, 0.1),
        (100, float("nan"), 800, 0.1),
        (100, 0.1, 0, 0.1),
        (100, 0.1, 800, ""),
    ]:
        assert expected_gain(*missing) is None


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 12),
    nan_rows=st.lists(st.integers(0, 11), max_size=6),
    seed=st.integers(0, 2**31 - 1),
)
def test_row_mad_matches_nanmedian_with_and_without_nan(rows, nan_rows, seed):
    """The fast MAD used for the noise floor equals the NaN-aware one, row by row, whatever rows hold NaN."""
    from rawlab.catalog.qa import _row_mad

    rng = np.random.default_rng(seed)
    d = rng.normal(size=(rows, 64))
    for r in nan_rows:
        if r < rows:
            d[r, rng.choice(64, size=rng.integers(1, 20), replace=False)] = np.nan
    nans = np.count_nonzero(np.isnan(d), axis=1)
    expected = np.nanmedian(np.abs(d - np.nanmedian(d, axis=1, keepdims=True)), axis=1)
    np.testing.assert_allclose(_row_mad(d, nans), expected, rtol=0, atol=1e-12)

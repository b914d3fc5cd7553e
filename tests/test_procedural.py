"""Procedural training content: dead-leaves scenes, CFA mosaicking and randomised sensors (rawlab.synth.procedural)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rawlab.bayer import CFA_PATTERNS, channel_offsets
from rawlab.synth.procedural import A_RANGE, MAX_READ_SIGMA, READ_NOISE_E, dead_leaves, mosaic, random_sensor


def _spectrum_slope(img: np.ndarray) -> float:
    """Log-log slope of the radially averaged power spectrum of the luminance, over 4 px^-1 .. n/4."""
    lum = img.mean(-1)
    lum = lum - lum.mean()
    n = lum.shape[0]
    power = np.abs(np.fft.fftshift(np.fft.fft2(lum))) ** 2
    y, x = np.indices(power.shape)
    r = np.hypot(y - n // 2, x - n // 2).astype(int)
    profile = np.bincount(r.ravel(), power.ravel()) / np.maximum(np.bincount(r.ravel()), 1)
    f = np.arange(len(profile))
    sel = (f >= 4) & (f <= n // 4)
    return float(np.polyfit(np.log(f[sel]), np.log(profile[sel]), 1)[0])


def test_same_seed_same_scene_and_different_seeds_differ():
    a = dead_leaves(np.random.default_rng(7), 96, 128)
    b = dead_leaves(np.random.default_rng(7), 96, 128)
    c = dead_leaves(np.random.default_rng(8), 96, 128)
    assert a.shape == (96, 128, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_scenes_have_the_power_spectrum_of_natural_images():
    """Natural images have power spectra ~ 1/f^s with s about 2 (Field 1987; van der Schaaf and van Hateren
    1996 measured s = 1.88 +- 0.43 over 276 photographs; defocus steepens it). Dead leaves with r^-3 radii
    have the same scale invariance; a white-noise or a flat image would give 0 or no slope at all."""
    slopes = [_spectrum_slope(dead_leaves(np.random.default_rng(k), 256, 256)) for k in range(8)]
    assert -3.2 <= float(np.median(slopes)) <= -1.6, slopes


def test_scenes_span_shadows_to_clipped_highlights():
    scenes = [dead_leaves(np.random.default_rng(k), 128, 128) for k in range(24)]
    medians = np.array([np.median(s) for s in scenes])
    # exposure: median log-uniform over [0.005, 0.4] of white; 24 draws cover both ends of that range
    assert medians.min() < 0.02 and medians.max() > 0.15
    assert any((s > 1.0).mean() > 0.001 for s in scenes), "no scene has highlights beyond white"
    assert all(s.min() >= 0.0 and s.max() <= 4.0 for s in scenes)


@pytest.mark.parametrize("cfa", CFA_PATTERNS)
def test_mosaic_keeps_each_sites_own_colour(cfa):
    rng = np.random.default_rng(0)
    rgb = rng.random((8, 10, 3)).astype(np.float32)
    gains = (2.0, 1.0, 1.5)
    planes = mosaic(rgb, cfa, gains)
    assert planes.shape == (4, 4, 5)
    colour_of = {"R": 0, "G": 1, "B": 2}
    for c, (dy, dx) in enumerate(channel_offsets(cfa)):
        colour = colour_of[cfa[2 * dy + dx]]
        np.testing.assert_array_equal(planes[c], rgb[dy::2, dx::2, colour] / np.float32(gains[colour]))


def test_random_sensors_cover_the_documented_ranges():
    sensors = [random_sensor(np.random.default_rng(k)) for k in range(600)]
    assert {s.cfa for s in sensors} == set(CFA_PATTERNS)
    assert {s.bits for s in sensors} == {10, 12, 14, 16}
    a = np.array([s.a for s in sensors])
    # a is log-uniform over A_RANGE, then each channel within +-5%
    assert a.min() >= A_RANGE[0] * 0.95 and a.max() <= A_RANGE[1] * 1.05
    assert (
        np.log10(a[:, 1]).min() < np.log10(A_RANGE[0]) + 0.5
        and np.log10(a[:, 1]).max() > np.log10(A_RANGE[1]) - 0.5
    )
    clipped = np.mean([s.black_level[0] == 0 for s in sensors])
    assert abs(clipped - 1 / 3) < 4 * math.sqrt((1 / 3) * (2 / 3) / len(sensors))  # binomial, 4 sigma
    for s in sensors:
        span = s.white_level - s.black_level[0]
        assert 0 <= s.black_level[0] < s.white_level == 2**s.bits - 1
        # b holds the quantisation noise of one DN step (1/12 DN^2) and a read term
        q = 1 / (12 * span * span)
        assert s.quantisation == pytest.approx(q) and np.all(s.b > q)
        read = s.b - q
        assert np.all(np.sqrt(read) <= MAX_READ_SIGMA * np.sqrt(1.1))
        # read noise in electrons, bracketed by undoing the channel spreads (read: +-10%, a: +-5%) both ways
        low = np.sqrt(read / 1.1) / (s.a / 0.95)
        high = np.sqrt(read / 0.9) / (s.a / 1.05)
        assert np.all(low <= READ_NOISE_E[1])
        capped = np.sqrt(read / 0.9) >= MAX_READ_SIGMA  # the cap lowers sigma_e: no lower bound then
        assert np.all(capped | (high >= READ_NOISE_E[0]))

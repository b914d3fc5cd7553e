"""The SURE guard (rawlab.deploy.guard) against known ground truth: synthetic Poisson-Gaussian noise on a
photograph, denoisers whose errors are known (a blur that oversmooths, one that helps), and the weight the
guard picks compared with the oracle weight computed from the clean image."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from rawlab.deploy.guard import sure_blend

TILE = 64


@pytest.fixture(scope="module")
def photo():
    """Clean packed planes of a photograph cut into tiles ``(N, 64, 64, 4)``."""
    from rawlab.synth import get_sensors
    from rawlab.synth.scenes import render_scene

    clean = np.clip(render_scene("astronaut", get_sensors(1)[0], 256, 256), 0, 1).astype(np.float32)
    planes = np.moveaxis(clean, 0, -1)  # (128, 128, 4)
    return np.stack([planes[y : y + TILE, x : x + TILE] for y in (0, 64) for x in (0, 64)])


def _blur(sigma):
    return lambda t: gaussian_filter(t, sigma=(0, sigma, sigma, 0), mode="reflect").astype(np.float32)


def _noisy(clean, a, b, seed):
    rng = np.random.default_rng(seed)
    return (clean + np.sqrt(a * clean + b) * rng.standard_normal(clean.shape)).astype(np.float32)


def _oracle(y, f, clean):
    """Per tile, the w in [0, 1] minimising |y - w (y - f) - clean|^2, and a bound on SURE's error about it.

    SURE replaces <r, n> (r = y - f, n = y - clean) by its expectation S - D (Stein's lemma); their difference
    has a standard deviation of about sqrt(sum r^2 s^2) (the noise is independent per pixel), so the weight's
    error is about that over |r|^2. The Monte Carlo divergence adds less (one Rademacher probe, s^2 df/dy
    summed over 16 k pixels). Five of those sigmas bound a Gaussian deviation except once in 1.7 million.
    """
    r = (y - f).astype(np.float64)
    n = (y - clean).astype(np.float64)
    axes = (1, 2, 3)
    rr = np.sum(r * r, axis=axes)
    w = np.clip(np.sum(r * n, axis=axes) / rr, 0, 1)
    return w, rr


@pytest.mark.parametrize(
    "case, a, b, sigma",
    [
        ("oversmoothing at base ISO", 2e-5, 1e-7, 3.0),  # the blur destroys detail the noise did not hide
        ("helping at high ISO", 2e-2, 1e-4, 1.0),  # the blur removes more noise than detail
    ],
)
def test_the_guard_picks_the_oracle_weight_and_is_never_worse(photo, case, a, b, sigma):
    clean = photo
    y = _noisy(clean, a, b, seed=1)
    net = _blur(sigma)
    guarded, w = sure_blend(net, y, np.full(4, a), np.full(4, b))
    f = net(y)
    w_oracle, rr = _oracle(y, f, clean)
    var = a * np.maximum(f, 0) + b
    sd_w = np.sqrt(np.sum(((y - f) ** 2 * var).astype(np.float64), axis=(1, 2, 3))) / rr
    np.testing.assert_array_less(np.abs(w - w_oracle), 5 * sd_w + 1e-3, err_msg=case)

    def mse(x):
        return float(np.mean((np.asarray(x, np.float64) - clean) ** 2))

    # The guard's error is at most the input's and the network's, up to SURE's error on the weight.
    slack = 1 + 10 * float(np.max(sd_w))
    assert mse(guarded) <= min(mse(y), mse(f)) * slack, case
    if sigma == 3.0:
        assert mse(f) > 2 * mse(y) and np.all(w < 0.3)  # the blur really harms; the guard undoes most of it
    else:
        assert mse(f) < mse(y) and mse(guarded) < 0.95 * mse(f)  # the blur helps; blending helps more


def test_a_perfect_denoiser_is_kept_and_the_identity_changes_nothing(photo):
    clean = photo
    a, b = 1e-3, 1e-6
    y = _noisy(clean, a, b, seed=2)
    _, w = sure_blend(lambda t: clean, y, np.full(4, a), np.full(4, b))
    assert np.all(
        w > 0.95
    )  # f = clean: D = 0 and |r|^2 = |n|^2 ~ S (relative spread sqrt(2 / 16384) = 1.1 %)
    out, _ = sure_blend(lambda t: t, y, np.full(4, a), np.full(4, b))
    np.testing.assert_array_equal(out, y)  # r = 0: nothing to blend


def test_the_guard_is_deterministic(photo):
    y = _noisy(photo, 1e-3, 1e-6, seed=3)
    one = sure_blend(_blur(1.5), y, np.full(4, 1e-3), np.full(4, 1e-6))
    two = sure_blend(_blur(1.5), y, np.full(4, 1e-3), np.full(4, 1e-6))
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[1], two[1])

"""SURE fusion of the network with a classical denoiser (rawlab.deploy.guard.sure_fuse) against known ground
truth: the simplex solver against a brute-force search, the per-pixel derivative of a linear filter against
its exact centre tap, the fused weights against the oracle weights computed from the clean image, and the
deploy runtime's fused estimate against its parts on synthetic crops with known noise."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from rawlab.deploy.guard import simplex_weights, simplex_weights_many, sure_blend, sure_fuse


@pytest.fixture(scope="module")
def planes():
    """Clean packed planes of a photograph ``(128, 128, 4)``."""
    from rawlab.synth import get_sensors
    from rawlab.synth.scenes import render_scene

    clean = np.clip(render_scene("astronaut", get_sensors(1)[0], 256, 256), 0, 1).astype(np.float32)
    return np.ascontiguousarray(np.moveaxis(clean, 0, -1))


def _blur(x, sigma):
    """A linear per-channel Gaussian blur; periodic, so its centre tap is the same at every pixel."""
    sig = (0,) * (x.ndim - 3) + (sigma, sigma, 0)
    return gaussian_filter(x.astype(np.float64), sigma=sig, mode="wrap").astype(np.float32)


def _taps(sigma):
    """The blur's kernel on a 64 x 64 periodic grid: its centre tap and the sum of its squared taps."""
    delta = np.zeros((64, 64, 1), np.float32)
    delta[0, 0] = 1
    k = _blur(delta, sigma).astype(np.float64)
    return float(k[0, 0, 0]), float(np.sum(k * k))


@pytest.mark.parametrize("k", [2, 3])
def test_simplex_weights_match_a_brute_force_search(k):
    rng = np.random.default_rng(k)
    step = 0.005 if k == 2 else 0.02
    grid = np.array(
        [w for w in itertools.product(np.arange(0, 1 + step / 2, step), repeat=k) if sum(w) <= 1 + 1e-9]
    )
    for trial in range(20):
        m = rng.standard_normal((k, k + 2))
        g = m @ m.T
        v = rng.standard_normal(k) * (1 + trial % 3)
        w = simplex_weights(g, v)
        assert np.all(w >= 0) and w.sum() <= 1 + 1e-9
        value = w @ g @ w - 2 * w @ v
        brute = np.einsum("ni,ij,nj->n", grid, g, grid) - 2 * grid @ v
        # The grid's best point is within half a step of the true minimiser, so it can only be worse.
        assert value <= brute.min() + 1e-12, (trial, w, grid[np.argmin(brute)])


def test_the_batched_solver_matches_one_problem_at_a_time():
    # Problems of every kind in one batch: interior minima, minima on the sum w = 1 facet (large v), on edges
    # (some weights zero), at the input (v <= 0), and rank-deficient G (two identical denoisers), whose
    # singular faces must not stop the batch.
    rng = np.random.default_rng(7)
    gs, vs = [], []
    for trial in range(60):
        m = rng.standard_normal((4, 6 if trial % 4 else 3))  # every 4th: rank 3 of 4
        if trial % 5 == 0:
            m[1] = m[0]  # two identical residuals
        gs.append(m @ m.T)
        vs.append(rng.standard_normal(4) * (0.2, 1, 5, 20)[trial % 4] - (trial % 7 == 0) * 50)
    many = simplex_weights_many(np.stack(gs), np.stack(vs))
    one = np.stack([simplex_weights(g, v) for g, v in zip(gs, vs, strict=True)])
    val_many = np.einsum("ti,tij,tj->t", many, np.stack(gs), many) - 2 * np.einsum("ti,ti->t", many, vs)
    val_one = np.einsum("ti,tij,tj->t", one, np.stack(gs), one) - 2 * np.einsum("ti,ti->t", one, vs)
    # The same minimum (the minimiser itself is not unique where G is singular), and no point of a grid over
    # the simplex (steps of 0.05) lower.
    np.testing.assert_allclose(val_many, val_one, rtol=1e-9, atol=1e-9)
    grid = np.array([w for w in itertools.product(np.arange(0, 1.025, 0.05), repeat=4) if sum(w) <= 1 + 1e-9])
    brute = np.einsum("ni,tij,nj->tn", grid, np.stack(gs), grid) - 2 * np.stack(vs) @ grid.T
    assert np.all(val_many <= brute.min(axis=1) + 1e-9)
    assert np.all(many >= 0) and np.all(many.sum(axis=1) <= 1 + 1e-9)
    kinds = (many.sum(axis=1) > 1 - 1e-9).sum(), (many.sum(axis=1) == 0).sum(), (many == 0).any(axis=1).sum()
    assert all(n > 0 for n in kinds), kinds  # the batch held facet, input and edge solutions


def test_per_channel_weights_follow_each_channels_noise(planes):
    # Gaussian noise of very different variance per plane (b from 1e-4 to 3e-2): the blur is worth much
    # more on the noisiest plane, so with weights per channel that plane takes more of it than the cleanest
    # one, and the blend errs less than with one set of weights for all four (which must compromise).
    b = np.array([3e-2, 3e-3, 1e-3, 1e-4], np.float32)
    y = (planes + np.sqrt(b) * np.random.default_rng(6).standard_normal(planes.shape)).astype(np.float32)
    k0, _ = _taps(1.0)
    ests = [(_blur(y, 1.0), np.full(y.shape, k0, np.float32))]
    joint, w_joint = sure_fuse(y, ests, np.zeros(4), b, tile=64, overlap=16)
    apart, w_apart = sure_fuse(y, ests, np.zeros(4), b, tile=64, overlap=16, per_channel=True)
    assert w_joint.shape == (9, 1) and w_apart.shape == (9, 4, 1)
    assert np.all(w_apart[:, 0, 0] > w_apart[:, 3, 0] + 0.3), w_apart[..., 0]

    def mse(x):
        return float(np.mean((np.asarray(x, np.float64) - planes) ** 2))

    assert mse(apart) < 0.95 * mse(joint) and mse(joint) < mse(y)


def test_the_guard_derivative_of_a_linear_filter_is_its_centre_tap(planes):
    # Gaussian noise of sd s (a = 0): the probe gives, per pixel, the centre tap k0 plus cross terms
    # b_i b_j k_ij of mean 0. Over the N values of a tile their mean has variance 2 (sum k^2 - k0^2) / N
    # (each pair i < j appears twice); five of those sigmas, plus float32 rounding of f(y + eps s b) - f(y)
    # (at most 2 ulp of values <= 1, 2^-23, over eps s, per pixel), bound the estimate.
    b = 3e-2  # noise the blur removes more of than it costs in detail, so the guard keeps it
    y = (planes + np.sqrt(b) * np.random.default_rng(0).standard_normal(planes.shape)).astype(np.float32)
    tiles = np.stack([y[:64, :64], y[64:, 64:]])
    _, w, deriv = sure_blend(lambda t: _blur(t, 1.0), tiles, np.zeros(4), np.full(4, b), derivative=True)
    k0, k2 = _taps(1.0)
    n = tiles[0].size
    for t in range(len(tiles)):
        want = (1 - w[t]) + w[t] * k0
        tol = w[t] * (5 * np.sqrt(2 * (k2 - k0 * k0) / n) + 2.0**-23 / (0.02 * np.sqrt(b)))
        assert abs(float(np.mean(deriv[t], dtype=np.float64)) - want) < tol, (t, w[t])
    assert 0 < k0 < 0.2 and np.all(w > 0.5)  # a real blur that the guard keeps: the test measures something


def test_estimates_probed_together_share_one_probe(planes):
    """``probed_estimates``: several outputs of one pass, each with its derivative from the same probe. The
    first is :func:`probed_estimate` of it to the bit (same seed, same scale); a second output that is a
    linear map of the input (``0.5 y``) has derivative 0.5 at every pixel (the finite difference of a linear
    map is exact, up to float32 rounding of ``f(y + eps s b) - f(y)``, 2 ulp of values <= 1 over eps s)."""
    from rawlab.deploy.guard import probed_estimate, probed_estimates

    a, b = np.full(4, 1e-3, np.float32), np.full(4, 1e-4, np.float32)
    y = (planes + 0.01 * np.random.default_rng(1).standard_normal(planes.shape)).astype(np.float32)
    calls: list = []

    def run(v):
        calls.append(v)
        return [_blur(v, 1.0), 0.5 * v]

    (f, df), (g, dg) = probed_estimates(run, y, a, b, seed=7)
    assert len(calls) == 2  # one pass on y, one on the probe, for both outputs
    f1, df1 = probed_estimate(lambda v: _blur(v, 1.0), y, a, b, seed=7)
    np.testing.assert_array_equal(f, f1)
    np.testing.assert_array_equal(df, df1)
    np.testing.assert_array_equal(g, 0.5 * y)
    sd = np.sqrt(a * np.maximum(f, 0) + b)
    np.testing.assert_allclose(dg, 0.5, atol=float(np.max(2 * 2.0**-23 / (0.02 * sd))))


def test_fusing_two_filters_finds_the_oracle_blend(planes):
    # A light blur (keeps detail and noise) and a strong one (removes both) at a noise level where a blend of
    # the two beats either. Their derivative maps are exact (the centre taps), so the fused weights differ
    # from the oracle's (the clean image's) only by SURE's own error: <r_k, n> replaced by its expectation,
    # of standard deviation sqrt(sum r_k^2 s^2) (independent noise per pixel), about that over |r_k|^2 on each
    # weight. The whole frame is one tile, so the blend is exactly y - sum w_k r_k.
    b = 3e-2
    clean = planes
    y = (clean + np.sqrt(b) * np.random.default_rng(1).standard_normal(clean.shape)).astype(np.float32)
    ests = []
    for sigma in (0.5, 1.5):
        k0, _ = _taps(sigma)
        ests.append((_blur(y, sigma), np.full(y.shape, k0, np.float32)))
    fused, w = sure_fuse(y, ests, np.zeros(4), np.full(4, b), tile=128, overlap=0)
    r = np.stack([(y - f).ravel() for f, _ in ests]).astype(np.float64)
    noise = (y - clean).ravel().astype(np.float64)
    oracle = simplex_weights(r @ r.T, r @ noise)
    sd_w = np.sqrt(np.sum(r * r, axis=1) * b) / np.sum(r * r, axis=1)
    np.testing.assert_array_less(np.abs(w[0] - oracle), 5 * sd_w)

    def mse(x):
        return float(np.mean((np.asarray(x, np.float64) - clean) ** 2))

    assert w.shape == (1, 2) and np.all(w >= 0) and w.sum() <= 1 + 1e-9
    assert 0.1 < w[0, 0] < 0.9 and 0.1 < w[0, 1] < 0.9  # a real blend, not one of the vertices
    assert mse(fused) < 0.9 * min(mse(y), *(mse(f) for f, _ in ests))  # 0.82 here
    np.testing.assert_allclose(fused, y - (w[0] @ r).reshape(y.shape), rtol=0, atol=1e-6)


def test_fused_weights_cross_fade_between_tiles(planes):
    # Two halves whose best blends differ: tiles of 64 with 16 of overlap give each tile its own weights
    # (cross-faded between tiles, as the estimates are). The right half carries a fine checkerboard that the
    # blur wipes out, so there the input is worth keeping.
    b = 3e-2
    clean = planes.copy()
    checker = (np.indices(clean.shape[:2]).sum(axis=0) % 2 * 2 - 1)[..., None].astype(np.float32)
    clean[:, 64:] += 0.3 * checker[:, 64:]
    y = (clean + np.sqrt(b) * np.random.default_rng(2).standard_normal(clean.shape)).astype(np.float32)
    k0, _ = _taps(1.0)
    fused, w = sure_fuse(y, [(_blur(y, 1.0), np.full(y.shape, k0, np.float32))], np.zeros(4), np.full(4, b),
                         tile=64, overlap=16)  # fmt: skip
    assert w.shape[1] == 1 and len(w) == 9  # 3 x 3 tiles over 128 px
    left, right = w.reshape(3, 3)[:, 0], w.reshape(3, 3)[:, 2]
    assert np.all(left > right + 0.2)  # the noisy half keeps more of the blur
    assert np.all(np.isfinite(fused)) and fused.shape == y.shape


def test_the_fused_derivative_holds_the_weights_and_matches_a_probe(planes):
    """``sure_fuse(derivative=True)``: on one tile the blend is ``y - sum w_k (y - F_k)``, so its derivative with
    the weights held is ``1 - sum w_k (1 - dF_k)`` at each pixel (exact up to float32). Over 3 x 3 tiles
    cross-faded, it agrees with a Monte-Carlo probe of the whole fusion, weights recomputed: the probe's mean
    over the N values has cross terms of variance at most 2 sum_j J_ij^2 / N <= 2 / N (each row of the
    blend's Jacobian, a convex mix of blurs and the identity, has squared taps summing to at most 1), plus the
    weights' own dependence on each pixel, which is of order 1/N per tile; five sigmas bound the difference."""
    from rawlab.deploy.guard import probed_estimate

    b = 3e-2
    a0, b0 = np.zeros(4, np.float32), np.full(4, b, np.float32)
    y = (planes + np.sqrt(b) * np.random.default_rng(6).standard_normal(planes.shape)).astype(np.float32)

    def candidates(v):
        return [(_blur(v, s), np.full(v.shape, _taps(s)[0], np.float32)) for s in (0.5, 1.5)]

    _, w, d = sure_fuse(y, candidates(y), a0, b0, tile=128, overlap=0, per_channel=True, derivative=True)
    want = 1 - np.einsum("ck,kyxc->yxc", w[0], 1 - np.stack([e[1] for e in candidates(y)]))
    np.testing.assert_allclose(d, want, rtol=0, atol=1e-6)
    assert np.all(w.sum(axis=-1) > 0.3)  # a real blend: the derivative is far from the input's 1

    fused, _, d = sure_fuse(y, candidates(y), a0, b0, tile=64, overlap=16, per_channel=True, derivative=True)
    ref, _ = sure_fuse(y, candidates(y), a0, b0, tile=64, overlap=16, per_channel=True)
    np.testing.assert_array_equal(fused, ref)  # the blend itself is unchanged

    def fusion(v):
        return sure_fuse(v, candidates(v), a0, b0, tile=64, overlap=16, per_channel=True)[0]

    _, probed = probed_estimate(fusion, y, a0, b0, seed=3)
    assert abs(float(probed.mean()) - float(d.mean())) < 5 * np.sqrt(2 / y.size), (probed.mean(), d.mean())
    assert 0.05 < float(d.mean()) < 0.8


def test_held_blend_repeats_the_fusion_and_its_probe_gives_the_held_derivative(planes):
    """``held_blend`` with the weights ``sure_fuse`` returned is that blend (float32 rounding apart), per channel or
    not, on a frame whose tiles leave the last batch part-filled; the blend of the probed input's candidates with
    those weights held, differenced against it, is a probe of ``1 - sum w_k (1 - dF_k)``: for these linear
    candidates the two differ per pixel only by the probe's zero-mean cross terms, so their means over the N
    values agree within five sigmas of sqrt(2 / N) (the previous test's bound, without the weights' own term)."""
    from rawlab.deploy.guard import held_blend, probed_estimate

    b = 3e-2
    a0, b0 = np.zeros(4, np.float32), np.full(4, b, np.float32)
    # 128 x 112: 3 x 2 tiles of 64 (overlap 16); a batch of 16 holds all six and fillers
    clean = planes[:, :112]
    y = (clean + np.sqrt(b) * np.random.default_rng(8).standard_normal(clean.shape)).astype(np.float32)

    def candidates(v):
        return [(_blur(v, s), np.full(v.shape, _taps(s)[0], np.float32)) for s in (0.5, 1.5)]

    for per_channel in (False, True):
        fused, w, d = sure_fuse(
            y, candidates(y), a0, b0, tile=64, overlap=16, per_channel=per_channel, derivative=True
        )
        assert len(w) == 6 and np.ptp(w.reshape(6, -1), axis=0).max() > 0.01  # tiles of their own weights
        again = held_blend(y, [f for f, _ in candidates(y)], w, tile=64, overlap=16)
        np.testing.assert_allclose(again, fused, rtol=0, atol=1e-6)
        held = held_blend(y, [f for f, _ in candidates(y)], np.zeros_like(w), tile=64, overlap=16)
        np.testing.assert_array_equal(held, y)  # no weight: the input
    _, probed = probed_estimate(
        lambda v: held_blend(v, [_blur(v, s) for s in (0.5, 1.5)], w, tile=64, overlap=16), y, a0, b0, seed=4
    )
    assert abs(float(probed.mean()) - float(d.mean())) < 5 * np.sqrt(2 / y.size), (probed.mean(), d.mean())
    with pytest.raises(ValueError, match="do not fit"):
        held_blend(y, [y], w)
    with pytest.raises(ValueError, match="do not fit 1 tiles"):
        held_blend(y[:64, :64], [f for f, _ in candidates(y[:64, :64])], w, tile=64, overlap=16)


def test_a_frame_smaller_than_a_tile_counts_each_pixel_once(planes):
    # A frame below the tile size is padded with copies of its pixels (tiling.pad_to), which share their noise.
    # The guard sums only the frame (``valid``): with a pointwise shrink, whose estimate at a pixel is that
    # pixel's alone, its weight on the padded tile is the weight on the frame, whatever the padding holds.
    # The fusion does not pad at all: a frame of 40 x 56 is fused in tiles of 40 that fit it.
    b = 1e-3
    y = (planes[:40, :56] + np.sqrt(b) * np.random.default_rng(4).standard_normal((40, 56, 4))).astype(
        np.float32
    )

    def shrink(t):
        return (0.7 * t + 0.3 * 0.4).astype(np.float32)  # toward mid-grey, pixel by pixel

    a0, b0 = np.zeros(4, np.float32), np.full(4, b, np.float32)
    _, w_frame = sure_blend(shrink, y[None], a0, b0)
    padded = np.zeros((1, 64, 64, 4), np.float32) + 5.0  # padding far from the frame's values
    padded[0, :40, :56] = y
    _, w_valid = sure_blend(shrink, padded, a0, b0, valid=(40, 56))
    _, w_all = sure_blend(shrink, padded, a0, b0)
    np.testing.assert_allclose(w_valid, w_frame, rtol=1e-6)
    assert abs(w_all[0] - w_frame[0]) > 0.05  # counted, the padding would have moved it
    k0, _ = _taps(1.0)
    fused, w = sure_fuse(y, [(_blur(y, 1.0), np.full(y.shape, k0, np.float32))], a0, b0, tile=256, overlap=32)
    assert fused.shape == y.shape and w.shape == (2, 1)  # two tiles of 40 across the 56 columns, unpadded
    assert np.all((w >= 0) & (w <= 1))


def test_a_gain_within_the_noise_laws_tolerance_keeps_the_input(planes):
    # A blur that barely smooths (0.5 % of the way from the input) has an estimated gain over the input
    # below what a 1 % error in the noise law could fake (2 % of the input's error): the input is kept. The
    # full blur, with a clear gain, is taken (at the weight SURE finds best: 0.21 here).
    b = 1e-3
    y = (planes[:64, :64] + np.sqrt(b) * np.random.default_rng(5).standard_normal((64, 64, 4))).astype(
        np.float32
    )
    k0, _ = _taps(1.0)
    a0, b0 = np.zeros(4, np.float32), np.full(4, b, np.float32)
    for amount, kept in ((0.005, True), (1.0, False)):
        est = (y + amount * (_blur(y, 1.0) - y)).astype(np.float32)
        deriv = np.full(y.shape, 1 - amount + amount * k0, np.float32)
        fused, w = sure_fuse(y, [(est, deriv)], a0, b0, tile=64, overlap=16)
        assert (w[0, 0] == 0 and np.array_equal(fused, y)) if kept else w[0, 0] > 0.1, (amount, w)


def test_the_runtime_fuses_the_builtin_model_with_nl_means_and_dct(builtin_fused, monkeypatch):
    # Synthetic Poisson-Gaussian noise on rendered scenes (the truth known), at the export parity check's
    # three noise levels: fused, the error is below the guarded ensemble's, VST+NL-means' and VST+DCT's, and
    # below the fusion's without its DCT candidate, summed over the crops.
    import functools

    import rawlab.deploy.runtime as runtime
    from rawlab.deploy.classical import denoise_baseline
    from rawlab.deploy.crops import synthetic_crops
    from rawlab.deploy.guard import classical_estimates
    from rawlab.synth import get_sensors

    cfa = get_sensors(1)[0].cfa
    err = {"fused": 0.0, "model": 0.0, "nlm": 0.0, "dct": 0.0, "fused-nlm": 0.0}
    try:
        for crop in synthetic_crops(96, 3, seed=11):
            builtin_fused.fuse = True
            fused = builtin_fused.denoise(crop.noisy, crop.a, crop.b, cfa=cfa)
            w = builtin_fused.fuse_weights
            assert w.shape == (1, 2) and np.all(w >= 0) and np.all(w.sum(axis=1) <= 1 + 1e-9)
            with monkeypatch.context() as m:  # the fusion as it was before the DCT candidate
                m.setattr(runtime, "classical_estimates", functools.partial(classical_estimates, dct=False))
                fused_nlm = builtin_fused.denoise(crop.noisy, crop.a, crop.b, cfa=cfa)
            builtin_fused.fuse = False
            alone = builtin_fused.denoise(crop.noisy, crop.a, crop.b, cfa=cfa)
            nlm = denoise_baseline("vst-nlm", crop.noisy, crop.a, crop.b)
            dct = denoise_baseline("vst-dct", crop.noisy, crop.a, crop.b)
            for k, est in (
                ("fused", fused),
                ("model", alone),
                ("nlm", nlm),
                ("dct", dct),
                ("fused-nlm", fused_nlm),
            ):
                err[k] += float(np.mean((est - crop.clean) ** 2))
    finally:
        builtin_fused.fuse = True
    gain = {k: 10 * np.log10(err[k] / err["fused"]) for k in err if k != "fused"}
    # measured: +1.05 over the model, +0.97 over NL-means, +0.93 over the DCT, +0.30 over the fusion without it
    assert all(g > 0 for g in gain.values()) and gain["model"] > 0.05, gain


@pytest.fixture(scope="module")
def builtin_fused():
    from rawlab.deploy.runtime import load_denoiser
    from rawlab.learn.modelio import resolve_model

    return load_denoiser(resolve_model("builtin"))


def test_denoise_and_eval_fuse_options(small_synth, learn_store, tmp_path):
    # The command line: fused by default (each file's median weights printed), --no-fuse the guarded model
    # alone (a different raw written), and eval's --no-fuse reaches the runtime (a different score).
    import rawpy
    from click.testing import CliRunner

    from rawlab.cli import main

    raw = str(sorted((small_synth.out / "SynthCam_PG-1").rglob("*.dng"))[-1])
    runner = CliRunner()
    images = {}
    for name, extra in (("fused", []), ("alone", ["--no-fuse"])):
        res = runner.invoke(main, ["denoise", raw, "--out", str(tmp_path / name), "--ensemble", "1", *extra])
        assert res.exit_code == 0, res.output
        assert ("% NL-means" in res.output) == (name == "fused"), res.output
        (dng,) = (tmp_path / name).rglob("*.dng")
        with rawpy.imread(str(dng)) as r:
            images[name] = r.raw_image_visible.astype(np.int32)
    assert np.any(images["fused"] != images["alone"])
    assert "--no-fuse" in runner.invoke(main, ["denoise", "--help"]).output
    from _models import make_model

    store, truth = learn_store
    model = tmp_path / "model"
    make_model(model)  # a tiny model, every parameter perturbed
    scores = {}
    for name, extra in (("fused", []), ("alone", ["--no-fuse"])):
        out = tmp_path / f"{name}.json"
        res = runner.invoke(main, ["eval", str(store), "--model", str(model), "--methods", "identity",
                                   "--max-frames", "1", "--crop", "48", "--ensemble", "1", "--profile", str(truth),
                                   "--out", str(out), *extra])  # fmt: skip
        assert res.exit_code == 0, res.output
        rows = json.loads(out.read_text())["rows"]
        scores[name] = [r["psnr"] for r in rows if r["method"] == "model"]
    assert scores["fused"] != scores["alone"]


def test_fuse_bm3d_is_refused_where_it_cannot_run(small_synth, monkeypatch):
    # --fuse-bm3d adds VST+BM3D to the fusion: without the fusion, on bursts, or without the optional bm3d
    # package (its absence simulated where it is installed) it is a one-line usage error, not a traceback.
    from click.testing import CliRunner

    import rawlab.deploy.classical as classical
    from rawlab.cli import main

    raw = str(sorted((small_synth.out / "SynthCam_PG-1").rglob("*.dng"))[-1])
    runner = CliRunner()
    cases = [
        (["--no-fuse"], "drop --no-fuse"),
        (["--no-guard"], "drop --no-fuse and --no-guard"),
        (["--burst"], "applies to single frames"),
    ]
    for extra, reason in cases:
        res = runner.invoke(main, ["denoise", raw, "--out", "unused", "--fuse-bm3d", *extra])
        assert res.exit_code == 2 and reason in res.output and "Traceback" not in res.output, (
            extra,
            res.output,
        )
    monkeypatch.setattr(classical, "bm3d_available", lambda: False)
    res = runner.invoke(main, ["denoise", raw, "--out", "unused", "--fuse-bm3d"])
    assert res.exit_code == 2 and "pip install bm3d" in res.output, res.output
    assert "--fuse-bm3d" in runner.invoke(main, ["eval", "--help"]).output


@pytest.mark.slow  # BM3D takes seconds per small crop
def test_the_runtime_fuses_bm3d_when_installed(builtin_fused):
    # With the optional bm3d package, fuse="bm3d" adds VST+BM3D to the candidates: on synthetic crops with known
    # noise the fused error, summed, is below VST+BM3D's alone and below the fusion without it.
    pytest.importorskip("bm3d")  # optional, non-commercial licence: never a dependency
    from rawlab.deploy.classical import denoise_baseline
    from rawlab.deploy.crops import synthetic_crops
    from rawlab.synth import get_sensors

    cfa = get_sensors(1)[0].cfa
    err = {"bm3d-fused": 0.0, "fused": 0.0, "bm3d": 0.0}
    try:
        for crop in synthetic_crops(96, 3, seed=11):
            for name, mode in (("bm3d-fused", "bm3d"), ("fused", True)):
                builtin_fused.fuse = mode
                est = builtin_fused.denoise(crop.noisy, crop.a, crop.b, cfa=cfa)
                err[name] += float(np.mean((est - crop.clean) ** 2))
            bm3d = denoise_baseline("vst-bm3d", crop.noisy, crop.a, crop.b)
            err["bm3d"] += float(np.mean((bm3d - crop.clean) ** 2))
    finally:
        builtin_fused.fuse = True
    gain = {k: 10 * np.log10(err[k] / err["bm3d-fused"]) for k in ("fused", "bm3d")}
    assert gain["fused"] > 0 and gain["bm3d"] > 0, gain  # measured: +0.88 and +0.22 dB

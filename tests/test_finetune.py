"""Fine-tuning (`rawlab train --init`) and self-supervised training on noisy frames alone
(Recorrupted-to-Recorrupted): the recorrupted noise statistics against known ground truth, the pipeline's
self-supervised examples from a real store, and the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _models import make_model
from click.testing import CliRunner

from rawlab.cli import main
from rawlab.learn.input_pipeline import recorrupt

TINY_R2R = """
def get_config():
    return {
        "name": "tiny-r2r", "model": {"arch": "tiny"}, "steps": 6, "log_every": 3, "eval_every": 3,
        "checkpoint_every": 3,
        "data": {"crop": 32, "batch_size": 2, "synthetic_fraction": 0.0, "self_supervised": True,
                 "r2r_alpha": 0.5, "workers": 0},
        "loss": {"kind": "mse"}, "optim": {"learning_rate": 1e-4, "warmup_steps": 1},
        "tile": {"size": 64, "overlap": 16},
    }
"""


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_recorrupted_noises_are_uncorrelated_with_the_variances_r2r_predicts(alpha):
    """Known truth: a ramp x with Poisson-Gaussian noise of known (a, b). Over N pixels the sample correlation
    of the input's and the target's noise has a standard deviation of 1/sqrt(N) (2e-3 here): 5 of them bound
    it. The variance ratios are checked per decile of x to 5 times their sampling error, sqrt(2/n) per bin,
    plus the law's own approximation (the variance of z follows y, not x: E[a y + b] = a x + b exactly)."""
    rng = np.random.default_rng(0)
    a, b = np.full(4, 2e-3, np.float32), np.full(4, 1e-5, np.float32)
    x = np.broadcast_to(np.linspace(0.05, 0.95, 256, dtype=np.float32)[None, :, None], (256, 256, 4)).copy()
    y = (x + np.sqrt(a * x + b) * rng.standard_normal(x.shape)).astype(np.float32)
    noisy, target = recorrupt(y, a, b, alpha, np.random.default_rng(1))
    e_in, e_t = (noisy - x).ravel(), (target - x).ravel()
    n = e_in.size
    corr = np.corrcoef(e_in, e_t)[0, 1]
    assert abs(corr) < 5 / np.sqrt(n)
    var = (a[0] * x + b[0]).ravel()
    for lo in np.linspace(0.05, 0.86, 10):
        sel = (x.ravel() >= lo) & (x.ravel() < lo + 0.09)
        tol = 5 * np.sqrt(2 / sel.sum())
        assert abs(np.mean(e_in[sel] ** 2) / np.mean(var[sel]) / (1 + alpha**2) - 1) < tol
        assert abs(np.mean(e_t[sel] ** 2) / np.mean(var[sel]) / (1 + 1 / alpha**2) - 1) < tol


def test_self_supervised_examples_come_from_noisy_frames_and_say_their_noise(learn_store):
    from rawlab.catalog import open_catalog
    from rawlab.catalog.store import FrameStore
    from rawlab.learn.input_pipeline import Pipeline
    from rawlab.learn.synthnoise import sensor_noise
    from rawlab.learn.train import noisy_frames
    from rawlab.noise.profile import load_profiles

    store, truth = learn_store
    frames, held_out, _ = noisy_frames(open_catalog(str(store)), str(store))
    assert frames and not held_out and all(f.ref_id == f.frame_id for f in frames)
    noise = sensor_noise(load_profiles(truth), {f.sensor for f in frames}, truth)
    alpha = 0.5
    pipe = Pipeline(FrameStore(str(store)), frames, noise, crop=32, batch_size=4, seed=3, workers=0,
                    r2r_alpha=alpha)  # fmt: skip
    batch = pipe.batch(0)
    assert batch["noisy"].shape == batch["clean"].shape == (4, 32, 32, 4)
    assert not batch["synthetic"].any()
    np.testing.assert_array_equal(pipe.batch(0)["noisy"], batch["noisy"])  # a pure function of (seed, k)
    for i in range(4):
        ex = pipe.example(0, i)
        a, b = noise[ex["sensor"]].params(ex["iso"])
        np.testing.assert_allclose(ex["a"], a * (1 + alpha**2), rtol=1e-6)  # the input's noise is larger
        np.testing.assert_allclose(ex["b"], b * (1 + alpha**2), rtol=1e-6)
        # the frame is recovered from input and target: y = (input + alpha^2 target) / (1 + alpha^2)
        y = (ex["noisy"] + alpha**2 * ex["clean"]) / (1 + alpha**2)
        assert np.all(np.isfinite(y)) and 0 < float(np.median(y)) < 1


def test_finetuning_from_a_model_on_noisy_frames_alone(learn_store, tmp_path):
    store, _ = learn_store
    init = tmp_path / "init"
    make_model(init)  # a tiny model with every parameter perturbed
    cfg = tmp_path / "tiny_r2r.py"
    cfg.write_text(TINY_R2R)
    work = tmp_path / "ft"
    res = CliRunner().invoke(
        main, ["train", str(store), "--init", str(init), "--config", str(cfg), "--workdir", str(work)]
    )
    assert res.exit_code == 0, res.output
    assert "initialised from" in res.output and "self-supervised" in res.output
    written = json.loads((work / "config.json").read_text())
    assert written["training"]["init"]["model"] == str(init)
    assert written["training"]["data"]["self_supervised"] is True
    from rawlab.learn.modelio import load_model

    before, after = load_model(init).params, load_model(work).params
    import jax

    moved = [float(np.max(np.abs(np.asarray(p) - np.asarray(q)))) for p, q in
             zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)]  # fmt: skip
    assert max(moved) > 0  # trained from the initial weights...
    assert max(moved) < 0.05  # ...not from a fresh random start (6 steps at lr 1e-4 move little)


def test_init_and_config_mistakes_are_one_line_errors(learn_store, tmp_path):
    store, _ = learn_store
    init = tmp_path / "init"
    make_model(init)  # arch tiny
    runner = CliRunner()
    res = runner.invoke(main, ["train", str(store), "--workdir", str(tmp_path / "w")])
    assert res.exit_code == 2 and "--config" in res.output
    res = runner.invoke(main, ["train", str(store), "--init", str(init), "--config", "mobile", "--workdir",
                               str(tmp_path / "w2"), "--steps", "2"])  # fmt: skip
    assert res.exit_code == 2 and "--init" in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["train", str(store), "--init", str(tmp_path / "nope"), "--config", "tiny",
                               "--workdir", str(tmp_path / "w3"), "--steps", "2"])  # fmt: skip
    assert res.exit_code == 2 and "Traceback" not in res.output
    bad = tmp_path / "bad.py"
    bad.write_text(TINY_R2R.replace('"kind": "mse"', '"kind": "l1_ssim"'))
    res = runner.invoke(main, ["train", str(store), "--config", str(bad), "--workdir", str(tmp_path / "w4")])
    assert res.exit_code == 2 and "mse" in res.output


def test_sure_estimates_the_squared_error_of_a_linear_filter_without_the_clean_signal():
    """Known truth: a photograph-like ramp with Gaussian noise of known sd s, and a periodic blur f = K y.

    Per image, N (SURE - MSE) is the sum of zero-mean terms: |n|^2 - N s^2 (variance 2 N s^4), -2 <n, (K - I) x>
    (4 s^2 |(K - I) x|^2), -2 (<n, K n> - s^2 tr K) (at most 8 s^4 N sum k^2), and the Monte-Carlo divergence's
    cross terms, 2 s^2 sum_{i != j} b_i b_j k_ij (8 s^4 N (sum k^2 - k0^2)). Five of the total's standard
    deviations bound the estimate; the MSE itself is 20-50 such deviations from the noisy input's, so the test
    tells the two apart."""
    import jax.numpy as jnp
    from scipy.ndimage import gaussian_filter

    from rawlab.learn.losses import SURE_EPS, sure_mse

    rng = np.random.default_rng(4)
    s = 0.05
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    x = np.stack([0.3 + 0.4 * np.sin(6 * xx + 3 * c) * np.cos(5 * yy) for c in range(4)], -1)[None]
    x = np.repeat(x, 3, axis=0).astype(np.float32)  # three images, each with its own noise

    def blur(z):
        return gaussian_filter(z.astype(np.float64), sigma=(0, 1.2, 1.2, 0), mode="wrap").astype(np.float32)

    y = (x + s * rng.standard_normal(x.shape)).astype(np.float32)
    probe = (2 * rng.integers(0, 2, x.shape) - 1).astype(np.float32)
    f = blur(y)
    got = np.asarray(sure_mse(jnp.asarray(y), jnp.asarray(f), jnp.asarray(blur(y + SURE_EPS * s * probe)),
                              jnp.asarray(probe), jnp.full(x.shape, s * s, jnp.float32)))  # fmt: skip
    true = np.mean((f - x) ** 2, axis=(1, 2, 3))
    delta = np.zeros((1, 64, 64, 1), np.float32)
    delta[0, 0, 0, 0] = 1
    k = blur(delta).astype(np.float64)
    k0, k2 = float(k[0, 0, 0, 0]), float(np.sum(k * k))
    n = x[0].size
    resid = np.sum((blur(x) - x).astype(np.float64) ** 2, axis=(1, 2, 3))  # |(K - I) x|^2
    sd = np.sqrt(2 * n * s**4 + 4 * s**2 * resid + 8 * s**4 * n * k2 + 8 * s**4 * n * (k2 - k0 * k0)) / n
    np.testing.assert_array_less(np.abs(got - true), 5 * sd)
    assert np.all(np.abs(np.mean((y - x) ** 2, axis=(1, 2, 3)) - true) > 20 * sd)


def test_sure_examples_are_the_noisy_crops_as_they_are_with_a_probe(learn_store):
    from rawlab.catalog import open_catalog
    from rawlab.catalog.store import FrameStore
    from rawlab.learn.input_pipeline import Pipeline
    from rawlab.learn.synthnoise import sensor_noise
    from rawlab.learn.train import noisy_frames
    from rawlab.noise.profile import load_profiles

    store, truth = learn_store
    frames, _, _ = noisy_frames(open_catalog(str(store)), str(store))
    noise = sensor_noise(load_profiles(truth), {f.sensor for f in frames}, truth)
    pipe = Pipeline(
        FrameStore(str(store)), frames, noise, crop=32, batch_size=4, seed=3, workers=0, sure=True
    )
    batch = pipe.batch(0)
    assert batch["sure"].all() and batch["probe"].shape == batch["noisy"].shape
    assert set(np.unique(batch["probe"])) == {-1.0, 1.0}
    np.testing.assert_array_equal(batch["noisy"], batch["clean"])  # no second noise draw: the crop itself
    np.testing.assert_array_equal(pipe.batch(0)["probe"], batch["probe"])  # a pure function of (seed, k)
    for i in range(4):
        ex = pipe.example(0, i)
        a, b = noise[ex["sensor"]].params(ex["iso"])
        np.testing.assert_allclose(ex["a"], a, rtol=1e-6)  # the frame's own law, not scaled
        np.testing.assert_allclose(ex["b"], b, rtol=1e-6)
    with pytest.raises(ValueError, match="sure needs"):
        Pipeline(FrameStore(str(store)), frames, noise, crop=32, batch_size=4, sure=True, r2r_alpha=0.5)


def test_sure_finetuning_from_the_command_line(learn_store, tmp_path):
    store, _ = learn_store
    init = tmp_path / "init"
    make_model(init)
    cfg = tmp_path / "tiny_sure.py"
    cfg.write_text(TINY_R2R.replace('"r2r_alpha": 0.5,', '"self_supervised_loss": "sure",'))
    work = tmp_path / "ft"
    res = CliRunner().invoke(
        main, ["train", str(store), "--init", str(init), "--config", str(cfg), "--workdir", str(work)]
    )
    assert res.exit_code == 0, res.output
    assert "Stein's unbiased risk estimate" in res.output
    import pandas as pd

    log = pd.read_csv(work / "metrics.csv")
    losses = log.loc[log["split"] == "train", "loss"].to_numpy()
    assert len(losses) == 2 and np.all(np.isfinite(losses))
    bad = tmp_path / "bad.py"
    bad.write_text(TINY_R2R.replace('"r2r_alpha": 0.5,', '"self_supervised_loss": "n2n",'))
    res = CliRunner().invoke(
        main, ["train", str(store), "--config", str(bad), "--workdir", str(tmp_path / "w")]
    )
    assert res.exit_code == 2 and "self_supervised_loss" in res.output

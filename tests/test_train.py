"""``rawlab train`` on a real store: SSIM, single compilation, exact resume, the NaN guard, two devices, the CLI."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from click.testing import CliRunner

from rawlab.catalog import open_catalog
from rawlab.catalog.pairs import pairs_from_catalog
from rawlab.catalog.store import FrameStore
from rawlab.cli import main
from rawlab.cluster import RunOptions
from rawlab.learn.configs import load_config
from rawlab.learn.input_pipeline import Pipeline
from rawlab.learn.losses import ssim
from rawlab.learn.modelio import load_model
from rawlab.learn.split import split_pairs
from rawlab.learn.synthnoise import sensor_noise
from rawlab.learn.train import make_optimizer, train_and_evaluate
from rawlab.noise.profile import load_profiles


def _tiny(steps=12, **kw):
    """``tiny``, shrunk further: 32x32 packed crops, batch 4, a checkpoint and an eval every 6 steps."""
    cfg = load_config("tiny", steps=steps, **kw)
    cfg["data"].update(crop=32, batch_size=4, eval_batches=1, workers=2)
    cfg.update(log_every=3, eval_every=6, checkpoint_every=6)
    return cfg


def _rows(workdir):
    with open(workdir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _leaves(workdir):
    return jax.tree.leaves(load_model(workdir).params)


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    x = (rng.random((2, 40, 33, 4)) * 0.4).astype(np.float32)
    y = (x + rng.normal(0, 0.03, x.shape)).astype(np.float32)
    fast_ssim = jax.jit(ssim)  # one compilation instead of one per operation
    got = np.asarray(fast_ssim(x, y))
    want = [
        structural_similarity(x[i].astype(np.float64), y[i].astype(np.float64), data_range=1, channel_axis=-1,
                              gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
        for i in range(2)
    ]  # fmt: skip
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.allclose(np.asarray(fast_ssim(x, x)), 1.0)
    grad = jax.jit(jax.grad(lambda z: ssim(z, y).sum()))(x)
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


@pytest.fixture(scope="module")
def full_run(learn_store, tmp_path_factory, client):
    """12 uninterrupted steps, the noise profile fitted from the store (no profile in the config)."""
    store, _ = learn_store
    workdir = tmp_path_factory.mktemp("train") / "full"
    notes = []
    options = RunOptions(client=client, echo=notes.append)
    result = train_and_evaluate(_tiny(), workdir, str(store), options=options, progress=False)
    return workdir, result, notes


def test_training_compiles_once_and_writes_the_model_directory(full_run, learn_store):
    workdir, result, notes = full_run
    assert result.compilations == {"train_step": 1, "eval_step": 1}  # 12 steps, 3 evals: one trace each
    assert result.step == 12 and result.start_step == 0 and result.images_per_s > 0
    assert any("fitting it (auto) from" in n for n in notes)
    for name in ("config.json", "model.msgpack", "noise.json", "metrics.csv"):
        assert (workdir / name).is_file(), name
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == ["12", "6"]
    assert any((workdir / "tb").iterdir())
    config = json.loads((workdir / "config.json").read_text())
    assert config["schema"] == "rawlab.model/1" and config["step"] == 12 and config["name"] == "tiny"
    assert config["training"]["steps"] == 12 and config["noise"]["schema"] == "rawlab.noise/1"
    train_rows, eval_rows = split_pairs(open_catalog(learn_store[0]))
    trained = {(s, c) for s, c in zip(train_rows["sensor"], train_rows["scene"], strict=True)}
    held = {(s, c) for s, c in zip(eval_rows["sensor"], eval_rows["scene"], strict=True)}
    assert config["split"]["train_scenes"] == sorted(map(list, trained)) and not trained & held
    rows = _rows(workdir)
    assert [(r["step"], r["split"]) for r in rows] == [
        ("0", "eval"), ("3", "train"), ("6", "train"), ("6", "eval"), ("9", "train"), ("12", "train"),
        ("12", "eval"),
    ]  # fmt: skip
    assert all(float(r["lr"]) > 0 for r in rows if r["split"] == "train")
    model = load_model(workdir)
    a, b = model.noise_params("SynthCam PG-1", 1600)
    assert a.shape == b.shape == (4,) and np.all(a > 0)


def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(full_run, learn_store, tmp_path):
    full, _, _ = full_run
    store, _ = learn_store
    cfg = _tiny(noise__profile=str(full / "noise.json"))  # the profile the full run fitted
    first = train_and_evaluate(cfg, tmp_path, str(store), stop_after=5, progress=False)
    assert first.step == 5 and (tmp_path / "checkpoints" / "5").is_dir()
    assert json.loads((tmp_path / "config.json").read_text())["step"] == 5
    notes = []
    second = train_and_evaluate(
        cfg, tmp_path, str(store), options=RunOptions(echo=notes.append), progress=False
    )
    assert second.start_step == 5 and second.step == 12
    # Same settings in the same process: the compiled steps are reused, not traced again.
    assert first.compilations == second.compilations == {"train_step": 0, "eval_step": 0}
    assert any("resuming from the checkpoint at step 5" in n for n in notes)
    for got, want in zip(_leaves(tmp_path), _leaves(full), strict=True):
        np.testing.assert_array_equal(got, want)
    steps = [(r["step"], r["split"]) for r in _rows(tmp_path)]
    assert len(steps) == len(set(steps))  # the resumed run replaced, not duplicated, rows


def test_nan_guard_names_the_step_and_isos(learn_store, tmp_path):
    store, truth = learn_store
    cfg_file = tmp_path / "unstable.py"
    cfg_file.write_text(
        textwrap.dedent("""
        from rawlab.learn.configs.tiny import get_config as tiny

        def get_config():
            c = tiny()
            c["optim"]["learning_rate"] = 1e12  # diverges within a few steps
            c["data"]["crop"] = 32
            return c
    """)
    )
    r = CliRunner().invoke(
        main, ["train", str(store), "--config", str(cfg_file), "--workdir", str(tmp_path / "w"), "--steps", "30",
               "--batch-size", "4", "--noise", str(truth)],
    )  # fmt: skip
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert "training diverged at step" in r.output and "at ISO" in r.output and "learning_rate" in r.output


def test_cli_trains_resumes_and_the_model_denoises(learn_store, tmp_path):
    store, truth = learn_store
    workdir = tmp_path / "run"
    args = ["train", str(store), "--config", "tiny", "--workdir", str(workdir), "--batch-size", "16",
            "--noise", str(truth), "--seed", "1"]  # fmt: skip
    r = CliRunner().invoke(main, [*args, "--steps", "100"])
    assert r.exit_code == 0, r.output
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("train: 100 steps of tiny") and "images/s" in last and str(workdir) in last
    assert "devices: 1 x cpu" in r.output and "training on the CPU" in r.output  # it says where it runs
    assert "precision: float32 (auto)" in r.output  # bfloat16 only on an accelerator
    feed = re.search(r"input pipeline ([\d.]+) batches/s for a model at ([\d.]+) steps/s \(waited for data "
                     r"(\d+)% of the time\)", last)  # fmt: skip
    assert feed and float(feed[1]) > 0 and float(feed[2]) > 0 and 0 <= int(feed[3]) <= 100
    evals = [float(row["loss"]) for row in _rows(workdir) if row["split"] == "eval"]
    assert evals[-1] < evals[0]  # held-out loss: the trained network against the identity it started as

    # The model denoises crops of the training scenes better than doing nothing (the loss went down).
    cat = open_catalog(store)
    pairs, _ = pairs_from_catalog(cat, split_pairs(cat)[0])
    noise = sensor_noise(load_profiles(truth), {p.sensor for p in pairs}, truth)
    high = [p for p in pairs if p.iso >= 1600]
    batch = Pipeline(FrameStore(store), high, noise, crop=48, batch_size=16, seed=99, augment=False,
                     workers=0).batch(0)  # fmt: skip
    model = load_model(workdir)
    est = model.denoise(batch["noisy"], batch["a"], batch["b"])
    assert est.shape == batch["noisy"].shape
    assert np.abs(est - batch["clean"]).mean() < 0.97 * np.abs(batch["noisy"] - batch["clean"]).mean()

    r = CliRunner().invoke(main, [*args, "--steps", "100"])  # resumes, and finds nothing left to do
    assert r.exit_code == 0, r.output
    assert "resuming from the checkpoint at step 100" in r.output and "nothing to do" in r.output
    r = CliRunner().invoke(main, [*args[:3], "mobile", *args[4:], "--steps", "120"])
    assert r.exit_code == 2 and "new --workdir" in r.output


def test_bfloat16_training_runs_on_the_cpu_and_keeps_float32_parameters(learn_store, tmp_path):
    """bfloat16 is what "auto" picks on a GPU; here it is forced on the CPU to check the computation path: the
    loss stays finite and close to a float32 run's (bfloat16 keeps 8 bits of mantissa: a relative error of
    about 2^-8 per operation, far below the 20% allowed on a 10-step loss), and the parameters stay float32."""
    from rawlab.learn.configs import load_config
    from rawlab.learn.train import train_and_evaluate

    store, truth = learn_store
    losses = {}
    for precision in ("float32", "bfloat16"):
        cfg = load_config("tiny", steps=10, data__batch_size=4, noise__profile=str(truth), precision=precision,
                          log_every=10)  # fmt: skip
        res = train_and_evaluate(cfg, tmp_path / precision, str(store), progress=False)
        losses[precision] = res.loss
        model = load_model(tmp_path / precision)
        assert model.config["training"]["precision"] == precision
        assert {np.asarray(p).dtype for p in jax.tree.leaves(model.params)} == {np.dtype(np.float32)}
    assert np.isfinite(losses["bfloat16"])
    assert abs(losses["bfloat16"] - losses["float32"]) < 0.2 * losses["float32"]


def test_cli_user_errors_exit_2_without_a_traceback(learn_store, tmp_path, client):
    store, truth = learn_store
    single = tmp_path / "single"
    src = next(p for p in sorted(truth.parent.rglob("*.dng")))
    (single / "a").mkdir(parents=True)
    (single / "a" / src.name).write_bytes(src.read_bytes())
    from rawlab.catalog.build import build_catalog

    build_catalog([str(single)], str(tmp_path / "single.zarr"), options=RunOptions(client=client))
    cases = [
        (["train", str(tmp_path / "nope.zarr"), "--config", "tiny"], "not a rawlab store"),
        (["train", str(store), "--config", "huge"], "unknown config 'huge'"),
        (["train", str(store), "--config", "tiny", "--noise", str(tmp_path / "none.json")], "does not exist"),
        (["train", str(tmp_path / "single.zarr"), "--config", "tiny"], "no usable noisy/clean pairs"),
    ]
    for args, message in cases:
        r = CliRunner().invoke(main, [*args, "--workdir", str(tmp_path / "w")])
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output, (args, r.output)
    # a workdir that cannot be made (under a regular file: refused for root too), before any noise fit
    (tmp_path / "afile").write_text("x")
    r = CliRunner().invoke(
        main, ["train", str(store), "--config", "tiny", "--workdir", str(tmp_path / "afile" / "w")]
    )
    assert r.exit_code == 2 and "not a folder" in r.output and "Traceback" not in r.output, r.output
    assert "noise profile" not in r.output  # refused before the noise fit started


_TWO_DEVICES = """
import json, sys
import jax
from rawlab.learn.train import train_and_evaluate

store, config, out = sys.argv[1:]
result = train_and_evaluate(json.loads(config), out, store, progress=False)
print(json.dumps({"devices": jax.device_count(), "compilations": result.compilations}))
"""


def test_data_parallel_training_on_two_cpu_devices(full_run, learn_store, tmp_path):
    """The uninterrupted 12-step run again, on two forced CPU devices in a fresh process (JAX fixes the device
    count at import): the same parameters up to float summation order."""
    full, _, _ = full_run
    store, _ = learn_store
    cfg = _tiny(noise__profile=str(full / "noise.json"))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", _TWO_DEVICES, str(store), json.dumps(cfg), str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 2 and out["compilations"] == {"train_step": 1, "eval_step": 1}
    assert json.loads((tmp_path / "two" / "config.json").read_text())["training"]["devices"] == 2
    # Each device takes half the batch and XLA all-reduces the gradients: the same computation as one device
    # on the whole batch, except for one thing, the order of the float32 sums over the batch (each device sums
    # its half and the all-reduce adds the halves; one device sums the whole batch in whatever order XLA tiles
    # it). The tolerance is derived from that, not fitted to an observed run:
    # - A float32 sum of n terms, in any order, is within (n - 1) * eps * sum|terms| of the exact sum (Higham,
    #   "Accuracy and Stability of Numerical Algorithms", 2nd ed., section 4.2), so two orders differ by at most
    #   rho = 2 * n * eps relative to the gradient's size. The longest reduction of a step is a convolution
    #   kernel's gradient at full resolution: n = batch * crop * crop terms.
    # - AdamW scales each gradient element by its own running RMS, so a relative change rho of the gradients
    #   changes step t's update (whose size is about lr_t) by about rho * lr_t; and a parameter changed at step t
    #   changes every later gradient, so that change can recur in each of the N - t steps that follow.
    # - Summed over the run: |got - want| <= rho * sum_t lr_t * (N - t), 1.3e-4 here for N = 12. Observed
    #   differences are up to ~5e-5 (5 of 512 kernel entries under load). A real data-parallel bug (gradients
    #   not all-reduced, a half batch per device, a wrong mean) moves parameters by the order of the whole run's
    #   movement, sum_t lr_t (1.8e-2 here), over a hundred times this bound.
    _, schedule = make_optimizer(cfg)
    n_sum = cfg["data"]["batch_size"] * cfg["data"]["crop"] ** 2
    rho = 2 * n_sum * float(np.finfo(np.float32).eps)
    n = cfg["steps"]
    atol = rho * sum(float(schedule(t)) * (n - t) for t in range(n))
    assert 5e-5 < atol < 0.01 * sum(float(schedule(t)) for t in range(n))  # room for rounding, not for a bug
    for got, want in zip(_leaves(tmp_path / "two"), _leaves(full), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=atol)

"""Test helpers for the deploy tests: small perturbed models, and `rawlab denoise` run in a fresh interpreter.

An untrained U-Net is the identity (its residual head starts at zero), which would hide a wrong kernel layout
or a conversion error, so every parameter is perturbed with a fixed seed.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np

TILE = {"size": 64, "overlap": 16}


def make_model(path, *, noise=None, store=None, seed=1, scale=0.05):
    """A tiny noise-map U-Net with every parameter perturbed, saved as a model directory; returns the model.

    ``noise``: the profiles it knows (``NoiseProfileSet.to_dict()``); ``store``: recorded as its training store.
    """
    import jax

    from rawlab.learn.modelio import init_model, save_model

    config = {"model": {"arch": "tiny"}, "tile": TILE}
    if noise is not None:
        config["noise"] = noise
    if store is not None:
        config["training"] = {"store": str(store)}
    model = init_model(config)
    rng = np.random.default_rng(seed)  # numpy, not jax.random: eager jax compiles a kernel per leaf shape
    model.params = jax.tree.map(
        lambda p: (np.asarray(p) + scale * rng.standard_normal(p.shape)).astype(p.dtype), model.params
    )
    save_model(path, model)
    return model


def make_joint_model(path, *, seed=1, scale=0.05, tile=None):
    """A small joint demosaic+denoise U-Net (the ``joint`` config's RGB head, two levels of widths 8 and 16)
    with every parameter perturbed, saved as a model directory; returns the model. An untrained one is exactly
    the bilinear demosaic, which would hide a wrong residual path."""
    import jax

    from rawlab.learn.configs import load_config
    from rawlab.learn.modelio import init_model, save_model

    model_cfg = load_config("joint")["model"]
    model_cfg["spec"].update(widths=[8, 16], convs_per_block=[1, 1])
    model = init_model({"model": model_cfg, "tile": tile or {"size": 32, "overlap": 8}})
    rng = np.random.default_rng(seed)
    model.params = jax.tree.map(
        lambda p: (np.asarray(p) + scale * rng.standard_normal(p.shape)).astype(p.dtype), model.params
    )
    save_model(path, model)
    return model


def first_sensor_noise(truth_path) -> dict:
    """The noise profiles of a synthetic dataset's truth file, keeping its first sensor only (SynthCam PG-1)."""
    from rawlab.noise.profile import load_profiles

    noise = load_profiles(truth_path).to_dict()
    noise["sensors"] = noise["sensors"][:1]
    return noise


def denoise_in_fresh_interpreter(src, model, out, watch: tuple[str, ...]) -> str:
    """Run `rawlab denoise SRC --model MODEL --out OUT` in a new Python; return its stdout, whose last line is
    ``LOADED [...]``: which of the modules in ``watch`` it imported."""
    code = (
        "import sys\n"
        "from rawlab.cli import main\n"
        f"main(['denoise', {str(src)!r}, '--model', {str(model)!r}, '--out', {str(out)!r}], standalone_mode=False)\n"
        f"print('LOADED', [m for m in {tuple(watch)!r} if m in sys.modules])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout

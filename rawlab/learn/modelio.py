"""A trained model on disk and in memory: the contract between training, evaluation, export and denoising.

A model directory (the training ``--workdir``) holds::

    DIR/config.json     schema "rawlab.model/1": architecture, normalisation, noise law, tile, training info
    DIR/model.msgpack   the parameters to use for inference (flax.serialization), rewritten at each checkpoint
    DIR/checkpoints/    orbax checkpoints of the full training state (resume only; not needed for inference)

``config.json``::

    {"schema": "rawlab.model/1",
     "model": {"arch": "tiny", "spec": {...UNetSpec...}},
     "normalisation": {"kind": "noisemap", "a_ref": 0.001},
     "noise": {...rawlab.noise/1 profile set of the training data...},
     "tile": {"size": 256, "overlap": 32},          # packed pixels; the export and denoise defaults
     "step": 1200, "training": {...the training config...}}

The noise law travels with the model, so ``noise_params(sensor, iso)`` gives ``(a, b)`` for any ISO of a
sensor it was trained on; for other sensors the caller estimates them (``rawlab.noise.quincunx``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RawlabError
from .normalize import Normalisation

__all__ = [
    "BUILTIN",
    "BUILTIN_DIR",
    "BUILTIN_JOINT",
    "SCHEMA",
    "TrainedModel",
    "denoiser_part",
    "init_model",
    "load_model",
    "merge_part",
    "params_from",
    "resolve_model",
    "save_model",
]

SCHEMA = "rawlab.model/1"
CONFIG = "config.json"
PARAMS = "model.msgpack"
DEFAULT_TILE = {"size": 256, "overlap": 32}
BUILTIN = "builtin"  # the name that means the model shipped inside rawlab, wherever a model is accepted
BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
BUILTIN_BURST = "builtin-burst"  # the burst model shipped inside rawlab (`rawlab denoise --burst`'s default)
BUILTIN_JOINT = (
    "builtin-joint"  # the joint demosaic model shipped inside rawlab (`denoise --output rgb`'s default)
)
BUILTINS = {
    BUILTIN: BUILTIN_DIR,
    BUILTIN_BURST: BUILTIN_DIR.with_name("builtin_burst"),
    BUILTIN_JOINT: BUILTIN_DIR.with_name("builtin_joint"),
}


def params_from(fresh: TrainedModel, other: TrainedModel, what: str, hint: str):
    """``fresh``'s parameter tree with every parameter of ``other`` in its place: a model grown from another
    (a burst model from a single-frame one, a joint model from a denoiser) keeps what it adds at its
    initial value.

    Raises
    ------
    RawlabError
        One of ``other``'s parameters has no place of the same shape in ``fresh``: ``what`` names the
        source, ``hint`` says what would fit.
    """
    from flax.traverse_util import flatten_dict, unflatten_dict

    mine, theirs = flatten_dict(fresh.params), flatten_dict(other.params)
    for path, value in theirs.items():
        if path not in mine or mine[path].shape != value.shape:
            got = "nothing" if path not in mine else f"shape {mine[path].shape}"
            raise RawlabError(
                f"{what}: its parameter {'/'.join(path)} {value.shape} meets {got} in this model; {hint}"
            )
    return unflatten_dict({**mine, **theirs})


def resolve_model(path: str | os.PathLike[str]) -> Path:
    """``path`` as a filesystem path: a built-in model's directory for its name (:data:`BUILTINS`: ``"builtin"``,
    ``"builtin-burst"``, ``"builtin-joint"``), else ``path`` itself.

    Raises
    ------
    RawlabError
        For a built-in name when this installation lacks that model's files.
    """
    d = BUILTINS.get(os.fspath(path))
    if d is None:
        return Path(path)
    if not (d / CONFIG).exists() or not (d / PARAMS).exists():
        raise RawlabError(
            f"the built-in model is missing from this installation ({os.fspath(path)}: {d}); reinstall rawlab, "
            f"or pass --model with a model directory or an exported .tflite/.onnx"
        )
    return d


@dataclasses.dataclass
class TrainedModel:
    """A U-Net with its parameters and everything needed to use it on raw data."""

    config: dict[str, Any]
    params: Any

    @cached_property
    def module(self):
        from .models import UNetSpec, build_model

        return build_model(UNetSpec.from_dict(self.config["model"]["spec"]))

    @property
    def spec(self):
        return self.module.spec

    @cached_property
    def normalisation(self) -> Normalisation:
        return Normalisation.from_dict(self.config.get("normalisation", {}))

    @property
    def tile(self) -> dict[str, int]:
        return {**DEFAULT_TILE, **self.config.get("tile", {})}

    @property
    def name(self) -> str:
        return self.config.get("name") or self.config["model"].get("arch", "unet")

    def network_fn(self):
        """``f(x) -> y``: the network alone on its input domain, parameters closed over (for jax2tf)."""
        module, params = self.module, self.params
        return lambda x: module.apply(params, x)

    @cached_property
    def _jitted(self):
        import jax

        return jax.jit(self.module.apply)

    def denoise(self, x: np.ndarray, a, b) -> np.ndarray:
        """Denoise packed normalised planes ``(N, h, w, 4)`` or ``(h, w, 4)`` float32 with noise ``(a, b)``.

        ``a`` and ``b`` are per channel ``(4,)`` or per image ``(N, 1, 1, 4)``. ``h`` and ``w`` are padded
        (reflect) to a multiple of ``spec.multiple`` and cropped back, so any size works. Returns the clean
        estimate in the same layout and units.
        """
        x = np.asarray(x, np.float32)
        single = x.ndim == 3
        if single:
            x = x[None]
        a = np.asarray(a, np.float32)
        b = np.asarray(b, np.float32)
        m = self.spec.multiple
        h, w = x.shape[1:3]
        ph, pw = -h % m, -w % m
        xp = np.pad(x, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="reflect") if ph or pw else x
        norm = self.normalisation
        y = np.asarray(self._jitted(self.params, norm.to_network(xp, a, b)))
        out = norm.from_network(y, a, b)[:, :h, :w]
        return out[0] if single else out

    def noise_params(self, sensor: str, iso: float) -> tuple[np.ndarray, np.ndarray] | None:
        """``(a, b)`` per channel for ``sensor`` at ``iso`` from the model's noise profile, or None if unknown.

        rawlab's one rule (:meth:`rawlab.noise.profile.NoiseProfileSet.noise_at`): the measured ISO, else the
        law (extrapolated outside the profiled range), else the nearest profiled ISO.
        """
        from ..noise.profile import NoiseProfileSet

        noise = self.config.get("noise")
        got = NoiseProfileSet.from_dict(noise).noise_at(sensor, iso, outside="law") if noise else None
        return None if got is None else (got.a, got.b)


def denoiser_part(model: TrainedModel) -> TrainedModel:
    """The Bayer denoiser inside a joint model that denoises first (``model.spec.denoise_first``): the same
    U-Net and Bayer head (:attr:`rawlab.learn.models.UNetSpec.denoiser`), without the RGB head, so that the
    deploy runtime can run it as it runs any denoiser (guarded, fused) and demosaic its estimate.

    Raises
    ------
    RawlabError
        ``model`` is not a joint model that denoises first.
    """
    spec = model.spec
    if not spec.denoise_first:
        raise RawlabError(
            f"the model {model.name!r} has no Bayer head to run alone (model.spec.denoise_first)"
        )
    params = {**model.params, "params": dict(model.params["params"])}
    del params["params"][f"Conv_{len(spec.widths)}"]  # the RGB head, created after the Bayer head
    config = json.loads(json.dumps(model.config))
    config["model"] = {"arch": config["model"].get("arch"), "spec": spec.denoiser.to_dict()}
    config["name"] = f"{model.name} (its denoiser)"
    return TrainedModel(config, params)


def merge_part(model: TrainedModel) -> TrainedModel | None:
    """A burst model that reads only its merge, as the single-frame U-Net it then is, or None.

    A burst model with the merge in front (``model.spec.merge_frames``) adds its frames to the top level's
    features through one convolution (``frames_in``, :class:`rawlab.learn.models.UNet`); where that kernel is
    all zero (the shipped ``builtin-burst``, or any burst model before training teaches it the frames) the
    output does not depend on the frames, and the same U-Net without ``frames_in`` on the merge and its noise
    map computes it: no frames to resample, and the top level's widest convolution (``8 K`` channels in)
    skipped. None for any other model.
    """
    spec = model.spec
    if not spec.merge_frames:
        return None
    layers = model.params["params"]
    if np.any(np.asarray(layers["frames_in"]["kernel"])):
        return None
    params = {**model.params, "params": {k: v for k, v in layers.items() if k != "frames_in"}}
    config = json.loads(json.dumps(model.config))
    single = dataclasses.replace(spec, merge_frames=0, in_channels=8)
    config["model"] = {"arch": config["model"].get("arch"), "spec": single.to_dict()}
    config["name"] = f"{model.name} (on its merge)"
    return TrainedModel(config, params)


def init_model(config: dict[str, Any], seed: int = 0, *, abstract: bool = False) -> TrainedModel:
    """A freshly initialised model for ``config`` (``model.arch`` or ``model.spec`` and ``normalisation``).

    ``abstract=True`` gives the parameter tree's shapes only (a template for deserialising), at no cost.
    """
    import jax
    import jax.numpy as jnp

    from .models import build_model

    config = json.loads(json.dumps(config))  # a private, JSON-clean copy
    norm = Normalisation.from_dict(config.setdefault("normalisation", {}))
    config["normalisation"] = norm.to_dict()
    model = config.setdefault("model", {})
    module = build_model(model.get("spec") or model.get("arch", "tiny"), noise_map=norm.kind == "noisemap")
    model["spec"] = module.spec.to_dict()
    config.setdefault("schema", SCHEMA)
    config.setdefault("tile", dict(DEFAULT_TILE))
    m = module.spec.multiple
    x = jnp.zeros((1, m, m, module.spec.in_channels), jnp.float32)
    if abstract:  # shapes and dtypes only (jax.ShapeDtypeStruct leaves): no compilation, no random numbers
        return TrainedModel(config, jax.eval_shape(module.init, jax.random.key(seed), x))
    # The "rbg" generator: threefry initialisers take XLA ~1 s each to compile on a CPU (15-20 s per model).
    params = module.init(jax.random.key(seed, impl="rbg"), x)
    return TrainedModel(config, params)


def save_model(workdir: str | os.PathLike[str], model: TrainedModel) -> Path:
    """Write ``config.json`` and ``model.msgpack`` into ``workdir`` (atomically: temp file, then rename)."""
    from flax import serialization

    d = Path(workdir)
    d.mkdir(parents=True, exist_ok=True)
    for name, data in (
        (PARAMS, serialization.to_bytes(model.params)),
        (CONFIG, (json.dumps(model.config, indent=2) + "\n").encode()),
    ):
        tmp = d / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(d / name)
    return d


def load_model(path: str | os.PathLike[str]) -> TrainedModel:
    """Load a model directory written by ``rawlab train`` (or :func:`save_model`), or ``"builtin"``.

    Raises
    ------
    RawlabError
        If ``path`` is not a model directory, or its files are missing or unreadable.
    """
    from flax import serialization

    d = resolve_model(path)
    cfg_path = d / CONFIG
    if not d.is_dir() or not cfg_path.exists():
        raise RawlabError(
            f"{os.fspath(path)!r} is not a rawlab model directory (no {CONFIG}); pass the --workdir of "
            f"`rawlab train`, or a .tflite file where the command accepts one"
        )
    try:
        config = json.loads(cfg_path.read_text())
    except ValueError as e:
        raise RawlabError(f"{cfg_path} is not valid JSON: {e}") from None
    if config.get("schema") != SCHEMA:
        raise RawlabError(f"{cfg_path} has schema {config.get('schema')!r}, expected {SCHEMA!r}")
    if not (d / PARAMS).exists():
        raise RawlabError(f"{d} has no {PARAMS} yet: training has not saved a checkpoint; train longer")
    template = init_model(config, abstract=True).params
    try:
        params = serialization.from_bytes(template, (d / PARAMS).read_bytes())
    except Exception as e:  # msgpack/shape errors: a file from another architecture or a damaged file
        raise RawlabError(f"{d / PARAMS} does not match the architecture in {CONFIG}: {e}") from None
    import jax

    got, want = jax.tree.leaves(params), jax.tree.leaves(template)
    if len(got) != len(want) or any(np.shape(p) != tuple(t.shape) for p, t in zip(got, want, strict=False)):
        raise RawlabError(
            f"{d / PARAMS} does not match the architecture in {CONFIG}: parameter shapes differ"
        )
    return TrainedModel(config, params)

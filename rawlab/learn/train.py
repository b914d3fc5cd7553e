"""``rawlab train``: the training loop (the shape of Flax's ``examples/imagenet/train.py``).

:func:`train_and_evaluate` trains the U-Net of a config on the train split of a store and writes into WORKDIR::

    config.json, model.msgpack   the model (rawlab.learn.modelio), rewritten at every checkpoint and at the end
    checkpoints/<step>/          orbax checkpoints of the full training state (the last keep_checkpoints)
    noise.json                   the noise profile the run used (given, or fitted from the store)
    metrics.csv, tb/             metrics (rawlab.learn.trainlog)

- **Shape**: :func:`train_and_evaluate` only orchestrates: the noise profile is loaded or fitted first
  (:func:`noise_profiles`), then the data (:func:`input_data`), the state (:func:`create_train_state`,
  :func:`restore_checkpoint`), and the loop (:func:`train_steps`), which calls :func:`train_step`,
  :func:`eval_step` and :func:`save_checkpoint`.
- **Steps**: ``train_step(state, batch)`` and ``eval_step(params, batch)`` are jitted once (``TRACES`` counts
  their traces) and the state is donated. The loss is ``(1 - w) L1 + w (1 - SSIM)`` on the clean-signal
  estimate (:mod:`rawlab.learn.losses`), whatever the network's input normalisation, with each image's L1 term
  weighted by the inverse of its noise level so that every ISO counts (``loss.noise_weighted``).
- **Optimiser**: AdamW (weight decay on kernels only) with linear warmup and cosine decay, after global
  gradient-norm clipping (optax).
- **Devices**: data parallel over every local device: a 1-D mesh, the batch sharded on its first axis,
  parameters and optimiser state replicated (``jax.sharding``); XLA inserts the gradient all-reduce.
- **Resume**: batch ``k`` is a pure function of ``(seed, k)`` (:mod:`rawlab.learn.input_pipeline`) and the
  state is restored bit for bit, so a run stopped at step ``k`` and resumed to ``n`` ends with the same
  parameters as an uninterrupted ``n``-step run.
- **Joint model** (``model.spec.head = "rgb"``, config ``joint``): the same loop with the loss on the network's
  linear camera RGB against the batch's ``"rgb"`` truth (procedural content only, training and held-out
  streams; :func:`joint_data`).
- **NaN guard**: every step's loss and gradient norm are checked (one step behind, so the device never waits);
  a non-finite one stops training with the step and the batch's ISOs, keeping the last good checkpoint.
"""

from __future__ import annotations

import collections
import functools
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..cluster import RunOptions
from ..errors import RawlabError
from .configs import merge, validate
from .configs.default import get_config as default_config
from .losses import SURE_EPS, loss_and_metrics, noise_weights, sure_mse
from .modelio import CONFIG, TrainedModel, init_model, save_model
from .normalize import Normalisation

__all__ = [
    "TRACES",
    "TrainResult",
    "TrainState",
    "TrainingDiverged",
    "create_train_state",
    "eval_step",
    "initial_params",
    "make_optimizer",
    "noise_profiles",
    "noisy_frames",
    "resolve_precision",
    "restore_checkpoint",
    "save_checkpoint",
    "train_and_evaluate",
    "train_step",
]

TRACES: collections.Counter = collections.Counter()  # how often each step function was traced (compiled)
_DEVICE_KEYS = ("noisy", "clean", "a", "b")


def _device_batch(batch) -> dict[str, Any]:
    """What a step needs of a batch: the device keys, and the RGB truth of a joint model's batch."""
    extra = tuple(k for k in ("rgb", "sure", "probe") if k in batch)
    return {key: batch[key] for key in (*_DEVICE_KEYS, *extra)}


class TrainingDiverged(RawlabError):
    """The loss or the gradients became NaN or infinite."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


@dataclass
class TrainResult:
    workdir: Path
    name: str
    step: int  # the model's step now
    start_step: int  # 0, or the checkpoint this run resumed from
    steps: int  # the config's total
    loss: float | None  # mean training loss over the last log interval
    eval: dict[str, float] | None
    eval_start: dict[str, float] | None  # before the first step (the untrained network is the identity)
    images_per_s: float | None
    wall_s: float
    feed: dict[str, float] | None = None  # _Meter.feed: data wait, model steps/s, pipeline batches/s
    init: str | None = None  # the model it started from (--init), else a random initialisation
    compilations: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        done = self.step - self.start_step
        what = f"{done} steps of {self.name}" + (
            f" (resumed at step {self.start_step})" if self.start_step else ""
        )
        if done == 0:
            what = f"nothing to do: {self.name} is already at step {self.step} of {self.steps}"
        parts = [what + f" in {self.wall_s:.1f} s"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        if self.eval:
            start = f"the initial model {self.init}" if self.init else "noisy input"
            before = f" ({start} {self.eval_start['psnr']:.2f} dB)" if self.eval_start else ""
            parts.append(f"eval loss {self.eval['loss']:.4g}, PSNR {self.eval['psnr']:.2f} dB{before}")
        if self.images_per_s:
            parts.append(f"{self.images_per_s:.0f} images/s")
        if self.feed and self.feed["pipeline_batches_per_s"]:
            f = self.feed
            parts.append(
                f"input pipeline {f['pipeline_batches_per_s']:.1f} batches/s for a model at "
                f"{f['model_steps_per_s']:.1f} steps/s (waited for data {f['wait_fraction']:.0%} of the time)"
            )
        stopped = (
            f" (stopped early at step {self.step} of {self.steps})" if 0 < self.step < self.steps else ""
        )
        return f"train: {', '.join(parts)}{stopped}; model in {self.workdir}"


def make_optimizer(cfg: dict[str, Any]) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with warmup + cosine decay over ``cfg["steps"]``, after global-norm clipping."""
    o, steps = cfg["optim"], cfg["steps"]
    warmup = min(int(o["warmup_steps"]), steps // 5)
    peak = float(o["learning_rate"])
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, peak, warmup, max(steps, warmup + 1), peak * float(o["end_lr_fraction"])
    )
    tx = optax.chain(
        optax.clip_by_global_norm(float(o["clip_norm"])),
        optax.adamw(
            schedule,
            b1=float(o["b1"]),
            b2=float(o["b2"]),
            weight_decay=float(o["weight_decay"]),
            mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params),
        ),
    )
    return tx, schedule


# -- the steps: pure functions, jitted once per mesh ----------------------------------------------------------


def create_train_state(params, tx: optax.GradientTransformation, sharding=None) -> TrainState:
    """Step 0: ``params`` and a fresh optimiser state, placed with ``sharding`` (replicated) when given."""
    state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
    return jax.device_put(state, sharding) if sharding is not None else state


def _loss(params, batch, *, module, norm: Normalisation, loss_cfg: dict[str, Any]):
    a, b = batch["a"], batch["b"]
    # A burst's frames as channels (learn.burstdata): one law for all (4 channels, tiled), or a law per channel
    # (with the merge in front); the last 4 are the reference frame's either way.
    reps = batch["noisy"].shape[-1] // a.shape[-1]
    out = module.apply(params, norm.to_network(batch["noisy"], jnp.tile(a, reps), jnp.tile(b, reps)))
    a, b = a[..., -4:], b[..., -4:]
    weights = noise_weights(batch["clean"], a, b) if loss_cfg["noise_weighted"] else None
    kind = loss_cfg.get("kind", "l1_ssim")
    if "rgb" in batch:  # the joint model: linear camera RGB (noisemap input, so no inverse normalisation)
        return loss_and_metrics(out, batch["rgb"], float(loss_cfg["ssim_weight"]), weights, kind)
    estimate = norm.from_network(out, a, b)
    per_image = None
    if "sure" in batch:
        # Self-supervised by SURE (data.self_supervised_loss "sure"; the loss kind is "mse"): the flagged
        # examples' squared error against their unknown clean signal is estimated (losses.sure_mse; a second
        # pass on the probed input), the others' (procedural, clean targets) measured.
        var = jnp.maximum(a * jnp.maximum(estimate, 0) + b, 0)
        probed_in = batch["noisy"] + SURE_EPS * jnp.sqrt(jax.lax.stop_gradient(var)) * batch["probe"]
        probed = norm.from_network(module.apply(params, norm.to_network(probed_in, a, b)), a, b)
        per_image = jnp.where(
            batch["sure"],
            sure_mse(batch["noisy"], estimate, probed, batch["probe"], var),
            jnp.mean((estimate - batch["clean"]) ** 2, axis=(1, 2, 3)),
        )
    ssim_weight = float(loss_cfg["ssim_weight"])
    return loss_and_metrics(estimate, batch["clean"], ssim_weight, weights, kind, per_image)


def train_step(state: TrainState, batch, *, module, norm, tx, schedule, loss_cfg) -> tuple[TrainState, dict]:
    """One optimiser step on ``batch``: the new state and the batch's metrics (loss, gradient norm, lr...)."""
    TRACES["train_step"] += 1
    loss_fn = functools.partial(_loss, module=module, norm=norm, loss_cfg=loss_cfg)
    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    metrics = {**metrics, "grad_norm": grad_norm, "lr": schedule(state.step)}
    return TrainState(state.step + 1, params, opt_state), metrics


def eval_step(params, batch, *, module, norm, loss_cfg) -> dict:
    """The metrics of ``params`` on ``batch`` (no update)."""
    TRACES["eval_step"] += 1
    return _loss(params, batch, module=module, norm=norm, loss_cfg=loss_cfg)[1]


def make_steps(module, norm: Normalisation, tx, schedule, loss_cfg: dict[str, Any]):
    """:func:`train_step` and :func:`eval_step` with the model, optimiser and loss bound (not yet jitted)."""
    common = {"module": module, "norm": norm, "loss_cfg": loss_cfg}
    return (
        functools.partial(train_step, tx=tx, schedule=schedule, **common),
        functools.partial(eval_step, **common),
    )


@functools.lru_cache(maxsize=8)
def _compiled_steps(key: str, devices: tuple):
    """``(tx, replicated sharding, train_step, eval_step)``, jitted for a mesh over ``devices``.

    Cached per process by everything the steps close over (architecture, normalisation, optimiser, schedule
    length, loss), so a second run with the same settings (a resume in a notebook, the tests) reuses the
    compiled steps instead of tracing them again.
    """
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from .models import build_model

    spec, norm_dict, optim, steps, loss, precision = json.loads(key)
    mesh = Mesh(np.array(devices), ("data",))
    repl = NamedSharding(mesh, PartitionSpec())
    data = NamedSharding(mesh, PartitionSpec("data"))
    tx, schedule = make_optimizer({"optim": optim, "steps": steps})
    norm = Normalisation.from_dict(norm_dict)
    dtype = jnp.bfloat16 if precision == "bfloat16" else None
    train_fn, eval_fn = make_steps(build_model(spec, dtype=dtype), norm, tx, schedule, loss)
    train = jax.jit(train_fn, in_shardings=(repl, data), out_shardings=(repl, repl), donate_argnums=0)
    evaluate = jax.jit(eval_fn, in_shardings=(repl, data), out_shardings=repl)
    return tx, repl, train, evaluate


# -- checkpoints ----------------------------------------------------------------------------------------------


def checkpoint_manager(workdir: Path, keep: int):
    """The orbax manager of ``workdir/checkpoints`` (the last ``keep`` steps)."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(workdir / "checkpoints", options=options)


def restore_checkpoint(mngr, state: TrainState) -> tuple[TrainState, int]:
    """The state of the latest checkpoint (bit for bit) and its step; ``(state, 0)`` when there is none."""
    import orbax.checkpoint as ocp

    start = mngr.latest_step() or 0
    if not start:
        return state, 0
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    try:
        return mngr.restore(start, args=ocp.args.StandardRestore(abstract)), start
    except Exception as e:  # a checkpoint of another model or optimiser layout
        raise RawlabError(
            f"cannot resume from {mngr.directory / str(start)}: {type(e).__name__}: {e}; train into a new --workdir"
        ) from None


def save_checkpoint(mngr, workdir: Path, state: TrainState, step: int, model_config: dict[str, Any]) -> None:
    """An orbax checkpoint of ``state`` at ``step`` and the inference model files (``config.json``,
    ``model.msgpack``); refuses non-finite parameters so that the last good checkpoint is kept."""
    import orbax.checkpoint as ocp

    params = jax.device_get(state.params)
    if not all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params)):
        raise TrainingDiverged(f"training diverged before step {step}: the parameters are not finite")
    mngr.save(step, args=ocp.args.StandardSave(state))
    save_model(workdir, TrainedModel({**model_config, "step": step}, params))


# -- what training needs before the first step ----------------------------------------------------------------


def noise_profiles(cfg: dict[str, Any], workdir: Path, store: str, options: RunOptions):
    """The profile set to train with and where it came from, settled before training starts: the config's
    file, else ``WORKDIR/noise.json`` from an earlier run, else a fit of ``store`` (:func:`rawlab.noise.fit_store`
    on ``options``' cluster). Always left in ``WORKDIR/noise.json``."""
    from ..noise.profile import load_profiles, save_profiles

    cached = workdir / "noise.json"
    given = cfg["noise"]["profile"]
    if given:
        profiles = load_profiles(given)
        save_profiles(profiles, cached)
        return profiles, given
    if cached.exists():
        options.note(f"noise profile: {cached} (fitted by an earlier run)")
        return load_profiles(cached), cached
    from ..noise import fit_store

    # Self-supervised data has no trustworthy clean frames (the default pairing calls the lowest ISO "clean"):
    # each frame's noise is estimated from that frame alone.
    method = "single" if cfg["data"]["self_supervised"] else "auto"
    options.note(f"noise profile: none given; fitting it ({method}) from {store} (cached in {cached})")
    quiet = replace(options, progress=None, set_total=None)
    fit = fit_store(
        str(store), sensor="all", method=method, bootstrap=cfg["noise"]["fit_bootstrap"], options=quiet
    )
    save_profiles(fit.profiles, cached)
    return fit.profiles, cached


def training_pairs(cat, store: str):
    """``(train pairs, eval pairs, notes on pairs left out)`` of the store's split (:mod:`rawlab.learn.split`)."""
    from ..catalog.pairs import pairs_from_catalog
    from .split import split_pairs

    train_rows, eval_rows = split_pairs(cat)
    train_pairs, left_out = pairs_from_catalog(cat, train_rows)
    eval_pairs, _ = pairs_from_catalog(cat, eval_rows)
    if not train_pairs:
        n_noisy = int((cat["role"] == "noisy").sum())
        raise RawlabError(
            f"{store} has no usable noisy/clean pairs to train on ({n_noisy} noisy frames, "
            f"{len(eval_rows)} of them in held-out scenes); training needs paired frames: see `rawlab catalog "
            f"show {store}` for excluded pairs"
        )
    return train_pairs, eval_pairs, left_out


def noisy_frames(cat, store: str):
    """Self-supervised training data: every usable frame of the store, whatever its role (no clean reference
    is needed, and in a store of noisy frames only the default pairing calls the lowest ISO "clean"), as a :class:`~rawlab.catalog.pairs.Pair` with itself (``ref_id == frame_id``, no
    shift, unit gain), and a note per frame left out. No held-out scenes: there is nothing clean to score on."""
    from ..catalog.pairs import Pair

    rows = cat[(cat["status"] == "ok") & cat["frame_id"].notna()]
    frames, notes = [], []
    for r in rows.drop_duplicates("frame_id").to_dict("records"):
        iso = r.get("iso")
        if not (isinstance(iso, int | float) and math.isfinite(iso) and iso > 0):
            notes.append(f"{r['path']}: no ISO, so no noise parameters for it")
            continue
        levels = tuple(float(v) for v in r["black_level"])
        frames.append(Pair(
            frame_id=r["frame_id"], ref_id=r["frame_id"], path=str(r["path"]), ref_path=str(r["path"]),
            sensor=r["sensor"], scene=str(r["scene"]), iso=float(iso), cfa=str(r["cfa"]).upper(),
            shape=(int(r["height"]) // 2, int(r["width"]) // 2), shift=(0, 0), gain=(1.0, 1.0, 1.0, 1.0),
            black_level=levels, white_level=float(r["white_level"]), ref_black_level=levels,
            ref_white_level=float(r["white_level"]),
        ))  # fmt: skip
    if not frames:
        raise RawlabError(
            f"{store} has no usable noisy frames to train on (self-supervised): see `rawlab catalog show {store}`"
        )
    frames.sort(key=lambda p: (p.sensor, p.scene, p.iso, p.frame_id))
    return frames, [], notes


def input_data(cfg, store: str, workdir: Path, train_pairs, eval_pairs, noise, echo):
    """The training :class:`~rawlab.learn.input_pipeline.Pipeline` and the fixed held-out batches."""
    from ..catalog.store import FrameStore
    from .input_pipeline import EVAL_STREAM, Pipeline

    d = cfg["data"]
    fstore = FrameStore(store)
    if _head(cfg) == "rgb":
        return joint_data(cfg, store, fstore, train_pairs, eval_pairs, noise)
    if d["store_chunk"]:  # small crops: read them from a copy with small chunks (rawlab.learn.trainstore)
        from .trainstore import derive_training_store

        needed = {fid for p in train_pairs + eval_pairs for fid in (p.frame_id, p.ref_id)}
        fstore = derive_training_store(fstore, needed, workdir / "train.zarr", d["store_chunk"], echo=echo)
    common = {
        "crop": d["crop"],
        "batch_size": d["batch_size"],
        "seed": cfg["seed"],
        "cache_mb": d["cache_mb"],
    }
    procedural = None
    if d["procedural_fraction"] > 0:
        from .procedural import ProceduralSource

        pr = d["procedural"]
        procedural = ProceduralSource(d["crop"], seed=cfg["seed"], pool=pr["pool"], reuse=pr["reuse"],
                                      scene_size=pr["scene_size"] or None, a_range=pr.get("a_range"))  # fmt: skip
    sure = bool(d["self_supervised"]) and d["self_supervised_loss"] == "sure"
    pipeline = Pipeline(
        fstore, train_pairs, noise, **common, synthetic_fraction=d["synthetic_fraction"],
        procedural=procedural, procedural_fraction=d["procedural_fraction"],
        augment=d["augment"], workers=d["workers"], prefetch=d["prefetch"],
        r2r_alpha=d["r2r_alpha"] if d["self_supervised"] and not sure else None, sure=sure,
    )  # fmt: skip
    if d["self_supervised"]:
        how = (
            "Stein's unbiased risk estimate"
            if sure
            else f"Recorrupted-to-Recorrupted, alpha {d['r2r_alpha']:g}"
        )
        echo(f"self-supervised ({how}) on {len(train_pairs)} noisy frames; no clean frames, so no eval loss: "
             "score the model with `rawlab eval` on a paired store")  # fmt: skip
        return pipeline, []
    if not eval_pairs:
        echo("no held-out scenes (every sensor has a single scene): no eval loss")
        return pipeline, []
    ev = Pipeline(fstore, eval_pairs, noise, **common, stream=EVAL_STREAM, augment=False, workers=0,
                  reader=pipeline.reader)  # fmt: skip
    return pipeline, [{k: b[k] for k in _DEVICE_KEYS} for b in map(ev.batch, range(d["eval_batches"]))]


def _head(cfg: dict[str, Any]) -> str:
    return (cfg["model"].get("spec") or {}).get("head", "bayer")


def _check_joint(cfg: dict[str, Any]) -> None:
    if _head(cfg) != "rgb":
        return
    d = cfg["data"]
    if d["self_supervised"] or (d["procedural_fraction"] < 1 and d["augment"]):
        raise RawlabError(
            "the joint model (model.spec.head 'rgb') learns from RGB truth: set data.self_supervised False, and "
            "data.augment False when it reads the store (data.procedural_fraction below 1)"
        )
    if cfg["normalisation"]["kind"] != "noisemap":
        raise RawlabError(
            "the joint model (model.spec.head 'rgb') needs normalisation.kind 'noisemap' (its RGB output is in "
            f"the normalised signal's units), not {cfg['normalisation']['kind']!r}"
        )


def joint_data(cfg, store: str, fstore, train_pairs, eval_pairs, noise):
    """The joint model's data, in the RGGB phase with the RGB truth (``rgb=True``): procedural examples and,
    for ``data.procedural_fraction`` below 1, the store's pairs with their colour truth (the catalog's
    ``truth_path``, e.g. ``rawlab synth``'s); the fixed eval batches come from the procedural held-out stream.

    Raises
    ------
    RawlabError
        The store is to be read but a training pair's reference has no colour truth.
    """
    from ..catalog import open_catalog
    from .input_pipeline import EVAL_STREAM, Pipeline
    from .procedural import ProceduralSource

    d, pr = cfg["data"], cfg["data"]["procedural"]
    truths = {}
    if d["procedural_fraction"] < 1:
        cat = open_catalog(store)
        known = cat[cat["truth_path"].notna()] if "truth_path" in cat else cat.iloc[:0]
        by_frame = dict(zip(known["frame_id"], known["truth_path"], strict=True))
        truths = {p.ref_id: by_frame.get(p.ref_id) or by_frame.get(p.frame_id) for p in train_pairs}
        missing = sorted({p.sensor + "/" + p.scene for p in train_pairs if not truths[p.ref_id]})
        if missing:
            raise RawlabError(
                f"the joint model reads the store (data.procedural_fraction {d['procedural_fraction']}) but "
                f"{len(missing)} training scenes have no colour truth (catalog truth_path), e.g. {missing[0]}; "
                "set data.procedural_fraction 1 to train on procedural scenes alone"
            )

    def source(stream: int) -> ProceduralSource:
        return ProceduralSource(d["crop"], seed=cfg["seed"], stream=stream, pool=pr["pool"], reuse=pr["reuse"],
                                scene_size=pr["scene_size"] or None, rgb=True, a_range=pr.get("a_range"))  # fmt: skip

    common = {"crop": d["crop"], "batch_size": d["batch_size"], "seed": cfg["seed"], "augment": False,
              "rgb": True}  # fmt: skip
    pipeline = Pipeline(fstore, train_pairs, noise, procedural=source(0), workers=d["workers"],
                        prefetch=d["prefetch"], procedural_fraction=d["procedural_fraction"], truths=truths,
                        synthetic_fraction=d["synthetic_fraction"], cache_mb=d["cache_mb"], **common)  # fmt: skip
    ev = Pipeline(fstore, eval_pairs or train_pairs, noise, procedural=source(EVAL_STREAM), stream=EVAL_STREAM,
                  workers=0, procedural_fraction=1.0, cache_mb=0, **common)  # fmt: skip
    return pipeline, [_device_batch(b) for b in map(ev.batch, range(d["eval_batches"]))]


def initial_params(init: str, fresh: TrainedModel) -> tuple[TrainedModel, dict[str, Any]]:
    """``fresh`` with the parameters of the model ``init`` (``"builtin"`` or a model directory), and the record
    of where they came from (``training.init``: the model, its config name and step). A joint model that
    denoises first (``model.spec.denoise_first``) also starts from a Bayer denoiser of its U-Net: it gets every
    parameter of it, and its RGB head stays zero (the denoiser, then the fixed demosaic).

    Raises
    ------
    RawlabError
        ``init`` is not a model, or its architecture or normalisation differs from the config's.
    """
    from .modelio import load_model, params_from

    other = load_model(init)
    grown = fresh.spec.denoise_first and other.spec == fresh.spec.denoiser
    for key, mine, theirs in (
        ("model", fresh.config["model"]["spec"], other.config["model"]["spec"]),
        ("normalisation", fresh.config["normalisation"], other.config.get("normalisation")),
    )[grown:]:
        if json.loads(json.dumps(mine)) != json.loads(json.dumps(theirs)):
            raise RawlabError(
                f"--init {init}: its {key} ({theirs}) is not the config's ({mine}); fine-tune with the config "
                f"it was trained with (`--config {other.config.get('name', '?')}` when that is a config name)"
            )
    record = {"model": str(init), "name": other.config.get("name"), "step": other.config.get("step")}
    if grown:  # the joint model from its denoiser; what it adds (the RGB head) is zero whatever the seed
        concrete = init_model(fresh.config)
        return TrainedModel(
            fresh.config,
            params_from(concrete, other, f"--init {init}", "start from a denoiser of the same U-Net"),
        ), record
    return TrainedModel(fresh.config, other.params), record


def resolve_precision(precision: str, devices: list) -> str:
    """``"auto"``: bfloat16 when every device is an accelerator (GPU, TPU), where bfloat16 convolutions run on
    tensor cores at about twice float32's speed; float32 on a CPU, where XLA emulates bfloat16 and it is slower."""
    if precision != "auto":
        return precision
    return "bfloat16" if all(d.platform in ("gpu", "tpu", "cuda", "rocm") for d in devices) else "float32"


def _device_line(devices: list) -> str:
    """Which devices the steps run on, said plainly (a CPU run on a machine meant for a GPU is worth knowing)."""
    kinds = sorted({d.platform for d in devices})
    line = f"devices: {len(devices)} x {'/'.join(kinds)} ({devices[0].device_kind})"
    return line + ("; no accelerator found: training on the CPU" if kinds == ["cpu"] else "")


def _check_devices(devices: list, batch_size: int) -> None:
    if batch_size % len(devices):
        raise RawlabError(
            f"data.batch_size {batch_size} must be a multiple of the {len(devices)} devices it is split over; "
            f"use --batch-size {len(devices) * max(1, round(batch_size / len(devices)))}"
        )


def _check_workdir(workdir: Path, model_config: dict[str, Any]) -> None:
    path = workdir / CONFIG
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except ValueError:
        return
    model_config = json.loads(json.dumps(model_config))  # tuples as lists, as in the file
    for key in ("model", "normalisation"):
        mine = model_config[key] if key != "model" else model_config["model"]["spec"]
        theirs = old.get(key, {}) if key != "model" else old.get("model", {}).get("spec")
        if mine != theirs:
            raise RawlabError(
                f"{workdir} holds a model trained with another {key} ({old.get('name', '?')!r}: {theirs}); "
                f"resume it with the config it was trained with, or pass a new --workdir"
            )


def _split_scenes(pairs) -> list[list[str]]:
    return sorted([list(t) for t in {(p.sensor, p.scene) for p in pairs}])


# -- the loop -------------------------------------------------------------------------------------------------


@dataclass
class _Meter:
    """Metrics of the current log interval, the last logged loss and eval, and the throughput (counted from
    the end of the first step, whose time includes compilation)."""

    t0: float
    batch_size: int
    interval: list[dict[str, float]] = field(default_factory=list)
    loss: float | None = None
    eval: dict[str, float] | None = None
    t_first: float | None = None
    n_first: int = 0
    t_log: float = 0.0
    n_log: int = 0
    t_last: float = 0.0
    n_last: int = 0
    data_wait_s: float = 0.0  # time the loop spent waiting for the input pipeline (after the first step)

    def record(self, step: int, metrics: dict[str, float]) -> None:
        self.interval.append(metrics)
        now = time.perf_counter()
        if self.t_first is None:
            self.t_first, self.n_first, self.t_log, self.n_log = now, step, now, 0
        else:
            self.n_log += 1
        self.t_last, self.n_last = now, step

    def flush(self) -> dict[str, Any] | None:
        """The interval's mean metrics with ``images_per_s`` and ``wall_s``; None if the interval is empty."""
        if not self.interval:
            return None
        now = time.perf_counter()
        mean: dict[str, Any] = {k: float(np.mean([m[k] for m in self.interval])) for k in self.interval[0]}
        dt = now - self.t_log
        mean["images_per_s"] = self.n_log * self.batch_size / dt if self.n_log and dt > 0 else None
        mean["wall_s"] = now - self.t0
        self.loss, self.t_log, self.n_log = mean["loss"], now, 0
        self.interval.clear()
        return mean

    def images_per_s(self) -> float | None:
        if self.t_first is None or self.n_last <= self.n_first:
            return None
        return (self.n_last - self.n_first) * self.batch_size / (self.t_last - self.t_first)

    def feed(self, pipeline) -> dict[str, float] | None:
        """Whether the input pipeline keeps the model fed: the share of the loop's time spent waiting for
        batches, the model's steps/s when it does not wait, and the pipeline's batches/s (its threads'
        capacity, :meth:`~rawlab.learn.input_pipeline.Pipeline.throughput`)."""
        if self.t_first is None or self.n_last <= self.n_first:
            return None
        wall = self.t_last - self.t_first
        steps = self.n_last - self.n_first
        busy = max(wall - self.data_wait_s, 1e-9)
        return {"wait_fraction": min(self.data_wait_s / wall, 1.0) if wall > 0 else 0.0,
                "model_steps_per_s": steps / busy, "pipeline_batches_per_s": pipeline.throughput()}  # fmt: skip


def _finite_metrics(
    pending, sensors: list[str], kept: int | None, ckpt_dir: Path, lr: float
) -> dict[str, float]:
    """The step's metrics as floats; :class:`TrainingDiverged` (naming the step, ISOs and sensors) if the loss
    or the gradient norm is not finite."""
    step, metrics, isos, sensor_idx = pending
    m = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]):
        return m
    where = ", ".join(f"{iso:g}" for iso in sorted(set(isos.tolist())))
    who = ", ".join(sorted({sensors[i] for i in sensor_idx.tolist()}))
    raise TrainingDiverged(
        f"training diverged at step {step}: loss {m['loss']}, gradient norm {m['grad_norm']} on a batch "
        f"at ISO {where} ({who}); "
        + (f"the last good checkpoint (step {kept}) is kept in {ckpt_dir}. " if kept else "")
        + f"Lower optim.learning_rate (now {lr:g}) or check the noise profile at those ISOs"
    )


def _evaluate(step_fn, params, batches) -> dict[str, float] | None:
    if not batches:
        return None
    out = jax.device_get([step_fn(params, b) for b in batches])
    return {k: float(np.mean([m[k] for m in out])) for k in out[0]}


@dataclass
class _Loop:
    """What the loop works with besides the state: the compiled steps, the data, where results go."""

    cfg: dict[str, Any]
    workdir: Path
    model_config: dict[str, Any]
    train_step: Callable
    eval_step: Callable
    pipeline: Any
    eval_batches: list
    mngr: Any
    log: Any
    meter: _Meter
    echo: Callable[[str], None]


def train_steps(
    loop: _Loop, state: TrainState, start: int, stop: int, progress: bool
) -> tuple[TrainState, int]:
    """Steps ``start`` to ``stop``: log, evaluate and checkpoint on schedule; the NaN guard checks every step
    one step behind (so the device never waits). Returns the final state and step."""
    from tqdm.auto import tqdm

    cfg, meter, ckpt_dir = loop.cfg, loop.meter, loop.workdir / "checkpoints"
    bar = tqdm(total=stop, initial=start, desc=f"train {cfg['name']}", unit="step", file=sys.stderr,
               disable=None if progress else True, leave=False, dynamic_ncols=True)  # fmt: skip

    def check(pending) -> None:
        lr = cfg["optim"]["learning_rate"]
        meter.record(
            pending[0], _finite_metrics(pending, loop.pipeline.sensors, loop.mngr.latest_step(), ckpt_dir, lr)
        )
        bar.update(1)

    batches = loop.pipeline.batches(start, stop)
    pending, step = None, start
    try:
        while True:
            t_wait = time.perf_counter()
            got = next(batches, None)
            if got is None:
                break
            if meter.t_first is not None:  # the first step's wait is the pipeline's start-up
                meter.data_wait_s += time.perf_counter() - t_wait
            k, batch = got
            state, metrics = loop.train_step(state, _device_batch(batch))
            if pending is not None:
                check(pending)
            pending, step = (k + 1, metrics, batch["iso"], batch["sensor_idx"]), k + 1
            due = [step % cfg[f"{what}_every"] == 0 or step == stop for what in ("log", "eval", "checkpoint")]
            if not any(due):
                continue
            check(pending)
            pending = None
            if due[0] and (mean := meter.flush()) is not None:
                loop.log.write(step, "train", mean)
                bar.set_postfix(loss=f"{mean['loss']:.4g}", refresh=False)
            if due[1] and (ev := _evaluate(loop.eval_step, state.params, loop.eval_batches)) is not None:
                meter.eval = ev
                loop.log.write(step, "eval", ev)
            if due[2]:
                save_checkpoint(loop.mngr, loop.workdir, state, step, loop.model_config)
    except KeyboardInterrupt:
        if not any(x.is_deleted() for x in jax.tree.leaves(state)) and int(state.step) > start:
            try:
                save_checkpoint(loop.mngr, loop.workdir, state, int(state.step), loop.model_config)
                loop.echo(
                    f"interrupted: checkpoint at step {int(state.step)} saved in {ckpt_dir}; run again to resume"
                )
            except TrainingDiverged:
                pass
        raise
    finally:
        batches.close()
        bar.close()
    return state, step


def train_and_evaluate(
    config: dict[str, Any],
    workdir: str | Path,
    store: str,
    *,
    options: RunOptions | None = None,
    devices=None,
    stop_after: int | None = None,
    progress: bool = True,
    init: str | None = None,
) -> TrainResult:
    """Train ``config`` on the train split of ``store`` into ``workdir``, resuming from its last checkpoint.

    Parameters
    ----------
    config
        A training config (:mod:`rawlab.learn.configs`); a partial dict is merged over the defaults.
    workdir
        Model and run directory (created). If it holds a checkpoint, training resumes from it.
    store
        A rawlab store (path or URL) with noisy/clean pairs.
    options
        Where the noise-profile fit runs when the config gives no profile (:class:`rawlab.cluster.RunOptions`;
        default: a local cluster), and ``echo`` for progress notes (resuming, profile fitting, pairs left out).
    devices
        The JAX devices to train on, data parallel (default: all of them).
    stop_after
        Stop (with a checkpoint) once the model reaches this step, as if interrupted; the schedule still
        spans ``config["steps"]``.
    progress
        Show a progress bar on stderr.
    init
        Start from this model's parameters (``"builtin"`` or a model directory, :func:`initial_params`) instead
        of a random initialisation: fine-tuning. Its architecture must be the config's. A checkpoint in
        ``workdir`` wins (the run resumes), so re-running the same command continues the fine-tuning.

    Raises
    ------
    RawlabError
        No usable pairs, a missing noise profile, an incompatible workdir, or a diverged run
        (:class:`TrainingDiverged`).
    """
    from ..catalog import open_catalog
    from ..noise.profile import load_profiles
    from ..outputs import output_folder
    from .synthnoise import sensor_noise

    t0 = time.perf_counter()
    opts = options or RunOptions()
    echo = opts.echo or (lambda _m: None)
    cfg = validate(merge(default_config(), config))
    _check_joint(cfg)
    workdir, store = Path(workdir).absolute(), str(store)
    cat = open_catalog(store)
    if cfg["noise"]["profile"]:  # a bad path or file fails now, not after the model is built
        load_profiles(cfg["noise"]["profile"])
    if cfg["data"]["self_supervised"]:
        train_pairs, eval_pairs, left_out = noisy_frames(cat, store)
    else:
        train_pairs, eval_pairs, left_out = training_pairs(cat, store)
    if left_out:
        echo(f"left out {len(left_out)} pairs, e.g. {left_out[0]}")
    devices = list(devices or jax.devices())
    _check_devices(devices, cfg["data"]["batch_size"])
    echo(_device_line(devices))
    base = {"name": cfg["name"], "model": {k: v for k, v in cfg["model"].items() if v is not None}}
    base = {**base, "normalisation": cfg["normalisation"], "tile": cfg["tile"]}
    _check_workdir(workdir, init_model(base, abstract=True).config)  # before any work or any write
    if init is not None:  # a wrong or incompatible --init fails now too
        start_from, init_from = initial_params(init, init_model(base, abstract=True))
    output_folder(workdir, "--workdir")

    # 1. The noise law, before anything trains.
    profiles, source = noise_profiles(cfg, workdir, store, opts)
    nz = cfg["noise"]  # the synthetic noise's model: Poisson-Gaussian, or physics from a calibration
    noise = sensor_noise(profiles, {p.sensor for p in train_pairs + eval_pairs}, source, kind=nz["kind"],
                         calibration=nz["calibration"])  # fmt: skip
    # 2. The data, the model, the compiled steps and the (restored) state.
    pipeline, eval_batches = input_data(cfg, store, workdir, train_pairs, eval_pairs, noise, echo)
    tm = init_model(base, seed=cfg["seed"])
    if init is not None:
        tm = TrainedModel(tm.config, start_from.params)
    model_config = {
        **tm.config,
        "noise": profiles.to_dict(),
        "training": {**cfg, "store": store, "devices": len(devices), **({"init": init_from} if init else {})},
        "split": {"train_scenes": _split_scenes(train_pairs), "eval_scenes": _split_scenes(eval_pairs)},
    }
    precision = resolve_precision(cfg["precision"], devices)
    echo(f"precision: {precision}" + (" (auto)" if cfg["precision"] == "auto" else ""))
    model_config["training"]["precision"] = precision  # what ran, not "auto"
    key = [tm.config["model"]["spec"], tm.config["normalisation"], cfg["optim"], cfg["steps"], cfg["loss"],
           precision]  # fmt: skip
    tx, repl, train_fn, eval_fn = _compiled_steps(json.dumps(key, sort_keys=True), tuple(devices))
    mngr = checkpoint_manager(workdir, cfg["keep_checkpoints"])
    state, start = restore_checkpoint(mngr, create_train_state(tm.params, tx, repl))
    if start:
        echo(f"resuming from the checkpoint at step {start} in {workdir / 'checkpoints'}")
    elif init is not None:
        echo(f"initialised from {init_from['model']} (trained {init_from['step']} steps)")
    stop = min(cfg["steps"], stop_after) if stop_after else cfg["steps"]
    return run_loop(
        cfg, workdir, model_config, (train_fn, eval_fn), pipeline, eval_batches, mngr, state, (start, stop),
        t0, echo, progress, init=init, notes=left_out,
    )  # fmt: skip


def run_loop(
    cfg,
    workdir,
    model_config,
    steps_fns,
    pipeline,
    eval_batches,
    mngr,
    state,
    span,
    t0,
    echo,
    progress,
    **extra,
) -> TrainResult:
    """Train from ``span[0]`` to ``span[1]`` with the compiled ``(train_fn, eval_fn)``, logging metrics and
    checkpoints into ``workdir``; save the model when there is nothing to train; the run's
    :class:`TrainResult` (``extra``: its ``init`` and ``notes``). The denoiser's and the burst model's loop."""
    from .trainlog import MetricsLog

    train_fn, eval_fn = steps_fns
    start, stop = span
    traces, log = dict(TRACES), MetricsLog(workdir, start)
    if log.note:
        echo(log.note)
    meter = _Meter(t0, cfg["data"]["batch_size"])
    loop = _Loop(
        cfg, workdir, model_config, train_fn, eval_fn, pipeline, eval_batches, mngr, log, meter, echo
    )
    try:
        eval_start = _evaluate(eval_fn, state.params, eval_batches) if start == 0 and stop > 0 else None
        if eval_start is not None:
            log.write(0, "eval", eval_start)
        state, step = train_steps(loop, state, start, stop, progress)
    finally:
        log.close()
        mngr.wait_until_finished()
        mngr.close()
    if stop <= start:  # nothing to train; make sure the model files are there
        save_model(workdir, TrainedModel({**model_config, "step": start}, jax.device_get(state.params)))
    return TrainResult(
        workdir=workdir, name=cfg["name"], step=max(step, start), start_step=start, steps=cfg["steps"],
        loss=meter.loss, eval=meter.eval, eval_start=eval_start, images_per_s=meter.images_per_s(),
        feed=meter.feed(pipeline), wall_s=time.perf_counter() - t0,
        compilations={k: TRACES[k] - traces.get(k, 0) for k in ("train_step", "eval_step")}, **extra,
    )  # fmt: skip

"""``rawlab train``: the training loop (the shape of Flax's ``examples/imagenet/train.py``).

:func:`train_and_evaluate` trains the U-Net of a config on the train split of a store and writes into WORKDIR::

    config.json, model.msgpack   the model (rawlab.learn.modelio), rewritten at every checkpoint and at the end
    checkpoints/<step>/          orbax checkpoints of the full training state (the last keep_checkpoints)
    noise.json                   the noise profile the run used (given, or fitted from the store)
    metrics.csv, tb/             metrics (rawlab.learn.trainlog)

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..errors import RawlabError
from .configs import merge, validate
from .configs.default import get_config as default_config
from .losses import loss_and_metrics, noise_weights
from .modelio import CONFIG, TrainedModel, init_model, save_model
from .normalize import Normalisation

__all__ = ["TRACES", "TrainResult", "TrainState", "TrainingDiverged", "make_optimizer", "train_and_evaluate"]

TRACES: collections.Counter = collections.Counter()  # how often each step function was traced (compiled)
_DEVICE_KEYS = ("noisy", "clean", "a", "b")


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
            before = f" (noisy input {self.eval_start['psnr']:.2f} dB)" if self.eval_start else ""
            parts.append(f"eval loss {self.eval['loss']:.4g}, PSNR {self.eval['psnr']:.2f} dB{before}")
        if self.images_per_s:
            parts.append(f"{self.images_per_s:.0f} images/s")
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


def make_steps(module, norm: Normalisation, tx, schedule, loss_cfg: dict[str, Any]):
    """The pure ``train_step(state, batch)`` and ``eval_step(params, batch)`` (not yet jitted)."""
    ssim_weight, weighted = float(loss_cfg["ssim_weight"]), bool(loss_cfg["noise_weighted"])

    def loss_fn(params, batch):
        a, b = batch["a"], batch["b"]
        estimate = norm.from_network(module.apply(params, norm.to_network(batch["noisy"], a, b)), a, b)
        weights = noise_weights(batch["clean"], a, b) if weighted else None
        return loss_and_metrics(estimate, batch["clean"], ssim_weight, weights)

    def train_step(state: TrainState, batch):
        TRACES["train_step"] += 1
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
        metrics = {**metrics, "grad_norm": grad_norm, "lr": schedule(state.step)}
        return TrainState(state.step + 1, params, opt_state), metrics

    def eval_step(params, batch):
        TRACES["eval_step"] += 1
        return loss_fn(params, batch)[1]

    return train_step, eval_step


@functools.lru_cache(maxsize=8)
def _compiled_steps(key: str, devices: tuple):
    """``(tx, replicated sharding, train_step, eval_step)``, jitted for a mesh over ``devices``.

    Cached per process by everything the steps close over (architecture, normalisation, optimiser, schedule
    length, loss), so a second run with the same settings (a resume in a notebook, the tests) reuses the
    compiled steps instead of tracing them again.
    """
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from .models import build_model

    spec, norm_dict, optim, steps, loss = json.loads(key)
    mesh = Mesh(np.array(devices), ("data",))
    repl = NamedSharding(mesh, PartitionSpec())
    data = NamedSharding(mesh, PartitionSpec("data"))
    tx, schedule = make_optimizer({"optim": optim, "steps": steps})
    norm = Normalisation.from_dict(norm_dict)
    train_fn, eval_fn = make_steps(build_model(spec), norm, tx, schedule, loss)
    train_step = jax.jit(train_fn, in_shardings=(repl, data), out_shardings=(repl, repl), donate_argnums=0)
    eval_step = jax.jit(eval_fn, in_shardings=(repl, data), out_shardings=repl)
    return tx, repl, train_step, eval_step


def _noise_profiles(cfg, workdir: Path, store: str, client, echo):
    """The profile set to train with, and where it came from; always left in ``WORKDIR/noise.json``."""
    from ..noise.profile import load_profiles, save_profiles

    cached = workdir / "noise.json"
    given = cfg["noise"]["profile"]
    if given:
        profiles = load_profiles(given)
        save_profiles(profiles, cached)
        return profiles, given
    if cached.exists():
        echo(f"noise profile: {cached} (fitted by an earlier run)")
        return load_profiles(cached), cached
    from ..noise.pipeline import fit_store

    echo(f"noise profile: none given; fitting it from {store} (cached in {cached})")
    fit = fit_store(
        str(store), sensor="all", method="auto", client=client, bootstrap=cfg["noise"]["fit_bootstrap"]
    )
    save_profiles(fit.profiles, cached)
    return fit.profiles, cached


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


def train_and_evaluate(
    config: dict[str, Any],
    workdir: str | Path,
    store: str,
    *,
    client=None,
    devices=None,
    stop_after: int | None = None,
    echo: Callable[[str], None] | None = None,
    progress: bool = True,
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
    client
        Dask client for fitting the noise profile when the config gives none (default: a local cluster).
    devices
        The JAX devices to train on, data parallel (default: all of them).
    stop_after
        Stop (with a checkpoint) once the model reaches this step, as if interrupted; the schedule still
        spans ``config["steps"]``.
    echo
        Receives progress notes (resuming, profile fitting, pairs left out).

    Raises
    ------
    RawlabError
        No usable pairs, a missing noise profile, an incompatible workdir, or a diverged run
        (:class:`TrainingDiverged`).
    """
    import orbax.checkpoint as ocp

    from ..catalog import open_catalog
    from ..catalog.store import FrameStore
    from .input_pipeline import EVAL_STREAM, Pipeline, pairs_from_catalog
    from .split import split_pairs
    from .synthnoise import sensor_noise
    from .trainlog import MetricsLog

    t0 = time.perf_counter()
    echo = echo or (lambda _m: None)
    cfg = validate(merge(default_config(), config))
    workdir = Path(workdir).absolute()
    store = str(store)

    cat = open_catalog(store)
    if cfg["noise"]["profile"]:  # a bad path or file fails now, not after the model is built
        from ..noise.profile import load_profiles

        load_profiles(cfg["noise"]["profile"])
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
    if left_out:
        echo(f"left out {len(left_out)} pairs, e.g. {left_out[0]}")

    devices = list(devices or jax.devices())
    bs = cfg["data"]["batch_size"]
    if bs % len(devices):
        raise RawlabError(
            f"data.batch_size {bs} must be a multiple of the {len(devices)} devices it is split over; "
            f"use --batch-size {len(devices) * max(1, round(bs / len(devices)))}"
        )
    base = {"name": cfg["name"], "model": {k: v for k, v in cfg["model"].items() if v is not None}}
    base = {**base, "normalisation": cfg["normalisation"], "tile": cfg["tile"]}
    _check_workdir(workdir, init_model(base, abstract=True).config)  # before any work or any write
    tm = init_model(base, seed=cfg["seed"])
    workdir.mkdir(parents=True, exist_ok=True)
    profiles, source = _noise_profiles(cfg, workdir, store, client, echo)
    noise = sensor_noise(profiles, {p.sensor for p in train_pairs + eval_pairs}, source)
    model_config = {
        **tm.config,
        "noise": profiles.to_dict(),
        "training": {**cfg, "store": store, "devices": len(devices)},
        "split": {"train_scenes": _split_scenes(train_pairs), "eval_scenes": _split_scenes(eval_pairs)},
    }

    d = cfg["data"]
    fstore = FrameStore(store)
    if d["store_chunk"]:  # small crops: read them from a copy with small chunks (rawlab.learn.trainstore)
        from .trainstore import derive_training_store

        needed = {fid for p in train_pairs + eval_pairs for fid in (p.frame_id, p.ref_id)}
        fstore = derive_training_store(fstore, needed, workdir / "train.zarr", d["store_chunk"], echo=echo)
    common = {"crop": d["crop"], "batch_size": bs, "seed": cfg["seed"], "cache_mb": d["cache_mb"]}
    pipeline = Pipeline(
        fstore, train_pairs, noise, **common, synthetic_fraction=d["synthetic_fraction"],
        augment=d["augment"], workers=d["workers"], prefetch=d["prefetch"],
    )  # fmt: skip
    eval_batches = []
    if eval_pairs:
        ev = Pipeline(fstore, eval_pairs, noise, **common, stream=EVAL_STREAM, augment=False, workers=0,
                      reader=pipeline.reader)  # fmt: skip
        eval_batches = [{k: b[k] for k in _DEVICE_KEYS} for b in map(ev.batch, range(d["eval_batches"]))]
    else:
        echo("no held-out scenes (every sensor has a single scene): no eval loss")

    key = json.dumps(
        [tm.config["model"]["spec"], tm.config["normalisation"], cfg["optim"], cfg["steps"], cfg["loss"]],
        sort_keys=True,
    )
    tx, repl, train_step, eval_step = _compiled_steps(key, tuple(devices))
    state = jax.device_put(TrainState(jnp.zeros((), jnp.int32), tm.params, tx.init(tm.params)), repl)

    ckpt_dir = workdir / "checkpoints"
    mngr = ocp.CheckpointManager(
        ckpt_dir, options=ocp.CheckpointManagerOptions(max_to_keep=cfg["keep_checkpoints"], create=True)
    )
    start = mngr.latest_step() or 0
    if start:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        try:
            state = mngr.restore(start, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # a checkpoint of another model or optimiser layout
            raise RawlabError(
                f"cannot resume from {ckpt_dir / str(start)}: {type(e).__name__}: {e}; train into a new --workdir"
            ) from None
        echo(f"resuming from the checkpoint at step {start} in {ckpt_dir}")
    stop = min(cfg["steps"], stop_after) if stop_after else cfg["steps"]
    traces = dict(TRACES)
    log = MetricsLog(workdir, start)
    if log.note:
        echo(log.note)

    def save(step: int) -> None:
        params = jax.device_get(state.params)
        if not all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params)):
            raise TrainingDiverged(f"training diverged before step {step}: the parameters are not finite")
        mngr.save(step, args=ocp.args.StandardSave(state))
        save_model(workdir, TrainedModel({**model_config, "step": step}, params))

    def evaluate() -> dict[str, float] | None:
        if not eval_batches:
            return None
        out = jax.device_get([eval_step(state.params, b) for b in eval_batches])
        return {k: float(np.mean([m[k] for m in out])) for k in out[0]}

    from tqdm.auto import tqdm

    bar = tqdm(total=stop, initial=start, desc=f"train {cfg['name']}", unit="step", file=sys.stderr,
               disable=None if progress else True, leave=False, dynamic_ncols=True)  # fmt: skip
    interval: list[dict[str, float]] = []
    last: dict[str, Any] = {"loss": None, "eval": None, "t_first": None}
    sensors = pipeline.sensors

    def check(pending) -> None:
        step, metrics, isos, sensor_idx = pending
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not (math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])):
            where = ", ".join(f"{iso:g}" for iso in sorted(set(isos.tolist())))
            who = ", ".join(sorted({sensors[i] for i in sensor_idx.tolist()}))
            kept = mngr.latest_step()
            raise TrainingDiverged(
                f"training diverged at step {step}: loss {m['loss']}, gradient norm {m['grad_norm']} on a batch "
                f"at ISO {where} ({who}); "
                + (f"the last good checkpoint (step {kept}) is kept in {ckpt_dir}. " if kept else "")
                + f"Lower optim.learning_rate (now {cfg['optim']['learning_rate']:g}) or check the noise "
                f"profile at those ISOs"
            )
        interval.append(m)
        bar.update(1)
        now = time.perf_counter()
        if last["t_first"] is None:  # the first step's time includes compilation: count from its end
            last.update(t_first=now, n_first=step, t_log=now, n_log=0)
        else:
            last["n_log"] += 1
        last.update(t_last=now, n_last=step)

    def write_log(step: int) -> None:
        if not interval:
            return
        now = time.perf_counter()
        mean = {k: float(np.mean([m[k] for m in interval])) for k in interval[0]}
        dt = now - last["t_log"]
        mean["images_per_s"] = last["n_log"] * bs / dt if last["n_log"] and dt > 0 else None
        mean["wall_s"] = now - t0
        log.write(step, "train", mean)
        bar.set_postfix(loss=f"{mean['loss']:.4g}", refresh=False)
        last.update(loss=mean["loss"], t_log=now, n_log=0)
        interval.clear()

    eval_start = evaluate() if start == 0 and stop > 0 else None
    if eval_start is not None:
        log.write(0, "eval", eval_start)
    batches = pipeline.batches(start, stop)
    pending = None
    step = start
    try:
        for k, batch in batches:
            state, metrics = train_step(state, {key: batch[key] for key in _DEVICE_KEYS})
            if pending is not None:
                check(pending)
            pending = (k + 1, metrics, batch["iso"], batch["sensor_idx"])
            step = k + 1
            due_log = step % cfg["log_every"] == 0 or step == stop
            due_eval = step % cfg["eval_every"] == 0 or step == stop
            due_ckpt = step % cfg["checkpoint_every"] == 0 or step == stop
            if due_log or due_eval or due_ckpt:
                check(pending)
                pending = None
                if due_log:
                    write_log(step)
                if due_eval and (ev_m := evaluate()) is not None:
                    last["eval"] = ev_m
                    log.write(step, "eval", ev_m)
                if due_ckpt:
                    save(step)
    except KeyboardInterrupt:
        leaves = jax.tree.leaves(state)
        if not any(x.is_deleted() for x in leaves) and int(state.step) > start:
            try:
                save(int(state.step))
                echo(
                    f"interrupted: checkpoint at step {int(state.step)} saved in {ckpt_dir}; run again to resume"
                )
            except TrainingDiverged:
                pass
        raise
    finally:
        batches.close()
        bar.close()
        log.close()
        mngr.wait_until_finished()
        mngr.close()
    if stop <= start:  # nothing to train; make sure the model files are there
        save_model(workdir, TrainedModel({**model_config, "step": start}, jax.device_get(state.params)))
    ips = None
    if last["t_first"] is not None and last["n_last"] > last["n_first"]:
        ips = (last["n_last"] - last["n_first"]) * bs / (last["t_last"] - last["t_first"])
    return TrainResult(
        workdir=workdir, name=cfg["name"], step=max(step, start), start_step=start, steps=cfg["steps"],
        loss=last["loss"], eval=last["eval"], eval_start=eval_start, images_per_s=ips, wall_s=time.perf_counter() - t0,
        compilations={k: TRACES[k] - traces.get(k, 0) for k in ("train_step", "eval_step")}, notes=left_out,
    )  # fmt: skip

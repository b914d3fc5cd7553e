"""Training the burst model: ``rawlab train``'s loop on bursts simulated on the fly (no store needed).

:func:`train_burst` is :func:`rawlab.learn.train.train_and_evaluate` with the data swapped: the batches come from
:class:`rawlab.learn.burstdata.BurstPipeline` (procedural scenes, random sensors, hand shake, a moving object,
alternates resampled onto the reference), the held-out batches from the same source's eval stream. Everything
else is the trainer's own: the jitted steps (:func:`rawlab.learn.train.train_step`, whose loss takes a burst's
``4 K`` channels with the frame's one noise law), the optimiser, the NaN guard, orbax checkpoints, resume
(bit for bit: batch ``k`` is a pure function of ``(seed, k)``) and ``WORKDIR/config.json`` +
``model.msgpack``, which also record the ``burst`` block (``frames``: ``K``) that inference reads.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import jax

from ..errors import RawlabError
from .configs import apply_overrides, merge, validate
from .configs.default import get_config as default_config

__all__ = ["BURST_KEYS", "burst_frames", "burst_init", "load_burst_config", "train_burst"]

BURST_KEYS = ("frames", "align", "full", "moving", "max_shift", "max_rotation", "pool", "reuse", "a_range",
              "photos", "init")  # fmt: skip
_SOURCE_KEYS = BURST_KEYS[1:-1]  # the burst source's own (frames and init are the model's)


def burst_frames(config: dict[str, Any]) -> int | None:
    """``K`` of a burst model's config (``config.json`` or a training config), None for a single-frame model."""
    b = config.get("burst")
    return int(b["frames"]) if isinstance(b, dict) and "frames" in b else None


def load_burst_config(name_or_path: str | os.PathLike[str] = "burst", **overrides: Any) -> dict[str, Any]:
    """The full, validated burst config: ``"burst"`` (:mod:`rawlab.learn.configs.burst`) or a ``.py`` file
    whose ``get_config()`` returns one; ``overrides`` as :func:`rawlab.learn.configs.load_config`'s
    (``steps=10``, ``burst__frames=4``, ``data__crop=32``). With ``burst.frames`` overridden, the spec's
    ``in_channels`` follows (``8 K``).

    Raises
    ------
    RawlabError
        Unknown keys, invalid values, or a spec whose input channels are not ``8 * burst.frames``.
    """
    from .configs import _from_file
    from .configs.burst import get_config as burst_config

    s = os.fspath(name_or_path)
    cfg = burst_config() if s == "burst" else _from_file(Path(s))
    if not isinstance(cfg.get("burst"), dict):
        raise RawlabError(f"config {s!r} has no 'burst' block: a burst model's config needs burst.frames")
    block = merge(burst_config()["burst"], cfg.pop("burst"), "burst.")
    full = apply_overrides({**merge(default_config(), cfg), "burst": block}, overrides)
    spec = full["model"].get("spec")
    if overrides.get("burst__frames") is not None and spec:
        spec["in_channels"] = 8 * (int(block["frames"]) + bool(spec.get("merge_frames")))
        if spec.get("merge_frames"):
            spec["merge_frames"] = int(block["frames"])
    return validate_burst(validate(full))


def validate_burst(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check a burst config's ``burst`` block against its model; returns ``cfg``."""
    from .burstdata import ALIGN

    b, spec = cfg["burst"], cfg["model"].get("spec") or {}
    k = b["frames"]
    problems = [
        (isinstance(k, int) and k >= 1, f"burst.frames must be an integer >= 1, got {k!r}"),
        (b["align"] in ALIGN, f"burst.align must be one of {', '.join(ALIGN)}, got {b['align']!r}"),
        (
            0 <= b["full"] <= 1 and 0 <= b["moving"] <= 1,
            "burst.full and burst.moving must be between 0 and 1",
        ),
        (cfg["normalisation"]["kind"] == "noisemap", "a burst model needs normalisation.kind 'noisemap'"),
        (
            b["a_range"] is None or (len(b["a_range"]) == 2 and 0 < b["a_range"][0] <= b["a_range"][1]),
            f"burst.a_range must be None or [lo, hi] with 0 < lo <= hi, got {b['a_range']!r}",
        ),
        (
            spec.get("merge_frames", 0) in (0, k),
            f"model.spec.merge_frames must be 0 (no merge input) or burst.frames = {k}, got "
            f"{spec.get('merge_frames')!r}",
        ),
        (
            spec.get("in_channels") == 8 * (k + bool(spec.get("merge_frames")))
            if isinstance(k, int)
            else True,
            f"model.spec.in_channels must be 8 x burst.frames (the frames and their noise maps; 8 more with "
            f"model.spec.merge_frames, the merge and its map), got {spec.get('in_channels')}",
        ),
        (
            b.get("init") is None or isinstance(b.get("init"), str),
            f"burst.init must be None or a model ('builtin' or a directory), got {b.get('init')!r}",
        ),
    ]
    for ok, msg in problems:
        if not ok:
            raise RawlabError(f"invalid burst config: {msg}")
    return cfg


def burst_data(cfg: dict[str, Any]):
    """The training :class:`~rawlab.learn.burstdata.BurstPipeline` and the fixed held-out batches."""
    from .burstdata import BurstPipeline, BurstSource
    from .input_pipeline import EVAL_STREAM
    from .train import _device_batch

    d, b = cfg["data"], cfg["burst"]
    kw = {k: b[k] for k in _SOURCE_KEYS}

    def source(stream: int) -> BurstSource:
        return BurstSource(d["crop"], b["frames"], seed=cfg["seed"], stream=stream,
                           merged=bool(cfg["model"]["spec"].get("merge_frames")), **kw)  # fmt: skip

    pipeline = BurstPipeline(source(0), batch_size=d["batch_size"], seed=cfg["seed"], workers=d["workers"],
                             prefetch=d["prefetch"])  # fmt: skip
    ev = BurstPipeline(source(EVAL_STREAM), batch_size=d["batch_size"], seed=cfg["seed"], stream=EVAL_STREAM,
                       workers=0)  # fmt: skip
    return pipeline, [_device_batch(ev.batch(k)) for k in range(d["eval_batches"])]


def burst_init(fresh, init: str):
    """``fresh`` (a :class:`~rawlab.learn.modelio.TrainedModel`) with the parameters of the model ``init``
    (``"builtin"`` or a directory) wherever that model has them: a burst model with the merge layer starts from a
    single-frame model of the same U-Net (every one of its parameters is used; ``frames_in`` stays zero). Returns the model and the record of where it came from.

    Raises
    ------
    RawlabError
        ``init`` is not a model, or one of its parameters has no place of the same shape in ``fresh``.
    """
    from .modelio import TrainedModel, load_model, params_from

    other = load_model(init)
    hint = (f"start from a model of the same U-Net (widths {other.spec.widths}) and the merge input "
            "(model.spec.merge_frames), or set burst.init to None")  # fmt: skip
    params = params_from(fresh, other, f"burst.init {init}", hint)
    record = {"model": str(init), "name": other.config.get("name"), "step": other.config.get("step")}
    return TrainedModel(fresh.config, params), record


def train_burst(
    config: dict[str, Any],
    workdir: str | Path,
    *,
    devices=None,
    stop_after: int | None = None,
    progress: bool = True,
    echo=None,
):
    """Train the burst model of ``config`` (:func:`load_burst_config`) into ``workdir``, resuming from its last
    checkpoint; returns a :class:`rawlab.learn.train.TrainResult`.

    ``stop_after`` stops (with a checkpoint) at that step as if interrupted; the schedule spans ``steps``.

    Raises
    ------
    RawlabError
        An invalid config, a workdir holding another model, or a diverged run.
    """
    from ..outputs import output_folder
    from .modelio import init_model
    from .train import (
        _check_devices,
        _check_workdir,
        _compiled_steps,
        _device_line,
        checkpoint_manager,
        create_train_state,
        resolve_precision,
        restore_checkpoint,
        run_loop,
    )  # fmt: skip

    t0 = time.perf_counter()
    echo = echo or (lambda _m: None)
    if not isinstance(config.get("burst"), dict):
        raise RawlabError("a burst model's config needs a 'burst' block (load_burst_config gives one)")
    rest = {k: v for k, v in config.items() if k != "burst"}
    cfg = validate_burst({**validate(merge(default_config(), rest)), "burst": config["burst"]})
    workdir = Path(workdir).absolute()
    devices = list(devices or jax.devices())
    _check_devices(devices, cfg["data"]["batch_size"])
    echo(_device_line(devices))
    base = {"name": cfg["name"], "model": {k: v for k, v in cfg["model"].items() if v is not None},
            "normalisation": cfg["normalisation"], "tile": cfg["tile"], "burst": cfg["burst"]}  # fmt: skip
    _check_workdir(workdir, init_model(base, abstract=True).config)
    output_folder(workdir, "--workdir")
    pipeline, eval_batches = burst_data(cfg)
    tm = init_model(base, seed=cfg["seed"])
    init = cfg["burst"].get("init")
    start_from = None
    if init:
        tm, start_from = burst_init(tm, init)
    model_config = {**tm.config, "training": {**cfg, "store": None, "devices": len(devices),
                                              **({"init": start_from} if start_from else {})},
                    "split": {"train_scenes": [], "eval_scenes": []}}  # fmt: skip
    precision = resolve_precision(cfg["precision"], devices)
    model_config["training"]["precision"] = precision
    key = [tm.config["model"]["spec"], tm.config["normalisation"], cfg["optim"], cfg["steps"], cfg["loss"],
           precision]  # fmt: skip
    tx, repl, train_fn, eval_fn = _compiled_steps(json.dumps(key, sort_keys=True), tuple(devices))
    mngr = checkpoint_manager(workdir, cfg["keep_checkpoints"])
    state, start = restore_checkpoint(mngr, create_train_state(tm.params, tx, repl))
    if start:
        echo(f"resuming from the checkpoint at step {start} in {workdir / 'checkpoints'}")
    elif start_from:
        echo(f"initialised from {start_from['model']} (trained {start_from['step']} steps)")
    stop = min(cfg["steps"], stop_after) if stop_after else cfg["steps"]
    return run_loop(
        cfg, workdir, model_config, (train_fn, eval_fn), pipeline, eval_batches, mngr, state, (start, stop),
        t0, echo, progress,
    )  # fmt: skip

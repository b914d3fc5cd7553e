"""Training configs: Python files with ``get_config()`` returning a plain dict (big_vision / Flax style).

``load_config("tiny")`` loads a named config from this package; ``load_config("path/to/my.py")`` loads a
user's file. A user's dict may be partial: it is merged over :mod:`.default`, and unknown keys are rejected so
that a typo does not silently train with a default.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from ...errors import RawlabError

__all__ = ["LOSS_KINDS", "NAMES", "PRECISIONS", "load_config", "merge", "validate"]

LOSS_KINDS = ("l1_ssim", "mse")
PRECISIONS = ("auto", "float32", "bfloat16")
NAMES = ("tiny", "mobile", "large", "builtin", "r2r", "sure", "joint", "joint_mobile")


def merge(base: dict[str, Any], override: dict[str, Any], where: str = "") -> dict[str, Any]:
    """``override`` merged into a copy of ``base``, section by section; unknown keys raise."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if k not in base:
            allowed = ", ".join(sorted(base))
            raise RawlabError(f"unknown config key {where + k!r}; keys at this level: {allowed}")
        if isinstance(base[k], dict) and isinstance(v, dict):
            out[k] = merge(base[k], v, f"{where}{k}.")
        else:
            out[k] = copy.deepcopy(v)
    return out


def _from_file(path: Path) -> dict[str, Any]:
    spec = importlib.util.spec_from_file_location(f"rawlab_user_config_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise RawlabError(f"cannot load {path} as a Python config file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's file: report its error, not ours
        raise RawlabError(f"config file {path} failed to load: {type(e).__name__}: {e}") from None
    if not callable(getattr(module, "get_config", None)):
        raise RawlabError(f"config file {path} has no get_config() function returning a dict")
    return module.get_config()


def load_config(name_or_path: str | os.PathLike[str], **overrides: Any) -> dict[str, Any]:
    """The full, validated config named ``name_or_path`` (``tiny``, ``mobile``, ``large``, ``builtin``) or in that file.

    ``overrides`` are dotted keys with ``__`` for the dot (``steps=10``, ``data__batch_size=4``); ``None``
    values are ignored.

    Raises
    ------
    RawlabError
        Unknown name, missing or broken file, unknown keys, or invalid values.
    """
    from .default import get_config as default

    s = os.fspath(name_or_path)
    if s in NAMES:
        cfg = importlib.import_module(f"{__name__}.{s}").get_config()
    elif s.endswith(".py") or os.sep in s or "/" in s:
        path = Path(s)
        if not path.is_file():
            raise RawlabError(
                f"config file {s!r} does not exist; pass a name ({', '.join(NAMES)}) or a .py file"
            )
        cfg = _from_file(path)
    else:
        raise RawlabError(
            f"unknown config {s!r}; choose one of {', '.join(NAMES)}, or pass a Python file with get_config()"
        )
    if not isinstance(cfg, dict):
        raise RawlabError(f"get_config() of {s!r} must return a dict, got {type(cfg).__name__}")
    return validate(apply_overrides(merge(default(), cfg), overrides))


def apply_overrides(cfg: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``__`` for the dot: ``data__batch_size=4``) in ``cfg``, in place; ``None`` values are
    ignored. Returns ``cfg``."""
    for key, value in overrides.items():
        if value is None:
            continue
        *path, last = key.split("__")
        node = cfg
        for p in path:
            node = node[p]
        node[last] = value
    return cfg


def validate(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check value ranges and JSON-serialisability; returns ``cfg``."""
    from ..models import ARCHS, build_model
    from ..normalize import KINDS
    from ..synthnoise import KINDS as NOISE_KINDS

    def need(cond: bool, msg: str):
        if not cond:
            raise RawlabError(f"invalid config: {msg}")

    try:
        json.dumps(cfg)
    except TypeError as e:
        raise RawlabError(
            f"invalid config: not JSON-serialisable ({e}); use plain numbers, strings, lists"
        ) from None
    m = cfg["model"]
    need(m.get("spec") is not None or m.get("arch") in ARCHS, f"model.arch must be one of {', '.join(ARCHS)}")
    need(cfg["normalisation"]["kind"] in KINDS, f"normalisation.kind must be one of {', '.join(KINDS)}")
    need(
        isinstance(cfg["steps"], int) and cfg["steps"] >= 1,
        f"steps must be an integer >= 1, got {cfg['steps']!r}",
    )
    d = cfg["data"]
    need(isinstance(d["batch_size"], int) and d["batch_size"] >= 1, "data.batch_size must be an integer >= 1")
    need(0.0 <= d["synthetic_fraction"] <= 1.0, "data.synthetic_fraction must be between 0 and 1")
    need(0.0 <= d["procedural_fraction"] <= 1.0, "data.procedural_fraction must be between 0 and 1")
    pr = d["procedural"]
    need(pr["pool"] >= 1 and pr["reuse"] >= 1, "data.procedural.pool and .reuse must be at least 1")
    ar = pr["a_range"]
    need(
        ar is None or (len(ar) == 2 and 0 < ar[0] <= ar[1] < 1),
        f"data.procedural.a_range must be None or [lo, hi] with 0 < lo <= hi < 1, got {ar!r}",
    )
    need(
        pr["scene_size"] == 0 or pr["scene_size"] >= 2 * d["crop"],
        "data.procedural.scene_size must be 0 (automatic) or at least two crops (mosaic px = 2 x data.crop)",
    )
    need(
        isinstance(d["store_chunk"], int) and (d["store_chunk"] == 0 or d["store_chunk"] >= 16),
        "data.store_chunk must be 0 (read the store as it is) or a chunk edge of at least 16 packed pixels",
    )
    multiple = build_model(m.get("spec") or m["arch"]).spec.multiple
    need(
        isinstance(d["crop"], int) and d["crop"] >= max(16, multiple) and d["crop"] % multiple == 0,
        f"data.crop must be a multiple of {multiple} (the model's downsampling) and at least "
        f"{max(16, multiple)} packed px, got {d['crop']!r}",
    )
    spec = build_model(m.get("spec") or m["arch"]).spec
    scale = 2 ** (len(spec.widths) - 1)
    context = 2 * spec.convs(len(spec.widths) - 1) + 1  # the deepest level's 3x3 convolutions, chained
    need(
        d["crop"] // scale > context,
        f"data.crop {d['crop']} is too small for this model: its deepest level (1/{scale} scale) would be "
        f"{d['crop'] // scale} px wide and its {context}x{context} context there would span the whole crop, so "
        f"what it learns on crops would not hold on whole frames; use data.crop >= {scale * (context + 1)}",
    )
    nz = cfg["noise"]
    need(nz["kind"] in NOISE_KINDS, f"noise.kind must be one of {', '.join(NOISE_KINDS)}, got {nz['kind']!r}")
    need(
        nz["kind"] != "physics" or (isinstance(nz["calibration"], str) and nz["calibration"] != ""),
        "noise.kind 'physics' needs noise.calibration: the calibration.json of `rawlab calibrate`",
    )
    o = cfg["optim"]
    need(o["learning_rate"] > 0, "optim.learning_rate must be positive")
    need(0.0 <= cfg["loss"]["ssim_weight"] <= 1.0, "loss.ssim_weight must be between 0 and 1")
    need(cfg["precision"] in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}")
    need(cfg["loss"]["kind"] in LOSS_KINDS, f"loss.kind must be one of {', '.join(LOSS_KINDS)}")
    if d["self_supervised"]:
        need(
            d["self_supervised_loss"] in ("r2r", "sure"), "data.self_supervised_loss must be 'r2r' or 'sure'"
        )
        need(d["r2r_alpha"] > 0, "data.r2r_alpha must be positive")
        need(
            cfg["loss"]["kind"] == "mse",
            "data.self_supervised needs loss.kind 'mse': its targets are noisy, and only an L2 loss averages "
            "their noise out (L1 and SSIM learn a biased image)",
        )
        need(
            d["synthetic_fraction"] == 0,
            "data.self_supervised has no clean frames to draw synthetic noise on: set data.synthetic_fraction 0",
        )
    for k in ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
        need(isinstance(cfg[k], int) and cfg[k] >= 1, f"{k} must be an integer >= 1")
    return cfg

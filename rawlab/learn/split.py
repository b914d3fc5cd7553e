"""Train/evaluation split by scene: a held-out scene is never seen in training, at any ISO.

The split is a pure function of the catalog (sensor and scene names), so ``rawlab train`` and ``rawlab eval``
agree without sharing state, and the model records the scenes it trained on (``config["split"]``) so that
``rawlab eval`` can refuse to score a scene the model has seen.
"""

from __future__ import annotations

import hashlib
import math

import pandas as pd

__all__ = ["EVAL_FRACTION", "eval_scenes", "split_pairs"]

EVAL_FRACTION = 0.25


def _rank(sensor: str, scene: str) -> str:
    return hashlib.sha1(f"{sensor}\0{scene}".encode()).hexdigest()


def eval_scenes(catalog: pd.DataFrame, fraction: float = EVAL_FRACTION) -> set[tuple[str, str]]:
    """``{(sensor, scene)}`` held out for evaluation: per sensor, ``ceil(fraction * n_scenes)`` scenes chosen
    by a hash of their names (stable as scenes are added), and none when a sensor has a single scene."""
    pairs = catalog[(catalog["role"] == "noisy") & (catalog["status"] == "ok")]
    held: set[tuple[str, str]] = set()
    for sensor, group in pairs.groupby("sensor"):
        scenes = sorted(set(group["scene"]), key=lambda s: _rank(sensor, s))
        if len(scenes) < 2:
            continue
        held.update((sensor, s) for s in scenes[: max(1, math.ceil(fraction * len(scenes)))])
    return held


def split_pairs(catalog: pd.DataFrame, fraction: float = EVAL_FRACTION) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The usable noisy frames (``role == "noisy"``, ``status == "ok"``) split into ``(train, eval)``."""
    pairs = catalog[(catalog["role"] == "noisy") & (catalog["status"] == "ok")]
    held = eval_scenes(catalog, fraction)
    mask = pd.Series(
        [(s, c) in held for s, c in zip(pairs["sensor"], pairs["scene"], strict=True)],
        index=pairs.index,
        dtype=bool,  # an empty mask must still select rows, not (no) columns
    )
    return pairs[~mask], pairs[mask]

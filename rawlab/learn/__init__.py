"""Learning: the U-Net family, its input normalisation, training, and the on-disk model format.

Scoring models lives in :mod:`rawlab.evaluation` (a layer above). Heavy imports (jax, flax, optax) happen
inside the submodules; ``import rawlab.learn`` is cheap.
"""

from __future__ import annotations

__all__ = [
    "TrainedModel",
    "init_model",
    "load_config",
    "load_model",
    "save_model",
    "train_and_evaluate",
]

_WHERE = {
    "TrainedModel": "modelio",
    "init_model": "modelio",
    "load_model": "modelio",
    "save_model": "modelio",
    "load_config": "configs",
    "train_and_evaluate": "train",
}


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'rawlab.learn' has no attribute {name!r}")

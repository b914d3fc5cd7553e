"""Learning: the U-Net family, its input normalisation, and the on-disk model format.

Heavy imports (jax, flax) happen inside the submodules; ``import rawlab.learn`` is cheap.
"""

from __future__ import annotations

__all__ = ["TrainedModel", "init_model", "load_model", "save_model"]


def __getattr__(name: str):
    if name in __all__:
        from . import modelio

        return getattr(modelio, name)
    raise AttributeError(f"module 'rawlab.learn' has no attribute {name!r}")

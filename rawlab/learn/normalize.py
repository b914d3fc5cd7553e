"""What the network sees: packed normalised Bayer planes made comparable across ISO with the noise law.

Two schemes, chosen by the model config (``normalisation.kind``); both map ``x`` (normalised, docs/architecture.md) with
its noise parameters ``(a, b)`` (``Var[x] = a * x + b``, per channel) to the network input and back.

``noisemap`` (default)
    The input is ``x`` itself plus, as 4 more channels, the noise standard deviation the law predicts at each
    pixel, ``sqrt(a * max(x, 0) + b)`` (the noise-level map of Brooks et al., CVPR 2019). Values stay in
    about ``[0, 1]`` at every ISO, which keeps full-int8 TFLite accurate.
``ksigma``
    The k-sigma transform of Wang et al. (ECCV 2020, PMRID): ``x' = (x + b / a) * a_ref / a`` has
    ``Var[x'] = a_ref * E[x']`` at every ISO, so one network sees one noise law. Its range grows as ``a``
    falls (low ISO), which costs accuracy after int8 quantisation; fine for float models.

Arrays are channels-last, ``(..., h, w, 4)``; ``a`` and ``b`` broadcast against them (per channel ``(4,)``, or
per image ``(N, 1, 1, 4)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["KINDS", "Normalisation", "input_channels"]

KINDS = ("noisemap", "ksigma")
A_REF = 1e-3  # k-sigma's canonical shot term (normalised units): a mid-ISO value for 12-14 bit sensors


def input_channels(kind: str) -> int:
    return 8 if kind == "noisemap" else 4


class Normalisation:
    """Forward (``to_network``) and inverse (``from_network``) maps; works on numpy and jax arrays alike."""

    def __init__(self, kind: str = "noisemap", a_ref: float = A_REF):
        if kind not in KINDS:
            from ..errors import RawlabError

            raise RawlabError(f"unknown normalisation {kind!r}; choose one of {', '.join(KINDS)}")
        self.kind, self.a_ref = kind, float(a_ref)

    @property
    def channels(self) -> int:
        return input_channels(self.kind)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "a_ref": self.a_ref}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalisation:
        return cls(d.get("kind", "noisemap"), d.get("a_ref", A_REF))

    def to_network(self, x, a, b):
        """Network input for noisy ``x`` with noise parameters ``a``, ``b`` (normalised units)."""
        xp = _namespace(x)
        if self.kind == "ksigma":
            return (x + b / a) * (self.a_ref / a)
        sigma = xp.sqrt(a * xp.maximum(x, 0) + b)
        return xp.concatenate([x, xp.broadcast_to(sigma, x.shape).astype(x.dtype)], axis=-1)

    def from_network(self, y, a, b):
        """Estimate of the clean ``x`` from the network output ``y`` (4 channels)."""
        if self.kind == "ksigma":
            return y * (a / self.a_ref) - b / a
        return y

    def target(self, clean, a, b):
        """The training target in the network's output domain for the clean ``x``."""
        if self.kind == "ksigma":
            return (clean + b / a) * (self.a_ref / a)
        return clean


def _namespace(x):
    if isinstance(x, np.ndarray):
        return np
    import jax.numpy as jnp

    return jnp

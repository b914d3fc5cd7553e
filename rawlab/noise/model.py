"""The Poisson-Gaussian noise model in normalised units: ``Var[x] = a * E[x] + b`` per channel.

``a`` is the shot-noise (gain) term and ``b`` the signal-independent read-noise term; this is the DNG
NoiseProfile convention and the one used by Foi et al. (2008), Brooks et al. (CVPR 2019) and darktable.
"""

from __future__ import annotations

import numpy as np

__all__ = ["sample_poisson_gaussian", "variance"]


def _per_channel(values, ndim: int) -> np.ndarray:
    """Broadcast per-channel values over packed planes ``(..., 4, h, w)``."""
    v = np.asarray(values, dtype=np.float64)
    return v.reshape(v.shape + (1,) * 2) if v.ndim == 1 and ndim >= 3 else v


def variance(x, a, b) -> np.ndarray:
    """Model variance ``a * x + b`` (normalised units); ``a`` and ``b`` are scalars or per-channel (4,)."""
    x = np.asarray(x, dtype=np.float64)
    return _per_channel(a, x.ndim) * np.clip(x, 0.0, None) + _per_channel(b, x.ndim)


def sample_poisson_gaussian(x, a, b, rng: np.random.Generator) -> np.ndarray:
    """Draw a noisy observation of the clean signal ``x`` (normalised, packed planes or any array).

    The shot part is exactly Poisson in units of ``a`` (a photo-electron count scaled by ``a``) and the read
    part Gaussian with variance ``b``, so ``E = x`` and ``Var = a * x + b``. Nothing is clipped or quantised
    here: sensors do that after (see :mod:`rawlab.synth.generate`).
    """
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, None)
    a_ = _per_channel(a, x.ndim)
    b_ = _per_channel(b, x.ndim)
    shot = rng.poisson(x / a_) * a_
    return shot + rng.standard_normal(x.shape) * np.sqrt(b_)

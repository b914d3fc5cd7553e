"""Never worse than the input: blend a denoiser's output with its input by Stein's unbiased risk estimate.

A learned denoiser can make an image worse than the noisy input, on content or sensors it never saw (fine
texture at base ISO, a noise law it mis-reads). The guard measures, without the clean image, how much the
network's output ``f(y)`` is expected to err on each tile, and pulls the tile back toward the input ``y`` as
much as that estimate says is best::

    g_w(y) = y - w r,   r = y - f(y),   0 <= w <= 1

For noise with per-pixel variance ``s_i^2`` (here ``a f_i + b``, the noise law at the estimate), Stein's
unbiased risk estimate (Stein 1981; for heteroscedastic noise e.g. Luisier, Blu & Unser 2011) of the squared
error of ``g_w`` summed over a tile is::

    SURE(w) = w^2 |r|^2 + S - 2 w (S - D),   S = sum s_i^2,   D = sum s_i^2 d f_i / d y_i

``SURE(0) = S`` is the input's own error, and the minimiser is ``w* = (S - D) / |r|^2`` clipped to
``[0, 1]``, so the guarded tile's expected error is at most the input's (up to the estimate's sampling error,
small on tiles of tens of thousands of pixels) and at most the network's. The divergence ``D`` is estimated
by Monte Carlo (Ramani, Blu & Unser 2008): one more network pass on ``y + eps s b`` with a Rademacher ``b``,
``D ~ sum b_i s_i (f(y + eps s b) - f(y))_i / eps``. The guard therefore doubles the cost of denoising.

Where the network is good, ``D`` is small, ``|r|^2 ~ S - D`` and ``w`` is 1: the guard changes nothing.
Where it removes texture along with the noise, ``|r|^2`` exceeds what the noise explains and ``w`` drops.
The blend is deterministic (a fixed seed for ``b``).

Limits: ``s_i^2`` is the law at the estimate (the clean value is unknown), and clipping at the black level
makes the noise non-Gaussian in the deepest shadows; both bias SURE slightly there.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["EPS", "sure_blend"]

EPS = 0.02  # perturbation in noise sigmas: small for the finite difference, far above float32 rounding


def sure_blend(
    net: Callable[[np.ndarray], np.ndarray], y: np.ndarray, a, b, *, eps: float = EPS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The guarded estimate of tiles ``y`` ``(N, h, w, c)`` and each tile's weight ``w`` ``(N,)``.

    ``net`` maps tiles to clean estimates (same shape); ``a`` and ``b`` broadcast against the tiles (per
    channel ``(c,)``), ``Var[y] = a x + b``.
    """
    y = np.asarray(y, np.float32)
    f = np.asarray(net(y), np.float32)
    var = np.maximum(np.asarray(a, np.float32) * np.maximum(f, 0) + np.asarray(b, np.float32), 0)
    sd = np.sqrt(var)
    signs = np.random.default_rng(seed).integers(0, 2, size=y.shape).astype(np.float32) * 2 - 1
    f2 = np.asarray(net(y + np.float32(eps) * sd * signs), np.float32)
    axes = tuple(range(1, y.ndim))
    div = np.sum(signs * sd * (f2 - f), axis=axes, dtype=np.float64) / eps
    total = np.sum(var, axis=axes, dtype=np.float64)
    r = y - f
    rr = np.sum(np.square(r), axis=axes, dtype=np.float64)
    w = np.clip((total - div) / np.maximum(rr, 1e-30), 0.0, 1.0)
    return y - w.astype(np.float32).reshape(-1, *([1] * (y.ndim - 1))) * r, w

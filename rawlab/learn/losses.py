"""Training losses and image metrics in JAX, on packed normalised planes ``(N, h, w, 4)``, data range 1.

SSIM follows Wang et al. (IEEE TIP 2004): an 11-tap Gaussian window with sigma 1.5, ``K1 = 0.01``, ``K2 =
0.03``, population (not sample) covariances, and the mean of the SSIM map over the pixels where the window
fits ("valid"), each channel on its own. That is exactly ``skimage.metrics.structural_similarity(x, y,
data_range=1, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` per image.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "SURE_EPS",
    "gaussian_window",
    "l1",
    "loss_and_metrics",
    "noise_weights",
    "psnr",
    "ssim",
    "sure_mse",
]

SURE_EPS = 0.05  # the divergence probe's step, in noise sigmas (training runs in float32 or bfloat16)

K1, K2 = 0.01, 0.03


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> np.ndarray:
    """The normalised 1-D Gaussian taps scikit-image (``scipy.ndimage.gaussian_filter``) uses."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).astype(np.float32)


def _filter_valid(z: jax.Array, taps: np.ndarray) -> jax.Array:
    """Separable depthwise filtering of ``(N, h, w, c)`` with ``taps`` along both axes, valid region only."""
    c = z.shape[-1]
    k = len(taps)
    dn = ("NHWC", "HWIO", "NHWC")
    kv = jnp.broadcast_to(jnp.asarray(taps).reshape(k, 1, 1, 1), (k, 1, 1, c))
    kh = jnp.broadcast_to(jnp.asarray(taps).reshape(1, k, 1, 1), (1, k, 1, c))
    z = jax.lax.conv_general_dilated(z, kv, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c)
    return jax.lax.conv_general_dilated(z, kh, (1, 1), "VALID", dimension_numbers=dn, feature_group_count=c)


def ssim(x: jax.Array, y: jax.Array, *, data_range: float = 1.0, sigma: float = 1.5) -> jax.Array:
    """Mean SSIM of each image, ``(N,)``, over its channels and the valid pixels of the window.

    ``x`` and ``y`` are ``(N, h, w, c)`` with ``h, w >= 11`` (the window).
    """
    x = jnp.asarray(x, jnp.float32)
    y = jnp.asarray(y, jnp.float32)
    c = x.shape[-1]
    taps = gaussian_window(sigma)
    stats = _filter_valid(jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1), taps)
    ux, uy, uxx, uyy, uxy = (stats[..., i * c : (i + 1) * c] for i in range(5))
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return jnp.mean(s, axis=(1, 2, 3))


def l1(x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean absolute error of each image, ``(N,)``."""
    return jnp.mean(jnp.abs(x - y), axis=(1, 2, 3))


def psnr(x: jax.Array, y: jax.Array, *, data_range: float = 1.0) -> jax.Array:
    """PSNR (dB) of each image, ``(N,)``, for signals of range ``data_range``."""
    mse = jnp.mean((x - y) ** 2, axis=(1, 2, 3))
    return 10.0 * (2 * math.log10(data_range) - jnp.log10(jnp.maximum(mse, 1e-20)))


def noise_weights(clean: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """Per-image weights ``1 / sigma``, normalised to mean 1 over the batch, ``(N,)``.

    ``sigma = sqrt(a * mean(max(clean, 0)) + b)`` is the image's typical noise standard deviation. Weighting the
    L1 term by it balances the ISOs: an error of one noise sigma costs the same at ISO 100 as at ISO 6400, as
    PSNR averaged over images (what ``rawlab eval`` reports) counts it, where plain L1 is dominated by the high
    ISOs and lets a short run trade low-ISO quality away.
    """
    var = jnp.mean(a * jnp.maximum(clean, 0.0) + b, axis=(1, 2, 3))
    w = 1.0 / jnp.sqrt(jnp.maximum(var, 1e-12))
    return jax.lax.stop_gradient(w / jnp.mean(w))


def sure_mse(
    noisy: jax.Array,
    estimate: jax.Array,
    probed: jax.Array,
    probe: jax.Array,
    var: jax.Array,
    eps: float = SURE_EPS,
) -> jax.Array:
    """Stein's unbiased estimate of each image's mean squared error against its unknown clean signal, ``(N,)``.

    For ``y = x + n`` with independent noise of variance ``var`` per pixel (here the law at the estimate, held
    fixed) and an estimate ``f(y)``, ``E|f(y) - x|^2 = E[|y - f(y)|^2 - sum var + 2 sum var df_i/dy_i]`` (Stein
    1981). The divergence is estimated by one Monte-Carlo probe (Ramani, Blu & Unser 2008): ``probed`` is
    ``f(y + eps sqrt(var) probe)`` with Rademacher signs ``probe``, so ``sum var df_i/dy_i ~ sum probe sqrt(var)
    (probed - estimate) / eps``. Minimising it trains a denoiser without a clean target (Soltanayev & Chun,
    NeurIPS 2018; Metzler et al. 2018), with far less variance than a recorrupted target.
    """
    var = jax.lax.stop_gradient(var)
    axes = (1, 2, 3)
    div = jnp.sum(probe * jnp.sqrt(var) * (probed - estimate), axis=axes) / eps
    n = math.prod(noisy.shape[1:])
    return (jnp.sum((noisy - estimate) ** 2, axis=axes) - jnp.sum(var, axis=axes) + 2 * div) / n


def loss_and_metrics(
    estimate: jax.Array,
    clean: jax.Array,
    ssim_weight: float,
    weights: jax.Array | None = None,
    kind: str = "l1_ssim",
    per_image: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
    """The loss over the batch, in the clean signal's units, and its parts.

    ``kind="l1_ssim"``: ``(1 - w) * L1 + w * (1 - SSIM)``; ``weights`` (per image, ``(N,)``,
    :func:`noise_weights`) weight the L1 term. ``kind="mse"``: the mean squared error, each image's weighted by
    ``weights**2`` (normalised to mean 1): an error of one noise sigma costs the same at every ISO, as for L1.
    L2 is the loss a target with zero-mean noise needs (self-supervised training): its minimiser is the
    expected target, the clean signal. ``per_image`` (``(N,)``, kind ``mse`` only) replaces each image's
    squared error by another estimate of it (:func:`sure_mse` where the target is unknown). The reported
    ``l1`` and ``psnr`` are never weighted.
    """
    per_l1 = l1(estimate, clean)
    e_l1 = jnp.mean(per_l1)
    e_ssim = jnp.mean(ssim(estimate, clean))
    if kind == "mse":
        per_mse = jnp.mean((estimate - clean) ** 2, axis=(1, 2, 3)) if per_image is None else per_image
        w2 = None if weights is None else weights**2 / jnp.mean(weights**2)
        loss = jnp.mean(per_mse) if w2 is None else jnp.mean(w2 * per_mse)
    else:
        w_l1 = e_l1 if weights is None else jnp.mean(weights * per_l1)
        loss = (1.0 - ssim_weight) * w_l1 + ssim_weight * (1.0 - e_ssim)
    return loss, {"loss": loss, "l1": e_l1, "ssim": e_ssim, "psnr": jnp.mean(psnr(estimate, clean))}

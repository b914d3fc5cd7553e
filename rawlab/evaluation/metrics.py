"""Image quality against the clean reference: PSNR and SSIM on packed, normalised Bayer planes (docs/architecture.md).

Both use data range 1 (the white level of the normalised signal), so the numbers are comparable across
sensors, bit depths and ISOs. SSIM is computed per Bayer plane (R, G1, G2, B) with scikit-image's Gaussian-
weighted SSIM (Wang et al., IEEE TIP 2004) and averaged over the planes; it is not computed on a demosaiced
image, so it reads lower than the sRGB SSIM papers report.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DATA_RANGE", "mse", "psnr", "ssim"]

DATA_RANGE = 1.0


def _pair(estimate, reference) -> tuple[np.ndarray, np.ndarray]:
    est = np.asarray(estimate, np.float64)
    ref = np.asarray(reference, np.float64)
    if est.shape != ref.shape:
        raise ValueError(f"estimate {est.shape} and reference {ref.shape} differ in shape")
    return est, ref


def mse(estimate, reference) -> float:
    """Mean squared error (normalised units squared)."""
    est, ref = _pair(estimate, reference)
    return float(np.mean((est - ref) ** 2))


def psnr(estimate, reference) -> float:
    """Peak signal-to-noise ratio in dB with data range 1: ``10 log10(1 / MSE)`` (inf when equal)."""
    m = mse(estimate, reference)
    return float("inf") if m == 0 else float(10.0 * np.log10(DATA_RANGE**2 / m))


def ssim(estimate, reference, channel_axis: int = -1) -> float:
    """Mean SSIM over the planes of ``(h, w, 4)`` (or ``channel_axis``) arrays, data range 1.

    Gaussian weights with sigma 1.5 and population statistics, as in Wang et al. (2004). Planes smaller than
    the 11x11 Gaussian window use a uniform window of the largest odd size that fits (at least 3).
    """
    from skimage.metrics import structural_similarity

    est, ref = _pair(estimate, reference)
    spatial = [n for i, n in enumerate(est.shape) if i != channel_axis % est.ndim]
    window = {"gaussian_weights": True, "sigma": 1.5}
    if min(spatial) < 11:
        window = {"win_size": max(3, min(spatial) - (1 - min(spatial) % 2))}
    return float(
        structural_similarity(
            est, ref, data_range=DATA_RANGE, channel_axis=channel_axis, use_sample_covariance=False, **window
        )
    )

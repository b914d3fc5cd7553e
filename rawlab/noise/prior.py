"""What real sensors say about the read term ``b`` given the shot term ``a``: a prior for single-image fits.

A frame says little about ``b`` unless it has smooth signal near black (the Cramer-Rao bound of ``b`` from one
384x512 photograph is often over 50 %). Sensor physics ties ``b`` to ``a``: in electrons, ``a`` is one electron
(``K`` DN per electron over the span) and ``sqrt(b) / a`` is the read noise in electrons, ``sigma_e``, which
falls as the gain ``K`` rises (the noise after the gain, fixed in DN, counts for fewer electrons; Wei et al.,
"A physics-based noise formation model for extreme low-light raw denoising", CVPR 2020, fit
``log sigma_DN = slope log K + bias`` per camera). The prior is the pooled log-linear law

    log sigma_e = C1 log K14 + C0,   sd S

with ``K14 = a * 16383`` the gain in 14-bit DN per electron (the ELD cameras' ADC depth: an ADC of other depth
rescales the post-gain noise in DN with its step, so the gain is compared in 14-bit units). The constants are
fitted by :func:`fit_eld` on the five calibrated cameras of ``../shared/noise-anchors/eld-camera-params.json``
(Canon 5D4, 700D, 70D, Nikon D850, Sony A7S2: the Gaussian read-noise fit of each over its gain range), with
``S`` the spread between cameras and within each camera's fit added in quadrature, and the law is held at its
ends outside the gains those cameras cover (``K_RANGE``: no extrapolation). They are constants here, so nothing
is read at run time; ``tests/test_noise_single.py`` re-derives them when ``../shared`` is present. No frame
of ``benchmarks/noise_estimate.py`` took part.

It is weak on purpose (``S`` 0.72 in log ``sigma_e``: ``b`` within a factor 4 either way at one sd), so it
decides ``b`` only where the frame cannot: a frame whose shadows measure ``b`` overrules it. Five large-sensor
cameras are a thin sample: sensors with much post-gain noise (``b`` several DN at base gain) read higher than
its mean, and a frame without shadows then gets a ``b`` a few times too low.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

__all__ = ["C0", "C1", "K_RANGE", "K_REF", "S", "fit_eld", "log_read_noise_e", "prior_residual"]

#: ``log sigma_e = C1 log(a K_REF) + C0`` (natural logs), sd ``S``; from :func:`fit_eld`.
C1, C0, S = -0.422, 0.889, 0.72
K_REF = 16383.0  # a 14-bit span: the ELD cameras' DN
#: The gains (14-bit DN per electron) the ELD cameras cover; the law is not extrapolated past them.
K_RANGE = (0.094, 28.6)


def log_read_noise_e(a: float) -> float:
    """The prior's mean of ``log sigma_e`` (electrons) at shot term ``a`` (normalised)."""
    k = min(max(a * K_REF, K_RANGE[0]), K_RANGE[1])
    return C1 * math.log(k) + C0


def prior_residual(a: float, b: float) -> float:
    """``(log(sqrt(b) / a) - mean) / S``: the prior's term in a least-squares fit, ``-2 log p`` its square."""
    sig = 0.5 * math.log(max(b, 1e-300)) - math.log(max(a, 1e-300))
    return (sig - log_read_noise_e(a)) / S


def fit_eld(path: str | Path) -> tuple[float, float, float]:
    """``(C1, C0, S)`` from the ELD release's camera parameters (``eld-camera-params.json``).

    Each camera's Gaussian read noise ``log sigma_DN = slope log K + bias`` (``Profile-1``, ``G_scale``) is
    sampled at 50 gains spread evenly in ``log K`` over its range and turned into electrons
    (``sigma_e = sigma_DN / K``); the pooled points are fitted by a line; ``S`` adds the line's residual sd
    (between cameras) and the mean within-camera sd in quadrature.
    """
    doc = json.loads(Path(path).read_text())
    xs, ys, within = [], [], []
    for cam in doc.values():
        g = cam["Profile-1"]["G_scale"]
        lk = np.linspace(math.log(cam["Kmin"]), math.log(cam["Kmax"]), 50)
        xs.append(lk)
        ys.append(g["slope"] * lk + g["bias"] - lk)
        within.append(g["sigma"])
    x, y = np.concatenate(xs), np.concatenate(ys)
    c1, c0 = np.polyfit(x, y, 1)
    between = float(np.std(y - (c1 * x + c0)))
    return float(c1), float(c0), float(math.hypot(between, float(np.mean(within))))

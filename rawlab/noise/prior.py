"""What real sensors say about the read term ``b`` given the shot term ``a``: a prior for single-image fits.

A frame says little about ``b`` unless it has smooth signal near black (the Cramer-Rao bound of ``b`` from one
384x512 photograph is often over 50 %). Sensor physics ties ``b`` to ``a``: in electrons, ``a`` is one electron
(``K`` DN per electron over the span) and ``sqrt(b) / a`` is the read noise in electrons, ``sigma_e``, which
falls as the gain ``K`` rises (the noise after the gain, fixed in DN, counts for fewer electrons; Wei et al.,
"A physics-based noise formation model for extreme low-light raw denoising", CVPR 2020, fit
``log sigma_DN = slope log K + bias`` per camera). The prior is the pooled log-linear law

    log sigma_e = C1 log K14 + C0,   sd S

with ``K14 = a * 16383`` the gain in 14-bit DN per electron (an ADC of other depth rescales the post-gain noise
in DN with its step, so the gain is compared in 14-bit units). The constants are fitted by
:func:`fit_darktable` on darktable's noise profiles (``../shared/noise-anchors/darktable-noiseprofiles.json``:
5,784 (camera, ISO) profiles of 369 cameras, green channel, the entries darktable itself uses), with ``S`` the
residual sd, and the law is held at its ends outside the gains the middle 98 % of those profiles cover
(``K_RANGE``: no extrapolation). darktable fits its profiles on its own scaled data, not on raw mosaics, but
``sigma_e = sqrt(b) / a`` does not change when the data are scaled, and ``K14`` moves only by the scale.
They are constants here, so nothing is read at run time; ``tests/test_noise_single.py`` re-derives them when
``../shared`` is present. No frame of ``benchmarks/noise_estimate.py`` took part.

It replaced a prior fitted on the five calibrated cameras of the ELD release (Canon 5D4, 700D, 70D, Nikon
D850, Sony A7S2; ``C1`` -0.422, ``C0`` 0.889, ``S`` 0.72): large-sensor cameras whose read noise is a third
of the darktable cameras' at the same gain, so a frame without shadows got a ``b`` several times too low on
sensors with more post-gain noise. Chosen on the ten random sensors the estimator's settings were tuned on
(``benchmarks/noise_estimate.py --sensors tune``: median ``|db|/b`` 82.5 % -> 78.5 %, ``|da|/a`` 28.3 % ->
25.6 %), not on the benchmark's own sensors.

It is weak on purpose (``S`` 0.53 in log ``sigma_e``: ``b`` within a factor 3 either way at one sd), so it
decides ``b`` only where the frame cannot: a frame whose shadows measure ``b`` overrules it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

__all__ = ["C0", "C1", "K_RANGE", "K_REF", "S", "fit_darktable", "log_read_noise_e", "prior_residual"]

#: ``log sigma_e = C1 log(a K_REF) + C0`` (natural logs), sd ``S``; from :func:`fit_darktable`.
C1, C0, S = -0.379, 2.088, 0.53
K_REF = 16383.0  # a 14-bit span
#: The gains (14-bit DN per electron) of the middle 98 % of darktable's profiles; the law is not extrapolated.
K_RANGE = (0.0171, 21.0)


def log_read_noise_e(a: float) -> float:
    """The prior's mean of ``log sigma_e`` (electrons) at shot term ``a`` (normalised)."""
    k = min(max(a * K_REF, K_RANGE[0]), K_RANGE[1])
    return C1 * math.log(k) + C0


def prior_residual(a: float, b: float) -> float:
    """``(log(sqrt(b) / a) - mean) / S``: the prior's term in a least-squares fit, ``-2 log p`` its square."""
    sig = 0.5 * math.log(max(b, 1e-300)) - math.log(max(a, 1e-300))
    return (sig - log_read_noise_e(a)) / S


def fit_darktable(path: str | Path) -> tuple[float, float, float, tuple[float, float]]:
    """``(C1, C0, S, K_RANGE)`` from darktable's noise profiles (``darktable-noiseprofiles.json``).

    Every profile darktable uses (neither the model nor the profile marked ``skip``) with ``a > 0`` and
    ``b > 0`` gives one point ``(log K14, log sigma_e)`` from its green channel; the points are fitted by a
    line, ``S`` is its residual sd, and ``K_RANGE`` the 1st and 99th percentiles of ``K14``.
    """
    doc = json.loads(Path(path).read_text())
    xs, ys = [], []
    for maker in doc["noiseprofiles"]:
        for model in maker["models"]:
            if model.get("skip"):
                continue
            for prof in model["profiles"]:
                a, b = float(prof["a"][1]), float(prof["b"][1])
                if prof.get("skip") or a <= 0 or b <= 0:
                    continue
                xs.append(math.log(a * K_REF))
                ys.append(math.log(math.sqrt(b) / a))
    x, y = np.asarray(xs), np.asarray(ys)
    c1, c0 = np.polyfit(x, y, 1)
    lo, hi = np.exp(np.percentile(x, [1, 99]))
    return float(c1), float(c0), float(np.std(y - (c1 * x + c0))), (float(lo), float(hi))

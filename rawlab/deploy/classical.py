"""Classical raw denoisers: variance stabilisation, then a Gaussian denoiser.

They are what a model is measured against (``rawlab eval``'s baselines, :mod:`rawlab.evaluation.scoring`) and
what the deploy runtime fuses the network with (VST+NL-means, :func:`rawlab.deploy.guard.sure_fuse`): a
learned and a classical denoiser err in different places, and the SURE-weighted blend errs less than either.

The generalised Anscombe transform (GAT) turns Poisson-Gaussian noise ``Var[z] = a * E[z] + b`` (normalised
units, docs/architecture.md) into noise of about unit variance at every signal level (Starck, Murtagh &
Bijaoui 1998; Mäkitalo & Foi, IEEE TIP 2013)::

    f(z) = 2 * sqrt(max(z / a + 3/8 + s2, 0)),   s2 = b / a**2

A Gaussian denoiser then runs with ``sigma = 1`` on each packed channel, and the result is taken back with the
**exact unbiased inverse** of Mäkitalo & Foi: the map ``E[f(z) | x] -> x``. The algebraic inverse ``f^-1`` is
biased where counts are low (``E[f(z)] != f(E[z])`` because ``f`` is concave), which costs PSNR at high noise
(tests/test_baselines.py pins that the exact inverse wins). Here ``E[f(z) | x]`` is computed numerically: a
sum over the Poisson pmf of a Gaussian-smoothed ``f`` (quadrature), optionally with the sensor's clipping at
black, tabulated over the underlying mean and inverted by interpolation; above a few thousand expected counts
the closed-form asymptote ``x = a * (D**2 / 4 - 1/8 - s2)`` is exact to far below a DN.

Methods (names as in the evaluation JSON): ``identity`` (the noisy input), ``vst-wavelet``
(:func:`skimage.restoration.denoise_wavelet`, BayesShrink), ``vst-nlm``
(:func:`skimage.restoration.denoise_nl_means`), ``vst-dct`` (:func:`dct_wiener`, rawlab's own: a sliding-window
DCT, hard thresholding then an empirical Wiener filter) and ``vst-bm3d`` (Dabov et al. 2007, through the
optional ``bm3d`` package, only when it is installed: its licence forbids commercial use, so rawlab never depends
on it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np

__all__ = [
    "BASELINES",
    "GAT",
    "available_baselines",
    "dct_wiener",
    "denoise_baseline",
    "gat_forward",
]

BASELINES = ("identity", "vst-wavelet", "vst-nlm", "vst-dct", "vst-bm3d")

_LAMBDA_HI = 4000.0  # expected counts above which the asymptotic inverse is used (error << 1e-6 counts)
_QUAD = np.linspace(-8.0, 8.0, 321)  # Gaussian quadrature nodes (standard units) for the read-noise smoothing
_QUAD_W = np.exp(-0.5 * _QUAD**2)
_QUAD_W /= _QUAD_W.sum()


def gat_forward(z, a, b):
    """The generalised Anscombe transform of normalised ``z`` for ``Var[z] = a * E[z] + b`` (scalars ``a > 0``)."""
    s2 = b / (a * a)
    return 2.0 * np.sqrt(np.maximum(np.asarray(z, np.float64) / a + 0.375 + s2, 0.0))


def _smoothed_root(k: np.ndarray, s2: float, u_lo: float | None) -> np.ndarray:
    """``E[f(max(k + n, u_lo))]`` in count units for integer counts ``k`` and ``n ~ N(0, s2)``."""
    sigma = math.sqrt(s2)
    c = 0.375 + s2
    out = np.empty(k.shape, np.float64)
    # Far from 0 and from the clip, the Taylor series of sqrt in the Gaussian moments is exact to ~1e-12.
    k0 = max(64.0, 40.0 * s2 + 12.0 * sigma, (u_lo or 0.0) + 12.0 * sigma + 64.0)
    far = k >= k0
    m = k[far] + c
    r = s2 / (m * m)
    out[far] = 2.0 * np.sqrt(m) * (1.0 - r / 8.0 - 15.0 * r * r / 128.0 - 315.0 * r**3 / 1024.0)
    near = k[~far]
    if near.size:
        u = near[:, None] + sigma * _QUAD[None, :]
        if u_lo is not None:
            u = np.maximum(u, u_lo)
        out[~far] = (2.0 * np.sqrt(np.maximum(u + c, 0.0))) @ _QUAD_W
    return out


@lru_cache(maxsize=256)
def _table(s2: float, u_lo: float | None, lam_hi: float) -> tuple[np.ndarray, np.ndarray]:
    """``(t, E[f])`` with ``t = sqrt(lambda)`` on a grid up to ``sqrt(lam_hi)``: the forward expectation."""
    from scipy.special import gammaln

    t = np.concatenate(
        [np.linspace(0.0, 1.0, 200, endpoint=False), np.geomspace(1.0, math.sqrt(lam_hi), 800)]
    )
    lam = t * t
    kmax = int(lam_hi + 14.0 * math.sqrt(lam_hi) + 40)
    g = _smoothed_root(np.arange(kmax + 1, dtype=np.float64), s2, u_lo)
    lg = gammaln(np.arange(kmax + 1, dtype=np.float64) + 1.0)
    ef = np.empty_like(lam)
    for i, lm in enumerate(lam):
        if lm == 0.0:
            ef[i] = g[0]
            continue
        w = 13.0 * math.sqrt(lm) + 30.0
        k = np.arange(max(0, int(lm - w)), min(kmax, int(lm + w)) + 1)
        pmf = np.exp(k * math.log(lm) - lm - lg[k])
        ef[i] = pmf @ g[k] / pmf.sum()
    return t, np.maximum.accumulate(ef)  # monotone by theory; guard the last ulp


class GAT:
    """Generalised Anscombe transform for one channel, with the exact unbiased inverse.

    Parameters
    ----------
    a, b
        Noise parameters of ``Var[z] = a * E[z] + b`` (normalised units), ``a > 0``.
    lower
        Where the sensor clips the signal from below (normalised units, e.g. 0 for a camera that clips black
        in-camera; ``-black / (white - black)`` for the 0 DN floor), or None to model no clipping. The clipped
        distribution is used for the expectation that the inverse undoes.
    """

    def __init__(self, a: float, b: float, lower: float | None = None):
        a, b = float(a), float(b)
        if not (a > 0 and math.isfinite(a) and math.isfinite(b)):
            raise ValueError(f"the VST needs a > 0 and finite b; got a={a!r}, b={b!r}")
        self.a, self.b = a, max(b, 0.0)
        self.s2 = self.b / (a * a)
        u_lo = None if lower is None else float(lower) / a
        if u_lo is not None and u_lo < -(0.375 + self.s2) - 10 * math.sqrt(self.s2):
            u_lo = None  # a clip far below the noise floor changes nothing
        self.lower = lower
        self._t, self._ef = _table(round(self.s2, 12), None if u_lo is None else round(u_lo, 9), _LAMBDA_HI)

    def forward(self, z) -> np.ndarray:
        """``f(z)``: noise of about unit variance."""
        return gat_forward(z, self.a, self.b)

    def expected(self, x) -> np.ndarray:
        """``E[f(z)]`` for clean signal ``x`` (normalised): what :meth:`inverse` inverts."""
        lam = np.maximum(np.asarray(x, np.float64) / self.a, 0.0)
        t = np.sqrt(lam)
        out = np.interp(t, self._t, self._ef)
        hi = lam > _LAMBDA_HI
        if np.any(hi):
            out[hi] = 2.0 * np.sqrt(lam[hi] + self.s2 + 0.125)  # the asymptote of the exact inverse, inverted
        return out

    def inverse(self, d) -> np.ndarray:
        """Exact unbiased inverse: the clean signal ``x >= 0`` (normalised) whose ``E[f(z)]`` is ``d``."""
        d = np.asarray(d, np.float64)
        # Interpolate t = sqrt(lambda), not lambda: E[f] ~ 2 t at large counts, so the map is near-linear.
        t = np.interp(d, self._ef, self._t)
        lam = t * t
        hi = d > self._ef[-1]
        if np.any(hi):
            lam[hi] = d[hi] ** 2 / 4.0 - 0.125 - self.s2
        return self.a * lam

    def inverse_algebraic(self, d) -> np.ndarray:
        """The naive algebraic inverse ``f^-1`` (biased at low counts; for comparison only)."""
        d = np.asarray(d, np.float64)
        return self.a * (d * d / 4.0 - 0.375 - self.s2)


# -- Gaussian denoisers in the VST domain (unit noise) ---------------------------------------------------------


def _wavelet(v: np.ndarray) -> np.ndarray:
    from skimage.restoration import denoise_wavelet

    # Per channel (channel_axis=-1 thresholds each plane with its own BayesShrink estimate); db2 measured best
    # of db1/db2/sym4 on packed photographs.
    return denoise_wavelet(
        v, sigma=1.0, wavelet="db2", mode="soft", method="BayesShrink", rescale_sigma=False, channel_axis=-1
    )


def nl_means(v: np.ndarray, *, h: float = 0.5, patch_size: int = 3) -> np.ndarray:
    """NL-means on unit-noise channels ``(h, w, c)`` (after the VST), all channels matched jointly."""
    from skimage.restoration import denoise_nl_means

    # The four planes are matched jointly (one patch distance over all channels): the Bayer channels share
    # their structure, so joint weights are better and the search runs once instead of four times. Packed
    # planes are half resolution: 3x3 patches (6x6 mosaic) searched over 13x13; h measured over 0.4-0.8.
    return denoise_nl_means(
        v,
        patch_size=patch_size,
        patch_distance=6,
        h=h,
        sigma=1.0,
        fast_mode=True,
        preserve_range=True,
        channel_axis=-1,
    )


# An orthonormal 4-point Walsh-Hadamard transform over the planes: unit iid noise stays unit iid noise, and the
# first output (the mean of R, G1, G2, B) carries the structure that BM3D's block matching runs on.
_HADAMARD = 0.5 * np.array([[1, 1, 1, 1], [1, 1, -1, -1], [1, -1, 1, -1], [1, -1, -1, 1]], np.float64)


def dct_wiener(v: np.ndarray, *, patch: int = 8, step: int = 2, threshold: float = 2.7) -> np.ndarray:
    """Sliding-window DCT denoising of unit-noise channels ``(h, w, c)`` (after the VST), in two stages.

    Every ``patch`` x ``patch`` window, every ``step`` pixels (the frame reflect-padded by under a step so that
    they reach its last row and column), is taken through an orthonormal transform: the 2-D DCT in space and, for the four packed planes, the Walsh-Hadamard transform
    across them (:data:`_HADAMARD`), so the unit iid noise stays unit iid noise in every coefficient. Stage one
    keeps the coefficients above ``threshold`` (hard thresholding; Yu & Sapiro, IPOL 2011); stage two shrinks
    the noisy coefficients by the empirical Wiener gain ``p^2 / (p^2 + 1)`` of the first stage's coefficients
    ``p`` (as BM3D's second step, Dabov et al. 2007, without its block matching). The windows are averaged back
    with a Kaiser window and BM3D's weights: the inverse of the kept coefficients' count, then of the Wiener
    gains' squared sum (the window estimate's noise variance). Alone it lies between NL-means and BM3D (on the
    quality benchmark 0.2 to 1.2 dB above VST+NL-means, up to 1 dB below VST+BM3D), and it errs elsewhere than
    NL-means and the network: the runtime fuses it with both (:func:`rawlab.deploy.guard.classical_estimates`).
    """
    v = np.asarray(v, np.float32)
    h0, w0, c = v.shape
    patch = min(patch, h0, w0)
    if patch < 2:
        return v.copy()
    from numpy.lib.stride_tricks import sliding_window_view
    from scipy.fft import dctn, idctn

    # Reflect-pad the bottom and right so that the windows tile every `step` pixels up to the last row and column.
    v = np.pad(v, ((0, -(h0 - patch) % step), (0, -(w0 - patch) % step), (0, 0)), mode="reflect")
    h, w = v.shape[:2]
    ny, nx = (h - patch) // step + 1, (w - patch) // step + 1
    # The Hadamard transform across the planes commutes with everything per plane (the windows, the DCT, the
    # overlap-add), so it is applied once to the frame and once to the result, not to every window.
    mix = _hadamard4 if c == 4 else (lambda x: x)
    v = mix(v)
    window = np.outer(np.kaiser(patch, 2.0), np.kaiser(patch, 2.0)).astype(np.float32)
    rows = max(1, 2**22 // (nx * c * patch * patch))  # windows' rows per strip: about 16 MB per array

    # The transforms are pocketfft's (scipy.fft) and a butterfly, not a BLAS product: the same bits with any
    # number of BLAS threads, so a coefficient at the threshold falls the same side in a worker as alone.
    def coefficients(img: np.ndarray, r0: int, r1: int) -> np.ndarray:
        p = sliding_window_view(img[r0 * step : (r1 - 1) * step + patch], (patch, patch), axis=(0, 1))
        p = np.ascontiguousarray(p[::step, ::step]).reshape(-1, c, patch, patch)
        return dctn(p, axes=(-2, -1), norm="ortho")  # (windows, c, patch, patch)

    def stage(pilot: np.ndarray | None) -> np.ndarray:
        acc = np.zeros((h, w, c), np.float32)
        weight = np.zeros((h, w), np.float32)
        for r0 in range(0, ny, rows):
            r1 = min(ny, r0 + rows)
            coef = coefficients(v, r0, r1)
            if pilot is None:
                keep = np.abs(coef) > threshold
                keep[:, 0, 0, 0] = True  # the window's mean
                coef *= keep
                wt = 1.0 / keep.sum(axis=(1, 2, 3), dtype=np.float32)
            else:
                gain = coefficients(pilot, r0, r1)
                gain *= gain
                gain /= gain + 1.0
                coef *= gain
                gain *= gain
                wt = 1.0 / np.maximum(gain.sum(axis=(1, 2, 3)), 1e-3)
            coef *= wt[:, None, None, None]
            back = idctn(coef, axes=(-2, -1), norm="ortho").reshape(r1 - r0, nx, c, patch, patch)
            wt = wt.reshape(r1 - r0, nx)
            y0 = r0 * step
            for dy in range(patch):
                for dx in range(patch):
                    at = (
                        slice(y0 + dy, y0 + dy + (r1 - r0 - 1) * step + 1, step),
                        slice(dx, dx + (nx - 1) * step + 1, step),
                    )
                    acc[at] += back[:, :, :, dy, dx] * window[dy, dx]
                    weight[at] += wt * window[dy, dx]
        return acc / weight[..., None]

    return mix(stage(stage(None)))[:h0, :w0]


def _hadamard4(x: np.ndarray) -> np.ndarray:
    """:data:`_HADAMARD` over the last axis (the four planes) as a butterfly, in the input's precision; it is
    orthonormal and its own inverse."""
    s01, d01 = x[..., 0] + x[..., 1], x[..., 0] - x[..., 1]
    s23, d23 = x[..., 2] + x[..., 3], x[..., 2] - x[..., 3]
    return np.stack([s01 + s23, s01 - s23, d01 + d23, d01 - d23], axis=-1) * x.dtype.type(0.5)


def _bm3d(v: np.ndarray) -> np.ndarray:
    import bm3d

    # The package matches blocks on the first channel of a multichannel image and filters all channels with
    # those matches: give it the luminance-like Hadamard channel first (measured +0.4-0.6 dB over the raw
    # planes, whose first channel is R).
    u = v @ _HADAMARD.T
    return np.asarray(bm3d.bm3d(u, sigma_psd=1.0), np.float64).reshape(v.shape) @ _HADAMARD


_DENOISERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "vst-wavelet": _wavelet,
    "vst-nlm": nl_means,
    "vst-dct": dct_wiener,
    "vst-bm3d": _bm3d,
}


def bm3d_available() -> bool:
    try:
        import bm3d  # noqa: F401
    except ImportError:
        return False
    return True


def available_baselines() -> list[str]:
    """The baseline methods this installation can run (``vst-bm3d`` only with the optional bm3d package)."""
    return [m for m in BASELINES if m != "vst-bm3d" or bm3d_available()]


def denoise_baseline(method: str, x: np.ndarray, a, b, lower=None, **options) -> np.ndarray:
    """Denoise packed normalised planes ``x`` ``(h, w, 4)`` with a classical ``method``.

    Parameters
    ----------
    method
        One of :data:`BASELINES`.
    x
        Noisy planes, channels last (R, G1, G2, B), normalised units.
    a, b
        Per-channel noise parameters ``(4,)`` (normalised units).
    lower
        Per-channel lower clipping bound ``(4,)`` of the sensor (normalised), or None.
    options
        Passed to the denoiser (``vst-nlm``: ``h``, its strength over the unit noise).

    Returns
    -------
    numpy.ndarray
        The estimate, ``(h, w, 4)`` float32, normalised units.
    """
    x = np.asarray(x)
    if method == "identity":
        return x.astype(np.float32, copy=True)
    if method not in _DENOISERS:
        raise ValueError(f"unknown baseline {method!r}; choose from {', '.join(BASELINES)}")
    n = x.shape[-1]
    a = np.broadcast_to(np.asarray(a, np.float64), (n,))
    b = np.broadcast_to(np.asarray(b, np.float64), (n,))
    lo = [None] * n if lower is None else np.broadcast_to(np.asarray(lower, np.float64), (n,))
    vsts = [GAT(a[c], b[c], None if lo[c] is None else float(lo[c])) for c in range(n)]
    v = np.stack([vst.forward(x[..., c]) for c, vst in enumerate(vsts)], axis=-1)
    d = _DENOISERS[method](v, **options)
    return np.stack([vst.inverse(d[..., c]) for c, vst in enumerate(vsts)], axis=-1).astype(np.float32)

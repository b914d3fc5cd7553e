"""Per-group statistics of dark and flat frames: what one Dask task computes from the frames it reads.

A group is the frames of one sensor, ISO and exposure time. The task reads each frame once, tells darks from
flats by level and uniformity (:func:`classify_frame`), and returns small per-channel statistics for the
whole plane and for :data:`BANDS` horizontal bands of it (the bands give every figure's standard error: the
figure is computed per band and its spread over bands, divided by ``sqrt(BANDS)``, is the error of the
whole-plane value). All values are DN above the black level the file declares.

Statistics (EMVA 1288 notation, ``L`` frames ``y_i``, per channel):

- ``means``: each frame's spatial mean;
- ``temporal``: the temporal variance ``mean_x var_i(y_i(x))`` minus the variance of the frame means (EMVA's
  pair formula for ``L = 2``: a frame-wide offset such as black-level drift is not temporal pixel noise);
- ``spatial``: the spatial variance of the averaged image ``mean_i y_i`` (still holding ``temporal / L``);
- ``row``: the variance of the row means of ``y_i - mean_j y_j`` (frame mean removed), scaled back by
  ``L / (L - 1)``: row noise plus ``1 / columns`` of the pixel noise;
- darks with ``L >= 4``: the Tukey-lambda shape of the pixel noise (:func:`tukey_shape`).
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["BANDS", "DARK_MAX", "classify_frame", "group_stats", "tukey_shape"]

BANDS = 8
DARK_MAX = 0.02  # a frame whose mean is at most this fraction of the range above black is a dark
_FLAT_SPREAD = 0.05  # a flat's block means may spread this much (relative): illumination fall-off
_PPCC_SAMPLES = 60000


def classify_frame(planes: np.ndarray, black: np.ndarray, white: float, *, dark_max: float = DARK_MAX,
                   role: str | None = None) -> tuple[str | None, str]:  # fmt: skip
    """``("dark" | "flat", note)`` or ``(None, reason)`` for a frame that is neither.

    ``planes`` are the packed DN (4, h, w). A frame is uniform when the means of a 4x4 grid of blocks spread
    less than the noise allows (5 sigma of a block mean) plus 5% of the level (illumination fall-off) plus 2 DN
    (row and column patterns); a uniform frame is a dark when its level is at most ``dark_max`` of the
    range, else a flat. ``role`` (from a recipe) decides dark or flat, but a frame must still be uniform.
    """
    x = planes.astype(np.float64) - black[:, None, None]
    rng = white - black
    level = float(np.mean(x.reshape(4, -1).mean(axis=1) / rng))
    _, h, w = x.shape
    bh, bw = h // 4, w // 4
    blocks = x[:, : bh * 4, : bw * 4].reshape(4, 4, bh, 4, bw).mean(axis=(2, 4))
    noise = x.reshape(4, -1).std(axis=1)
    spread = blocks.reshape(4, -1).std(axis=1)
    allowed = 5 * noise / np.sqrt(bh * bw) + _FLAT_SPREAD * np.abs(x.reshape(4, -1).mean(axis=1)) + 2.0
    if np.any(spread > allowed):
        c = int(np.argmax(spread / allowed))
        return None, (
            f"neither dark nor flat: not uniform (block means of channel {'R G1 G2 B'.split()[c]} spread "
            f"{spread[c]:.1f} DN, a dark or flat field allows {allowed[c]:.1f} DN); a scene?"
        )
    if role is not None:
        return role, f"{role} by recipe (level {level:.1%} of the range)"
    return ("dark" if level <= dark_max else "flat"), f"level {level:.1%} of the range"


def _views(h: int) -> list[slice]:
    edges = np.linspace(0, h, BANDS + 1).astype(int)
    return [slice(0, h)] + [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def group_stats(stack: np.ndarray, *, white_above_black: np.ndarray, dark: bool) -> dict:
    """Statistics of ``L`` frames ``stack`` (L, 4, h, w), float DN above black, for the views (whole, bands).

    Returns arrays shaped ``(1 + BANDS, 4)`` (``means``: ``(1 + BANDS, L, 4)``) and, for darks with
    ``L >= 4``, the Tukey-lambda fit of the whole plane.
    """
    n, _, h, w = stack.shape
    out: dict = {"n": n, "shape": [h, w]}
    keys = ["means", "temporal", "spatial", "row", "clipped"]
    acc: dict[str, list] = {k: [] for k in keys}
    for v in _views(h):
        y = stack[:, :, v, :]
        means = y.mean(axis=(2, 3))  # (L, 4)
        avg = y.mean(axis=0)  # (4, hv, w)
        acc["means"].append(means)
        acc["spatial"].append(avg.reshape(4, -1).var(axis=1, ddof=1))
        acc["clipped"].append((y >= white_above_black[None, :, None, None] - 0.5).mean(axis=(0, 2, 3)))
        if n >= 2:
            pix = y.var(axis=0, ddof=1).reshape(4, -1).mean(axis=1)
            acc["temporal"].append(pix - means.var(axis=0, ddof=1))
            resid = y - avg[None]
            rows = resid.mean(axis=3)  # (L, 4, hv)
            rows = rows - rows.mean(axis=2, keepdims=True)  # the frame's own offset (drift) out
            acc["row"].append((rows**2).sum(axis=2).mean(axis=0) / (rows.shape[2] - 1) * n / (n - 1))
        else:
            acc["temporal"].append(np.full(4, np.nan))
            acc["row"].append(np.full(4, np.nan))
    for k in keys:
        out[k] = np.asarray(acc[k]).tolist()
    if dark and n >= 4:
        out["tukey"] = [tukey_shape(stack[:, c], seed=c) for c in range(4)]
    return out


def _loo_residual(y: np.ndarray) -> np.ndarray:
    """Each frame minus the mean of the others, with its row means removed: pixel noise without FPN or rows."""
    n = y.shape[0]
    total = y.sum(axis=0)
    r = y - (total[None] - y) / (n - 1)
    return r - r.mean(axis=2, keepdims=True)


def _tukey_ppf(p: np.ndarray, lam: float) -> np.ndarray:
    """The Tukey-lambda quantile function in closed form (the logistic's at ``lam = 0``)."""
    if abs(lam) < 1e-9:
        return np.log(p / (1 - p))
    return (p**lam - (1 - p) ** lam) / lam


def _ppcc(x: np.ndarray) -> tuple[float, float]:
    """The Tukey-lambda shape of ``x`` by the probability-plot correlation maximum (Filliben 1975), and that
    correlation: what ``scipy.stats.ppcc_max`` and ``probplot`` compute, with the quantile function in closed form
    and the sort done once (scipy's generic ``ppf`` made this the calibration's slowest step)."""
    from scipy import optimize

    n = x.size
    osm = np.empty(n)  # Filliben's approximation of the uniform order statistic medians, as scipy uses
    osm[-1] = 0.5 ** (1.0 / n)
    osm[0] = 1 - osm[-1]
    osm[1:-1] = (np.arange(2, n) - 0.3175) / (n + 0.365)
    osr = np.sort(np.asarray(x, np.float64))
    osr = osr - osr.mean()

    def corr(lam: float) -> float:
        q = _tukey_ppf(osm, lam)
        q = q - q.mean()
        return float(q @ osr / np.sqrt((q @ q) * (osr @ osr)))

    lam = float(optimize.brent(lambda v: 1.0 - corr(v), brack=(-0.3, 0.3)))
    lam = float(np.clip(lam, -0.45, 1.0))
    return lam, corr(lam)


def _sample(r: np.ndarray, k: int) -> np.ndarray:
    flat = r.reshape(-1)
    step = max(1, flat.size // k)
    return flat[::step][:k]


def tukey_shape(y: np.ndarray, *, seed: int = 0) -> dict:
    """The Tukey-lambda shape of the pixel read noise in ``L`` dark frames ``y`` (L, h, w), DN.

    The fixed pattern and the row noise are removed first (:func:`_loo_residual`: each frame minus the mean
    of the others, then its row means). That residual mixes the frame's noise with ``1 / (L - 1)`` of the
    others' and with rounding to integer DN, which pulls the shape towards Gaussian. So the probability-plot
    correlation (PPCC) maximum found on the data is de-biased by simulation: the same residual is built from
    Tukey-lambda draws of the measured sigma, rounded on the same fractional offsets, its PPCC maximum found,
    and the estimate moved by the difference (twice, fixed seeds). ``ppcc`` is the probability-plot
    correlation of the data at the raw maximum: the fit quality (1 is a perfect Tukey-lambda shape).
    Per band raw maxima give the standard error.
    """
    from scipy import stats

    n, h, _ = y.shape
    r = _loo_residual(y)
    var_pix = float(r.var()) * (n - 1) / n  # r = e_i - mean(others): variance (1 + 1/(L-1)) sigma^2
    raw, quality = _ppcc(_sample(r, _PPCC_SAMPLES))
    bands = []
    for v in _views(h)[1:]:
        bands.append(_ppcc(_sample(r[:, v], _PPCC_SAMPLES // BANDS))[0])
    sigma = np.sqrt(max(var_pix - 1.0 / 12.0, 1e-6))
    frac = np.mod(y.mean(axis=0), 1.0).reshape(-1)[: 2 * _PPCC_SAMPLES // n + 1]
    rng = np.random.default_rng(np.random.SeedSequence([0x70C, seed]))
    m = frac.size

    def simulated(lam: float) -> float:
        u = np.clip(rng.uniform(size=(n, m)), 1e-12, 1 - 1e-12)
        t = np.log(u / (1 - u)) if abs(lam) < 1e-9 else (u**lam - (1 - u) ** lam) / lam
        e = np.rint(t / np.sqrt(stats.tukeylambda(lam).var()) * sigma + frac[None])
        total = e.sum(axis=0)
        return _ppcc((e - (total[None] - e) / (n - 1)).reshape(-1))[0]

    lam = raw
    for _ in range(2):
        lam = float(np.clip(lam + (raw - simulated(lam)), -0.45, 1.0))
    return {
        "lambda": lam,
        "lambda_raw": raw,
        "ppcc": quality,
        "lambda_raw_bands": bands,
        "n_samples": int(min(r.size, _PPCC_SAMPLES)),
    }

"""What a noise profile means for a photographer: SNR, dynamic range, read-noise crossover, photon transfer.

Every quantity follows from the Poisson-Gaussian model in normalised units (docs/architecture.md, "Units and conventions"):
``x = (DN - black) / (white - black)`` in [0, 1] (1 = white) and ``Var[x] = a * x + b``, so the noise at
signal ``x`` is ``sigma(x) = sqrt(a * x + b)``.

- **SNR** at signal ``x``, in dB with the amplitude convention (the one ISO 15739 and DxOMark use):
  ``SNR_dB(x) = 20 * log10(x / sigma(x)) = 10 * log10(x**2 / (a * x + b))``. Reported at 18% grey
  (``x = 0.18``, the photographic mid-tone, :data:`GREY`).
- **Read-noise-limited dynamic range** in stops: ``DR = log2(1 / sqrt(b))``, white over the read-noise
  sigma (the signal at which SNR = 1 if there were no shot noise; engineering DR, ISO 15739's upper bound).
- **Read-noise crossover**: the signal ``x_c = b / a`` at which shot-noise variance equals read-noise
  variance. Above it shot noise dominates and read noise stops mattering; it sits ``log2(a / b)`` stops below
  white.
- **Photon transfer** (Janesick, "Photon Transfer", SPIE 2007): with ``V = white - black`` in DN and ``a``
  the variance per unit of signal, one electron is ``a`` normalised units, so the conversion gain is
  ``K = 1 / (a * V)`` electrons per DN, the full well (electrons at white) is ``1 / a`` and the read noise,
  referred to the input, is ``sqrt(b) * V * K = sqrt(b) / a`` electrons. This holds only where the noise is
  Poisson in electrons: a > 0, b > 0, both finite, and no digital gain or demosaicing scaled the data
  (published darktable profiles are demosaiced, so electrons are not derived for them). The read noise
  includes everything not proportional to the signal (pre- and post-gain read noise, quantisation).
- **ISO invariance**: the lowest ISO from which raising the ISO lowers the input-referred read noise by at
  most 10% more; above it, a raw shot at that ISO and brightened later is about as clean as one shot at the
  higher ISO.

All functions take scalars or arrays and return NaN where the data do not allow the quantity.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "GREY",
    "INVARIANCE_MARGIN",
    "crossover",
    "dynamic_range_stops",
    "iso_invariant_from",
    "photon_transfer",
    "snr_db",
    "snr_db_stderr",
]

GREY = 0.18  # 18% grey, normalised signal
INVARIANCE_MARGIN = 0.10  # read noise within 10% of the best any higher ISO reaches


def _f(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float64)


@np.errstate(divide="ignore", invalid="ignore")
def snr_db(a, b, x=GREY) -> np.ndarray:
    """``20 * log10(x / sqrt(a * x + b))`` in dB; NaN where the variance is not positive or not finite.

    Parameters
    ----------
    a, b
        Shot and read terms, normalised units.
    x
        Signal level, normalised (0 = black, 1 = white); default 18% grey.
    """
    a, b, x = _f(a), _f(b), _f(x)
    var = a * x + b
    out = 10.0 * np.log10(x**2 / var)
    return np.where(np.isfinite(var) & (var > 0) & (x > 0), out, np.nan)


@np.errstate(divide="ignore", invalid="ignore")
def snr_db_stderr(a, b, a_stderr, b_stderr, x=GREY) -> np.ndarray:
    """Standard error of :func:`snr_db` from those of ``a`` and ``b`` (first order, independent errors)."""
    a, b, sa, sb, x = _f(a), _f(b), _f(a_stderr), _f(b_stderr), _f(x)
    var = a * x + b
    return 10.0 / np.log(10.0) * np.sqrt((x * sa) ** 2 + sb**2) / var


@np.errstate(divide="ignore", invalid="ignore")
def dynamic_range_stops(b) -> np.ndarray:
    """``log2(1 / sqrt(b))``: stops from the read-noise sigma up to white; NaN unless ``b > 0``."""
    b = _f(b)
    return np.where(np.isfinite(b) & (b > 0), -0.5 * np.log2(b), np.nan)


@np.errstate(divide="ignore", invalid="ignore")
def crossover(a, b) -> tuple[np.ndarray, np.ndarray]:
    """``(x_c, stops)``: signal where shot variance equals read variance (``b / a``) and ``log2(a / b)``,
    how far below white it sits. NaN unless ``a > 0`` and ``b > 0``."""
    a, b = _f(a), _f(b)
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    return np.where(ok, b / a, np.nan), np.where(ok, np.log2(a / b), np.nan)


@np.errstate(divide="ignore", invalid="ignore")
def photon_transfer(a, b, white_minus_black) -> dict[str, np.ndarray]:
    """Conversion gain, full well and read noise in electrons (module docstring), NaN where not allowed.

    Parameters
    ----------
    a, b
        Shot and read terms, normalised units.
    white_minus_black
        ``V = white - black`` in DN (NaN when unknown: then only ``full_well_e`` and ``read_noise_e``, which do
        not need it, are given).

    Returns
    -------
    dict
        ``gain_e_per_dn`` (electrons per DN), ``full_well_e`` (electrons at white), ``read_noise_e``
        (electrons, input-referred).
    """
    a, b, v = _f(a), _f(b), _f(white_minus_black)
    ok = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    return {
        "gain_e_per_dn": np.where(ok & np.isfinite(v) & (v > 0), 1.0 / (a * v), np.nan),
        "full_well_e": np.where(ok, 1.0 / a, np.nan),
        "read_noise_e": np.where(ok, np.sqrt(b) / a, np.nan),
    }


def iso_invariant_from(isos, read_noise_e, margin: float = INVARIANCE_MARGIN) -> float:
    """The lowest ISO whose input-referred read noise is within ``margin`` of the lowest read noise any ISO at
    or above it reaches; NaN with fewer than two ISOs with a read noise.

    Parameters
    ----------
    isos
        ISO of each value.
    read_noise_e
        Input-referred read noise in electrons at each ISO (:func:`photon_transfer`).
    """
    iso, r = _f(isos).ravel(), _f(read_noise_e).ravel()
    ok = np.isfinite(iso) & np.isfinite(r) & (r > 0)
    iso, r = iso[ok], r[ok]
    if iso.size < 2:
        return float("nan")
    order = np.argsort(iso)
    iso, r = iso[order], r[order]
    best_above = np.minimum.accumulate(r[::-1])[::-1]
    return float(iso[np.flatnonzero(r <= (1.0 + margin) * best_above)[0]])

"""Check a noise model against held-out tiles: does each tile's measured variance match ``a * mean + b``?

Android's CameraITS ``test_dng_noise_model`` measures the variance of one small centre patch per channel and
sensitivity. It passes when ``|measured - model| <= max(0.0012, 0.2 * model)``, and it skips patches whose
distribution crosses 0 (``mean - 3 sigma < 0``, clipped at black). rawlab's check is stricter:

- every held-out tile counts, not one patch;
- the tolerance is 10% relative with no absolute floor (0.0012 in normalised units is larger than the whole
  variance of most raw data);
- a tile's own sampling error is reported separately rather than hidden in the tolerance. A sample variance
  of ``n`` pixels has a relative standard deviation near ``sqrt(2 / (n - 1))`` (Gaussian approximation; the
  Poisson part adds a kurtosis of ``1 / count``, negligible at raw signal levels). So rawlab reports the
  share within ``max(10%, n_sigma * that)``, and also the share within 10% that a perfect model would get
  from sampling alone (``chi2(n - 1) / (n - 1)``);
- a channel passes when at least ``min_share`` of its tiles are within their sampling-aware tolerance *and*
  the median ratio measured / model is within half the relative tolerance of 1. The second condition
  catches a bias that small, noisy tiles would hide.

Tiles that clip are left out, as in ITS: those with ``mean - 3 sigma < 0`` or ``mean + 3 sigma > 1``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import chi2

from ..bayer import CHANNELS
from ..errors import RawlabError

__all__ = ["ITS_ABS_TOL", "ITS_REL_TOL", "validate_tiles"]

ITS_ABS_TOL, ITS_REL_TOL = 0.0012, 0.2  # CameraITS test_dng_noise_model thresholds (normalised variance)


def _per_channel(name: str, values: Any) -> list[np.ndarray]:
    """Four 1-D arrays (R, G1, G2, B) from a ``(4, n)`` array or a sequence of four (possibly ragged) arrays."""
    if isinstance(values, np.ndarray) and values.ndim == 2 and values.shape[0] == 4:
        return [values[c].astype(np.float64) for c in range(4)]
    if isinstance(values, Sequence) and len(values) == 4:
        return [np.ravel(np.asarray(v, dtype=np.float64)) for v in values]
    raise RawlabError(f"{name} must be 4 arrays of tiles, one per channel R, G1, G2, B (shape (4, n_tiles))")


def _num(x) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _summary(ratio, tol, expected, its_ok, n_clipped, rel_tol, min_share) -> dict[str, Any]:
    n = int(ratio.size)
    dev = np.abs(ratio - 1)
    out: dict[str, Any] = {"n_tiles": n, "n_excluded_clipped": int(n_clipped)}
    if n == 0:  # the same keys, empty, so readers need no special case
        keys = ("share_within_rel", "share_within_tol", "expected_share_within_rel", "median_ratio")
        return out | dict.fromkeys((*keys, "ratio_p05", "ratio_p95", "share_camera_its", "passed"))
    median = float(np.median(ratio))
    within_tol = float(np.mean(dev <= tol))
    out |= {
        "share_within_rel": float(np.mean(dev <= rel_tol)),
        "share_within_tol": within_tol,
        "expected_share_within_rel": float(np.mean(expected)),
        "median_ratio": median,
        "ratio_p05": float(np.percentile(ratio, 5)),
        "ratio_p95": float(np.percentile(ratio, 95)),
        "share_camera_its": float(np.mean(its_ok)),
    }
    out["passed"] = bool(within_tol >= min_share and abs(median - 1) <= rel_tol / 2)
    return out


def validate_tiles(
    a,
    b,
    tile_mean,
    tile_var,
    tile_n,
    *,
    rel_tol: float = 0.10,
    n_sigma: float = 2.0,
    min_share: float = 0.9,
    exclude_clipped: bool = True,
) -> dict[str, Any]:
    """Compare held-out tiles' measured variance with the model ``a * mean + b``, per channel and overall.

    Parameters
    ----------
    a, b
        Predicted parameters per channel R, G1, G2, B (normalised units), e.g. ``ISOLaw.predict(iso)``.
    tile_mean, tile_var, tile_n
        Per channel, each tile's mean signal (normalised), sample variance (normalised², ``ddof=1``) and pixel
        count: arrays ``(4, n_tiles)`` or four 1-D arrays.
    rel_tol
        Relative tolerance on the variance (0.10 = 10%).
    n_sigma
        The sampling-aware tolerance of a tile is ``max(rel_tol, n_sigma * sqrt(2 / (n - 1)))``.
    min_share
        Share of tiles within tolerance that a channel needs to pass.
    exclude_clipped
        Leave out tiles whose distribution reaches black or white (mean -/+ 3 sigma outside [0, 1]).

    Returns
    -------
    dict
        JSON-ready: ``criteria``, ``channels`` (one summary per channel name) and ``overall``. Each summary has
        ``n_tiles``, ``n_excluded_clipped``, ``share_within_rel``, ``share_within_tol``,
        ``expected_share_within_rel``, ``median_ratio``, ``ratio_p05``, ``ratio_p95``, ``share_camera_its``
        and ``passed``.

    Raises
    ------
    RawlabError
        If the inputs are not four channels or the arrays of a channel differ in length.
    """
    a = np.broadcast_to(np.asarray(a, dtype=np.float64), (4,))
    b = np.broadcast_to(np.asarray(b, dtype=np.float64), (4,))
    means, variances, counts = (
        _per_channel("tile_mean", tile_mean),
        _per_channel("tile_var", tile_var),
        _per_channel("tile_n", tile_n),
    )
    report: dict[str, Any] = {
        "criteria": {
            "rel_tol": rel_tol,
            "n_sigma": n_sigma,
            "min_share": min_share,
            "exclude_clipped": exclude_clipped,
            "tolerance": "max(rel_tol, n_sigma * sqrt(2 / (n - 1))) on measured / model - 1",
            "passed_if": "share_within_tol >= min_share and |median_ratio - 1| <= rel_tol / 2",
            "camera_its": f"|measured - model| <= max({ITS_ABS_TOL}, {ITS_REL_TOL} * model)",
        },
        "channels": {},
    }
    pooled: list[list[np.ndarray]] = [[], [], [], []]
    n_clipped_total = 0
    for c, name in enumerate(CHANNELS):
        m, v, n = means[c], variances[c], counts[c]
        if not (m.shape == v.shape == n.shape):
            raise RawlabError(f"channel {name}: tile_mean, tile_var and tile_n differ in length")
        pred = a[c] * m + b[c]
        ok = np.isfinite(m) & np.isfinite(v) & (n >= 2) & (pred > 0)
        sd = np.sqrt(np.where(ok, pred, 0.0))
        clipped = ok & ((m - 3 * sd < 0) | (m + 3 * sd > 1)) if exclude_clipped else np.zeros_like(ok)
        keep = ok & ~clipped
        ratio, dof = v[keep] / pred[keep], n[keep] - 1
        tol = np.maximum(rel_tol, n_sigma * np.sqrt(2.0 / dof))
        expected = chi2.cdf((1 + rel_tol) * dof, dof) - chi2.cdf((1 - rel_tol) * dof, dof)
        its_ok = np.abs(v[keep] - pred[keep]) <= np.maximum(ITS_ABS_TOL, ITS_REL_TOL * pred[keep])
        summary = _summary(ratio, tol, expected, its_ok, int(clipped.sum()), rel_tol, min_share)
        report["channels"][name] = summary | {"a": _num(a[c]), "b": _num(b[c])}
        for store, arr in zip(pooled, (ratio, tol, expected, its_ok), strict=True):
            store.append(arr)
        n_clipped_total += int(clipped.sum())
    cat = [np.concatenate(p) for p in pooled]
    report["overall"] = _summary(*cat, n_clipped_total, rel_tol, min_share)
    passed = [s["passed"] for s in report["channels"].values() if s["passed"] is not None]
    report["overall"]["all_channels_passed"] = bool(passed) and all(passed)
    return report

"""The noise law over ISO: how one sensor's Poisson-Gaussian parameters grow with ISO, per channel.

Units are normalised (docs/architecture.md: ``Var[x] = a * E[x] + b``, channels R, G1, G2, B).

- Shot term: ``a(ISO) = ga * ISO``. ISO is set by the total gain, and ``a`` is the gain in normalised units
  per electron, so ``a`` is proportional to ISO. A free power law ``a = k * ISO**p`` is fitted as a
  diagnostic (``p`` should be 1).
- Read term: ``b(ISO) = b0 + b1 * ISO**2``. ``b0`` is noise added after the gain (ADC, quantisation) and
  ``b1 * ISO**2`` is read noise from before the gain, amplified with the signal (Foi et al. 2008). A sensor
  with dual conversion gain changes its pre-gain read noise at one ISO, so ``b`` follows the law piecewise.
  The breakpoints are found by search. ``b0`` is shared across segments when the data allow, because the
  post-gain noise does not change with the conversion-gain mode.
- Alternative read law: ``log b = m * log a + c``, the relation Brooks et al. (CVPR 2019) sample read noise
  from. The law with the lower chi-square per degree of freedom is the one ``predict`` uses.

ISOs that break the law are flagged: ``|residual| > k_sigma * stderr`` *and* ``|relative residual| >
rel_margin``. Flags say what is wrong: a gain step, an ``a`` off the line by a power of two (a mislabelled
ISO), or a lone outlier. Points that break the ``a`` law are left out of the ``b`` fit, because their ISO
label is suspect.

k-sigma parameters (Wang et al., ECCV 2020, "PMRID") are in DN above black: ``Var[X] = k * E[X] + sigma2``
with ``X = DN - black``. Since ``x = X / V`` with ``V = white - black``, ``k = a * V`` and ``sigma2 = b * V**2``.
PMRID's code calls the read variance ``sigma`` and fits it as a quadratic in ISO. Its ``K_coeff`` and
``B_coeff`` (numpy ``poly1d`` order, highest power first) are reported per segment.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import nnls

from ..bayer import CHANNELS
from ..errors import RawlabError

__all__ = ["FORM", "ISOLaw", "Segment", "fit_iso_law", "fit_sensor_law", "ksigma"]

FORM = "a = ga * iso; b = b0 + b1 * iso^2 (per conversion-gain segment)"
LOGLOG_FORM = "log b = m * log a + c"
POWER_FORM = "a = k * iso^p"
KSIGMA_CONVENTION = "Var[X] = k * E[X] + sigma2 with X = DN - black (DN); k = a * (white - black), sigma2 = b * (white - black)^2"
REL_FLOOR = 1e-3  # stderr floor relative to the value: finite weights for exact inputs, relative weighting


def ksigma(a, b, white_minus_black) -> tuple[np.ndarray, np.ndarray]:
    """Convert normalised ``(a, b)`` to PMRID's ``(k, sigma2)`` in DN above black (Wang et al., ECCV 2020).

    Parameters
    ----------
    a, b
        Shot and read terms in normalised units (scalars or per-channel arrays).
    white_minus_black
        Usable range ``white - black`` in DN, scalar or per channel.

    Returns
    -------
    k, sigma2
        ``k = a * V`` (DN per electron) and ``sigma2 = b * V**2`` (DN squared), ``V = white - black``.
    """
    v = np.asarray(white_minus_black, dtype=np.float64)
    if not np.all(np.isfinite(v) & (v > 0)):
        raise RawlabError(f"white - black must be positive DN, got {v.tolist()}")
    return np.asarray(a, dtype=np.float64) * v, np.asarray(b, dtype=np.float64) * v**2


def _list(x) -> Any:
    """JSON-safe: arrays to lists, NaN to None."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 0:
        return None if not math.isfinite(arr) else float(arr)
    return [_list(v) for v in arr]


def _arr(x, n: int = 4) -> np.ndarray:
    return np.full(n, np.nan) if x is None else np.array([np.nan if v is None else v for v in x], dtype=float)


@dataclass
class Segment:
    """One conversion-gain mode: ``b = b0 + b1 * iso^2`` for ``iso_min <= iso < iso_max_exclusive``."""

    iso_min: float
    iso_max_exclusive: float | None
    b0: np.ndarray
    b1: np.ndarray
    isos: list[float] = field(default_factory=list)


@dataclass
class ISOLaw:
    """The law over ISO for one sensor (forms in the module docstring).

    ``alternatives`` holds the diagnostic fits, JSON-ready: ``power_a`` (``k``, ``p``), ``loglog_b`` (``m``,
    ``c``) and, for both read laws, ``chi2_per_dof`` and ``rms_rel``. ``b_form`` (``"two-term"`` or
    ``"loglog"``) names the read law :meth:`predict` uses.
    """

    ga: np.ndarray
    segments: list[Segment]
    ga_stderr: np.ndarray = field(default_factory=lambda: np.full(4, np.nan))
    b0_shared: bool = True
    b_form: str = "two-term"
    alternatives: dict = field(default_factory=dict)
    flags: list[dict] = field(default_factory=list)
    residuals: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    white_minus_black: np.ndarray | None = None  # DN per channel, for the k-sigma parameters
    data: dict | None = field(default=None, repr=False)  # the measured inputs, when fitted here

    def predict(self, iso) -> tuple[np.ndarray, np.ndarray]:
        """``(a, b)`` per channel at ``iso``: shape ``(4,)`` for a scalar, ``(n, 4)`` for ``n`` ISOs.

        Within a segment this is the fitted law, so it interpolates between profiled ISOs; beyond the
        profiled range it extrapolates the first or last segment's law.
        """
        iso = np.asarray(iso, dtype=np.float64)
        x = np.atleast_1d(iso)[:, None]
        a = self.ga[None, :] * x
        if self.b_form == "loglog":
            ll = self.alternatives["loglog_b"]
            b = np.exp(_arr(ll["c"])) * a ** _arr(ll["m"])
        else:
            starts = [s.iso_min for s in self.segments]
            idx = np.clip(np.searchsorted(starts, x[:, 0], side="right") - 1, 0, len(starts) - 1)
            b = (
                np.stack([s.b0 for s in self.segments])[idx]
                + np.stack([s.b1 for s in self.segments])[idx] * x**2
            )
        return (a[0], b[0]) if iso.ndim == 0 else (a, b)

    def ksigma_table(self) -> dict[str, Any] | None:
        """PMRID's ``k`` and ``sigma2`` (DN) at every profiled ISO, and its polynomial coefficients per segment."""
        if self.white_minus_black is None:
            return None
        v = self.white_minus_black
        out: dict[str, Any] = {"convention": KSIGMA_CONVENTION, "white_minus_black": _list(v), "per_iso": []}
        isos = (
            self.data["iso"] if self.data is not None else sorted({i for s in self.segments for i in s.isos})
        )
        for i, iso in enumerate(isos):
            k, s2 = ksigma(*self.predict(iso), v)
            row = {"iso": float(iso), "k": _list(k), "sigma2": _list(s2)}
            if self.data is not None:  # also from the measured (a, b) at this ISO
                k, s2 = ksigma(self.data["a"][i], self.data["b"][i], v)
                row |= {"k_measured": _list(k), "sigma2_measured": _list(s2)}
            out["per_iso"].append(row)
        zero = np.zeros(4)
        out["pmrid"] = [
            {"iso_min": s.iso_min, "iso_max_exclusive": s.iso_max_exclusive}
            | {"K_coeff": _list(np.stack([self.ga * v, zero], 1))}
            | {"B_coeff": _list(np.stack([s.b1 * v**2, zero, s.b0 * v**2], 1))}
            for s in self.segments
        ]
        return out

    def to_dict(self) -> dict[str, Any]:
        """The ``iso_model`` field of the rawlab noise-profile JSON (NaN written as null)."""
        d = {"form": FORM, "b_form": self.b_form, "channels": list(CHANNELS), "ga": _list(self.ga)}
        d |= {"ga_stderr": _list(self.ga_stderr), "b0_shared": self.b0_shared}
        d["segments"] = [
            {
                "iso_min": s.iso_min,
                "iso_max_exclusive": s.iso_max_exclusive,
                "b0": _list(s.b0),
                "b1": _list(s.b1),
            }
            | {"isos": list(s.isos)}
            for s in self.segments
        ]
        d |= {"alternatives": self.alternatives, "flags": self.flags, "residuals": self.residuals}
        d["fit_settings"] = self.settings
        table = self.ksigma_table()
        return d if table is None else d | {"ksigma": table}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ISOLaw:
        """Read an ``iso_model`` written by :meth:`to_dict` or by ``VirtualSensor.iso_model()``."""
        if not str(d.get("form", "")).startswith(FORM[:33]):
            raise RawlabError(f"unknown ISO-law form {d.get('form')!r}; rawlab reads {FORM!r}")
        try:
            segments = [
                Segment(
                    s["iso_min"], s.get("iso_max_exclusive"), _arr(s["b0"]), _arr(s["b1"]), s.get("isos", [])
                )
                for s in d["segments"]
            ]
            ks = d.get("ksigma")
            return cls(
                _arr(d["ga"]),
                segments,
                ga_stderr=_arr(d.get("ga_stderr")),
                b0_shared=bool(d.get("b0_shared", True)),
                b_form=d.get("b_form", "two-term"),
                alternatives=dict(d.get("alternatives", {})),
                flags=list(d.get("flags", [])),
                residuals=list(d.get("residuals", [])),
                settings=dict(d.get("fit_settings", {})),
                white_minus_black=_arr(ks["white_minus_black"]) if ks else None,
            )
        except (KeyError, TypeError) as e:
            raise RawlabError(
                f"malformed ISO-law entry (missing or bad {e}); expected the fields of {FORM!r}"
            ) from None


# --------------------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------------------


def _stderr(values: np.ndarray, se: np.ndarray) -> np.ndarray:
    """Effective standard errors: the given ones plus a small relative floor (see REL_FLOOR)."""
    se = np.where(np.isfinite(se), np.abs(se), 0.0)
    scale = np.array([[_median(np.abs(col)) for col in values.T]])
    mag = np.maximum(np.abs(values), 1e-3 * np.where(np.isfinite(scale), scale, 0.0))
    return np.sqrt(se**2 + (REL_FLOOR * mag) ** 2)


def _fit_a(iso, a, se, k_sigma, margin):
    """Per channel ``a = ga * iso``: robust start (median ratio), then WLS on the points that keep the law."""
    n, nc = a.shape
    ga, ga_se, power = np.full(nc, np.nan), np.full(nc, np.nan), np.full((2, nc), np.nan)
    used = np.zeros((n, nc), bool)
    ok = np.isfinite(a) & (a > 0) & (se > 0)
    for c in range(nc):
        o = ok[:, c]
        if not o.any():
            continue
        g, u = float(np.median(a[o, c] / iso[o])), None
        for _ in range(10):
            z = (a[:, c] - g * iso) / se[:, c]
            rel = a[:, c] / (g * iso) - 1
            new = o & ~((np.abs(z) > k_sigma) & (np.abs(rel) > margin))
            if not new.any() or (u is not None and (new == u).all()):
                break
            u = new
            w = 1 / se[u, c] ** 2
            g = float(np.sum(w * a[u, c] * iso[u]) / np.sum(w * iso[u] ** 2))
        u = o if u is None else u
        used[:, c] = u
        w = 1 / se[u, c] ** 2
        chi2 = float(np.sum(((a[u, c] - g * iso[u]) / se[u, c]) ** 2))
        ga[c] = g
        ga_se[c] = math.sqrt(1 / np.sum(w * iso[u] ** 2)) * max(1.0, math.sqrt(chi2 / max(u.sum() - 1, 1)))
        if u.sum() >= 2:  # free exponent, log-log WLS: the diagnostic of proportionality
            p, logk = np.polyfit(np.log(iso[u]), np.log(a[u, c]), 1, w=a[u, c] / se[u, c])
            power[:, c] = math.exp(logk), p
    return ga, ga_se, used, (power[0], power[1])


@dataclass
class _BFit:
    starts: tuple[float, ...]  # first ISO of each segment after the first
    shared: bool  # one b0 for all segments
    dropped: frozenset[int]  # ISO rows left out
    b0: np.ndarray  # (n_seg, 4)
    b1: np.ndarray
    z: np.ndarray  # (n, 4) residual / stderr
    rel: np.ndarray  # (n, 4) measured / law - 1
    breaks: np.ndarray  # (n, 4) bool
    chi2: float
    n_params: int


@np.errstate(divide="ignore", invalid="ignore")
def _fit_b(iso, b, se, usable, starts, shared, dropped, k_sigma, margin) -> _BFit:
    """Weighted non-negative least squares of ``b = b0 + b1 * iso^2`` with segments starting at ``starts``."""
    n, nc = b.shape
    seg = np.searchsorted(np.asarray(starts, float), iso, side="right")
    n_seg = len(starts) + 1
    onehot = (seg[:, None] == np.arange(n_seg)[None, :]).astype(float)
    design = np.hstack([np.ones((n, 1)) if shared else onehot, onehot * iso[:, None] ** 2])
    use = usable.copy()
    use[list(dropped), :] = False
    b0, b1 = np.full((n_seg, nc), np.nan), np.full((n_seg, nc), np.nan)
    for c in range(nc):
        u = use[:, c]
        if u.sum() < 2:
            continue
        aw = design[u] / se[u, c][:, None]
        norm = np.linalg.norm(aw, axis=0)
        live = norm > 0
        coef = np.zeros(design.shape[1])
        coef[live] = nnls(aw[:, live] / norm[live], b[u, c] / se[u, c])[0] / norm[live]
        b0[:, c] = coef[0] if shared else coef[:n_seg]
        b1[:, c] = coef[-n_seg:]
    pred = b0[np.minimum(seg, n_seg - 1)] + b1[np.minimum(seg, n_seg - 1)] * iso[:, None] ** 2
    z = (b - pred) / se
    rel = np.where(pred > 0, b / pred - 1, np.nan)
    breaks = use & (np.abs(z) > k_sigma) & (np.abs(rel) > margin)
    chi2 = float(np.nansum(np.where(use, z, 0.0) ** 2))
    n_params = nc * ((1 if shared else n_seg) + n_seg)
    return _BFit(tuple(starts), shared, frozenset(dropped), b0, b1, z, rel, breaks, chi2, n_params)


def _search_b(iso, b, se, usable, k_sigma, margin, max_breaks) -> _BFit:
    """Pick the simplest law that explains every point: one segment; one segment minus a lone outlier;
    then piecewise segments (each with at least two profiled ISOs); else the best fit with the worst
    ISOs removed one by one (at most a quarter of them)."""
    fit = lambda starts, shared=True, drop=frozenset(): _fit_b(  # noqa: E731
        iso, b, se, usable, starts, shared, drop, k_sigma, margin
    )
    single = fit(())
    if not single.breaks.any():
        return single
    rows = np.flatnonzero(usable.any(axis=1))
    drop1 = [fit((), True, frozenset({j})) for j in np.flatnonzero(single.breaks.any(axis=1))]
    drop1 = [f for f in drop1 if not f.breaks.any()]
    if drop1:
        return min(drop1, key=lambda f: f.chi2)
    levels = np.unique(iso[rows])
    candidates = [single]
    for nb in range(1, max_breaks + 1):
        for starts in itertools.combinations(levels[1:], nb):
            edges = np.concatenate([[-np.inf], starts, [np.inf]])
            counts = np.histogram(levels, edges)[0] if len(edges) > 2 else [len(levels)]
            if min(counts) < 2:
                continue
            candidates += [fit(starts, True), fit(starts, False)]
    clean = [f for f in candidates if not f.breaks.any()]
    if clean:
        return min(clean, key=lambda f: (len(f.starts), f.n_params, f.chi2))
    best = min(candidates, key=lambda f: (int(f.breaks.any(axis=1).sum()), len(f.starts), f.chi2))
    for _ in range(max(1, len(rows) // 4)):
        if not best.breaks.any():
            break
        worst = int(np.nanargmax(np.where(best.breaks, np.abs(best.z), 0).sum(axis=1)))
        best = fit(best.starts, best.shared, best.dropped | {worst})
    return best


def _select_b(a, b, se, use, bf: _BFit):
    """Fit ``log b = m log a + c`` per channel (Brooks et al. 2019; weights from relative stderr) and pick the
    read law with the lower chi-square per degree of freedom (the two-term law wins ties)."""
    m, c = np.full(4, np.nan), np.full(4, np.nan)
    for ch in range(a.shape[1]):
        u = use[:, ch] & (b[:, ch] > 0) & (a[:, ch] > 0)
        if u.sum() >= 2:
            m[ch], c[ch] = np.polyfit(np.log(a[u, ch]), np.log(b[u, ch]), 1, w=b[u, ch] / se[u, ch])
    pred = np.exp(c) * np.where(a > 0, a, np.nan) ** m
    npts = int(use.sum())
    chi2_ll = float(np.nansum(np.where(use, (b - pred) / se, 0.0) ** 2))
    tt = {"chi2_per_dof": bf.chi2 / max(npts - bf.n_params, 1), "rms_rel": _rms(bf.rel[use])}
    ll = {"form": LOGLOG_FORM, "m": _list(m), "c": _list(c), "chi2_per_dof": chi2_ll / max(npts - 8, 1)}
    ll["rms_rel"] = _rms((b / pred - 1)[use])
    form = "loglog" if ll["chi2_per_dof"] < tt["chi2_per_dof"] and np.isfinite(m).all() else "two-term"
    return form, {"two_term_b": tt, "loglog_b": ll, "selected_b": form}


@np.errstate(divide="ignore", invalid="ignore")
def fit_iso_law(
    isos,
    a,
    b,
    a_stderr=None,
    b_stderr=None,
    *,
    white_minus_black=None,
    k_sigma: float = 3.0,
    rel_margin: float = 0.1,
    max_breaks: int = 1,
) -> ISOLaw:
    """Fit the law over ISO to per-ISO fits of one sensor.

    Parameters
    ----------
    isos
        ISO of each profile, length ``n``.
    a, b, a_stderr, b_stderr
        ``(n, 4)`` per channel R, G1, G2, B, normalised units; NaN where an ISO/channel was not fitted.
        Missing stderr are treated as 0 (then only the relative floor weights the points).
    white_minus_black
        ``white - black`` in DN (scalar or per channel); when given, k-sigma parameters are reported.
    k_sigma, rel_margin
        A point breaks the law when ``|residual| > k_sigma * stderr`` and ``|relative residual| > rel_margin``.
    max_breaks
        Most gain steps to look for in ``b`` (segments = breaks + 1).

    Raises
    ------
    RawlabError
        With fewer than two profiled ISOs, or arrays of the wrong shape.
    """
    iso = np.ravel(np.asarray(isos, dtype=np.float64))
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != (len(iso), 4) or b.shape != a.shape:
        raise RawlabError(
            f"a and b need shape ({len(iso)}, 4): one row per ISO, R G1 G2 B; got {a.shape}, {b.shape}"
        )
    if len(iso) < 2 or not np.all(np.isfinite(iso) & (iso > 0)):
        raise RawlabError(f"an ISO law needs at least two positive ISOs, got {iso.tolist()}")
    order = np.argsort(iso, kind="stable")
    iso, a, b = iso[order], a[order], b[order]
    zeros = np.zeros_like(a)
    sa = _stderr(a, zeros if a_stderr is None else np.asarray(a_stderr, float).reshape(a.shape)[order])
    sb = _stderr(b, zeros if b_stderr is None else np.asarray(b_stderr, float).reshape(b.shape)[order])

    ga, ga_se, a_used, power = _fit_a(iso, a, sa, k_sigma, rel_margin)
    a_pred = ga[None, :] * iso[:, None]
    a_rel, a_z = a / a_pred - 1, (a - a_pred) / sa
    a_breaks = np.isfinite(a) & ~a_used & (a > 0)
    usable = np.isfinite(b) & ~a_breaks & (sb > 0)
    bf = _search_b(iso, b, sb, usable, k_sigma, rel_margin, max_breaks)

    edges = [0, *(_iso(v) for v in bf.starts), None]
    segments = [
        Segment(lo, hi, bf.b0[i], bf.b1[i], [_iso(v) for v in iso if lo <= v < (hi or np.inf)])
        for i, (lo, hi) in enumerate(itertools.pairwise(edges))
    ]
    b_use = usable.copy()
    b_use[list(bf.dropped), :] = False
    law = ISOLaw(ga, segments, ga_stderr=ga_se, b0_shared=bf.shared)
    law.b_form, law.alternatives = _select_b(a, b, sb, b_use, bf)
    law.alternatives["power_a"] = {"form": POWER_FORM, "k": _list(power[0]), "p": _list(power[1])}
    law.settings = {"k_sigma": k_sigma, "rel_margin": rel_margin, "max_breaks": max_breaks}
    if white_minus_black is not None:
        law.white_minus_black = np.broadcast_to(np.asarray(white_minus_black, float), (4,)).copy()
    law.data = {"iso": iso, "a": a, "b": b, "a_stderr": sa, "b_stderr": sb, "a_used": a_used, "b_used": b_use}
    law.flags = _flags(law, a, b, a_rel, a_breaks, bf, rel_margin)
    law.residuals = [
        {"iso": _iso(v), "a_rel": _list(a_rel[i]), "a_z": _list(a_z[i]), "b_rel": _list(bf.rel[i])}
        | {"b_z": _list(bf.z[i]), "used": {"a": a_used[i].tolist(), "b": b_use[i].tolist()}}
        for i, v in enumerate(iso)
    ]
    return law


def _iso(v) -> float | int:
    return int(v) if float(v).is_integer() else float(v)


def _finite(x) -> np.ndarray:
    x = np.asarray(x, float).ravel()
    return x[np.isfinite(x)]


def _median(x) -> float:
    return float(np.median(_finite(x))) if _finite(x).size else math.nan


def _maxabs(x) -> float:
    return float(np.abs(_finite(x)).max()) if _finite(x).size else math.inf


def _rms(x) -> float | None:
    return float(np.sqrt(np.mean(_finite(x) ** 2))) if _finite(x).size else None


@np.errstate(divide="ignore", invalid="ignore")
def _flags(law: ISOLaw, a, b, a_rel, a_breaks, bf: _BFit, margin: float) -> list[dict]:
    """Explain every point that breaks the law, and every gain step, in a sentence and in numbers."""
    iso, flags = law.data["iso"], []
    for i in np.flatnonzero(a_breaks.any(axis=1)):
        ch, ratio = np.flatnonzero(a_breaks[i]), a_rel[i] + 1
        f = {
            "iso": _iso(iso[i]),
            "kind": "a_off_law",
            "channels": [CHANNELS[c] for c in ch],
            "ratio": _list(ratio),
        }
        stops = np.log2(ratio[ch])
        whole = np.round(stops)
        if np.all(np.abs(stops - whole) < 0.15) and np.all(whole == whole[0]) and whole[0] != 0:
            # a off by a power of two while the ISO ladder is otherwise consistent: a mislabelled ISO
            implied = _iso(iso[i] * 2.0 ** whole[0])
            fits = {"labelled": iso[i], "implied": implied}
            follows = next(
                (k for k, v in fits.items() if _maxabs(b[i] / law.predict(v)[1] - 1) <= margin), "neither"
            )
            f |= {"kind": "iso_mislabel_suspected", "implied_iso": implied, "b_follows": follows}
            f["message"] = (
                f"a at ISO {iso[i]:g} is {2.0 ** whole[0]:g}x the law, as if shot at ISO {implied:g}; "
                f"b follows the {follows} ISO; left out of the b fit"
            )
        else:
            ratios = ", ".join(f"{CHANNELS[c]} {ratio[c]:.3g}x" for c in ch)
            f["message"] = (
                f"a at ISO {iso[i]:g} is off the proportional law ({ratios}); left out of both fits"
            )
        flags.append(f)
    for i in sorted(set(np.flatnonzero(bf.breaks.any(axis=1))) | set(bf.dropped)):
        ratio, out = bf.rel[i] + 1, i in bf.dropped
        note = "; left out of the fit" if out else ""
        flags.append(
            {"iso": _iso(iso[i]), "kind": "b_off_law", "ratio": _list(ratio), "excluded": out}
            | {"message": f"b at ISO {iso[i]:g} is {_median(ratio):.3g}x the law{note}"}
        )
    for prev, seg in itertools.pairwise(law.segments):
        lower = _iso(max(v for v in iso if v < seg.iso_min))
        r1 = seg.b1 / prev.b1
        flags.append(
            {"iso": seg.iso_min, "kind": "gain_step", "between": [lower, seg.iso_min], "b1_ratio": _list(r1)}
            | ({} if law.b0_shared else {"b0_ratio": _list(seg.b0 / prev.b0)})
            | {
                "message": f"read-noise law changes between ISO {lower:g} and {seg.iso_min:g} (dual conversion "
                f"gain or a gain-mode switch): pre-gain read term x{_median(r1):.3g}"
            }
        )
    return flags


def fit_sensor_law(sensor_profile, **kwargs) -> ISOLaw:
    """:func:`fit_iso_law` on a :class:`~rawlab.noise.profile.SensorProfile`.

    ``white_minus_black`` defaults to the profile's ``white_minus_black`` field, else to ``white_level -
    black_level`` from its fields (``noise-fit`` writes the first, ``synth``'s truth the others).
    """
    ps = sorted(sensor_profile.profiles, key=lambda p: p.iso)
    extra = sensor_profile.extra
    if "white_minus_black" not in kwargs and "white_minus_black" in extra:
        kwargs["white_minus_black"] = extra["white_minus_black"]
    elif "white_minus_black" not in kwargs and "white_level" in extra and "black_level" in extra:
        kwargs["white_minus_black"] = float(extra["white_level"]) - np.asarray(extra["black_level"], float)
    cols = ([getattr(p, k) for p in ps] for k in ("a", "b", "a_stderr", "b_stderr"))
    return fit_iso_law([p.iso for p in ps], *cols, **kwargs)

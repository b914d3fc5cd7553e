"""Joint fit of the Poisson-Gaussian noise model from paired moments, with noisy references and clipping.

Model (docs/architecture.md): ``Var[x] = a * E[x] + b`` per channel, normalised units. For a noisy frame at ISO ``i`` and
its reference at ISO ``j`` (``K`` frames averaged, exposure ratio ``g``: ``g * ref`` matches the noisy frame),
the residual ``r = y - g * c`` has, away from the clipping bounds,
``Var[r | x] = (a_i + g a_j / K) x + b_i + g^2 b_j / K``: linear in the unknowns. All ISOs of a sensor are
solved jointly by weighted least squares over all bins of all frames: "self-pairs" (noisy frame at the
reference's own ISO, e.g. the second base-ISO frame of a scene) identify ``a_j, b_j``, the other pairs then
give ``a_i, b_i``. Weights are the inverse variance of a sample variance, ``2 v^2 / (n - 1)``, with ``v``
from the model (iterated). A reference ISO without self-pairs cannot be measured: ``ref_assumption``
``"iso-scaled"`` (default) takes the nearest fitted ISO ``n`` scaled by ``iso_j / iso_n`` for both ``a_j``
and ``b_j`` (exact for the shot term; for ``b`` between the pre- and post-gain read-noise limits),
``"noise-free"`` ignores the reference's noise (biases ``a, b`` up by ``g a_j / K``, ``g^2 b_j / K``); the ISOs
concerned are flagged either way.

Clipping (Foi et al. 2008, "Practical Poissonian-Gaussian noise modeling and fitting for single-image
raw-data"): near 0 DN (sensors that clip black in-camera) and near white the noisy frame is censored, and the
reference, whose clipped pixels were dropped, is truncated. With the Poisson-Gaussian approximated by a
normal of mean ``x`` and variance ``a x + b``, quantised to DN (:func:`clipped_normal`), a bin's statistics
are ``E[g c] = g E_kept(x / g)`` and ``Var[r] = Var_clipped(y | x) + g^2 Var_kept(c | x)``. The fit solves the
linear model on bins more than 4 observed sigmas inside both bounds, then (``clipping="model"``) refines with
this model on all usable bins (Levenberg-Marquardt), each bin's ``x`` found by inverting ``E[g c]``. Near the
bounds it uses the flat-block statistics of :func:`rawlab.noise.moments.pair_moments` and drops bins whose
signal spread is not small against the noise: the model is evaluated at the bin's mean signal, which is only
right for homogeneous bins. ``"exclude"`` stops at the linear fit; ``"ignore"`` fits ``a x + b`` naively to all
bins (biased where clipping acts; for comparison).

Standard errors: a bootstrap over frames (resampled with replacement within each ISO) linearised at the
solution (one Gauss-Newton step per replicate: exact for the linear model, and cheap), and the analytic WLS
covariance scaled by the reduced chi-square when above 1; the larger is reported. With fewer than 3 frames at
an ISO the bootstrap has nothing to resample: the analytic error then carries it (and it is flagged).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

from ..bayer import CHANNELS
from ..errors import RawlabError
from .moments import N_STATS
from .profile import ISOProfile

__all__ = ["FrameMoments", "ISOFit", "clipped_normal", "fit_pairs"]

_FAR = 4.0  # the linear stage uses bins whose mean is this many observed sigmas inside both bounds
_NEAR = 6.0  # the clipped model is evaluated on bins within this many observed sigmas of a bound
_MIN_INSIDE = 0.25  # bins where less than this fraction of the noisy values is unclipped are not fitted
_ROBUST_SCALE = 2.0  # residuals (in sd) above the model beyond which a bin loses weight (robust fits)
_NO_STEP = (
    "dn_step not given: quantisation at the clipping bounds is not modelled (b may be biased where the noise at "
    "a bound is a few DN); pass dn_step = 1 / (white - black)"
)
_HOMOGENEOUS = 0.25  # near a bound, a bin's signal variance must be below this fraction of the noise variance


def clipped_normal(mu, sigma, lo, hi, step=0.0, kept: bool = True):
    """Moments of a quantised normal observation clipped to ``[lo, hi]`` (Foi et al. 2008, with quantisation).

    The observation is ``clip(step * round(Z / step), lo, hi)``, ``Z ~ N(mu, sigma^2 - step^2 / 12)``: its
    variance away from the bounds is ``sigma^2`` (quantisation included, as it is in ``b``), ``lo`` and ``hi``
    lie on the lattice (0 DN, white). ``step = 0`` is the continuous limit. Lattice sums are replaced by their
    Euler-Maclaurin (midpoint) form, within 1 % of the exact sums for ``sigma >= 1`` step.

    Returns ``(mean, var, inside)`` of the clipped (censored) observation, ``inside`` the probability that it
    is not clipped; and ``(mean_kept, var_kept, p_kept)`` conditioned on not being at a bound (truncated: a
    reference once its clipped pixels are dropped), or ``None`` when ``kept`` is false.
    """
    step = np.asarray(step, dtype=np.float64)
    sz = np.maximum(np.sqrt(np.maximum(sigma * sigma - step * step / 12.0, 0.25 * sigma * sigma)), 1e-300)
    a = np.clip((lo - mu) / sz, -40.0, 40.0)
    b = np.clip((hi - mu) / sz, -40.0, 40.0)
    pa, qb = ndtr(a), ndtr(-b)
    fa, fb = np.exp(-0.5 * a * a) / math.sqrt(2 * math.pi), np.exp(-0.5 * b * b) / math.sqrt(2 * math.pi)
    inside = np.clip(1.0 - pa - qb, 0.0, 1.0)
    m = a * pa + b * qb + fa - fb
    mean_c = sz * m  # continuous censored moments, about mu
    var_c = sz * sz * np.maximum(a * a * pa + b * b * qb + inside + a * fa - b * fb - m * m, 0.0)
    # Midpoint-rule corrections of the lattice sums at each bound, and the interior quantisation variance.
    el, eu = step * step / 24.0 * fa / sz, step * step / 24.0 * fb / sz
    mean = mean_c - el + eu
    var = var_c + step * step / 12.0 * inside + 2.0 * (mean_c - (lo - mu)) * el - el * el
    var = np.maximum(var + 2.0 * ((hi - mu) - mean_c) * eu - eu * eu, 0.0)
    if not kept:
        return (mu + mean, var, inside), None
    # Kept: remove the probability masses at the bounds (the lattice points lo and hi).
    p_lo, p_hi = ndtr((lo + step / 2.0 - mu) / sz), ndtr(-(hi - step / 2.0 - mu) / sz)
    p_kept = 1.0 - p_lo - p_hi
    ok = p_kept > 1e-9  # else (almost) everything is clipped: what is kept sits next to the bound
    pk = np.where(ok, p_kept, 1.0)
    m_kept = (mean - (lo - mu) * p_lo - (hi - mu) * p_hi) / pk
    var_kept = (var + mean * mean - (lo - mu) ** 2 * p_lo - (hi - mu) ** 2 * p_hi) / pk - m_kept * m_kept
    m_kept = np.where(ok, mu + m_kept, np.clip(mu, lo + step, hi - step))
    var_kept = np.where(ok, np.clip(var_kept, 1e-6 * sz * sz, sz * sz), 1e-6 * sz * sz)
    return (mu + mean, var, inside), (m_kept, var_kept, np.maximum(p_kept, 0.0))


@dataclass
class FrameMoments:
    """Moments of one noisy/reference pair (:func:`~rawlab.noise.moments.pair_moments` summed over chunks).

    ``iso``, ``ref_iso``: ISOs of the noisy frame and its reference (``ref_iso`` NaN if unknown: reference
    treated as noise-free, flagged). ``gain`` (4,): exposure ratio noisy/reference. ``n_ref``: frames averaged
    into the reference. ``lower``/``upper`` (4,): normalised clipping bounds (0 DN, white). ``dn_step`` (4,),
    optional: one DN in normalised units, ``1 / (white - black_c)``; enables the quantisation terms of the
    clipped model (they matter where the noise at a bound is a few DN, e.g. base ISO with black clipping).
    """

    iso: float
    ref_iso: float
    gain: np.ndarray
    n_ref: int
    moments: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    frame_id: str = ""
    dn_step: np.ndarray | None = None


_EXTRA = ("chi2_red", "a_stderr_bootstrap", "b_stderr_bootstrap", "a_stderr_wls", "b_stderr_wls")


@dataclass
class ISOFit:
    """Fitted ``a, b`` at one ISO, per channel R, G1, G2, B (normalised units; NaN: not measured, see flags).

    ``extra`` holds per-channel diagnostics: ``n_pixels_channel``, ``chi2_red`` and both standard errors
    behind ``a_stderr``/``b_stderr`` (``*_stderr_bootstrap``, ``*_stderr_wls``).
    """

    iso: float
    a: np.ndarray
    b: np.ndarray
    a_stderr: np.ndarray
    b_stderr: np.ndarray
    n_frames: int
    n_pixels: int
    flags: list[str] = field(default_factory=list)
    method: str = "paired"
    extra: dict = field(default_factory=dict)

    @classmethod
    def empty(cls, iso: float, n_frames: int, method: str) -> ISOFit:
        extra: dict = {k: [math.nan] * 4 for k in _EXTRA}
        extra["n_pixels_channel"] = [0] * 4
        return cls(iso, *(np.full(4, np.nan) for _ in range(4)), n_frames, 0, [], method, extra)

    def flag(self, message: str) -> None:
        if message not in self.flags:
            self.flags.append(message)

    def to_profile(self) -> ISOProfile:
        """The profile-JSON entry; flags go into its extras."""
        return ISOProfile(
            self.iso, self.a.tolist(), self.b.tolist(), self.a_stderr.tolist(), self.b_stderr.tolist(),
            n_frames=int(self.n_frames), n_pixels=int(self.n_pixels),
            extra={"flags": list(self.flags)} if self.flags else {},
        )  # fmt: skip


@dataclass
class Bins:
    """One channel's usable bins over all frames, as flat arrays, and how they map to the parameters.

    ``xm``, ``xv``: mean and variance of the abscissa (``g * ref`` for pairs, the sub-block mean for single
    images); ``v``: variance of the residual (pairs) or mean square of the noise detail (single images);
    ``pi``/``pj``: parameter index of the noisy frame's and the reference's ISO; ``tj``: factor on the
    reference's parameters (1 measured, an ISO ratio if assumed, 0 noise-free).
    """

    frame: np.ndarray
    n: np.ndarray
    xm: np.ndarray
    xv: np.ndarray
    v: np.ndarray
    g: np.ndarray
    k: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    step: np.ndarray
    pi: np.ndarray
    pj: np.ndarray
    tj: np.ndarray
    kind: str  # "pair" or "single"

    def take(self, mask) -> Bins:
        return Bins(**{k: (v[mask] if isinstance(v, np.ndarray) else v) for k, v in vars(self).items()})

    @property
    def dof(self) -> np.ndarray:
        # Pairs: variance about the bin mean (n - 1 dof); single: raw mean square of a zero-mean detail (n).
        return self.n - 1.0 if self.kind == "pair" else self.n


# -- the model of a bin ----------------------------------------------------------------------------------------


def _at(x, p, bins: Bins):
    """Model at signal ``x`` with per-bin ``p = (a_i, b_i, a_j, b_j)``: the abscissa's mean, its noise variance
    and slope in ``x``, and the residual's variance (pairs: ``y - g c``, y clipped, c kept; single images:
    the detail of clipped pixels)."""
    ai, bi, aj, bj = p
    sy = np.sqrt(np.maximum(ai * np.maximum(x, 0.0) + bi, 1e-30))
    (my, vy, inside), _ = clipped_normal(x, sy, bins.lo, bins.hi, bins.step, kept=False)
    if bins.kind == "single":
        return my, vy / 4.0, np.maximum(inside, 0.05), vy
    g = bins.g
    var_c = np.maximum((aj * np.maximum(x / g, 0.0) + bj) / bins.k, 0.0)
    _, (mc, vc, _) = clipped_normal(
        x / g, np.sqrt(var_c), bins.lo, bins.hi, np.where(bins.k == 1, bins.step, 0)
    )
    slope = np.where(var_c > 0, vc / np.maximum(var_c, 1e-300), 1.0)  # d E_kept / d mu = Var_kept / sigma^2
    return g * mc, g * g * vc, np.clip(slope, 0.05, 1.0), vy + g * g * vc


def _signal(p, bins: Bins, iterations: int = 8) -> np.ndarray:
    """The bins' signal ``x``: the model's mean of the abscissa inverted at the observed mean (Newton)."""
    x = np.clip(bins.xm, bins.lo, None)
    for _ in range(iterations):
        m, _, slope, v = _at(x, p, bins)
        dx = (m - bins.xm) / slope
        if np.all(np.abs(dx) <= 1e-4 * np.sqrt(v)):
            break
        x = np.clip(x - dx, bins.lo, bins.hi + 0.5)
    return x


def _clipped_var(p, bins: Bins) -> np.ndarray:
    """Predicted variance of bins near a bound: the clipped model at the bins' signal."""
    return _at(_signal(p, bins), p, bins)[3]


def design(bins: Bins, m: int) -> np.ndarray:
    """Design matrix of the linear (unclipped) model over ``[a_0 .. a_m-1, b_0 .. b_m-1]``."""
    x, rows = np.maximum(bins.xm, 0.0), np.arange(len(bins.n))
    d = np.zeros((len(x), 2 * m))
    np.add.at(d, (rows, bins.pi), x)
    np.add.at(d, (rows, m + bins.pi), 1.0)
    if bins.kind == "pair":
        np.add.at(d, (rows, bins.pj), bins.tj * bins.g * x / bins.k)
        np.add.at(d, (rows, m + bins.pj), bins.tj * bins.g**2 / bins.k)
    return d


def _params(theta, bins: Bins, m: int):
    return theta[bins.pi], theta[m + bins.pi], bins.tj * theta[bins.pj], bins.tj * theta[m + bins.pj]


def _predict(theta, bins: Bins, m: int, near: np.ndarray) -> np.ndarray:
    """Predicted variance of every bin: the clipped model where ``near``, the linear one elsewhere."""
    v = design(bins, m) @ theta
    if near.any():
        v[near] = _clipped_var(tuple(q[near] for q in _params(theta, bins, m)), bins.take(near))
    return v


def _jacobian(theta, bins: Bins, m: int, near: np.ndarray) -> np.ndarray:
    """d(prediction)/d(theta): analytic where linear; near a bound each bin depends on 4 parameters, so 4
    perturbed evaluations of the clipped model give all its derivatives."""
    jac = design(bins, m)
    if near.any():
        nb, p = bins.take(near), tuple(q[near] for q in _params(theta, bins, m))
        base, rows = _clipped_var(p, nb), np.arange(int(near.sum()))
        jn = np.zeros((len(rows), 2 * m))
        for k, (cols, f) in enumerate(((nb.pi, 1.0), (m + nb.pi, 1.0), (nb.pj, nb.tj), (m + nb.pj, nb.tj))):
            h = 1e-5 * np.abs(p[k]) + 1e-7 * np.mean(np.abs(p[k])) + 1e-30
            np.add.at(jn, (rows, cols), (_clipped_var((*p[:k], p[k] + h, *p[k + 1 :]), nb) - base) / h * f)
        jac[near] = jn
    return jac


# -- weighted least squares -----------------------------------------------------------------------------------


class TooLittleSignal(Exception):
    """A channel's bins cannot separate a from b; callers turn it into a flag."""


@dataclass
class ChannelFit:
    theta: np.ndarray  # [a_0 .. a_m-1, b_0 .. b_m-1]
    jac: np.ndarray  # d(weighted residual)/d(theta) at the solution, robust weights folded in
    res: np.ndarray  # weighted residuals at the solution, robust weights folded in
    bins: Bins  # the bins of the final stage
    cov: np.ndarray  # analytic covariance, scaled by the reduced chi-square when above 1
    chi2_red: float
    clipped: bool = False  # the clipped model was fitted


def _far(bins: Bins, n_sigma: float) -> np.ndarray:
    sd = n_sigma * np.sqrt(bins.v)
    return (bins.xm - bins.lo > sd) & (bins.hi - bins.xm > sd)


def _upward_weights(z: np.ndarray) -> np.ndarray:
    """IRLS weights for residuals ``z = (observed - model) / sd`` when outliers only go up (texture adds
    variance): Cauchy above the model (a bin's pull vanishes as it rises), least squares below. The fit
    follows the lower envelope of the bins, which noise-only bins define."""
    return np.where(z > 0, 1.0 / (1.0 + (np.maximum(z, 0.0) / _ROBUST_SCALE) ** 2), 1.0)


def solve_channel(lin: Bins, nonlin: Bins, m: int, clipping: str, robust: bool = False) -> ChannelFit:
    """Fit ``2 m`` parameters to one channel: linear WLS on ``lin``, then (``clipping="model"``) the clipped
    model on ``nonlin``. ``robust``: down-weight bins above the model (:func:`_upward_weights`)."""
    lin = lin.take((lin.dof > 0) & (_far(lin, _FAR) if clipping != "ignore" else True))
    if len(lin.n) < 2 * m or len(np.unique(lin.pi)) < m:
        raise TooLittleSignal("no bins far enough from the clipping bounds")
    d, v, rw = design(lin, m), lin.v.copy(), np.ones(len(lin.n))
    theta = np.zeros(2 * m)
    for it in range(4):  # iteratively reweighted: weights from the model's variance, not the noisy estimate
        sd = np.maximum(v, 1e-30) * np.sqrt(2.0 / lin.dof)
        if robust and it > 0:
            rw = _upward_weights((lin.v - d @ theta) / sd)
        dw = d * (rw / sd**2)[:, None]
        theta = np.linalg.lstsq(dw.T @ d, dw.T @ lin.v, rcond=None)[0]  # normal equations: 2 m unknowns
        v = np.maximum(d @ theta, 0.1 * lin.v)
    bins, jac, res = lin, -d / sd[:, None], (lin.v - d @ theta) / sd
    if clipping == "model":
        bins, theta, jac, res, rw = _refine(nonlin, m, theta, robust)
    jac, res = jac * np.sqrt(rw)[:, None], res * np.sqrt(rw)  # jac.T @ jac: the IRLS normal matrix
    chi2_red = float(np.sum(res**2) / max(np.sum(rw) - 2 * m, 1.0))
    cov = np.linalg.pinv(jac.T @ jac) * max(chi2_red, 1.0)
    return ChannelFit(theta, jac, res, bins, cov, chi2_red, clipping == "model")


def _refine(bins: Bins, m: int, theta: np.ndarray, robust: bool):
    """Levenberg-Marquardt on the clipped model from the linear solution; weights updated once."""
    p = _params(theta, bins, m)
    x = _signal(p, bins)
    sy = np.sqrt(np.maximum(p[0] * np.maximum(x, 0) + p[1], 1e-30))
    (_, _, inside), _ = clipped_normal(x, sy, bins.lo, bins.hi, kept=False)
    # Homogeneous bins only near a bound: signal variance (abscissa variance beyond its own noise) small
    # against the noise variance, since the model is evaluated at the bin's mean signal.
    spread = bins.xv - _at(x, p, bins)[1]
    keep = _far(bins, _NEAR) | (spread <= _HOMOGENEOUS * (p[0] * np.maximum(x, 0.0) + p[1]))
    bins = bins.take((inside >= _MIN_INSIDE) & (bins.dof > 0) & keep)
    if len(bins.n) < 2 * m:
        raise TooLittleSignal("too few usable bins for the clipped model")
    near = ~_far(bins, _NEAR)
    scale = np.abs(theta)
    for part in (slice(0, m), slice(m, 2 * m)):
        scale[part] = np.maximum(scale[part], 1e-3 * scale[part].max() + 1e-30)
    q = np.maximum(theta / scale, 1e-6)
    for _ in range(2):
        sd = np.maximum(_predict(q * scale, bins, m, near), 1e-30) * np.sqrt(2.0 / bins.dof)
        q, jac, res, rw = _levenberg_marquardt(
            lambda q, sd=sd: (_predict(q * scale, bins, m, near) - bins.v) / sd,
            lambda q, sd=sd: _jacobian(q * scale, bins, m, near) * scale / sd[:, None],
            q,
            robust,
        )
    return bins, q * scale, jac / scale, res, rw


def _levenberg_marquardt(fun, jac, p, robust: bool, max_iter: int = 50):
    """Minimise the squared residuals ``fun(p)`` (``robust``: Cauchy above the model) over ``p >= 0``.

    Plain Levenberg-Marquardt on the normal equations: with a few dozen parameters it is several times faster
    than ``scipy.optimize.least_squares`` (whose bounded solver takes an SVD of the whole Jacobian per step).
    Returns the solution, Jacobian, residuals and final robust weights.
    """

    def cost(f):
        up = np.minimum(f, 0.0) if robust else 0.0 * f  # f = (model - observed) / sd < 0: bin above the model
        return float(np.sum(_ROBUST_SCALE**2 / 2 * np.log1p((up / _ROBUST_SCALE) ** 2) + (f - up) ** 2 / 2))

    f, j, lam = fun(p), jac(p), 1e-3
    c = cost(f)
    for _ in range(max_iter):
        w = _upward_weights(-f) if robust else np.ones_like(f)
        h, g = (j * w[:, None]).T @ j, (j * w[:, None]).T @ f
        while lam < 1e10:
            q = np.maximum(p + np.linalg.solve(h + lam * np.diag(np.maximum(np.diag(h), 1e-30)), -g), 0.0)
            fq = fun(q)
            cq = cost(fq)
            if np.isfinite(cq) and cq <= c:
                break
            lam *= 10.0
        else:
            break
        done = np.all(np.abs(q - p) <= 1e-6 * (1.0 + np.abs(p))) or c - cq <= 1e-9 * c
        p, f, c, lam, j = q, fq, cq, max(lam / 10.0, 1e-9), jac(q)
        if done:
            break
    return p, j, f, (_upward_weights(-f) if robust else np.ones_like(f))


def bootstrap_stderr(fit: ChannelFit, groups: list[np.ndarray], n_frames: int, reps: int, rng) -> np.ndarray:
    """Spread of one-step (linearised) refits with frames resampled with replacement within each group."""
    if reps <= 1:
        return np.zeros_like(fit.theta)
    mult = np.zeros((reps, n_frames))
    for grp in groups:
        np.add.at(mult, (np.arange(reps)[:, None], grp[rng.integers(0, len(grp), (reps, len(grp)))]), 1.0)
    w = mult[:, fit.bins.frame]
    h = np.einsum("rn,ni,nj->rij", w, fit.jac, fit.jac, optimize=True)
    g = np.einsum("rn,ni,n->ri", w, fit.jac, fit.res, optimize=True)
    try:
        steps = np.linalg.solve(h, g[..., None])[..., 0]
    except np.linalg.LinAlgError:
        steps = np.einsum("rij,rj->ri", np.linalg.pinv(h), g)
    return steps.std(axis=0, ddof=1)


def store_channel(res: ISOFit, c: int, fit: ChannelFit, p: int, m: int, se_boot, se_wls, max_rel: float):
    """Put parameter set ``p`` of a channel fit into ``res``; a parameter not determined stays NaN, flagged.

    Determined means a relative analytic error below ``max_rel`` (the bootstrap error also measures how unlike
    the frames are, e.g. one chart among photographs, so it does not decide).
    """
    se = np.maximum(se_boot, se_wls)
    a, b, sa, sb = fit.theta[p], fit.theta[m + p], se[p], se[m + p]
    res.extra["n_pixels_channel"][c] = int(fit.bins.n[fit.bins.pi == p].sum())
    res.extra["chi2_red"][c] = fit.chi2_red
    for name, arr in (("bootstrap", se_boot), ("wls", se_wls)):
        res.extra[f"a_stderr_{name}"][c], res.extra[f"b_stderr_{name}"][c] = float(arr[p]), float(arr[m + p])
    ok_a = bool(np.isfinite(a) and a > 0 and se_wls[p] <= max_rel * a)
    ok_b = bool(np.isfinite(b) and b > 0 and se_wls[m + p] <= max_rel * b)
    if not (ok_a and ok_b):
        what = "b" if ok_a else ("a" if ok_b else "a from b")
        res.flag(
            f"signal range too narrow to determine {what} in channel {CHANNELS[c]} (a = {a:.3g} +- {sa:.2g}, "
            f"b = {b:.3g} +- {sb:.2g}): {what.replace(' from ', ' and ')} not reported"
        )
    if fit.clipped and np.any(~_far(fit.bins, _NEAR) & (fit.bins.step == 0) & (fit.bins.pi == p)):
        res.flag(_NO_STEP)
    if ok_a:
        res.a[c], res.a_stderr[c] = a, sa
    if ok_b:
        res.b[c], res.b_stderr[c] = b, sb


# -- paired fit -----------------------------------------------------------------------------------------------


def _stats(st: np.ndarray, off: int):
    """Count, abscissa mean and variance, residual variance from the 5 sums starting at column ``off``."""
    n = st[:, off]
    nn = np.maximum(n, 2.0)
    xm, rm = st[:, off + 1] / nn, st[:, off + 3] / nn
    xv = np.maximum(st[:, off + 2] / nn - xm**2, 0.0) * nn / (nn - 1)
    return n, xm, xv, np.maximum(st[:, off + 4] / nn - rm**2, 0.0) * nn / (nn - 1)


def _pair_bins(frames, c: int, use, pi, pj, tj, flat_near: bool, min_count: int) -> Bins:
    """Bins of channel ``c`` over the frames in ``use``: all pixels; with ``flat_near``, flat-block pixels in
    the bins near a clipping bound."""
    cols: dict[str, list] = {k: [] for k in ("frame", "n", "xm", "xv", "v", "g", "k", "lo", "hi", "step")}
    for f in np.flatnonzero(use):
        fr = frames[f]
        st = np.asarray(fr.moments, dtype=np.float64)[c]
        stats, lo, hi = _stats(st, 0), float(fr.lower[c]), float(fr.upper[c])
        if flat_near:
            sd = _NEAR * np.sqrt(stats[3])
            near = (stats[1] - lo <= sd) | (hi - stats[1] <= sd)
            stats = tuple(
                np.where(near, fl, al) for fl, al in zip(_stats(st, N_STATS // 2), stats, strict=True)
            )
        ok = stats[0] >= max(min_count, 2)
        step = 0.0 if fr.dn_step is None else float(np.asarray(fr.dn_step)[c])
        for key, val in (
            ("frame", f),
            ("g", fr.gain[c]),
            ("k", fr.n_ref),
            ("lo", lo),
            ("hi", hi),
            ("step", step),
        ):
            cols[key].append(np.full(int(ok.sum()), float(val)))
        for key, val in zip(("n", "xm", "xv", "v"), stats, strict=True):
            cols[key].append(val[ok])
    arr = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    fi = arr.pop("frame").astype(int)
    return Bins(frame=fi, **arr, pi=pi[fi], pj=pj[fi], tj=tj[fi], kind="pair")


def _reference_map(frames, fitted: list[float], ref_assumption: str):
    """Per frame: parameter index and factor of its reference's noise, and the assumption made, if any."""
    index = {iso: p for p, iso in enumerate(fitted)}
    pj, tj, note = np.zeros(len(frames), dtype=int), np.zeros(len(frames)), [""] * len(frames)
    for f, fr in enumerate(frames):
        j, pj[f] = float(fr.ref_iso), index.get(float(fr.iso), 0)
        if math.isnan(j):
            note[f] = "reference ISO unknown: reference treated as noise-free"
        elif j in index:
            pj[f], tj[f] = index[j], 1.0
        elif ref_assumption == "noise-free" or j <= 0:
            note[f] = f"reference noise at ISO {j:g} not measured (no self-pairs): treated as noise-free"
        else:
            near = min(fitted, key=lambda s, j=j: abs(math.log(s / j)))
            pj[f], tj[f] = index[near], j / near
            note[f] = (
                f"reference noise at ISO {j:g} not measured (no self-pairs): assumed a, b of ISO {near:g} "
                "scaled by the ISO ratio"
            )
    return pj, tj, note


def fit_pairs(
    frames: list[FrameMoments],
    *,
    bootstrap: int = 200,
    seed: int = 0,
    min_pixels: int = 20_000,
    min_bin_count: int = 16,
    clipping: str = "model",
    ref_assumption: str = "iso-scaled",
    max_rel_stderr: float = 0.5,
) -> dict[float, ISOFit]:
    """Fit ``a, b`` per ISO and channel from all pairs of one sensor, jointly over its ISOs.

    Parameters
    ----------
    frames
        One :class:`FrameMoments` per noisy/reference pair of the sensor.
    bootstrap
        Bootstrap replicates over frames for the standard errors (0: analytic errors only).
    seed
        Seed of the bootstrap.
    min_pixels
        An ISO and channel with fewer usable pixels (in bins of ``min_bin_count`` or more) is not fitted: NaN,
        flagged.
    min_bin_count
        Bins with fewer pixels are ignored.
    clipping
        ``"model"``, ``"exclude"`` or ``"ignore"`` (see the module docstring).
    ref_assumption
        For a reference ISO without self-pairs: ``"iso-scaled"`` or ``"noise-free"``.
    max_rel_stderr
        A parameter with a larger relative (analytic) standard error is reported NaN and flagged.

    Returns
    -------
    dict
        ISO -> :class:`ISOFit` for every ISO with noisy frames (the reference ISO too when it has self-pairs).
        Too little signal is flagged and left NaN, never raised.

    Raises
    ------
    RawlabError
        No frames, or moments of the wrong shape.
    """
    if clipping not in ("model", "exclude", "ignore"):
        raise ValueError(f"clipping must be 'model', 'exclude' or 'ignore', got {clipping!r}")
    if ref_assumption not in ("iso-scaled", "noise-free"):
        raise ValueError(f"ref_assumption must be 'iso-scaled' or 'noise-free', got {ref_assumption!r}")
    if not frames:
        raise RawlabError("no noisy/reference pairs to fit: the sensor has no paired frames")
    for fr in frames:
        if np.shape(fr.moments)[:1] + np.shape(fr.moments)[2:] != (4, N_STATS) or np.ndim(fr.moments) != 3:
            raise RawlabError(
                f"frame {fr.frame_id!r}: moments must have shape (4, n_bins, {N_STATS}) as pair_moments returns, "
                f"got {np.shape(fr.moments)}"
            )
    frame_iso = np.array([float(fr.iso) for fr in frames])
    isos = sorted(set(frame_iso.tolist()))
    results = {iso: ISOFit.empty(iso, int(np.sum(frame_iso == iso)), "paired") for iso in isos}
    rng = np.random.default_rng(seed)
    for c, cname in enumerate(CHANNELS):
        counts = np.array([np.asarray(fr.moments)[c, :, 0] for fr in frames])
        usable = np.where(counts >= max(min_bin_count, 2), counts, 0.0).sum(axis=1)
        fitted = [iso for iso in isos if usable[frame_iso == iso].sum() >= min_pixels]
        for iso in sorted(set(isos) - set(fitted)):
            n = int(usable[frame_iso == iso].sum())
            results[iso].flag(f"too little signal in channel {cname}: {n} usable pixels (< {min_pixels})")
        if not fitted:
            continue
        while True:  # an ISO whose bins all lie near a clipping bound cannot start the fit: leave it out
            m, use = len(fitted), np.isin(frame_iso, fitted)
            pi = np.array([fitted.index(i) if i in fitted else 0 for i in frame_iso])
            pj, tj, note = _reference_map(frames, fitted, ref_assumption)
            lin, nonlin = (
                _pair_bins(frames, c, use, pi, pj, tj, flat, min_bin_count) for flat in (False, True)
            )
            start = _far(lin, _FAR) if clipping != "ignore" else np.ones(len(lin.n), dtype=bool)
            levels = {iso: int(np.sum(start & (lin.pi == p))) for p, iso in enumerate(fitted)}
            stuck = [iso for iso in fitted if levels[iso] < 2]
            for iso in stuck:
                results[iso].flag(
                    f"signal range too narrow to separate a from b in channel {cname}: {levels[iso]} signal "
                    "bin(s) away from the clipping bounds; not fitted"
                )
            fitted = [iso for iso in fitted if iso not in stuck]
            if not stuck or not fitted:
                break
        if not fitted:
            continue
        try:
            fit = solve_channel(lin, nonlin, m, clipping)
        except (TooLittleSignal, np.linalg.LinAlgError) as exc:
            for iso in fitted:
                results[iso].flag(f"channel {cname} not fitted: {exc}")
            continue
        groups = [np.flatnonzero(frame_iso == iso) for iso in fitted]
        se_boot = bootstrap_stderr(fit, groups, len(frames), bootstrap, rng)
        se_wls = np.sqrt(np.maximum(np.diag(fit.cov), 0.0))
        for p, iso in enumerate(fitted):
            res = results[iso]
            store_channel(res, c, fit, p, m, se_boot, se_wls, max_rel_stderr)
            for f in np.flatnonzero((frame_iso == iso) & np.array([bool(s) for s in note])):
                res.flag(note[f])
            if res.n_frames < 3 and bootstrap > 0:
                res.flag(
                    "fewer than 3 frames: standard errors from the WLS covariance (bootstrap not meaningful)"
                )
    for res in results.values():
        res.n_pixels = int(sum(res.extra["n_pixels_channel"]))
    return results

"""Never worse than the input: blend a denoiser's output with its input by Stein's unbiased risk estimate.

A learned denoiser can make an image worse than the noisy input, on content or sensors it never saw (fine
texture at base ISO, a noise law it mis-reads). The guard measures, without the clean image, how much the
network's output ``f(y)`` is expected to err on each tile, and pulls the tile back toward the input ``y`` as
much as that estimate says is best::

    g_w(y) = y - w r,   r = y - f(y),   0 <= w <= 1

For noise with per-pixel variance ``s_i^2`` (here ``a f_i + b``, the noise law at the estimate), Stein's
unbiased risk estimate (Stein 1981; for heteroscedastic noise e.g. Luisier, Blu & Unser 2011) of the squared
error of ``g_w`` summed over a tile is::

    SURE(w) = w^2 |r|^2 + S - 2 w (S - D),   S = sum s_i^2,   D = sum s_i^2 d f_i / d y_i

``SURE(0) = S`` is the input's own error, and the minimiser is ``w* = (S - D) / |r|^2`` clipped to
``[0, 1]``, so the guarded tile's expected error is at most the input's (up to the estimate's sampling error,
small on tiles of tens of thousands of pixels) and at most the network's. The divergence ``D`` is estimated
by Monte Carlo (Ramani, Blu & Unser 2008): one more network pass on ``y + eps s b`` with a Rademacher ``b``,
``D ~ sum b_i s_i (f(y + eps s b) - f(y))_i / eps``. The guard therefore doubles the cost of denoising.

Where the network is good, ``D`` is small, ``|r|^2 ~ S - D`` and ``w`` is 1: the guard changes nothing.
Where it removes texture along with the noise, ``|r|^2`` exceeds what the noise explains and ``w`` drops.
The blend is deterministic (a fixed seed for ``b``).

**Fusion with a classical denoiser** (:func:`sure_fuse`). The same estimate ranks any blend of the input
and several denoisers' outputs ``F_k``, ``g = y - sum_k w_k r_k`` with ``r_k = y - F_k``::

    SURE(w) = w' G w + S - 2 w' v,   G_kl = <r_k, r_l>,   v_k = S - D_k

and the weights that minimise it over ``w_k >= 0``, ``sum w_k <= 1`` (every vertex of that simplex is one
input or one denoiser alone, so the blend is not expected to be worse than any of them) are found exactly by
trying every face of the simplex. A learned and a classical denoiser err in different places, so the blend
errs less than either. The runtime fuses the network's (guarded, self-ensembled) output with VST+NL-means
(:mod:`rawlab.deploy.classical`) at three strengths (:data:`FUSE_STRENGTHS`) and VST+DCT
(:func:`rawlab.deploy.classical.dct_wiener`) tile by tile (:data:`FUSE_TILE`), each of the four planes by
weights of its own (``per_channel``: the planes' noise and detail differ, and so do their best blends); each
tile's weights are blended across the tile overlaps as the estimates are (:func:`rawlab.deploy.tiling.run_tiled`).
Each plane of a tile is one problem (sums over its 16,384 pixels, then the ``2^(K+1)``-face search), solved
for a batch of tiles at once (:func:`simplex_weights_many`). Each denoiser's ``D_k`` comes from its own
Monte-Carlo probe, kept per pixel (``derivative=True``, :func:`classical_estimate`) so that it can travel
through the tiling and the self-ensemble, which only move and average pixels.

Limits: ``s_i^2`` is the law at the estimate (the clean value is unknown), and clipping at the black level
makes the noise non-Gaussian in the deepest shadows; both bias SURE slightly there. The law itself is a fit:
a variance off by a relative ``e`` moves the estimated gain over the input by about ``2 e S``, so the fusion
keeps a tile's input unless SURE sees a gain above ``2 LAW_TOLERANCE S`` (:data:`LAW_TOLERANCE`, 1 %): on a
near noise-free frame every candidate is within that of the input, and the blend could be a hair worse. A
padded tile repeats pixels, which share their noise, so SURE would count them twice and favour the strongest
smoother: the guard sums only the frame (``valid``), and the fusion never pads (smaller tiles instead). An
int8 network sees the probe only where it moves the input across a rounding step of its input quantisation,
so its divergence estimate is far noisier (though unbiased over many pixels, the steps falling anywhere); on
held-out frames the fused int8 exports are still above VST+NL-means at every sensor-ISO (README, "Fusion").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "EPS",
    "FUSE_STRENGTHS",
    "LAW_TOLERANCE",
    "classical_estimate",
    "classical_estimates",
    "classical_outputs",
    "held_blend",
    "model_and_classical",
    "probed_estimate",
    "probed_estimates",
    "simplex_weights",
    "simplex_weights_many",
    "sure_blend",
    "sure_fuse",
]

EPS = 0.02  # perturbation in noise sigmas: small for the finite difference, far above float32 rounding
# NL-means strengths (h over the unit noise after the VST) fused with a model: the baseline's own 0.5 and two
# stronger ones, which SURE weighs where the model and the baseline both leave noise. Chosen on the quality
# benchmark's training scenes (README, "Fusion"): 0.8 added most, 1.2 a little more, a third 0.02 dB at most.
FUSE_STRENGTHS = (0.5, 0.8, 1.2)
# The relative error of a fitted noise variance that the fusion allows for (fits of rawlab's profiles have
# standard errors of 0.1-1 %): a tile is fused only where SURE sees a gain over the input larger than the shift
# such an error could make (module docstring, "Limits").
LAW_TOLERANCE = 0.01
# The fusion's tiles (packed pixels): weights of their own for each 128 x 128 tile (cross-faded over 16), each
# channel's apart (``per_channel``). Chosen on photographs the quality benchmark does not hold out for PG-1 and
# MP-2 (README, "Fusion"): +0.02 to +0.07 dB over one set of weights per 256-px tile of the model (that many
# channels apart, 64-px tiles 0.01-0.02 dB less; 128 or 64 px with the channels together +0.00 to +0.01).
FUSE_TILE = 128
FUSE_OVERLAP = 16
_FUSE_BATCH = 16  # tiles fused per call: their simplex problems are solved together


def _probe(y: np.ndarray, sd: np.ndarray, eps: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The Monte-Carlo probe: Rademacher signs ``b`` and the perturbed input ``y + eps sd b``."""
    signs = np.random.default_rng(seed).integers(0, 2, size=y.shape).astype(np.float32) * 2 - 1
    return signs, y + np.float32(eps) * sd * signs


def _derivative(signs, sd, f, f2, eps) -> np.ndarray:
    """Per pixel ``b_i (f(y + eps s b) - f(y))_i / (eps s_i)``: ``d f_i / d y_i`` plus zero-mean cross terms, so
    that ``s_i^2`` times it, summed over any region, estimates that region's part of ``D``."""
    return np.divide(signs * (f2 - f), np.float32(eps) * sd, out=np.zeros_like(f), where=sd > 0)


def sure_blend(
    net: Callable[[np.ndarray], np.ndarray],
    y: np.ndarray,
    a,
    b,
    *,
    eps: float = EPS,
    seed: int = 0,
    derivative: bool = False,
    valid: tuple[int, int] | None = None,
) -> tuple[np.ndarray, ...]:
    """The guarded estimate of tiles ``y`` ``(N, h, w, c)`` and each tile's weight ``w`` ``(N,)``.

    ``net`` maps tiles to clean estimates (same shape); ``a`` and ``b`` broadcast against the tiles (per
    channel ``(c,)``), ``Var[y] = a x + b``. With ``derivative``, also the guarded estimate's per-pixel
    derivative ``d g_i / d y_i = (1 - w) + w d f_i / d y_i`` (the weight held fixed, as SURE holds it), by the
    same probe, for :func:`sure_fuse`. ``valid`` ``(rows, columns)``: only the tiles' top-left part holds the
    frame (a frame smaller than a tile, padded by copies of its pixels, which share their noise and would
    bias the estimate), and only it is summed.
    """
    y = np.asarray(y, np.float32)
    f = np.asarray(net(y), np.float32)
    var = np.maximum(np.asarray(a, np.float32) * np.maximum(f, 0) + np.asarray(b, np.float32), 0)
    sd = np.sqrt(var)
    signs, probe = _probe(y, sd, eps, seed)
    f2 = np.asarray(net(probe), np.float32)
    axes = tuple(range(1, y.ndim))
    part = (slice(None), slice(0, valid[0]), slice(0, valid[1])) if valid else (slice(None),)
    div = np.sum((signs * sd * (f2 - f))[part], axis=axes, dtype=np.float64) / eps
    total = np.sum(var[part], axis=axes, dtype=np.float64)
    r = y - f
    rr = np.sum(np.square(r[part]), axis=axes, dtype=np.float64)
    w = np.clip((total - div) / np.maximum(rr, 1e-30), 0.0, 1.0)
    wb = w.astype(np.float32).reshape(-1, *([1] * (y.ndim - 1)))
    if not derivative:
        return y - wb * r, w
    return y - wb * r, w, (1 - wb) + wb * _derivative(signs, sd, f, f2, eps)


def probed_estimate(
    run: Callable[[np.ndarray], np.ndarray], y: np.ndarray, a, b, *, eps: float = EPS, seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """A denoiser's estimate ``run(y)`` of ``y`` ``(h, w, c)`` (``Var[y] = a x + b``) and its per-pixel
    derivative ``d F_i / d y_i`` from one more pass on the probed input, for :func:`sure_fuse`."""
    return probed_estimates(lambda v: [run(v)], y, a, b, eps=eps, seed=seed)[0]


def probed_estimates(
    run: Callable[[np.ndarray], Sequence[np.ndarray]], y: np.ndarray, a, b, *, eps: float = EPS, seed: int = 1
) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`probed_estimate` of several estimates that one pass gives together (``run(y)``: a list, each
    ``(h, w, c)``), each with its derivative from the same probe, scaled by the first estimate's noise law."""
    y = np.asarray(y, np.float32)
    fs = [np.asarray(f, np.float32) for f in run(y)]
    sd = np.sqrt(np.maximum(np.asarray(a, np.float32) * np.maximum(fs[0], 0) + np.asarray(b, np.float32), 0))
    signs, probe = _probe(y, sd, eps, seed)
    probed = [np.asarray(f, np.float32) for f in run(probe)]
    return [(f, _derivative(signs, sd, f, f2, eps)) for f, f2 in zip(fs, probed, strict=True)]


def classical_estimate(
    y: np.ndarray, a, b, *, method: str = "vst-nlm", eps: float = EPS, seed: int = 1, **options
) -> tuple[np.ndarray, np.ndarray]:
    """A classical denoiser's estimate of packed planes ``y`` ``(h, w, 4)`` and its per-pixel derivative
    (:func:`probed_estimate`), for :func:`sure_fuse`; ``options`` go to the denoiser (``vst-nlm``: ``h``)."""
    from .classical import denoise_baseline

    return probed_estimate(
        lambda v: denoise_baseline(method, v, a, b, **options), y, a, b, eps=eps, seed=seed
    )


def classical_estimates(
    y: np.ndarray, a, b, strengths=FUSE_STRENGTHS, dct: bool = True
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The candidates a model is fused with, each with its derivative (:func:`classical_estimate`; a probe of
    its own, so two passes each): VST+NL-means of ``y`` at each of ``strengths``, then (``dct``) VST+DCT.

    The DCT candidate (:func:`rawlab.deploy.classical.dct_wiener`) lifted the fused built-in model by 0.16 to
    0.32 dB on photographs the quality benchmark does not hold out for its sensors (README, "Fusion"), most of
    what BM3D adds there, at about 1/70 of a BM3D pass's cost (0.48 against 33.5 s per megapixel)."""
    return [
        classical_estimate(y, a, b, method=method, seed=1 + k, **options)
        for k, (method, options) in enumerate(_classical_methods(strengths, dct))
    ]


def classical_outputs(y: np.ndarray, a, b, strengths=FUSE_STRENGTHS, dct: bool = True) -> list[np.ndarray]:
    """The estimates of :func:`classical_estimates` alone (one pass each, no derivative): what a blend with its
    weights held needs (:func:`held_blend`)."""
    from .classical import denoise_baseline

    return [
        np.asarray(denoise_baseline(method, y, a, b, **options), np.float32)
        for method, options in _classical_methods(strengths, dct)
    ]


def _classical_methods(strengths, dct: bool) -> list[tuple[str, dict]]:
    """The classical candidates in the fusion's order: VST+NL-means at each strength, then VST+DCT."""
    return [("vst-nlm", {"h": h}) for h in strengths] + ([("vst-dct", {})] if dct else [])


def model_and_classical(weights: np.ndarray) -> np.ndarray:
    """Fusion weights ``(tiles, 1 + K)`` (the model's first, then K classical estimates'), or per channel
    ``(tiles, c, 1 + K)`` (averaged over the channels), as ``(tiles, 2)``: the model's and the classical
    estimates' together, as ``rawlab denoise`` reports them."""
    w = np.asarray(weights, np.float64)
    w = w.mean(axis=1) if w.ndim == 3 else w.reshape(len(w), -1)
    return np.stack([w[:, 0], w[:, 1:].sum(axis=1)], axis=1)


def simplex_weights(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``argmin w' g w - 2 w' v`` over ``w >= 0``, ``sum w <= 1`` (``g`` ``(K, K)`` positive semi-definite).

    The minimum of a convex quadratic over the simplex lies in the relative interior of one of its faces, so
    every face is tried (the subsets of free weights, each either below the ``sum w = 1`` facet or on it) and
    the feasible stationary point of lowest value wins; ``w = 0`` (the input) is always feasible. ``K`` is a
    few denoisers, so the ``2^(K+1)`` small solves cost nothing. :func:`simplex_weights_many` solves many
    problems at once."""
    return simplex_weights_many(np.asarray(g)[None], np.asarray(v)[None])[0]


def _solve_many(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a x = b`` for a stack ``a`` ``(T, m, m)``, ``b`` ``(T, m)``; where a matrix is singular, NaN and
    False in the second result."""
    try:
        return np.linalg.solve(a, b[..., None])[..., 0], np.ones(len(a), bool)
    except np.linalg.LinAlgError:  # one singular matrix stops the batch: solve one by one
        x, ok = np.full(b.shape, np.nan), np.ones(len(a), bool)
        for i in range(len(a)):
            try:
                x[i] = np.linalg.solve(a[i], b[i])
            except np.linalg.LinAlgError:
                ok[i] = False
        return x, ok


def simplex_weights_many(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """:func:`simplex_weights` of ``T`` problems at once: ``g`` ``(T, K, K)``, ``v`` ``(T, K)`` -> ``(T, K)``;
    each face's ``T`` small systems are one batched solve (the fusion solves one problem per tile and
    channel)."""
    g = np.asarray(g, np.float64)
    v = np.asarray(v, np.float64)
    t, k = v.shape
    best, best_val = np.zeros((t, k)), np.zeros(t)
    for mask in range(1, 1 << k):
        free = [i for i in range(k) if mask >> i & 1]
        m = len(free)
        gs, vs = g[:, free][:, :, free], v[:, free]
        kkt = np.zeros((t, m + 1, m + 1))  # on the facet sum w = 1: the Lagrange system
        kkt[:, :m, :m], kkt[:, :m, m], kkt[:, m, :m] = gs, 1.0, 1.0
        for a, b in ((gs, vs), (kkt, np.concatenate([vs, np.ones((t, 1))], axis=1))):
            ws, solved = _solve_many(a, b)
            ws = ws[:, :m]
            ok = solved & np.all(ws >= -1e-12, axis=1) & (ws.sum(axis=1) <= 1 + 1e-12)
            w = np.zeros((t, k))
            w[:, free] = np.clip(np.nan_to_num(ws), 0, None)
            val = np.einsum("ti,tij,tj->t", w, g, w) - 2 * np.einsum("ti,ti->t", w, v)
            take = ok & (val < best_val)
            best[take], best_val[take] = w[take], val[take]
    return best


def sure_fuse(
    y: np.ndarray,
    estimates: list[tuple[np.ndarray, np.ndarray]],
    a,
    b,
    *,
    tile: int = FUSE_TILE,
    overlap: int = FUSE_OVERLAP,
    per_channel: bool = False,
    derivative: bool = False,
) -> tuple[np.ndarray, ...]:
    """The SURE-optimal blend of the input ``y`` ``(h, w, c)`` and ``estimates`` ``[(F_k, dF_k)]`` (each
    estimate with its per-pixel derivative, :func:`sure_blend`, :func:`classical_estimate`), per tile of
    ``tile`` with ``overlap`` (weights cross-faded between tiles; smaller tiles in a frame smaller than that, so
    that no pixel counts twice); returns the blend and each tile's weights ``(n_tiles, K)``, or with
    ``per_channel`` each tile's and channel's ``(n_tiles, c, K)`` (every channel of a tile blended by weights
    of its own). The noise variance is the law at the first estimate.

    With ``derivative``, also the blend's per-pixel derivative ``(h, w, c)``, the weights held:
    ``1 - sum_k w_k (1 - dF_k)``, cross-faded as the blend is. A tile's weights depend on each of its pixels
    only through sums over the tile, so holding them drops a term of order one over its size; the blend can
    then be fused again (:func:`rawlab.deploy.burst.denoise_burst`) without a pass of its own on a probe."""
    from .tiling import run_tiled

    y = np.asarray(y, np.float32)
    c, k = y.shape[-1], len(estimates)
    tile, overlap, n_tiles = _fuse_tiles(y.shape[:2], tile, overlap)
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    stacked = np.concatenate([y] + [np.concatenate(e, axis=-1) for e in estimates], axis=-1)
    weights: list[np.ndarray] = []

    def fuse(tiles: np.ndarray) -> np.ndarray:
        n = len(tiles)
        yt = tiles[..., :c].astype(np.float64)
        fs = np.stack([tiles[..., c * (1 + 2 * j) : c * (2 + 2 * j)] for j in range(k)], 1)  # (n, K, t, t, c)
        ds = np.stack([tiles[..., c * (2 + 2 * j) : c * (3 + 2 * j)] for j in range(k)], 1)
        var = np.maximum(a * np.maximum(fs[:, 0], 0) + b, 0).astype(np.float64)  # (n, t, t, c)
        r = yt[:, None] - fs  # (n, K, t, t, c)
        if per_channel:  # one problem per tile and channel: (n c) x (K, pixels)
            r2 = np.moveaxis(r, -1, 1).reshape(n * c, k, -1)
            total = np.moveaxis(var, -1, 1).reshape(n * c, -1).sum(axis=1)
            dv = np.moveaxis(var[:, None] * ds, -1, 1).reshape(n * c, k, -1).sum(axis=2)
        else:
            r2 = r.reshape(n, k, -1)
            total = var.reshape(n, -1).sum(axis=1)
            dv = (var[:, None] * ds).reshape(n, k, -1).sum(axis=2)
        g = r2 @ np.swapaxes(r2, 1, 2)
        v = total[:, None] - dv
        w = simplex_weights_many(g, v)
        # The estimated gain over the input, SURE(0) - SURE(w), rests on the noise law: a law off by a
        # relative LAW_TOLERANCE moves it by about twice that times the input's error (for a smoother,
        # whose derivative is small), so a smaller gain is not evidence and the input is kept.
        gain = 2 * np.einsum("pk,pk->p", w, v) - np.einsum("pi,pij,pj->p", w, g, w)
        w[gain < 2 * LAW_TOLERANCE * total] = 0
        if per_channel:
            w = w.reshape(n, c, k)
        out = [yt - _mix(w, r)]
        if derivative:
            out.append(1 - _mix(w, 1 - ds.astype(np.float64)))
        weights.extend(w)
        return np.concatenate(out, axis=-1).astype(np.float32)

    width = c * (1 + derivative)
    fused = run_tiled(fuse, stacked, tile, overlap, out_channels=width, batch=_FUSE_BATCH)
    shape = (-1, c, k) if per_channel else (-1, k)
    weights_ = np.asarray(weights[:n_tiles]).reshape(shape)
    if derivative:
        return fused[..., :c], weights_, fused[..., c:]
    return fused, weights_


def _fuse_tiles(shape: tuple[int, int], tile: int, overlap: int) -> tuple[int, int, int]:
    """The fusion's ``(tile, overlap, number of tiles)`` on a frame of ``shape``. Never padded: a padded tile
    repeats pixels (mirrored or edge copies) that share their noise, which SURE would count as independent, and
    that favours the strongest smoother; a frame smaller than the tile is fused in tiles that fit it."""
    from .tiling import tile_origins

    tile = min(tile, *shape)
    overlap = min(overlap, (tile - 1) // 2)
    return (
        tile,
        overlap,
        len(tile_origins(shape[0], tile, overlap)) * len(tile_origins(shape[1], tile, overlap)),
    )


def _mix(w: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``sum_k w_k r_k`` per tile ``(n, t, t, c)``: ``w`` ``(n, K)``, or ``(n, c, K)`` per channel; ``r``
    ``(n, K, t, t, c)``."""
    return np.einsum("nck,nkyxc->nyxc" if w.ndim == 3 else "nk,nkyxc->nyxc", w, r)


def held_blend(
    y: np.ndarray,
    estimates: list[np.ndarray],
    weights: np.ndarray,
    *,
    tile: int = FUSE_TILE,
    overlap: int = FUSE_OVERLAP,
) -> np.ndarray:
    """The blend :func:`sure_fuse` makes of ``y`` and ``estimates`` ``[F_k]`` with the ``weights`` an earlier
    call returned (``(n_tiles, K)``, or ``(n_tiles, c, K)`` per channel), held: ``y - sum_k w_k (y - F_k)`` per
    tile, cross-faded the same way. The fusion's input moved by a probe, this gives the fused estimate's
    derivative with the weights held (:func:`probed_estimates`) without the candidates' own derivatives."""
    from .tiling import run_tiled

    y = np.asarray(y, np.float32)
    c, k = y.shape[-1], len(estimates)
    tile, overlap, n_tiles = _fuse_tiles(y.shape[:2], tile, overlap)  # as sure_fuse tiles the same frame
    weights = np.asarray(weights, np.float64)
    per_channel = weights.ndim == 3
    if len(weights) != n_tiles or weights.shape[-1] != k or (per_channel and weights.shape[1] != c):
        raise ValueError(
            f"weights of shape {weights.shape} do not fit {n_tiles} tiles of {k} estimates of {c} channels"
        )
    stacked = np.concatenate([y, *estimates], axis=-1)
    done = [0]

    def blend(tiles: np.ndarray) -> np.ndarray:
        n = len(tiles)
        w = weights[done[0] : done[0] + n]
        w = np.concatenate([w, np.repeat(w[:1], n - len(w), axis=0)])  # the last batch's fillers
        done[0] += n
        yt = tiles[..., :c].astype(np.float64)
        r = yt[:, None] - np.stack([tiles[..., c * (1 + j) : c * (2 + j)] for j in range(k)], 1)
        return (yt - _mix(w, r)).astype(np.float32)

    return run_tiled(blend, stacked, tile, overlap, out_channels=c, batch=_FUSE_BATCH)

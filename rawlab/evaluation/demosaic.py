"""Demosaicing scored in colour: LibRaw's demosaics, denoising before or after them, against the RGB truth.

Issue 13 asks whether denoising the Bayer mosaic before demosaicing ("raw first") beats denoising the
demosaiced RGB ("RGB after"), and how a joint model compares with PPG and AHD. This module runs the classical
chains on one frame and scores them against the scene's linear camera-RGB truth (``rawlab synth`` writes it;
the catalog's ``truth_path``):

- ``noisy``: LibRaw's demosaic of the noisy mosaic;
- ``raw-first``: VST + NL-means on the packed planes (:func:`denoise_raw`: ``vst-nlm`` of
  :mod:`rawlab.deploy.classical` with a strength ``h``), then the demosaic;
- ``model-first``: rawlab's own Bayer denoiser on the packed planes (a callable; :func:`model_denoiser` runs a
  model as ``rawlab denoise`` does: the deploy runtime, tiled, SURE-guarded), then the demosaic;
- ``rgb-after``: the demosaic, then VST + NL-means on the RGB image (:func:`denoise_rgb`);
- ``joint``: a joint demosaicing and denoising model, noisy planes in, RGB out (:func:`joint_model`).

Both NL-means take a strength ``h``; :func:`tune_strength` picks each chain's on frames that are then not
scored (the benchmark tunes on training scenes), so neither chain is compared at the other's best setting.

**Linear LibRaw.** Every demosaic goes through one path, :mod:`rawlab.demosaic` (which ``rawlab denoise
--output rgb --demosaic`` and the burst merge run too): rawlab's normalised planes written as a 16-bit DNG and demosaiced by
LibRaw to linear camera RGB, the same way for every method (that module's docstring says how).

**Scores** (linear camera RGB, normalised units, data range 1, both images clipped to ``[0, 1]`` because the
sensor records nothing above white, an ``margin``-pixel border left out because LibRaw's demosaics differ
there): CPSNR (PSNR over all three channels), SSIM (mean over channels, :func:`rawlab.evaluation.metrics.ssim`)
and :func:`chroma_edge_error`, the RMS error of the colour differences ``(R - G, B - G)`` on the pixels where
the truth has its strongest edges, where zipper and false-colour artefacts live.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

import numpy as np

from ..demosaic import DEMOSAICS, available_demosaics, demosaic, demosaic_all
from ..deploy.classical import GAT, denoise_baseline, nl_means
from ..deploy.ensemble import DEFAULT_ENSEMBLE, check_ensemble
from ..errors import RawlabError
from .metrics import psnr, ssim

__all__ = [
    "CHAINS",
    "DEMOSAICS",
    "MARGIN",
    "available_demosaics",
    "chroma_edge_error",
    "demosaic",
    "demosaic_all",
    "denoise_raw",
    "denoise_rgb",
    "edge_mask",
    "joint_model",
    "model_denoiser",
    "rgb_noise",
    "run_chains",
    "score_rgb",
    "tune_strength",
]

CHAINS = ("noisy", "raw-first", "model-first", "rgb-after", "joint")
MARGIN = 8  # mosaic px left out of every score: the demosaics treat the border differently
EDGE_QUANTILE = 0.9  # chroma error on the 10 % of pixels with the truth's strongest gradient


# -- the two denoisers: VST + NL-means on the packed planes and on the demosaiced RGB ---------------------------

H_RAW = 0.5  # the vst-nlm baseline's strength (rawlab.deploy.classical)
H_RGB = 1.0  # measured best of 0.6-1.2 on AHD output of two photographs, two sensors, ISO 100-6400
STRENGTHS = (0.4, 0.6, 0.8, 1.0, 1.2, 1.6, 2.0)  # tune_strength's grid (skimage's h over sigma)


def denoise_raw(planes: np.ndarray, a, b, lower=None, *, h: float = H_RAW) -> np.ndarray:
    """The ``vst-nlm`` baseline (:func:`rawlab.deploy.classical.denoise_baseline`) with strength ``h``:
    ``(h, w, 4)`` normalised planes in and out."""
    return denoise_baseline("vst-nlm", planes, a, b, lower, h=h)


def model_denoiser(
    model: str = "builtin", *, guard: bool = True, ensemble: int = DEFAULT_ENSEMBLE
) -> Callable[..., np.ndarray]:
    """``fn(planes, a, b, cfa)``: a rawlab Bayer denoiser as ``rawlab denoise`` runs it, for the ``model-first``
    chain.

    ``model`` is ``"builtin"``, a model directory, a ``.tflite`` or an ``.onnx``, loaded once by the deploy
    runtime (:func:`rawlab.deploy.runtime.load_denoiser`): overlapping tiles, its self-ensemble of ``ensemble``
    rotations (given the CFA) and the SURE guard unless ``guard`` is False. ``fn`` takes ``(h, w, 4)`` normalised planes, the noise
    law ``(a, b)`` (4 values, normalised units) and the mosaic's CFA, and returns the denoised planes. The evaluation gives it the frame's law, as it gives the classical
    chains; ``rawlab denoise`` would take the model's law for the sensor, the same law where the model knows it.
    """
    from ..deploy.runtime import load_denoiser

    denoiser = load_denoiser(model)
    if denoiser.head != "bayer":
        raise RawlabError(
            f"{model!r} is a joint demosaic model, not a Bayer denoiser; pass it as a joint model"
        )
    denoiser.guard, denoiser.ensemble = guard, check_ensemble(ensemble)

    def fn(planes: np.ndarray, a, b, cfa: str | None = None) -> np.ndarray:  # with the CFA: the self-ensemble
        return denoiser.denoise(np.asarray(planes, np.float32), a, b, cfa=cfa)

    return fn


def joint_model(model: str, *, ensemble: int = DEFAULT_ENSEMBLE) -> Callable[..., np.ndarray]:
    """``fn(planes, cfa, a, b)``: a joint demosaic+denoise model (config ``joint``; a model directory, ``.tflite``
    or ``.onnx``) as ``rawlab denoise --output rgb`` runs it (tiled, the mean of ``ensemble`` rotations; the
    guard and fusion on the Bayer part of a model directory that denoises first): ``(h, w, 4)`` normalised planes
    of a ``cfa`` mosaic and its law in, linear camera RGB ``(2h, 2w, 3)`` out, for :func:`run_chains`' ``joint``.
    """
    from ..deploy.runtime import load_denoiser

    denoiser = load_denoiser(model)
    if denoiser.head != "rgb":
        raise RawlabError(
            f"{model!r} is a Bayer denoiser, not a joint demosaic model (`rawlab train STORE --config joint`)"
        )
    denoiser.ensemble = check_ensemble(ensemble)

    def fn(planes: np.ndarray, cfa: str, a, b) -> np.ndarray:
        return denoiser.demosaic(np.asarray(planes, np.float32), a, b, cfa)

    return fn


# -- RGB after: VST + NL-means on the demosaiced image ---------------------------------------------------------


def _rgb_params(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Per-colour ``(a, b)`` (R, G, B) from the planes' R, G1, G2, B: green is the mean of G1 and G2."""
    a, b = (np.broadcast_to(np.asarray(v, np.float64), (4,)) for v in (a, b))
    return np.array([a[0], (a[1] + a[2]) / 2, a[3]]), np.array([b[0], (b[1] + b[2]) / 2, b[3]])


@lru_cache(maxsize=512)
def _rgb_noise(method: str, cfa: str, a: tuple, b: tuple) -> tuple[float, float, float]:
    from ..noise.model import sample_poisson_gaussian

    level = 0.25  # mid-grey: the VST makes the noise level-independent; this keeps clipping out of it
    rng = np.random.default_rng(np.random.SeedSequence([0xDE, 0x05A1C]))
    flat = np.full((4, 48, 48), level)
    planes = sample_poisson_gaussian(flat, np.asarray(a), np.asarray(b), rng)
    rgb = demosaic(np.moveaxis(planes, 0, -1), cfa, method)[MARGIN:-MARGIN, MARGIN:-MARGIN]
    ra, rb = _rgb_params(a, b)
    return tuple(float(np.std(GAT(ra[c], rb[c]).forward(rgb[..., c]))) for c in range(3))


def rgb_noise(method: str, cfa: str, a, b) -> np.ndarray:
    """The noise of each colour after ``method``, in the units of the colour's VST (1 = a raw sample's).

    Interpolated pixels average several samples, so their noise is lower than a raw sample's; this measures
    it on a flat mid-grey field drawn with the law ``(a, b)`` (4 values, R G1 G2 B) and demosaiced the same way
    (seeded, so the same every run).
    """
    a, b = (tuple(float(v) for v in np.broadcast_to(np.asarray(x, np.float64), (4,))) for x in (a, b))
    return np.array(_rgb_noise(method, cfa, a, b))


def denoise_rgb(rgb: np.ndarray, a, b, sigma=1.0, *, h: float = H_RGB) -> np.ndarray:
    """VST + NL-means on linear camera RGB ``(H, W, 3)`` (normalised) with the planes' noise law.

    Parameters
    ----------
    rgb
        A demosaiced image (normalised; LibRaw clips it at 0, which the VST's inverse models).
    a, b
        The planes' noise parameters (4 values, R G1 G2 B, normalised units); green takes the mean of G1, G2.
    sigma
        Noise of each colour in its VST's units after demosaicing (:func:`rgb_noise`), one or 3 values.
    h
        NL-means filtering strength relative to the noise (``skimage`` ``h / sigma``).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` float32, normalised.
    """
    ra, rb = _rgb_params(a, b)
    s = np.broadcast_to(np.asarray(sigma, np.float64), (3,))
    vsts = [GAT(ra[c], rb[c], lower=0.0) for c in range(3)]
    # Each colour scaled to unit noise, so one patch distance weighs the three colours alike.
    v = np.stack([vsts[c].forward(rgb[..., c]) / s[c] for c in range(3)], axis=-1)
    # Full resolution: 5x5 patches searched over 13x13 (the raw chain's 3x3 packed patches cover 6x6 mosaic px).
    d = nl_means(v, h=h, patch_size=5)
    return np.stack([vsts[c].inverse(d[..., c] * s[c]) for c in range(3)], axis=-1).astype(np.float32)


# -- scores ----------------------------------------------------------------------------------------------------


def _crop(img: np.ndarray, margin: int) -> np.ndarray:
    img = np.clip(np.asarray(img, np.float64), 0.0, 1.0)
    return img[margin : img.shape[0] - margin, margin : img.shape[1] - margin] if margin else img


def edge_mask(truth: np.ndarray, quantile: float = EDGE_QUANTILE) -> np.ndarray:
    """Pixels of ``truth`` ``(H, W, 3)`` whose gradient magnitude (Sobel, on the mean of R, G, B) is in the top
    ``1 - quantile``, and not zero (a flat image has no edges)."""
    from scipy import ndimage

    lum = np.asarray(truth, np.float64).mean(axis=-1)
    g = np.hypot(ndimage.sobel(lum, axis=0), ndimage.sobel(lum, axis=1))
    return (g >= np.quantile(g, quantile)) & (g > 0)


def chroma_edge_error(estimate: np.ndarray, truth: np.ndarray, *, margin: int = MARGIN) -> float:
    """RMS error of the colour differences ``(R - G, B - G)`` on the truth's edges (:func:`edge_mask`).

    Zero when the colours are right, whatever the error in brightness shared by R, G and B; zipper and false
    colour at edges (the demosaic artefacts) and chroma noise raise it. Normalised units; NaN with no edges.
    """
    est, ref = _crop(estimate, margin), _crop(truth, margin)
    mask = edge_mask(ref)
    if not mask.any():
        return math.nan
    d = est - ref
    dc = np.stack([d[..., 0] - d[..., 1], d[..., 2] - d[..., 1]], axis=-1)[mask]
    return float(np.sqrt(np.mean(dc**2)))


def score_rgb(estimate: np.ndarray, truth: np.ndarray, *, margin: int = MARGIN) -> dict[str, float]:
    """``cpsnr`` (dB), ``ssim`` and ``chroma`` (:func:`chroma_edge_error`) of linear RGB against the truth."""
    est, ref = _crop(estimate, margin), _crop(truth, margin)
    return {
        "cpsnr": psnr(est, ref),
        "ssim": ssim(est, ref, channel_axis=-1),
        "chroma": chroma_edge_error(est, ref, margin=0),
    }


# -- the chains on one frame -----------------------------------------------------------------------------------


def run_chains(
    noisy: np.ndarray,
    cfa: str,
    a,
    b,
    truth: np.ndarray,
    *,
    methods: Sequence[str] = DEMOSAICS,
    rgb_after: Sequence[str] | None = None,
    lower=None,
    joint: Mapping[str, Callable[..., np.ndarray]] | None = None,
    denoiser: Callable[..., np.ndarray] | None = None,
    h_raw: float = H_RAW,
    h_rgb: float = H_RGB,
    margin: int = MARGIN,
) -> list[dict]:
    """Every chain on one noisy frame, scored against its truth.

    Parameters
    ----------
    noisy
        Noisy packed planes ``(h, w, 4)`` R, G1, G2, B, normalised.
    cfa
        The mosaic's pattern.
    a, b
        Noise parameters of the frame (4 values, normalised units): the law the denoisers are given.
    truth
        Linear camera RGB ``(2h, 2w, 3)``, normalised (synth's colour truth).
    methods
        Demosaics for the ``noisy`` and ``raw-first`` chains.
    rgb_after
        Demosaics for the ``rgb-after`` chain (its NL-means on full-resolution RGB costs most); default all.
    lower
        Per-channel lower clip of the sensor for the raw VST (``-black / (white - black)``), or None.
    joint
        Extra columns: name -> ``fn(noisy, cfa, a, b)`` returning linear camera RGB ``(2h, 2w, 3)``,
        normalised, from the noisy planes (a joint demosaicing and denoising model), scored as chain
        ``"joint"``.
    denoiser
        ``fn(noisy, a, b)`` returning denoised planes ``(h, w, 4)`` (rawlab's Bayer denoiser,
        :func:`model_denoiser`): the ``model-first`` chain, demosaiced with every one of ``methods``.
    h_raw, h_rgb
        NL-means strengths of the raw-first and RGB-after chains (:func:`tune_strength`).
    margin
        Border left out of the scores (mosaic px).

    Returns
    -------
    list of dict
        One row per (chain, method): ``chain``, ``method``, ``cpsnr``, ``ssim``, ``chroma``.
    """
    rows = []

    def add(chain, method, est):
        rows.append({"chain": chain, "method": method, **score_rgb(est, truth, margin=margin)})

    plain = demosaic_all(noisy, cfa, methods)
    for m in methods:
        add("noisy", m, plain[m])
    clean = denoise_raw(noisy, a, b, lower, h=h_raw)
    for m, rgb in demosaic_all(clean, cfa, methods).items():
        add("raw-first", m, rgb)
    if denoiser is not None:
        for m, rgb in demosaic_all(np.asarray(denoiser(noisy, a, b, cfa), np.float32), cfa, methods).items():
            add("model-first", m, rgb)
    for m in methods if rgb_after is None else rgb_after:
        rgb = plain[m] if m in plain else demosaic(noisy, cfa, m)
        add("rgb-after", m, denoise_rgb(rgb, a, b, rgb_noise(m, cfa, a, b), h=h_rgb))
    for name, fn in (joint or {}).items():
        add("joint", name, np.asarray(fn(noisy, cfa, a, b), np.float32))
    return rows


def tune_strength(
    frames: Sequence[tuple], *, method: str = "AHD", strengths: Sequence[float] = STRENGTHS
) -> tuple[float, float]:
    """``(h_raw, h_rgb)``: each chain's NL-means strength with the best mean CPSNR over ``frames``.

    ``frames`` are ``(noisy, cfa, a, b, truth, lower)`` as :func:`run_chains` takes them; pass frames that
    will not be scored (training scenes), at the ISO to be scored. Both chains demosaic with ``method``.
    """
    raw, rgb = np.zeros(len(strengths)), np.zeros(len(strengths))
    for noisy, cfa, a, b, truth, lower in frames:
        plain = demosaic(noisy, cfa, method)
        sigma = rgb_noise(method, cfa, a, b)
        for i, h in enumerate(strengths):
            raw[i] += psnr(
                *(
                    _crop(x, MARGIN)
                    for x in (demosaic(denoise_raw(noisy, a, b, lower, h=h), cfa, method), truth)
                )
            )
            rgb[i] += psnr(*(_crop(x, MARGIN) for x in (denoise_rgb(plain, a, b, sigma, h=h), truth)))
    return float(strengths[int(np.argmax(raw))]), float(strengths[int(np.argmax(rgb))])

"""``rawlab denoise --burst``: a burst of raw frames in, the burst model's clean reference out as a Bayer DNG.

Per burst (:func:`denoise_burst_files`): the frames are read and checked as ``rawlab burst merge`` reads them
(:func:`rawlab.burst.read_burst`), the reference's noise law taken by ``rawlab denoise``'s rule
(:func:`rawlab.deploy.noiseparams.noise_for_frame`: the model's law for the sensor, else the DNG NoiseProfile,
else a single-image estimate), every alternate aligned and resampled onto the reference by rawlab.burst's
aligner and resampler (:func:`rawlab.learn.burstdata.burst_input`: with the model's merge in front when its spec
has ``merge_frames``, the alternates then resampled at the merge's alignment), the frames stacked as channels (a burst
shorter than the model's ``K`` repeats its reference, as in training; a longer one keeps its first ``K``
frames, the reference first) and the network run tile by tile with overlap (:func:`rawlab.deploy.tiling.run_tiled`)
through the runtime of :func:`rawlab.deploy.runtime.load_denoiser` (a model directory with JAX, or a ``.tflite``
export). A model directory whose frames reach nothing (``frames_in`` zero: the shipped ``builtin-burst``) runs as
the single-frame U-Net it then is, on the merge alone (:func:`rawlab.learn.modelio.merge_part`): the same output to
the bit, without resampling the alternates or the top level's widest convolution. The DNG has the reference's
size, CFA, levels and metadata, as ``burst merge`` writes it; it carries no NoiseProfile (the network's residual
noise has no Poisson-Gaussian law).

**Fusion** (``fuse``, on by default as in ``rawlab denoise``): a model with the merge in front is an estimator
of the merge's clean image, and the merge has its own noise law (:meth:`rawlab.burst.merge.Merged.noise`), so
the model's output is blended tile by tile with the runtime's classical candidates of the merge (VST+NL-means
at three strengths and VST+DCT, :func:`rawlab.deploy.guard.classical_estimates`) and the merge itself by SURE, as the
single-frame runtime does with its input (:func:`rawlab.deploy.guard.sure_fuse`; the model's divergence from
one more pass on the probed merge, with the other frames held as they are). It is exact for a model that
reads only the merge (the shipped ``builtin-burst``, whose ``frames_in`` is zero) and an approximation for one
that also reads the frames; the merge's resampled noise is slightly correlated between neighbours, which SURE
does not model. Measured on held-out photographs it adds 0.2 to 0.35 dB (README, bursts).

**Fusion with the single-frame model** (``fuse_single``: on with the fusion by default; ``rawlab denoise --burst
--no-fuse-single`` leaves it out). The reference frame ``y`` has a known noise law, and the other frames' noise is
independent of it, so Stein's estimate holds for any estimator of ``y``'s clean image given those frames: the burst
output ``B`` (a function of ``y`` through the merge, the other frames held), the burst model's own output before its
fusion with the merge's classical candidates and the merge itself (the same pass gives both), and the single-frame
output ``S(y)`` (the runner's ``single``, run as ``rawlab denoise`` runs it) are blended with ``y`` per plane and
64-px tile (:func:`rawlab.deploy.guard.sure_fuse`, :data:`SINGLE_FUSE_TILE`). The burst outputs' divergences come
from one more pass on the probed reference (:func:`rawlab.deploy.guard.probed_estimates`), the frames' alignments
held as they were (they are piecewise constant in ``y``) and so are the merge fusion's weights
(:func:`rawlab.deploy.guard.held_blend`: one pass of the model and of each classical candidate, without their
derivatives); the single-frame output's from its own fusion, its weights held (:func:`rawlab.deploy.guard.sure_fuse`
with ``derivative``). Where the merge is weak (a misaligned frame, aliasing the resampler cannot undo at low ISO)
the single-frame output takes over; where it is strong, the burst output stays. It costs a lighter second burst
pass and one single-frame pass; measured on held-out photographs it adds up to 0.45 dB on PG-1 (README, bursts).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from .._version import __version__
from ..burst.files import BurstOutcome
from ..errors import RawlabError
from .ensemble import DEFAULT_ENSEMBLE, check_ensemble, self_ensemble

if TYPE_CHECKING:
    from ..cluster import RunOptions

__all__ = [
    "BurstDenoised",
    "NotABurstModel",
    "burst_crops",
    "burst_model",
    "denoise_burst",
    "denoise_burst_files",
    "denoise_bursts",
]

# The fusion with the single-frame model (``fuse_single``): weights per plane of each 64 x 64 tile (packed
# pixels), cross-faded over 8. Chosen on photographs the burst benchmark does not score (astronaut,
# immunohistochemistry, hubble_deep_field; PG-1, 8 frames, ISO 800 and 1600): +0.01 / +0.04 dB over the
# single-frame runtime's 128-px tiles; the burst model's own output as a candidate added +0.03 / +0.01 there,
# the merge +0.006 / +0.003, NL-means and DCT of the merge nothing (README, bursts).
SINGLE_FUSE_TILE = (64, 8)


class NotABurstModel(RawlabError):
    """:func:`burst_model` was given a single-frame denoiser."""


@dataclass
class BurstDenoised(BurstOutcome):
    """A burst denoised by the burst model (``denoise --burst``)."""

    frames_used: int = 0
    fusion: str = ""  # "fused 40% model, 55% NL-means and DCT of the merge" (median tile weights), when fused

    def done(self) -> str:
        h, w = self.shape or (0, 0)
        fused = f"; {self.fusion}" if self.fusion else ""
        return (
            f"denoised burst: {len(self.paths)} frames ({w}x{h}), {self.frames_used} used -> {self.out}; "
            f"reference {self.reference}; noise from {self.noise}{fused} ({self.seconds:.1f} s)"
        )


def burst_model(
    path: str | os.PathLike[str],
    *,
    num_threads: int | None = None,
    ensemble: int = DEFAULT_ENSEMBLE,
    fuse: bool = True,
    fuse_single: bool | None = None,
):
    """The runtime of a burst model (:func:`rawlab.deploy.runtime.load_denoiser`) and its ``K``; it runs
    ``ensemble`` rotations of each burst (:mod:`rawlab.deploy.ensemble`) and averages them, and with ``fuse``
    blends a merge-reading model's output with VST+NL-means and VST+DCT of the merge by SURE (module docstring).
    With ``fuse`` and ``fuse_single`` as well, the runner carries the built-in single-frame model as ``single``
    (the same rotations, fused as ``rawlab denoise`` runs it), and the burst output is fused with its output on
    the reference (module docstring); otherwise ``single`` is None. ``fuse_single`` None (the default): wherever
    the built-in model can run (it needs JAX, ``rawlab[train]``; an exported burst model does not).

    Raises
    ------
    RawlabError
        ``path`` is not a model, or a single-frame model (its config has no ``burst`` block); ``fuse_single``
        True where JAX is not installed.
    """
    from ..learn.bursttrain import burst_frames
    from .runtime import load_denoiser

    runner = load_denoiser(path, num_threads=num_threads)
    runner.ensemble = check_ensemble(ensemble)
    runner.fuse = bool(fuse)
    runner.single = None
    jax = _jax_installed()
    if fuse_single is None:
        fuse_single = jax
    if fuse and fuse_single and not jax:
        raise RawlabError(
            "--fuse-single runs the built-in single-frame model, which needs JAX: pip install 'rawlab[train]', "
            "or drop --fuse-single"
        )
    if fuse and fuse_single:
        from ..learn.modelio import BUILTIN

        runner.single = load_denoiser(BUILTIN, num_threads=num_threads)
        runner.single.ensemble = runner.ensemble
        runner.single.keep_derivative = True  # its output's derivative from its own fusion (denoise_burst)
    k = burst_frames(runner.config)
    if k is None:
        raise NotABurstModel(
            f"--model {os.fspath(path)} is a single-frame denoiser, not a burst model; pass a burst model's "
            "directory (rawlab burst train --workdir) or drop --burst"
        )
    return runner, k


def _jax_installed() -> bool:
    """Whether the built-in single-frame model can run here (a model directory runs with JAX and Flax)."""
    from importlib.util import find_spec

    return all(find_spec(m) is not None for m in ("jax", "flax"))


def burst_crops(source, size: int, n: int, model, *, split: str = "eval", seed: int = 0):
    """Crops for a burst model's export (:func:`rawlab.deploy.export.export_tflite`: int8 calibration and the
    parity check), in :func:`rawlab.deploy.crops.find_crops`' form: ``n`` bursts of ``size`` packed px simulated
    by the training source (:class:`rawlab.learn.burstdata.BurstSource`, its held-out stream for ``"eval"``),
    ``noisy`` the ``4 K`` aligned frames, ``a`` and ``b`` tiled to match, ``clean`` the reference's truth.
    ``source`` is not used (a burst model trains on no store)."""
    from ..learn.burstdata import BurstSource
    from ..learn.bursttrain import burst_frames
    from ..learn.input_pipeline import EVAL_STREAM, TRAIN_STREAM
    from .crops import Crop

    k = burst_frames(model.config)
    stream = EVAL_STREAM if split == "eval" else TRAIN_STREAM
    merged = bool(model.config["model"]["spec"].get("merge_frames"))
    src = BurstSource(size, k, seed=seed, stream=stream, pool=1, reuse=max(1, n), full=1.0, merged=merged)
    crops = []
    for i in range(n):
        ex = src.example(np.random.default_rng([seed, stream, i]), 0)
        reps = ex["noisy"].shape[-1] // len(ex["a"])
        a, b = (np.tile(np.asarray(ex[v], np.float32), reps) for v in ("a", "b"))
        crops.append(Crop(ex["noisy"], ex["clean"], a, b, f"simulated burst {i} ({k} frames)"))
    return crops, f"simulated bursts ({k} frames, procedural scenes, {split} stream)"


def denoise_burst(
    runner,
    frames: int,
    planes: np.ndarray,
    cfa: str,
    a,
    b,
    *,
    reference: int = 0,
    weights: list | None = None,
    single_weights: list | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """The burst model's clean reference ``(4, h, w)`` float32 from normalised packed frames ``(N, 4, h, w)``.

    ``runner`` and ``frames`` (``K``) are :func:`burst_model`'s; ``a``, ``b`` the reference's noise law per
    channel (normalised units). The runner's ``ensemble`` rotations of the whole input (the merge and every
    frame alike) are denoised and averaged (:func:`rawlab.deploy.ensemble.self_ensemble`). With the runner's
    ``fuse`` and a model that reads the merge, the result is fused with VST+NL-means and VST+DCT of the merge by
    SURE (module docstring); ``weights``, if given, receives the tiles' weights ``(tiles, 2)`` (model, classical).
    With the runner's ``single`` (:func:`burst_model`'s ``fuse_single``), that is then fused with the
    single-frame model's output on the reference, in the reference's domain (module docstring, "Fusion with the
    single-frame model"); ``single_weights`` receives those weights ``(tiles, 2)`` (the burst's outputs
    together, the single-frame model's; averaged over the planes). ``progress(1)`` is called as each of the
    :func:`burst_stages` stages ends (a progress bar's ``update``).
    """
    done = progress or (lambda n: None)
    single = getattr(runner, "single", None)
    if single is None or not runner.fuse:
        out = _burst_estimate(runner, frames, planes, cfa, a, b, reference=reference, weights=weights)
        done(1)
        return out
    from ..burst.align import align_burst
    from .guard import probed_estimates, sure_fuse

    planes = np.asarray(planes, np.float32)
    a4, b4 = (np.asarray(v, np.float32).reshape(4) for v in (a, b))
    alignments = align_burst(planes, reference)  # held for the probe: piecewise constant in the reference
    held: dict = {}  # the unprobed pass's merge-fusion weights, held for the probe's pass
    unprobed = [weights]  # the merge fusion's weights are reported from the unprobed pass only

    def burst_on(v: np.ndarray) -> list[np.ndarray]:  # the burst outputs with the reference replaced by v
        p = planes.copy()
        p[reference] = np.moveaxis(v, -1, 0)
        w = unprobed.pop() if unprobed else None
        parts: list = []
        got = _burst_estimate(
            runner, frames, p, cfa, a4, b4, reference=reference, weights=w, alignments=alignments, parts=parts,
            held=held,
        )  # fmt: skip
        done(1)  # the burst pass, then the probe's
        return [np.moveaxis(got, 0, -1), *parts]

    y = np.ascontiguousarray(np.moveaxis(planes[reference], 0, -1))
    burst = probed_estimates(
        burst_on, y, a4, b4, seed=101
    )  # the fused burst output, the model's own, the merge
    one = _single_estimate(single, y, a4, b4, cfa)
    done(1)
    tile, overlap = SINGLE_FUSE_TILE
    out, w = sure_fuse(y, [*burst, one], a4, b4, per_channel=True, tile=tile, overlap=overlap)
    done(1)
    if single_weights is not None:
        w = w.mean(axis=1)  # (tiles, c, K) over the channels; the burst's candidates together
        single_weights.append(np.stack([w[:, :-1].sum(axis=1), w[:, -1]], axis=1))
    return np.ascontiguousarray(np.moveaxis(out, -1, 0))


def burst_stages(runner) -> int:
    """How many times :func:`denoise_burst` reports progress for one burst with ``runner``: the burst pass, the
    probe's pass, the single-frame model and the fusion with it; one pass without that fusion."""
    return 4 if getattr(runner, "single", None) is not None and runner.fuse else 1


def _single_estimate(single, y: np.ndarray, a, b, cfa: str) -> tuple[np.ndarray, np.ndarray]:
    """The single-frame runtime's estimate of ``y`` ``(h, w, 4)`` and its per-pixel derivative: from its own
    fusion, the weights held (``keep_derivative``, set by :func:`burst_model`; :func:`rawlab.deploy.guard.sure_fuse`),
    where it fuses; else from one more pass on the probed input (:func:`rawlab.deploy.guard.probed_estimate`)."""
    from .guard import probed_estimate

    est = np.asarray(single.denoise(y, a, b, cfa=cfa), np.float32)
    if single.fused_derivative is not None:
        return est, single.fused_derivative
    return probed_estimate(lambda v: single.denoise(v, a, b, cfa=cfa), y, a, b, seed=102)


def _burst_estimate(
    runner,
    frames: int,
    planes: np.ndarray,
    cfa: str,
    a,
    b,
    *,
    reference: int = 0,
    weights: list | None = None,
    alignments: list | None = None,
    parts: list | None = None,
    held: dict | None = None,
) -> np.ndarray:
    """:func:`denoise_burst` without the fusion with the single-frame model; ``alignments`` (one per frame)
    replace the aligner's; ``parts``, if given, receives the model's own output ``(h, w, 4)`` before its fusion
    with the merge's classical candidates, then the merge (nothing when there is no such fusion).

    ``held``: an empty dict receives the merge fusion's weights (``"weights"``); given them, the fusion blends
    with those weights held (:func:`rawlab.deploy.guard.held_blend`), one pass of the model and of each classical
    candidate without their derivatives: the probe's pass of :func:`denoise_burst`, whose derivative of the
    fused output is then the one with the weights held, as SURE holds them."""
    from ..learn.burstdata import burst_input
    from .guard import (
        classical_estimates,
        classical_outputs,
        held_blend,
        model_and_classical,
        probed_estimate,
        sure_fuse,
    )
    from .tiling import run_tiled

    merged = bool(runner.config.get("model", {}).get("spec", {}).get("merge_frames"))
    part = runner.merge_part() if merged else None  # a model that reads only the merge: the frames unused
    x, an, bn = burst_input(
        planes, cfa, frames, a, b, merged=merged, reference=reference, alignments=alignments,
        frames_too=part is None,
    )  # fmt: skip
    a4, b4 = (np.asarray(v, np.float32).reshape(4) for v in (a, b))
    norm, t = runner.normalisation, runner.tile
    network = part or runner

    groups = x.shape[-1] // 4

    def image(planes: np.ndarray, src: list[int]) -> np.ndarray:  # src: each channel's law, in every frame
        every = [4 * g + c for g in range(groups) for c in src]
        law_in, law_out = (an[every], bn[every]), (a4[src], b4[src])

        def net(tiles):
            return norm.from_network(network._run(norm.to_network(tiles, *law_in)), *law_out)

        return run_tiled(net, planes, t["size"], t["overlap"], batch=runner.batch)

    if not (merged and runner.fuse):
        return np.ascontiguousarray(np.moveaxis(self_ensemble(image, x, cfa, runner.ensemble), -1, 0))
    merge, am, bm = x[..., :4], an[:4], bn[:4]  # the merge is the observation, with its own law

    def on_merge(m: np.ndarray) -> np.ndarray:  # the model with the merge replaced, any frames as they are
        xm = x.copy()
        xm[..., :4] = m
        return self_ensemble(image, xm, cfa, runner.ensemble)

    if held is not None and "weights" in held:  # the probe's pass: the weights held
        own = np.asarray(on_merge(merge), np.float32)
        if parts is not None:
            parts.extend([own, merge])
        out = held_blend(merge, [own, *classical_outputs(merge, am, bm)], held["weights"])
        return np.ascontiguousarray(np.moveaxis(out, -1, 0))
    model = probed_estimate(on_merge, merge, am, bm, seed=0)
    if parts is not None:
        parts.extend([model[0], merge])
    out, w = sure_fuse(merge, [model, *classical_estimates(merge, am, bm)], am, bm, per_channel=True)
    if held is not None:
        held["weights"] = w
    if weights is not None:
        weights.append(model_and_classical(w))
    return np.ascontiguousarray(np.moveaxis(out, -1, 0))


def denoise_burst_files(
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    model: str | os.PathLike[str],
    *,
    reference: int = 0,
    overwrite: bool = False,
    runner=None,
    progress: Callable[[int], None] | None = None,
) -> BurstDenoised:
    """Denoise one burst of raw files into the DNG ``out`` with the burst model ``model`` (module docstring);
    a burst that cannot be used is returned as a failed result with the reason, never raised (a bad model is
    raised: it fails every burst). ``progress``: :func:`denoise_burst`'s, stage by stage."""
    from ..burst.files import burst_to_dng
    from .noiseparams import noise_for_frame

    runner, k = runner or burst_model(model)
    res = BurstDenoised([os.fspath(p) for p in paths], os.fspath(out), reference=reference)

    def denoise(frames, planes, ref):
        est = noise_for_frame(runner, ref.info, planes[reference])
        res.noise = est.describe()
        res.frames_used = min(len(frames), k)
        weights: list = []
        single_weights: list = []
        clean = denoise_burst(
            runner, k, planes, ref.info.cfa, est.a, est.b, reference=reference, weights=weights,
            single_weights=single_weights, progress=progress,
        )  # fmt: skip
        if weights:
            model_w, classical_w = np.median(np.concatenate(weights), axis=0)
            res.fusion = f"fused {model_w:.0%} model, {classical_w:.0%} NL-means and DCT of the merge"
        if single_weights:
            burst_w, single_w = np.median(np.concatenate(single_weights), axis=0)
            res.fusion += f"; then {burst_w:.0%} burst, {single_w:.0%} single-frame model on the reference"
        return clean, {"software": f"rawlab {__version__} denoise --burst ({len(frames)} frames)"}

    return burst_to_dng(res, out, denoise, overwrite=overwrite, what="denoised burst")


def denoise_bursts(
    bursts: Sequence[Sequence[str]],
    outs: Sequence[str | os.PathLike[str]],
    model: str | os.PathLike[str],
    *,
    reference: int = 0,
    overwrite: bool = False,
    options: RunOptions | None = None,
    on_result: Callable[[BurstDenoised], None] | None = None,
    ensemble: int = DEFAULT_ENSEMBLE,
    fuse: bool = True,
    fuse_single: bool | None = None,
) -> list[BurstDenoised]:
    """Denoise many bursts with the burst model ``model``, one Dask task each (as ``burst merge`` runs folders:
    :func:`rawlab.burst.files.run_bursts`; each worker loads the model once); results in input order, a burst
    that failed carries the reason; each burst through ``ensemble`` rotations and, with ``fuse``, fused with
    VST+NL-means of its merge, and with ``fuse_single`` with the single-frame model on its reference
    (:func:`burst_model`).

    Raises
    ------
    RawlabError
        ``bursts`` and ``outs`` differ in length, or two bursts would write the same output.
    """
    from ..burst.files import run_bursts

    return run_bursts(
        _task, bursts, outs, (os.fspath(model), reference, overwrite, ensemble, fuse, fuse_single),
        name="denoise-burst",
        options=options,
        on_result=on_result, result=BurstDenoised,
    )  # fmt: skip


@lru_cache(maxsize=2)
def _worker_model(model: str, ensemble: int, fuse: bool, fuse_single: bool | None):
    return burst_model(model, ensemble=ensemble, fuse=fuse, fuse_single=fuse_single)


def _task(paths, out, model, reference, overwrite, ensemble, fuse, fuse_single) -> BurstDenoised:
    return denoise_burst_files(
        paths,
        out,
        model,
        reference=reference,
        overwrite=overwrite,
        runner=_worker_model(model, ensemble, fuse, fuse_single),
    )

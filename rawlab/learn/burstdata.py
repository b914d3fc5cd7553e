"""Training bursts made on the fly, and the burst model's input: frames aligned onto the reference, as channels.

A burst model (:func:`rawlab.learn.models.burst_spec`) is the U-Net family with the frames as channels: the reference's packed planes first, then ``K - 1`` alternates already resampled onto it, ``(h, w,
4 K)``, and the noise map of each (``noisemap`` normalisation, :mod:`rawlab.learn.normalize`, on all ``4 K``
channels), so ``in_channels = 8 K``; out 4, the clean reference. The U-Net adds its residual to the first 4
input channels, the reference, so an untrained network is the reference frame. Config ``burst``
(:mod:`rawlab.learn.configs.burst`) puts the classical merge in front ("With the merge" below).

**Aligned frames** (:func:`aligned_frames`): each alternate is resampled onto the reference exactly as
``rawlab burst merge`` does it (:mod:`rawlab.burst`): per half-overlapping tile at the tile's displacement,
through the demosaic at mosaic resolution (:func:`rawlab.burst.resample.mosaic_tiles`), windowed by the merge's
raised cosine and added back (:func:`rawlab.burst.merge.window`), so a whole frame comes out. The displacements
are the aligner's (:func:`rawlab.burst.align.align_frame`) at inference, and in training either the aligner's
too (``align = "aligner"``) or the true camera motion at each tile's centre (``align = "true"``, cheaper):
either way what the network sees is what the resampler leaves, and a moving object is never compensated, so
the network learns to fall back on the reference where the frames disagree.

**Bursts** (:class:`BurstSource`): a procedural dead-leaves scene (:func:`rawlab.synth.procedural.dead_leaves`)
is filmed noise-free by :func:`rawlab.synth.burst.simulate_burst`: hand shake (sub-pixel translation up to
``max_shift`` mosaic px and a small rotation per frame) and sometimes a moving disc, ``K`` frames, mosaicked
for a randomly drawn sensor's CFA and levels (:func:`rawlab.synth.procedural.random_sensor`). That render is
most of an example's cost, so each noise-free burst serves ``reuse`` consecutive batches (``pool`` of them alive
at once, a batch's examples picking among them); every example draws its own noise law ``(a, b)`` from the
random sensors' ranges, its own frame count and its own Poisson-Gaussian noise per frame, rounded to DN and
clipped. A burst has between 1 and ``K`` real frames (``full`` of the examples have ``K``); the missing slots
repeat the reference, as :func:`burst_stack` fills a short burst at inference, so one model serves 2, 4 and 8
frames. The target is the reference's clean planes, clipped at white.

**With the merge** (``UNetSpec.merge_frames``, config ``burst``): :func:`burst_input` puts the classical merge
of the frames (:func:`rawlab.burst.merge_burst`, as ``rawlab burst merge`` runs it, its alignment reused for
the frames) in front of them, ``(h, w, 4 (K + 1))``, with a noise law per channel: the merge's (the frame's
scaled by its variance factor) for the first 4, the frame's for the rest. Training computes it per example from
the noisy frames, as inference does. Every example is a pure function of
``(seed, stream, k, i)`` (the input pipeline's contract: the noise-free bursts are of ``(seed, stream, k //
reuse, slot)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..burst.align import TILES, align_frame, grey, tile_origins
from ..burst.merge import _overlap_add, window  # the merge's overlap-add: one home for it
from ..burst.resample import mosaic_tiles
from ..synth.burst import SUPERSAMPLE, FrameMotion, _margin, simulate_burst
from ..synth.procedural import A_RANGE, dead_leaves, random_sensor

__all__ = [
    "ALIGN",
    "SENSOR",
    "BurstPipeline",
    "BurstSource",
    "aligned_frames",
    "burst_input",
    "burst_stack",
    "true_displacements",
]

SENSOR = "procedural-burst"  # the sensor name burst examples carry in a batch
# Bundled photographs a burst may be filmed from (burst.photos); coffee, chelsea and rocket are left out: they are
# the held-out scenes of benchmarks/burst_model.py and of the burst tests.
PHOTOS = ("astronaut", "stereo_motorcycle", "immunohistochemistry", "hubble_deep_field", "retina")
ALIGN = ("true", "aligner")
PAD = 8  # packed px simulated around a crop, so the resampler's extended edges stay outside it


def true_displacements(m: FrameMotion, h: int, w: int, tile: int = TILES[0]) -> np.ndarray:
    """The aligner's ``(ny, nx, 2)`` displacement field (``(dy, dx)`` packed px, ``alt(p + d) = ref(p)``) that a
    frame with camera motion ``m`` has at each tile's centre, for packed planes ``(h, w)``.

    ``frame(q) = ref(R(-t)(q - c - d_k) + c)`` (:mod:`rawlab.synth.burst`), so the reference's point ``p`` is
    at ``q = R(t)(p - c) + c + d_k`` in the frame: ``d = (q - p) / 2`` in packed px.
    """
    y0, x0 = tile_origins(h, tile), tile_origins(w, tile)
    py = 2.0 * (y0 + tile / 2) - 0.5  # tile centres in mosaic px
    px = 2.0 * (x0 + tile / 2) - 0.5
    gy, gx = np.meshgrid(py, px, indexing="ij")
    cy, cx = (2 * h - 1) / 2.0, (2 * w - 1) / 2.0
    t = math.radians(m.rotation)
    c, s = math.cos(t), math.sin(t)
    ux, uy = gx - cx, gy - cy
    qx, qy = c * ux - s * uy + cx + m.dx, s * ux + c * uy + cy + m.dy
    return (np.stack([qy - gy, qx - gx], axis=-1) / 2.0).astype(np.float32)


def aligned_frames(
    frames: np.ndarray,
    cfa: str,
    *,
    reference: int = 0,
    displacements: list[np.ndarray | None] | None = None,
    tile: int = TILES[0],
) -> np.ndarray:
    """Every frame of ``frames`` ``(N, 4, h, w)`` (packed, normalised) resampled onto the reference: ``(N, 4,
    h, w)`` float32, the reference first, then the others in order.

    ``displacements`` gives each frame's tile field (``(ny, nx, 2)``, packed px; None or absent: the aligner's,
    :func:`rawlab.burst.align.align_frame`). ``h`` and ``w`` must be even multiples of nothing: any size the
    merge takes.
    """
    frames = np.asarray(frames, np.float32)
    n, _, h, w = frames.shape
    ref = frames[reference]
    y0, x0 = tile_origins(h, tile), tile_origins(w, tile)
    win = window(tile)
    g = grey(ref)
    out = [ref]
    for k in range(n):
        if k == reference:
            continue
        d = displacements[k] if displacements is not None else None
        if d is None:
            d = align_frame(g, grey(frames[k]), tile).displacement
        tiles = mosaic_tiles(frames[k], cfa, y0, x0, tile, np.asarray(d, np.float32))
        out.append(_overlap_add(tiles * win, h, w, tile))
    return np.stack(out)


def burst_stack(aligned: np.ndarray, frames: int) -> np.ndarray:
    """The network's frames, channels last ``(h, w, 4 frames)``, from aligned frames ``(N, 4, h, w)`` (reference
    first): the first ``frames`` of them; a shorter burst is filled with copies of the reference."""
    aligned = np.asarray(aligned, np.float32)
    idx = list(range(min(len(aligned), frames))) + [0] * max(0, frames - len(aligned))
    return np.ascontiguousarray(np.concatenate([np.moveaxis(aligned[i], 0, -1) for i in idx], axis=-1))


def burst_input(
    frames: np.ndarray,
    cfa: str,
    k: int,
    a,
    b,
    *,
    merged: bool = False,
    reference: int = 0,
    displacements: list[np.ndarray | None] | None = None,
    alignments: list | None = None,
    frames_too: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A burst model's input before normalisation: ``x (h, w, C)`` and a noise law per channel ``a, b (C,)``.

    ``frames`` ``(N, 4, h, w)`` packed normalised, the reference at ``reference``, with the reference's law
    ``a``, ``b`` (4 per channel); ``k`` the model's frame slots. Without ``merged``, ``C = 4 k``:
    :func:`burst_stack` of :func:`aligned_frames` (``displacements`` as there; the law repeated). With it,
    ``C = 4 (k + 1)``: the classical merge of the frames (:func:`rawlab.burst.merge_burst`, over the first ``k``
    of them, the reference first) with its law (:meth:`rawlab.burst.merge.Merged.noise`) in front, the frames
    resampled at the merge's alignment unless ``displacements`` is given. ``alignments`` (one
    :class:`rawlab.burst.align.Alignment` per frame of ``frames``, the reference's zero) replaces the aligner's
    for the merge and the resampling: the same alignment for a burst whose reference is perturbed, as SURE's
    probe of it needs (:func:`rawlab.deploy.burst.denoise_burst`). With ``merged`` and not ``frames_too``, the
    merge alone (``C = 4``), for a model that reads nothing else (:func:`rawlab.learn.modelio.merge_part`).
    """
    from ..burst.merge import merge_burst

    frames = np.asarray(frames, np.float32)
    order = [reference, *(i for i in range(len(frames)) if i != reference)][:k]
    frames = frames[order]
    if displacements is not None:
        displacements = [displacements[i] for i in order]
    if alignments is not None:
        alignments = [alignments[i] for i in order]
        if displacements is None:
            displacements = [al.displacement for al in alignments]
    a4, b4 = (np.asarray(v, np.float64).reshape(4) for v in (a, b))
    an, bn = np.tile(a4, k), np.tile(b4, k)
    if not merged:
        x = burst_stack(aligned_frames(frames, cfa, displacements=displacements), k)
        return x, an.astype(np.float32), bn.astype(np.float32)
    m = merge_burst(frames, a4, b4, cfa=cfa, alignments=alignments)
    am, bm = m.noise(a4, b4)
    if not frames_too:
        return np.moveaxis(m.planes, 0, -1), am.astype(np.float32), bm.astype(np.float32)
    if displacements is None:
        displacements = [al.displacement for al in m.alignments]
    x = burst_stack(aligned_frames(frames, cfa, displacements=displacements), k)
    x = np.concatenate([np.moveaxis(m.planes, 0, -1), x], axis=-1)
    return x, np.concatenate([am, an]).astype(np.float32), np.concatenate([bm, bn]).astype(np.float32)


def _photo_patch(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random ``n x n`` crop of a bundled photograph (:data:`PHOTOS`) at a random scale (0.5 to 1 of its own
    resolution, never upsampled past it where it is large enough), unprocessed to linear RGB
    (:func:`rawlab.synth.scenes.unprocess_srgb`) and exposed so that its 99th percentile is 0.4 to 1.1 (a
    little clips at white), float32 ``(n, n, 3)``."""
    from skimage.transform import rescale

    from ..synth.scenes import photo, unprocess_srgb

    img = photo(PHOTOS[int(rng.integers(len(PHOTOS)))])
    scale = max(float(rng.uniform(0.5, 1.0)), n / min(img.shape[:2]))
    if abs(scale - 1.0) > 1e-3:
        img = rescale(img, scale, order=1, anti_aliasing=scale < 1, channel_axis=-1)
    y, x = (int(rng.integers(0, s - n + 1)) for s in img.shape[:2])
    lin = unprocess_srgb(img[y : y + n, x : x + n])
    if rng.random() < 0.5:
        lin = lin[:, ::-1]
    lin = lin * (rng.uniform(0.4, 1.1) / max(float(np.percentile(lin, 99)), 1e-3))
    return np.ascontiguousarray(lin, np.float32)


@dataclass(frozen=True)
class _Recorder:
    """A :class:`~rawlab.synth.procedural.RandomSensor` in the shape :func:`rawlab.synth.burst.simulate_burst`
    records with (its ``noise_params`` at any ISO are the drawn ``(a, b)``)."""

    cfa: str
    black_level: tuple[float, float, float, float]
    white_level: float
    a: np.ndarray
    b: np.ndarray

    @property
    def dn_range(self) -> np.ndarray:
        return self.white_level - np.asarray(self.black_level, dtype=np.float64)

    def noise_params(self, iso: float) -> tuple[np.ndarray, np.ndarray]:
        return self.a, self.b


class BurstSource:
    """Training bursts of ``crop x crop`` packed px with ``frames`` frames (module docstring).

    Parameters
    ----------
    crop
        Example size, packed px.
    frames
        ``K``: the network's frame slots.
    seed, stream
        The pipeline's seed and stream (train/eval never share scenes).
    pool, reuse
        Noise-free bursts (each its own scene, motion and sensor) alive at once, and consecutive batches that
        share them (each example draws its own noise law, frame count and noise).
    align
        ``"true"``: alternates resampled at the true camera motion; ``"aligner"``: at the aligner's estimate.
    full
        Share of examples with all ``K`` frames; the others have 1 to ``K - 1``.
    moving
        Share of bursts with a moving object.
    max_shift, max_rotation
        Hand shake per frame: mosaic px per axis and degrees (:func:`rawlab.synth.burst.simulate_burst`).
    a_range
        The shot term ``a`` the random sensors draw from (log-uniform; default the procedural source's).
    merged
        The classical merge in front of the frames (:func:`burst_input`); ``a`` and ``b`` are then per channel.
    photos
        Share of bursts filmed from a bundled photograph (:data:`PHOTOS`, a random crop at a random scale and
        exposure, unprocessed to linear) instead of a dead-leaves scene.
    """

    def __init__(
        self,
        crop: int,
        frames: int,
        *,
        seed: int = 0,
        stream: int = 0,
        pool: int = 8,
        reuse: int = 4,
        align: str = "true",
        full: float = 0.5,
        moving: float = 0.5,
        max_shift: float = 4.0,
        max_rotation: float = 0.25,
        a_range: tuple[float, float] | None = None,
        merged: bool = False,
        photos: float = 0.0,
    ):
        if align not in ALIGN:
            raise ValueError(f"align must be one of {ALIGN}, got {align!r}")
        self.crop, self.frames, self.seed, self.stream = int(crop), int(frames), int(seed), int(stream)
        self.pool, self.reuse = max(1, int(pool)), max(1, int(reuse))
        self.align, self.full, self.moving = align, float(full), float(moving)
        self.max_shift, self.max_rotation = float(max_shift), float(max_rotation)
        self.a_range = tuple(a_range) if a_range else A_RANGE
        self.merged, self.photos = bool(merged), float(photos)
        self.size = 2 * (self.crop + 2 * PAD)  # mosaic px simulated per example
        margin = _margin(self.size, self.size, self.max_shift, self.max_rotation)
        self.render = SUPERSAMPLE * (self.size + 2 * margin)  # the scene crop simulate_burst samples
        self.scene_size = self.render  # mosaic px: upsampled to the render in burst()
        self._clean = lru_cache(maxsize=2 * self.pool)(self._make_clean)

    def _make_clean(self, group: int, j: int):
        """Slot ``j`` of scene group ``group``: a noise-free ``K``-frame burst (:class:`rawlab.synth.burst.Burst`,
        its ``frames`` unused) and the sensor it was mosaicked for. The expensive part of an example, cached."""
        from scipy.ndimage import zoom

        rng = np.random.default_rng([self.seed, self.stream, 0xB5CE9E, group, j])
        n = self.render // SUPERSAMPLE
        if rng.random() < self.photos:
            scene = _photo_patch(rng, n)
        else:
            scene = dead_leaves(rng, self.scene_size, self.scene_size)
        y, x = (int(v) for v in rng.integers(0, scene.shape[0] - n + 1, 2))
        # The procedural scene is drawn at mosaic resolution (its finest detail one mosaic pixel, as in
        # ProceduralSource) and upsampled for simulate_burst's supersampled render: drawn at the render's own
        # resolution, detail at half a mosaic pixel aliases so hard in the Bayer planes that no resampler can
        # move it by a sub-pixel shift, and the alternates would carry no information.
        render = zoom(scene[y : y + n, x : x + n], (SUPERSAMPLE, SUPERSAMPLE, 1), order=1)
        sensor = random_sensor(rng, a_range=self.a_range)
        rec = _Recorder(sensor.cfa, sensor.black_level, sensor.white_level, sensor.a, sensor.b)
        burst = simulate_burst(
            rec, "procedural", 0, self.frames, (self.size, self.size), seed=int(rng.integers(2**63)),
            moving=bool(rng.random() < self.moving), max_shift=self.max_shift,
            max_rotation=self.max_rotation, scene_rgb=render,
        )  # fmt: skip
        return burst, sensor

    def burst(self, rng: np.random.Generator, k: int):
        """A simulated burst for batch ``k`` (:class:`rawlab.synth.burst.Burst`) and its sensor: a cached
        noise-free burst's first ``n`` frames with a noise law drawn for this example, recorded."""
        from dataclasses import replace

        from ..synth.generate import simulate_frame

        clean, sensor = self._clean(k // self.reuse, int(rng.integers(self.pool)))
        law = random_sensor(rng, a_range=self.a_range)  # its a and b; the levels stay the render's
        span, law_span = (s.white_level - s.black_level[0] for s in (sensor, law))
        b = law.b - 1.0 / (12.0 * law_span**2) + 1.0 / (12.0 * span**2)  # the rounding term of this sensor
        sensor = replace(sensor, a=law.a, b=b)
        rec = _Recorder(sensor.cfa, sensor.black_level, sensor.white_level, sensor.a, sensor.b)
        n = self.frames if rng.random() < self.full else int(rng.integers(1, max(2, self.frames)))
        frames = np.stack([simulate_frame(clean.clean[i], rec, 0, rng) for i in range(n)])
        burst = replace(
            clean, frames=frames, clean=clean.clean[:n], masks=clean.masks[:n], motion=clean.motion[:n],
            objects=clean.objects[:n], sensor=rec,
        )  # fmt: skip
        return burst, sensor

    def example(self, rng: np.random.Generator, k: int) -> dict[str, Any]:
        """One example for batch ``k``: ``noisy (c, c, 4 K)`` aligned frames, ``clean (c, c, 4)``, ``a``, ``b``."""
        burst, sensor = self.burst(rng, k)
        h = w = self.size // 2
        frames = burst.normalized()
        disp = None
        if self.align == "true":
            disp = [true_displacements(m, h, w) for m in burst.motion]
        x, a, b = burst_input(frames, sensor.cfa, self.frames, sensor.a, sensor.b, merged=self.merged,
                              displacements=disp)  # fmt: skip
        c, p = self.crop, PAD
        noisy = np.ascontiguousarray(x[p : p + c, p : p + c])
        clean = np.minimum(np.moveaxis(burst.clean[0, :, p : p + c, p : p + c], 0, -1), 1.0)
        if not self.merged:  # one law for every frame, tiled by the loss
            a, b = sensor.a, sensor.b
        return {
            "noisy": noisy, "clean": np.ascontiguousarray(clean, np.float32), "a": a, "b": b,
            "iso": float("nan"), "sensor": SENSOR, "synthetic": True, "frame_id": None, "ref_id": None,
            "y": 0, "x": 0, "op": 0, "n_frames": burst.n_frames,
        }  # fmt: skip


class BurstPipeline:
    """Batches of :class:`BurstSource` examples in the input pipeline's form (``noisy (B, c, c, 4 K)``,
    ``clean``, ``a``, ``b``, ``iso``, ``sensor_idx``, ``synthetic``), with its determinism and prefetching: the
    batching and the threads are :class:`rawlab.learn.input_pipeline.Pipeline`'s own (:meth:`batch`,
    :meth:`batches`, :meth:`throughput`), bound to this class, which has no store to read."""

    def __init__(self, source: BurstSource, *, batch_size: int, seed: int = 0, stream: int = 0,
                 workers: int = 2, prefetch: int = 4):  # fmt: skip
        import threading

        self.source, self.crop = source, source.crop
        self.batch_size, self.seed, self.stream = int(batch_size), int(seed), int(stream)
        self.workers, self.prefetch = int(workers), max(1, int(prefetch))
        self.sensors, self.rgb, self.sure = [SENSOR], False, False
        self._build = [0, 0.0]
        self._build_lock = threading.Lock()

    def example(self, k: int, i: int) -> dict[str, Any]:
        return self.source.example(np.random.default_rng([self.seed, self.stream, k, i]), k)

    from .input_pipeline import Pipeline as _P

    batch, batches, throughput = _P.batch, _P.batches, _P.throughput
    del _P

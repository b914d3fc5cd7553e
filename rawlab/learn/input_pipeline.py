"""Training batches from a rawlab store: random aligned crops of noisy/clean pairs, real or synthetic noise.

The pipeline yields numpy batches and knows nothing about models or optimisers (the Flax ``input_pipeline.py``
shape)::

    {"noisy": (B, c, c, 4) float32, "clean": (B, c, c, 4) float32,   # packed R, G1, G2, B; normalised
     "a": (B, 1, 1, 4) float32, "b": (B, 1, 1, 4) float32,           # Var[noisy] = a * clean + b
     "iso": (B,) float32, "sensor_idx": (B,) int32, "synthetic": (B,) bool}

With ``rgb=True`` (the joint demosaic+denoise model) a batch also has ``"rgb": (B, 2c, 2c, 3)``, the linear
camera RGB truth (clipped at white, as the clean planes are), and every array is in the RGGB phase
(:func:`rawlab.learn.models.to_rggb`). Procedural examples carry their scene's RGB; store examples read the
colour truth of their reference's scene (``truths``: the catalog's ``truth_path``, a float32 TIFF at mosaic
resolution in normalised units, aligned with the reference), without flips or transposes (``augment`` off).

- **Pairs** (:class:`rawlab.catalog.pairs.Pair`, from :func:`rawlab.catalog.pairs.pairs_from_catalog` on the
  rows of a split, :func:`rawlab.learn.split.split_pairs`) are read as every consumer reads them: normalised
  (:func:`rawlab.bayer.normalise`), aligned by the pair's ``shift`` in whole packed pixels and the reference
  scaled by its per-channel ``gain`` (:mod:`rawlab.catalog.pairs`); here on a random window, channels-last.
- **Synthetic** examples (a share ``synthetic_fraction``) draw Poisson-Gaussian noise (or, with ``noise.kind``
  ``"physics"``, a calibration's physics noise) on a clean reference crop at an ISO drawn over the sensor's
  range (:mod:`rawlab.learn.synthnoise`).
- **Procedural** examples (a share ``procedural_fraction``) come from unlimited dead-leaves scenes, each
  recorded by its own randomly drawn sensor (:mod:`rawlab.learn.procedural`): content and noise laws the
  store does not have.
- **Self-supervised** examples (``r2r_alpha`` set; the "pairs" are the noisy frames themselves, ``ref_id ==
  frame_id``): a noisy crop ``y`` becomes the input ``y + alpha z`` and the target ``y - z / alpha`` with ``z``
  drawn from the noise law at ``y`` (Recorrupted-to-Recorrupted, Pang et al. CVPR 2021). The two noises are
  uncorrelated, so an L2 loss against the target learns the clean signal. The input's noise is ``(1 +
  alpha^2)`` times the frame's, and its ``(a, b)`` say so. With ``sure`` instead, the noisy crop is the input
  as it is (and the placeholder target), flagged ``"sure"`` in the batch, with a Rademacher ``"probe"`` per
  pixel: the training loss is then Stein's unbiased estimate of the squared error against the unknown clean
  signal (:func:`rawlab.learn.losses.sure_mse`), which needs no second noise draw.
- **Augmentation**: the 8 flips and transposes, Bayer-preserving (:mod:`rawlab.learn.augment`); every crop is
  read one packed pixel larger for it.
- **Determinism**: example ``i`` of batch ``k`` is a pure function of ``(seed, stream, k, i)``, so the same
  seed gives the same batches whatever the number of prefetch threads and their timing, and resuming at step
  ``k`` is exact.
- **Reads**: only the Zarr chunks under a crop window are read (one request per window), and decoded chunks
  are kept in an LRU cache of ``cache_mb`` (a dataset that fits is decoded once). Background threads prefetch
  whole batches; Zarr decoding and most numpy work release the GIL.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

import numpy as np

from ..bayer import normalise
from ..catalog.pairs import Pair
from ..errors import RawlabError
from .augment import N_OPS, augment_packed
from .synthnoise import SensorNoise

__all__ = ["ChunkReader", "Pipeline", "recorrupt"]

_PROBE_KEY = 2**31 - 1  # the SURE probe of batch k: seeded apart from its examples (i < batch size)

TRAIN_STREAM, EVAL_STREAM = 0, 1


class ChunkReader:
    """Reads windows of packed frames ``(4, n, n)`` uint16 through an LRU cache of decoded Zarr chunks.

    A window costs one store request for the chunks under it that are not cached (never the whole frame).
    ``stats`` counts chunk hits and misses. Thread-safe.
    """

    def __init__(self, fstore, cache_mb: float = 1024):
        self.fstore = fstore
        self.budget = int(cache_mb * 2**20)
        self._arrays: dict[str, Any] = {}
        self._chunks: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        self.stats = {"hits": 0, "misses": 0}

    def array(self, fid: str):
        arr = self._arrays.get(fid)
        if arr is None:
            import zarr

            arr = zarr.open_array(self.fstore.zstore, path=f"{self.fstore.frame_path(fid)}/raw", mode="r")
            with self._lock:
                self._arrays[fid] = arr
        return arr

    def read(self, fid: str, y: int, x: int, n: int) -> np.ndarray:
        """Packed DN ``(4, n, n)`` at corner ``(y, x)`` of frame ``fid``."""
        arr = self.array(fid)
        ch, cw = arr.chunks[1:]
        cys = range(y // ch, (y + n - 1) // ch + 1)
        cxs = range(x // cw, (x + n - 1) // cw + 1)
        keys = [(fid, cy, cx) for cy in cys for cx in cxs]
        with self._lock:
            got = {k: self._chunks.get(k) for k in keys}
            for k, v in got.items():
                if v is not None:
                    self._chunks.move_to_end(k)
        missing = [k for k, v in got.items() if v is None]
        if missing:  # one request for the chunk-aligned box around the missing chunks
            y0, y1 = min(k[1] for k in missing) * ch, (max(k[1] for k in missing) + 1) * ch
            x0, x1 = min(k[2] for k in missing) * cw, (max(k[2] for k in missing) + 1) * cw
            box = np.asarray(arr[:, y0:y1, x0:x1])
            for k in missing:
                got[k] = box[:, k[1] * ch - y0 : (k[1] + 1) * ch - y0, k[2] * cw - x0 : (k[2] + 1) * cw - x0]
            self._remember({k: got[k] for k in missing})
        with self._lock:
            self.stats["hits"] += len(keys) - len(missing)
            self.stats["misses"] += len(missing)
        if len(keys) == 1:  # a view into the cached chunk; the caller's normalisation copies it
            c = got[keys[0]]
            return c[:, y - cys[0] * ch : y - cys[0] * ch + n, x - cxs[0] * cw : x - cxs[0] * cw + n]
        out = np.empty((arr.shape[0], n, n), arr.dtype)
        for _, cy, cx in keys:  # copy only the part of each chunk under the window
            c = got[(fid, cy, cx)]
            y0, x0 = max(y, cy * ch), max(x, cx * cw)
            y1, x1 = min(y + n, cy * ch + c.shape[1]), min(x + n, cx * cw + c.shape[2])
            out[:, y0 - y : y1 - y, x0 - x : x1 - x] = c[
                :, y0 - cy * ch : y1 - cy * ch, x0 - cx * cw : x1 - cx * cw
            ]
        return out

    def _remember(self, chunks: dict[tuple, np.ndarray]) -> None:
        if self.budget <= 0:
            return
        with self._lock:
            for k, v in chunks.items():
                v = np.ascontiguousarray(v)  # not a view of the box: the box is freed
                if k in self._chunks:
                    continue
                self._chunks[k] = v
                self._nbytes += v.nbytes
            while self._nbytes > self.budget and self._chunks:
                _, old = self._chunks.popitem(last=False)
                self._nbytes -= old.nbytes


class Pipeline:
    """Deterministic, prefetching batches of aligned noisy/clean crops.

    Parameters
    ----------
    fstore
        The :class:`rawlab.catalog.store.FrameStore` holding the frames.
    pairs
        The pairs to draw from (:func:`rawlab.catalog.pairs.pairs_from_catalog`).
    noise
        ``{sensor: SensorNoise}`` for every sensor of ``pairs``.
    crop
        Crop side in packed pixels (a crop covers ``2 * crop`` mosaic pixels).
    batch_size
        Examples per batch.
    seed, stream
        Batch ``k`` is a pure function of ``(seed, stream, k)``; training and evaluation use different streams.
    synthetic_fraction
        Share (0..1) of examples whose noise is synthetic, drawn on a clean reference crop.
    procedural, procedural_fraction
        A :class:`~rawlab.learn.procedural.ProceduralSource` and the share (0..1) of examples it gives
        (procedural scenes recorded by randomly drawn sensors); the rest come from the store.
    augment
        Random Bayer-preserving flips and transposes.
    workers
        Background threads that prepare batches (0: prepare them in the consumer's thread).
    prefetch
        Batches prepared ahead of the consumer.
    cache_mb
        Budget of the decoded-chunk cache, MiB (0: no cache).
    r2r_alpha
        Self-supervised: ``pairs`` are noisy frames paired with themselves and every store example is a
        recorrupted pair (see the module docstring); ``synthetic_fraction`` must be 0.
    sure
        Self-supervised by SURE instead: every store example is a noisy crop as it is, and batches carry the
        ``"sure"`` flag per example and a ``"probe"`` of signs (module docstring); ``synthetic_fraction`` must
        be 0 and ``r2r_alpha`` None.
    rgb
        Batches carry the RGB truth ``"rgb"`` (joint model): ``procedural`` must give it (``rgb=True``), and
        unless it gives every example (``procedural_fraction`` 1), every reference of ``pairs`` needs a truth in
        ``truths`` and ``augment`` must be off.
    truths
        ``{ref_id: colour truth TIFF}`` for ``rgb`` store examples.
    """

    def __init__(
        self,
        fstore,
        pairs: Sequence[Pair],
        noise: dict[str, SensorNoise],
        *,
        crop: int,
        batch_size: int,
        seed: int = 0,
        stream: int = TRAIN_STREAM,
        synthetic_fraction: float = 0.0,
        procedural=None,
        procedural_fraction: float = 0.0,
        augment: bool = True,
        workers: int = 2,
        prefetch: int = 4,
        cache_mb: float = 1024,
        reader: ChunkReader | None = None,
        r2r_alpha: float | None = None,
        sure: bool = False,
        rgb: bool = False,
        truths: dict[str, str] | None = None,
    ):
        if not 0.0 <= synthetic_fraction <= 1.0:
            raise RawlabError(f"data.synthetic_fraction must be between 0 and 1, got {synthetic_fraction}")
        self.crop, self.batch_size = int(crop), int(batch_size)
        self.window = self.crop + 1  # one packed pixel more for the Bayer-preserving augmentation
        self.pairs = [p for p in pairs if p.window(self.window) is not None]
        if not self.pairs:
            sizes = sorted({f"{p.shape[1]}x{p.shape[0]}" for p in pairs})
            raise RawlabError(
                f"no frame is large enough for a crop of {self.crop} packed px (+1 for augmentation, plus the "
                f"alignment shift); frames are {', '.join(sizes) or 'none'} packed px (WxH): lower data.crop"
            )
        self.refs = list({p.ref_id: p for p in self.pairs}.values())  # clean references for synthetic noise
        self.noise = noise
        if not 0.0 <= procedural_fraction <= 1.0:
            raise RawlabError(f"data.procedural_fraction must be between 0 and 1, got {procedural_fraction}")
        if procedural_fraction > 0 and (procedural is None or procedural.crop != self.crop):
            raise ValueError("procedural_fraction > 0 needs a ProceduralSource with the pipeline's crop")
        self.procedural, self.procedural_fraction = procedural, float(procedural_fraction)
        self.sensors = sorted({p.sensor for p in self.pairs})
        if self.procedural_fraction > 0:
            from .procedural import SENSOR

            self.sensors.append(SENSOR)
        if r2r_alpha is not None and (r2r_alpha <= 0 or synthetic_fraction > 0):
            raise ValueError("r2r_alpha must be positive, and needs synthetic_fraction 0 (no clean frames)")
        self.r2r_alpha = None if r2r_alpha is None else float(r2r_alpha)
        if sure and (r2r_alpha is not None or synthetic_fraction > 0):
            raise ValueError("sure needs r2r_alpha None and synthetic_fraction 0 (no clean frames)")
        self.sure = bool(sure)
        self.rgb, self.truths = bool(rgb), dict(truths or {})
        if rgb and self.procedural_fraction > 0 and not getattr(procedural, "rgb", False):
            raise ValueError("rgb needs a ProceduralSource(rgb=True)")
        if rgb and self.procedural_fraction < 1:
            missing = sorted({p.ref_id for p in self.pairs} - set(self.truths))
            if missing or augment:
                raise ValueError(f"rgb store examples need augment off and a truth for every reference "
                                 f"({len(missing)} without one, e.g. {missing[:1]})")  # fmt: skip
        self.seed, self.stream = int(seed), int(stream)
        self.synthetic_fraction = float(synthetic_fraction)
        self.augment = bool(augment)
        self.workers, self.prefetch = int(workers), max(1, int(prefetch))
        self.reader = reader or ChunkReader(fstore, cache_mb)
        self._build = [0, 0.0]  # batches made and the seconds spent making them (all threads)
        self._build_lock = threading.Lock()

    # -- one example, one batch: pure functions of (seed, stream, k, i) -----------------------------------
    def example(self, k: int, i: int) -> dict[str, Any]:
        """Example ``i`` of batch ``k``, with where it came from (``frame_id``, ``ref_id``, ``y``, ``x``, ``op``)."""
        rng = np.random.default_rng([self.seed, self.stream, k, i])
        if self.procedural_fraction > 0 and rng.random() < self.procedural_fraction:
            return self.procedural.example(rng, k)
        if self.r2r_alpha is not None or self.sure:
            return self._recorrupted(rng)
        synthetic = bool(rng.random() < self.synthetic_fraction)
        pool = self.refs if synthetic else self.pairs
        p = pool[int(rng.integers(len(pool)))]
        n = self.window
        if synthetic:  # the reference alone: no shift, no gain
            y = int(rng.integers(0, p.shape[0] - n + 1))
            x = int(rng.integers(0, p.shape[1] - n + 1))
        else:
            y_lo, y_hi, x_lo, x_hi = p.window(n)
            y, x = int(rng.integers(y_lo, y_hi + 1)), int(rng.integers(x_lo, x_hi + 1))
        op = int(rng.integers(N_OPS)) if self.augment else 0
        sy, sx = (0, 0) if synthetic else p.shift
        # Flip the DN (uint16, half the bytes), then normalise channels-last (rawlab.bayer.normalise).
        ref = augment_packed(np.moveaxis(self.reader.read(p.ref_id, y - sy, x - sx, n), 0, -1), p.cfa, op)
        clean = normalise(ref, p.ref_black_level, p.ref_white_level, channel_axis=-1)
        if not synthetic:
            clean *= np.asarray(p.gain, np.float32)
        noise = self.noise[p.sensor]
        if synthetic:
            iso = noise.sample_iso(rng)
            a, b = noise.params(iso)
            noisy = noise.draw(
                clean, iso, a, b, rng, black_level=p.ref_black_level, white_level=p.ref_white_level
            )
        else:
            iso = p.iso
            a, b = _real_params(noise, iso)
            dn = augment_packed(np.moveaxis(self.reader.read(p.frame_id, y, x, n), 0, -1), p.cfa, op)
            noisy = normalise(dn, p.black_level, p.white_level, channel_axis=-1)
        out = {
            "noisy": noisy, "clean": clean, "a": a, "b": b, "iso": iso, "sensor": p.sensor,
            "synthetic": synthetic, "frame_id": None if synthetic else p.frame_id, "ref_id": p.ref_id,
            "y": y, "x": x, "op": op,
        }  # fmt: skip
        if self.rgb:  # the reference's crop (op 0: the window's first crop x crop) at mosaic resolution
            from .models import to_rggb

            c, ty, tx = self.crop, 2 * (y - sy), 2 * (x - sx)
            rgb = _truth_rgb(self.truths[p.ref_id])[ty : ty + 2 * c, tx : tx + 2 * c]
            out.update({k: np.ascontiguousarray(to_rggb(v, p.cfa)) for k, v in
                        (("noisy", noisy), ("clean", clean), ("rgb", rgb))})  # fmt: skip
        return out

    def _recorrupted(self, rng: np.random.Generator) -> dict[str, Any]:
        """A self-supervised example: a crop of a noisy frame, recorrupted into an input and a target (or, with
        ``sure``, as it is)."""
        p = self.pairs[int(rng.integers(len(self.pairs)))]
        n, alpha = self.window, self.r2r_alpha
        y = int(rng.integers(0, p.shape[0] - n + 1))
        x = int(rng.integers(0, p.shape[1] - n + 1))
        op = int(rng.integers(N_OPS)) if self.augment else 0
        dn = augment_packed(np.moveaxis(self.reader.read(p.frame_id, y, x, n), 0, -1), p.cfa, op)
        frame = normalise(dn, p.black_level, p.white_level, channel_axis=-1)
        a, b = _real_params(self.noise[p.sensor], p.iso)
        if self.sure:
            return {
                "noisy": frame, "clean": frame, "a": a, "b": b, "iso": p.iso, "sensor": p.sensor,
                "synthetic": False, "sure": True, "frame_id": p.frame_id, "ref_id": p.frame_id, "y": y, "x": x,
                "op": op,
            }  # fmt: skip
        noisy, target = recorrupt(frame, a, b, alpha, rng)
        scale = 1 + alpha * alpha
        return {
            "noisy": noisy, "clean": target,
            "a": a * scale, "b": b * scale, "iso": p.iso, "sensor": p.sensor, "synthetic": False,
            "frame_id": p.frame_id, "ref_id": p.frame_id, "y": y, "x": x, "op": op,
        }  # fmt: skip

    def batch(self, k: int) -> dict[str, np.ndarray]:
        """Batch ``k`` (numpy arrays, see the module docstring)."""
        t0 = time.perf_counter()
        ex = [self.example(k, i) for i in range(self.batch_size)]
        out = {
            "noisy": np.stack([e["noisy"] for e in ex]),
            "clean": np.stack([e["clean"] for e in ex]),
            "a": np.stack([e["a"] for e in ex]).astype(np.float32).reshape(len(ex), 1, 1, -1),
            "b": np.stack([e["b"] for e in ex]).astype(np.float32).reshape(len(ex), 1, 1, -1),
            "iso": np.array([e["iso"] for e in ex], np.float32),
            "sensor_idx": np.array([self.sensors.index(e["sensor"]) for e in ex], np.int32),
            "synthetic": np.array([e["synthetic"] for e in ex], bool),
        }
        if self.rgb:
            out["rgb"] = np.stack([e["rgb"] for e in ex])
        if self.sure:
            out["sure"] = np.array([e.get("sure", False) for e in ex], bool)
            signs = np.random.default_rng([self.seed, self.stream, k, _PROBE_KEY]).integers(
                0, 2, out["noisy"].shape
            )
            out["probe"] = (2 * signs - 1).astype(np.float32)
        with self._build_lock:
            self._build[0] += 1
            self._build[1] += time.perf_counter() - t0
        return out

    def throughput(self) -> float | None:
        """Batches/s the pipeline can make: its threads (at least one) over the mean time a batch took to make
        so far. An upper bound: threads share the cores (and the GIL) with the model's step."""
        n, seconds = self._build
        return max(1, self.workers) * n / seconds if n and seconds > 0 else None

    # -- prefetching iteration -----------------------------------------------------------------------------
    def batches(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """``(k, batch k)`` for ``k = start, start + 1, ...`` (up to ``stop``), prepared ahead in threads."""
        ks = iter(range(start, stop) if stop is not None else _count(start))
        if self.workers <= 0:
            for k in ks:
                yield k, self.batch(k)
            return
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="rawlab-data")
        pending: deque = deque()
        try:
            for k in ks:
                pending.append((k, pool.submit(self.batch, k)))
                if len(pending) >= self.prefetch:
                    break
            while pending:
                k, fut = pending.popleft()
                nxt = next(ks, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(self.batch, nxt)))
                yield k, fut.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def recorrupt(y: np.ndarray, a, b, alpha: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Recorrupted-to-Recorrupted (Pang et al., CVPR 2021): ``(y + alpha z, y - z / alpha)`` for a noisy
    ``y = x + n`` with ``Var[n] = a x + b``.

    ``z`` is Gaussian with the noise law's variance at ``y`` itself (``x`` is unknown): ``E[a y + b] = a x + b``,
    so ``Var[z] = Var[n]`` on average, and the input's noise ``n + alpha z`` and the target's ``n - z / alpha``
    are uncorrelated (``Var[n] - Var[z] = 0``), with variances ``(1 + alpha^2)`` and ``(1 + 1 / alpha^2)`` times
    the frame's. An L2 loss against the target is then minimised by the clean ``x`` given the input.
    """
    sd = np.sqrt(np.maximum(a * np.maximum(y, 0) + b, 0)).astype(np.float32)
    z = rng.standard_normal(y.shape, dtype=np.float32) * sd
    return (y + np.float32(alpha) * z).astype(np.float32), (y - z / np.float32(alpha)).astype(np.float32)


@lru_cache(maxsize=8)
def _truth_rgb(path: str) -> np.ndarray:
    """A colour truth TIFF ``(H, W, 3)`` as float32, clipped at white (read once; a few scenes kept)."""
    import tifffile

    rgb = np.minimum(tifffile.imread(path).astype(np.float32, copy=False), 1.0)
    rgb.setflags(write=False)
    return rgb


@lru_cache(maxsize=4096)
def _real_params(noise: SensorNoise, iso: float) -> tuple[np.ndarray, np.ndarray]:
    """``noise.params(iso)`` for the catalog's (discrete) ISOs, computed once each."""
    return noise.params(iso)


def _count(start: int) -> Iterator[int]:
    k = start
    while True:
        yield k
        k += 1

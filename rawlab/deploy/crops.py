"""Crops of real (or, failing that, synthetic) raw data for export calibration, parity checks and benchmarks.

Each :class:`Crop` is a square of packed normalised planes ``(T, T, 4)`` with its noise parameters and, when
there is one, the clean reference. Sources:

- a rawlab store (:func:`store_crops`): noisy frames and their clean references, split by scene the way
  training and evaluation split them (:mod:`rawlab.learn.split`), so calibration uses training scenes and
  the parity/PSNR check uses held-out scenes. The reference is the pair's as every consumer reads it
  (:mod:`rawlab.catalog.pairs`): aligned by the pair's QA shift and scaled by its exposure gain, so a PSNR
  against it measures the denoiser, not the pair's misregistration or brightness difference;
- raw files or folders (:func:`raw_crops`): any LibRaw-readable Bayer raw, no clean reference;
- :func:`synthetic_crops`: the built-in scenes (:mod:`rawlab.synth`) with Poisson-Gaussian noise at four
  levels from low to high ISO, clean truth known.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import numpy as np

from ..bayer import normalise
from ..errors import RawlabError

__all__ = ["NOISE_LEVELS", "Crop", "find_crops", "is_store", "raw_crops", "store_crops", "synthetic_crops"]

# (a, b) in normalised units, from low to high ISO (the levels of docs/architecture.md's baseline figures).
NOISE_LEVELS = ((5e-4, 1e-6), (2e-3, 1e-5), (8e-3, 1e-4), (2e-2, 5e-4))


@dataclass
class Crop:
    noisy: np.ndarray  # (T, T, 4) float32, normalised
    clean: np.ndarray | None
    a: np.ndarray  # (4,)
    b: np.ndarray  # (4,)
    label: str  # where it came from, for messages
    origin: tuple[int, int] | None = None  # packed px of the crop's corner in its (noisy) frame, if from one


def is_store(path: str | os.PathLike[str]) -> bool:
    p = os.fspath(path)
    return "://" in p or os.path.exists(os.path.join(p, "zarr.json"))


def _positions(rng, h: int, w: int, size: int) -> tuple[int, int]:
    return int(rng.integers(0, max(1, h - size + 1))), int(rng.integers(0, max(1, w - size + 1)))


def _square(planes: np.ndarray, y: int, x: int, size: int) -> np.ndarray:
    """``(4, h, w)`` planes -> a ``(size, size, 4)`` crop at ``(y, x)``, mirrored if the frame is smaller."""
    from .tiling import pad_to

    crop = np.moveaxis(np.asarray(planes[:, y : y + size, x : x + size], np.float32), 0, -1)
    return pad_to(crop, size, size)


def store_crops(store: str, size: int, n: int, model, *, split: str = "eval", seed: int = 0) -> list[Crop]:
    """``n`` crops of noisy frames (with their clean references) from the ``split`` scenes of a store.

    ``split`` is ``"train"`` or ``"eval"`` (:func:`rawlab.learn.split.split_pairs`); when that side is empty
    the other is used. A noisy frame with a usable pair (:func:`rawlab.catalog.pairs.pairs_from_catalog`) is
    cropped inside the part both frames show, and its reference is the same scene window, exposure-matched
    (:func:`rawlab.catalog.pairs.align`, :func:`~rawlab.catalog.pairs.matched_planes`). A store without pairs
    gives crops of its single frames, without references. ``(a, b)`` come from the model's noise profiles
    (:func:`rawlab.deploy.noiseparams.model_noise`); for a sensor it does not know, a single-image estimate.
    """
    from ..catalog import open_catalog
    from ..catalog.pairs import align, matched_planes, pairs_from_catalog
    from ..catalog.store import FrameStore
    from ..learn.split import split_pairs
    from .noiseparams import model_noise, single_image_noise

    cat = open_catalog(store)
    ok = cat[(cat["status"] == "ok") & cat["frame_id"].fillna("").astype(bool)]
    train, held = split_pairs(cat)
    rows = (
        (held if split == "eval" else train) if len(held) and len(train) else (held if len(held) else train)
    )
    if not len(rows):
        rows = ok
    if not len(rows):
        raise RawlabError(f"store {store} has no usable frames to take crops from")
    pair_of = {p.path: p for p in pairs_from_catalog(cat, rows)[0]}
    fstore = FrameStore(store)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    crops: list[Crop] = []
    cache: dict = {}
    for k in range(n):
        row = rows.iloc[int(order[k % len(order)])]
        fid = row["frame_id"]
        arr = fstore.frame_array(fid)
        black, white = list(row["black_level"]), row["white_level"]
        pair = pair_of.get(row["path"])
        if pair is not None:
            # Lazy views of the overlap, cropped there: only the crop's chunks are read. The windows are
            # aligned already, so matched_planes is left the levels and the gain to apply.
            noisy_a, ref_a = align(arr, fstore.frame_array(pair.ref_id), pair.shift)
            y, x = _positions(rng, noisy_a.shape[1], noisy_a.shape[2], size)
            window = (slice(None), slice(y, y + size), slice(x, x + size))
            noisy, clean = matched_planes(
                noisy_a[window].compute(), ref_a[window].compute(), dataclasses.replace(pair, shift=(0, 0))
            )
            noisy, clean = _square(noisy, 0, 0, size), _square(clean, 0, 0, size)
            origin = (y + max(pair.shift[0], 0), x + max(pair.shift[1], 0))
        else:
            y, x = _positions(rng, arr.shape[1], arr.shape[2], size)
            noisy = _square(normalise(arr[:, y : y + size, x : x + size].compute(), black, white), 0, 0, size)
            clean, origin = None, (y, x)
        iso = row.get("iso")
        law = model_noise(model.config, row["sensor"], iso)
        if law is None:
            if fid not in cache:
                cache[fid] = single_image_noise(normalise(arr.compute(), black, white), black, white, iso)
            law = cache[fid]
        a, b = (np.maximum(np.asarray(v, np.float32), lo) for v, lo in zip(law, (1e-12, 0.0), strict=True))
        where = f"ISO {iso:g}" if iso and np.isfinite(iso) else "ISO ?"
        label = f"{row['sensor']} {where} {os.path.basename(row['path'])}"
        crops.append(Crop(noisy, clean, a, b, label, origin))
    return crops


def raw_crops(sources: list[str], size: int, n: int, model, *, seed: int = 0) -> list[Crop]:
    """``n`` crops from raw files (folders are searched), round robin; unreadable files are skipped."""
    from ..catalog.scan import scan_sources
    from ..rawio import read_raw
    from .noiseparams import noise_for_frame

    files = [f.path for f in scan_sources(list(sources)).files]
    rng = np.random.default_rng(seed)
    frames = []
    for path in files[: max(n, 1)]:
        try:
            frame = read_raw(path)
        except RawlabError:
            continue
        planes = frame.normalized()
        est = noise_for_frame(model, frame.info, planes)
        frames.append((planes, est, frame.info))
    if not frames:
        raise RawlabError(f"no readable Bayer raw among {', '.join(map(str, sources))} to take crops from")
    crops = []
    for k in range(n):
        planes, est, info = frames[k % len(frames)]
        y, x = _positions(rng, planes.shape[1], planes.shape[2], size)
        crops.append(
            Crop(_square(planes, y, x, size), None, est.a.astype(np.float32), est.b.astype(np.float32),
                 f"{info.sensor} {os.path.basename(info.path)}", (y, x))
        )  # fmt: skip
    return crops


def synthetic_crops(size: int, n: int, *, seed: int = 0, levels=NOISE_LEVELS) -> list[Crop]:
    """``n`` crops of the built-in scenes with Poisson-Gaussian noise, cycling through ``levels``."""
    from ..synth import get_sensors
    from ..synth.scenes import NATURAL_SCENES, render_scene

    rng = np.random.default_rng(seed)
    sensor = get_sensors(1)[0]
    scenes = ["chart", *NATURAL_SCENES[:5]]
    rendered: dict[str, np.ndarray] = {}
    crops = []
    for k in range(n):
        scene = scenes[k % len(scenes)]
        if scene not in rendered:
            side = 2 * max(size, 192)
            rendered[scene] = np.clip(render_scene(scene, sensor, side, side), 0.0, 1.0)
        planes = rendered[scene]
        y, x = _positions(rng, planes.shape[1], planes.shape[2], size)
        clean = _square(planes, y, x, size)
        a, b = (np.full(4, v, np.float32) for v in levels[k % len(levels)])
        sigma = np.sqrt(a * clean + b)
        noisy = np.minimum(clean + sigma * rng.standard_normal(clean.shape), 1.0).astype(np.float32)
        crops.append(Crop(noisy, clean.astype(np.float32), a, b, f"synthetic {scene} a={a[0]:.0e}"))
    return crops


def find_crops(source: str | None, size: int, n: int, model, *, split: str = "eval", seed: int = 0):
    """Crops from ``source`` (a store, or raw files/folders separated by nothing: one path), else synthetic.

    Returns ``(crops, description)``; the description says which data they are.
    """
    if source is None:
        return synthetic_crops(size, n, seed=seed), "synthetic (built-in scenes, known noise)"
    if is_store(source):
        return store_crops(source, size, n, model, split=split, seed=seed), f"store {source} ({split} scenes)"
    if not os.path.exists(source):
        raise RawlabError(
            f"calibration data {source!r} does not exist; pass a rawlab store or a folder of raw files"
        )
    return raw_crops([source], size, n, model, seed=seed), f"raw files in {source}"

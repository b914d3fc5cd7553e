"""Training examples from unlimited procedural content, each recorded by its own randomised sensor.

A :class:`ProceduralSource` turns :mod:`rawlab.synth.procedural` into examples in the input pipeline's form
(channels-last packed planes, normalised, with their ``(a, b)``). Scenes are costly next to a crop (tens of
milliseconds for a 512-px scene), so each is generated once for a group of ``reuse`` batches and shared by
their examples; every example takes its own crop, CFA phase, white balance, levels and noise. Everything is
a pure function of ``(seed, stream, k, i)``, as the store's examples are.

The clean target is the scene as the sensor records it without noise: clipped at white. The noisy input is
Poisson-Gaussian with the drawn ``(a, b)``, rounded to the drawn bit depth and clipped to ``[0, white]`` DN
(:func:`rawlab.learn.synthnoise.synthesize`), so black clipping and quantisation are what real sensors do.

With ``rgb=True`` (the joint demosaic+denoise model, :mod:`rawlab.learn.models`) an example also carries
``"rgb"``: the crop's linear camera RGB at mosaic resolution ``(2c, 2c, 3)`` (the scene through the sensor's
white balance, clipped at white: what the clean planes sample), and every array is flipped into the RGGB
phase (:func:`rawlab.learn.models.to_rggb`), the one the joint network sees.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from ..synth.procedural import A_RANGE, dead_leaves, mosaic, random_sensor
from .synthnoise import synthesize

__all__ = ["SENSOR", "ProceduralSource"]

SENSOR = "procedural"  # the sensor name procedural examples carry in a batch


class ProceduralSource:
    """Procedural examples of ``crop x crop`` packed pixels.

    Parameters
    ----------
    crop
        Example size in packed pixels.
    seed, stream
        The pipeline's seed and stream (train/eval), so the two never share scenes.
    pool
        Scenes alive at once (a group of batches draws among them).
    reuse
        Consecutive batches that share one pool of scenes.
    scene_size
        Scene side in mosaic pixels (default: 4 crops' worth, at least 256).
    rgb
        Add the crop's linear camera RGB as ``"rgb"`` and flip every array into the RGGB phase (joint model).
    a_range
        ``(lo, hi)`` of the random sensors' shot-noise term ``a`` (log-uniform); None: the synth default
        (:data:`rawlab.synth.procedural.A_RANGE`).
    """

    def __init__(
        self,
        crop: int,
        *,
        seed: int = 0,
        stream: int = 0,
        pool: int = 8,
        reuse: int = 4,
        scene_size: int | None = None,
        rgb: bool = False,
        a_range: tuple[float, float] | None = None,
    ):
        self.crop, self.seed, self.stream = int(crop), int(seed), int(stream)
        self.pool, self.reuse = max(1, int(pool)), max(1, int(reuse))
        self.scene_size = int(scene_size or max(256, 4 * self.crop))
        self.rgb = bool(rgb)
        self.a_range = tuple(float(v) for v in a_range) if a_range else A_RANGE
        if self.scene_size < 2 * self.crop:
            raise ValueError(f"scene_size {self.scene_size} must hold a crop of {self.crop} packed px")
        self._scene = lru_cache(maxsize=2 * self.pool)(self._make_scene)

    def _make_scene(self, group: int, j: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.stream, 0x5CE9E, group, j])
        return dead_leaves(rng, self.scene_size, self.scene_size)

    def example(self, rng: np.random.Generator, k: int) -> dict[str, Any]:
        """One example for batch ``k``, drawn with ``rng`` (the pipeline's per-example generator)."""
        scene = self._scene(k // self.reuse, int(rng.integers(self.pool)))
        sensor = random_sensor(rng, a_range=self.a_range)
        n = 2 * self.crop  # mosaic pixels
        y = 2 * int(rng.integers(0, (self.scene_size - n) // 2 + 1))
        x = 2 * int(rng.integers(0, (self.scene_size - n) // 2 + 1))
        planes = mosaic(scene[y : y + n, x : x + n], sensor.cfa, sensor.wb_gains)
        clean = np.ascontiguousarray(np.minimum(np.moveaxis(planes, 0, -1), 1.0), dtype=np.float32)
        noisy = synthesize(  # rounding to whole DN adds the rest of b
            clean, sensor.a, sensor.b - sensor.quantisation, rng,
            black_level=sensor.black_level, white_level=sensor.white_level,
        )  # fmt: skip
        out = {
            "noisy": noisy, "clean": clean, "a": sensor.a, "b": sensor.b, "iso": float("nan"),
            "sensor": SENSOR, "synthetic": True, "frame_id": None, "ref_id": None, "y": y, "x": x, "op": 0,
        }  # fmt: skip
        if self.rgb:
            from .models import to_rggb

            gains = np.asarray(sensor.wb_gains, np.float32)
            rgb = np.minimum(scene[y : y + n, x : x + n] / gains, 1.0)
            out.update(
                noisy=np.ascontiguousarray(to_rggb(noisy, sensor.cfa)),
                clean=np.ascontiguousarray(to_rggb(clean, sensor.cfa)),
                rgb=np.ascontiguousarray(to_rggb(rgb, sensor.cfa), dtype=np.float32),
            )
        return out

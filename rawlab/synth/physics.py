"""Scenes recorded with physics-based noise from a sensor calibration, written as real DNGs (issue #15, part 3).

:func:`write_physics_dataset` is ``rawlab synth``'s dataset with the noise of a calibrated sensor
(:class:`rawlab.noise.physics.PhysicsNoise`: shot noise through the system gain, Tukey-lambda read noise, row
noise, DSNU and PRNU drawn per frame, dark current, quantisation) instead of the Poisson-Gaussian law of a
virtual sensor. The layout is the dataset's (:mod:`rawlab.synth.generate`)::

    OUT/<sensor>/<scene>/<scene>_iso<ISO>_<k>.dng   # n_clean frames at the lowest ISO, one at every other
    OUT/.truth/<sensor>/<scene>_rgb.tiff            # the scene's linear camera RGB (normalised)
    OUT/truth.json   # rawlab.noise/1: the calibration's equivalent Poisson-Gaussian law, and the scenes

:func:`record_dataset` is the loop under it, for any recorder ``record(clean, iso, exposure_time, rng)``
(the benchmark ``benchmarks/physics_noise.py`` records with a calibration sensor's own simulation).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .._version import __version__
from ..bayer import unpack
from ..errors import RawlabError
from ..noise.physics import PhysicsNoise, equivalent_profiles, load_calibration
from ..noise.profile import NoiseProfileSet, save_profiles
from .generate import (
    DEFAULT_SIZE,
    SynthSummary,
    _scenes,
    check_size,
    frame_tags,
    plan_dataset,
    truth_rgb_relpath,
    write_frame,
    write_truth_rgb,
)
from .procedural import mosaic
from .scenes import render_scene_rgb
from .sensors import VirtualSensor

__all__ = ["plan_physics_dataset", "record_dataset", "sensor_from_calibration", "write_physics_dataset"]

Recorder = Callable[[np.ndarray, float, float, np.random.Generator], np.ndarray]


def sensor_from_calibration(noise: PhysicsNoise, isos: Sequence[int] | None = None) -> VirtualSensor:
    """A :class:`VirtualSensor` with the calibrated sensor's name, CFA, levels, full well (``R / K`` at the
    lowest ISO) and ``isos`` (default: the calibrated ISOs): what scene rendering and planning need."""
    make, _, model = noise.sensor.partition(" ")
    bits = int(np.ceil(np.log2(noise.white_level + 1)))
    if 2**bits - 1 != noise.white_level:
        raise RawlabError(
            f"the calibration of {noise.sensor!r} has white level {noise.white_level:g}, not 2**bits - 1; "
            "rawlab synth writes frames whose white level is the ADC's full scale"
        )
    isos = tuple(int(i) for i in (isos if isos is not None else noise.isos))
    base = noise.params(min(isos))
    full_well = float(np.mean(noise.span / base.gain))
    return VirtualSensor(make, model or make, noise.cfa, bits, tuple(int(v) for v in noise.black_level),
                         full_well, isos, ((0, 0.0),), 0.0)  # fmt: skip


def record_dataset(
    out: Path,
    sensor: VirtualSensor,
    record: Recorder,
    *,
    seed: int,
    size: tuple[int, int],
    n_scenes: int,
    n_clean: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[list, int]:
    """Render ``sensor``'s scenes (:func:`rawlab.synth.generate.plan_dataset`), record every frame with
    ``record(clean planes (4, h, w) normalised, iso, exposure_time, rng) -> uint16 planes`` and write it as a
    DNG, with each scene's colour truth. Returns ``(plans, bytes written)``; same seed, same bytes."""
    width, height = size
    plans = plan_dataset([sensor], seed=seed, n_scenes=n_scenes, n_clean=n_clean)
    nbytes, cache = 0, {}
    for plan in plans:
        if plan.scene_index not in cache:
            cache.clear()  # frames are planned scene by scene: keep one scene in memory
            rgb = render_scene_rgb(plan.scene, sensor, height, width)
            write_truth_rgb(out / truth_rgb_relpath(plan, sensor), rgb * plan.brightness)
            cache[plan.scene_index] = mosaic(rgb, sensor.cfa) * plan.brightness
        rng = np.random.default_rng(
            np.random.SeedSequence([seed, 0x9475, plan.scene_index, plan.frame_index])
        )
        planes = record(cache[plan.scene_index], plan.iso, plan.exposure_time, rng)
        path = out / plan.relpath
        tags = frame_tags(sensor, plan.iso, plan.exposure_time, noise_profile=False)
        write_frame(path, unpack(planes, sensor.cfa), **tags)
        nbytes += path.stat().st_size
        if progress is not None:
            progress(1)
    return plans, nbytes


def _calibrated(calibration, sensor: str | None, isos) -> tuple[dict, PhysicsNoise, VirtualSensor]:
    doc = load_calibration(calibration)
    names = [e.get("sensor") for e in doc.get("sensors", [])]
    if sensor is None and len(names) != 1:
        raise RawlabError(f"the calibration {os.fspath(calibration)!r} has {len(names)} sensors "
                          f"({', '.join(map(repr, names))}): choose one")  # fmt: skip
    noise = PhysicsNoise.from_calibration(doc, sensor or names[0], source=os.fspath(calibration))
    isos = sorted({int(i) for i in isos}) if isos else None
    for iso in isos or ():
        noise.params(iso)  # refuses an ISO outside the calibrated range, before anything is written
    return doc, noise, sensor_from_calibration(noise, isos)


def plan_physics_dataset(
    calibration: str | os.PathLike[str],
    *,
    sensor: str | None = None,
    isos: Sequence[int] | None = None,
    seed: int = 0,
    n_scenes: int = 4,
    n_clean: int = 2,
) -> list:
    """Every frame :func:`write_physics_dataset` would write with these arguments (for a progress bar)."""
    _doc, _noise, vs = _calibrated(calibration, sensor, isos)
    return plan_dataset([vs], seed=seed, n_scenes=n_scenes, n_clean=n_clean)


def write_physics_dataset(
    out: str | os.PathLike[str],
    calibration: str | os.PathLike[str],
    *,
    sensor: str | None = None,
    isos: Sequence[int] | None = None,
    seed: int = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
    n_scenes: int = 4,
    n_clean: int = 2,
    progress: Callable[[int], None] | None = None,
) -> SynthSummary:
    """Write scenes recorded by a calibrated sensor with physics noise (module docstring).

    Parameters
    ----------
    out
        Output folder (created).
    calibration
        ``calibration.json`` of ``rawlab calibrate`` (or its folder).
    sensor
        Which calibrated sensor; may be left out when the calibration has one.
    isos
        ISOs to write, inside the calibrated range (default: the calibrated ISOs); the lowest is the clean
        references' (``n_clean`` frames per scene).
    seed, size, n_scenes, n_clean, progress
        As :func:`rawlab.synth.write_dataset`.

    Raises
    ------
    RawlabError
        No such calibration or sensor, an ISO outside the calibrated range, or ``out`` cannot be written.
    """
    from ..outputs import output_folder

    width, height = size
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"--size must be even and at least 16x16, got {width}x{height}")
    check_size(width, height)
    doc, noise, vs = _calibrated(calibration, sensor, isos)
    out = output_folder(out, "OUT")

    def record(clean, iso, t, rng):
        return noise.sample(clean, iso, rng, exposure_time=t).astype(np.uint16)

    plans, nbytes = record_dataset(out, vs, record, seed=seed, size=size, n_scenes=n_scenes,
                                   n_clean=n_clean, progress=progress)  # fmt: skip
    prof = equivalent_profiles({"sensors": [e for e in doc["sensors"] if e["sensor"] == noise.sensor]})
    prof.sensors[0].extra["scenes"] = _scenes(vs, plans, 0)
    meta = {"generator": {"rawlab_version": __version__, "seed": seed, "size": [width, height],
                          "kind": "physics", "calibration": os.path.abspath(os.fspath(calibration))}}  # fmt: skip
    truth_path = out / "truth.json"
    save_profiles(NoiseProfileSet(prof.sensors, {**prof.extra, **meta}), truth_path)
    return SynthSummary(out, len(plans), 1, n_scenes, truth_path, nbytes)

"""Write a synthetic dataset of real DNG files whose noise is known exactly.

Layout (docs/architecture.md)::

    OUT/<sensor>/<scene>/<scene>_iso<ISO>_<k>.dng
    OUT/.truth/<sensor>/<scene>_rgb.tiff   # the scene's linear camera RGB before mosaicking and noise
    OUT/truth.json          # true a, b per sensor, ISO and channel (schema rawlab.noise/1), and the scenes

Each scene's colour truth is a float32 TIFF ``(H, W, 3)`` of linear camera RGB (not white-balanced) in the
normalised units of the frames (1.0 is the white level; values above it are what the sensor clips), at full
resolution: mosaicking it through the sensor's CFA gives the noise-free planes every frame of the scene is
drawn from, exactly. It lies in a hidden folder so that a catalog build of OUT does not take it for a raw (a
TIFF looks like one by content). ``truth.json`` lists, per sensor, its ``scenes``: name, frame folder and
colour truth (paths relative to ``truth.json``) and brightness; readers of the noise profile ignore them.

Per scene, ``n_clean`` frames are shot at the base ISO with a long exposure, and one noisy frame at every other
ISO of the sensor's ladder, with the exposure shortened by the ISO ratio so every frame has the same
brightness. With the default pairing rule the first base-ISO frame is the clean reference; the other base-ISO
frames are noisy frames at base ISO, so every ISO can be fitted from pairs, and the reference itself carries
base-ISO noise (as real references do).

Each frame is simulated as a sensor records it: Poisson photo-electrons plus Gaussian read noise
(:func:`rawlab.noise.sample_poisson_gaussian`), offset by the black level, rounded to integer DN and clipped to
``[0, white]``. The rounding is part of the truth (it adds ``1 / (12 R**2)`` to ``b``); the clipping is not (it
is the censoring that noise fitting must handle, Foi et al. 2008).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._version import __version__
from ..bayer import unpack
from ..errors import RawlabError
from ..noise.model import sample_poisson_gaussian
from ..noise.profile import ISOProfile, NoiseProfileSet, SensorProfile, save_profiles
from .procedural import mosaic
from .scenes import NATURAL_SCENES, render_scene_rgb
from .sensors import VirtualSensor, get_sensors

__all__ = [
    "BYTES_PER_PIXEL",
    "DEFAULT_SIZE",
    "TRUTH_DIR",
    "FramePlan",
    "SynthSummary",
    "available_memory",
    "check_size",
    "frame_tags",
    "plan_dataset",
    "simulate_frame",
    "truth_rgb_relpath",
    "with_masked_border",
    "write_dataset",
    "write_truth_rgb",
]

DEFAULT_SIZE: tuple[int, int] = (512, 384)  # W x H: the quick start runs end to end in about a minute
# Peak memory of writing one frame, per mosaic pixel: the scene, the float64 noise simulation, the DN planes
# and the mosaic. Measured with tracemalloc over write_dataset: 157 B at 1024x768, 151 B at 2048x1536.
BYTES_PER_PIXEL = 160
TRUTH_DIR = ".truth"  # hidden: a catalog scan skips it


@dataclass(frozen=True)
class FramePlan:
    """One DNG to write."""

    sensor_index: int
    scene_index: int
    frame_index: int
    scene: str
    iso: int
    exposure_time: float
    brightness: float
    relpath: str


@dataclass(frozen=True)
class SynthSummary:
    out: Path
    n_files: int
    n_sensors: int
    n_scenes: int
    truth_path: Path
    nbytes: int


def sensor_dirname(sensor: VirtualSensor) -> str:
    return sensor.name.replace(" ", "_")


def plan_dataset(
    sensors: Sequence[VirtualSensor], *, seed: int, n_scenes: int, n_clean: int
) -> list[FramePlan]:
    """Decide every frame (scene, ISO, exposure, brightness) before any pixel is made."""
    if n_scenes < 1 or n_clean < 1:
        raise ValueError("need at least one scene and one clean frame per scene")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC0FFEE]))
    plans: list[FramePlan] = []
    for si, sensor in enumerate(sensors):
        naturals = [NATURAL_SCENES[(si * 3 + k) % len(NATURAL_SCENES)] for k in range(n_scenes - 1)]
        for ci, scene in enumerate(["chart", *naturals]):
            # Chart fills the range by design; photos get a random exposure level (99th percentile).
            brightness = 1.0 if scene == "chart" else float(rng.uniform(0.3, 0.95))
            base_exposure = float(rng.choice([1 / 15, 1 / 30, 1 / 60, 1 / 125]))
            isos = [sensor.base_iso] * n_clean + list(sensor.iso_ladder[1:])
            for fi, iso in enumerate(isos):
                k = fi if iso == sensor.base_iso else 0
                relpath = f"{sensor_dirname(sensor)}/{scene}/{scene}_iso{iso}_{k}.dng"
                plans.append(
                    FramePlan(
                        si, ci, fi, scene, iso, base_exposure * sensor.base_iso / iso, brightness, relpath
                    )
                )
    return plans


def simulate_frame(
    clean: np.ndarray, sensor: VirtualSensor, iso: float, rng: np.random.Generator
) -> np.ndarray:
    """Noisy packed planes in DN (uint16) from noise-free normalised planes ``clean`` (4, h, w)."""
    a, b = sensor.noise_params(iso)
    x = sample_poisson_gaussian(clean, a, b - 1.0 / (12.0 * sensor.dn_range**2), rng)
    black = np.asarray(sensor.black_level, dtype=np.float64)[:, None, None]
    dn = np.rint(black + x * (sensor.white_level - black))
    return np.clip(dn, 0, sensor.white_level).astype(np.uint16)


def with_masked_border(
    frame: np.ndarray, sensor: VirtualSensor, iso: float, border: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple]]:
    """``frame`` (a mosaic in DN) inside ``border`` mosaic pixels (even) of optically masked pixels, as many
    cameras record them: no light, so the read noise alone at the black level, rounded and clipped as the frame
    (:func:`simulate_frame` of a zero signal); and the DNG ActiveArea tag that marks the frame inside it
    (LibRaw then reads the frame as the visible area and the rest as its margins, :attr:`rawlab.rawio.RawInfo.
    masked`)."""
    h, w = frame.shape
    dark = simulate_frame(np.zeros((4, h // 2 + border, w // 2 + border)), sensor, iso, rng)
    full = unpack(dark, sensor.cfa)
    full[border : border + h, border : border + w] = frame
    return full, [(50829, "LONG", 4, (border, border, border + h, border + w))]


def frame_tags(sensor: VirtualSensor, iso: int, exposure_time: float, *, noise_profile: bool = True) -> dict:
    """The DNG tags a virtual sensor writes on a frame (:func:`rawlab.dng.write_dng` keywords): CFA, levels,
    make and model, ISO and exposure, white balance and colour matrix and, with ``noise_profile``, the true
    NoiseProfile at ``iso`` (one ``(S, O)`` pair per colour plane: R, G (mean of G1, G2), B)."""
    tags = {
        "cfa": sensor.cfa, "black_level": sensor.black_level, "white_level": sensor.white_level,
        "make": sensor.make, "model": sensor.model, "iso": iso, "exposure_time": exposure_time,
        "as_shot_neutral": [1.0 / g for g in sensor.wb_gains], "color_matrix1": sensor.xyz_to_cam,
    }  # fmt: skip
    if noise_profile:
        a, b = sensor.noise_params(iso)
        tags["noise_profile"] = [(a[0], b[0]), ((a[1] + a[2]) / 2, (b[1] + b[2]) / 2), (a[3], b[3])]
    return tags


def write_frame(path: Path, mosaic: np.ndarray, **tags) -> None:
    """:func:`rawlab.dng.write_dng` into ``path`` (its folder made); the machine's errors (a full disk) name
    the file in a :class:`RawlabError`, never a traceback."""
    from ..dng import write_dng

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_dng(path, mosaic, **tags)
    except OSError as e:
        raise RawlabError(
            f"cannot write {path}: {e.strerror or e}; free space or choose another OUT"
        ) from None


def truth_rgb_relpath(plan: FramePlan, sensor: VirtualSensor) -> str:
    """Where the colour truth of ``plan``'s scene lies, relative to OUT (and to ``truth.json``)."""
    return f"{TRUTH_DIR}/{sensor_dirname(sensor)}/{plan.scene}_rgb.tiff"


def write_truth_rgb(path: Path, rgb: np.ndarray) -> None:
    """Write linear RGB ``(H, W, 3)`` as a float32 TIFF (zlib-compressed, no date: same seed, same bytes)."""
    import tifffile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(path, rgb.astype(np.float32), photometric="rgb", compression="zlib", metadata=None)
    except OSError as e:
        raise RawlabError(
            f"cannot write {path}: {e.strerror or e}; free space or choose another OUT"
        ) from None


def _scenes(sensor: VirtualSensor, plans: list[FramePlan], si: int) -> list[dict]:
    seen: dict[str, dict] = {}
    for p in plans:
        if p.sensor_index == si and p.scene not in seen:
            seen[p.scene] = {
                "scene": p.scene,
                "frames": p.relpath.rsplit("/", 1)[0],
                "rgb_truth": truth_rgb_relpath(p, sensor),
                "brightness": p.brightness,
            }
    return list(seen.values())


def _truth(sensors, plans, width, height, seed) -> NoiseProfileSet:
    out = []
    for si, sensor in enumerate(sensors):
        profiles = []
        for iso in sensor.iso_ladder:
            a, b = sensor.noise_params(iso)
            n = sum(1 for p in plans if p.sensor_index == si and p.iso == iso)
            profiles.append(ISOProfile(iso, a.tolist(), b.tolist(), n_frames=n, n_pixels=n * width * height))
        extra = {
            "make": sensor.make,
            "model": sensor.model,
            "cfa": sensor.cfa,
            "black_level": list(sensor.black_level),
            "white_level": sensor.white_level,
            "base_iso": sensor.base_iso,
            "full_well_electrons": sensor.full_well,
            "scenes": _scenes(sensor, plans, si),
        }
        out.append(SensorProfile(sensor.name, "truth", profiles, sensor.iso_model(), extra))
    meta = {
        "generator": {"rawlab_version": __version__, "seed": seed, "size": [width, height]},
        "rgb_truth": "per sensor scenes[].rgb_truth: float32 TIFF (H, W, 3), linear camera RGB before "
        "mosaicking and noise, normalised (1.0 = white level, not clipped); paths relative to this file",
    }
    return NoiseProfileSet(out, meta)


def available_memory() -> int | None:
    """Bytes this process can still allocate: the system's available memory, capped by a cgroup limit;
    ``None`` if neither can be read."""
    found = []
    try:
        import psutil

        found.append(int(psutil.virtual_memory().available))
    except ImportError:
        try:
            with open("/proc/meminfo") as f:
                info = dict(line.split(":", 1) for line in f)
            found.append(int(info["MemAvailable"].split()[0]) * 1024)
        except (OSError, KeyError, ValueError):
            pass
    try:  # a container's limit (cgroup v2) can be far below the machine's memory
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                found.append(int(limit) - int(f.read().strip()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def check_size(width: int, height: int) -> None:
    """Refuse a frame size that cannot be simulated in the memory available, before anything is allocated.

    Raises
    ------
    RawlabError
        With the memory needed (:data:`BYTES_PER_PIXEL` per mosaic pixel) and the memory available.
    """
    need = BYTES_PER_PIXEL * int(width) * int(height)
    have = available_memory()
    if have is not None and need > have:
        side = int((have / BYTES_PER_PIXEL / 12) ** 0.5) // 2 * 2  # the largest 4:3 frame that fits, even
        raise RawlabError(
            f"--size {width}x{height} needs about {need / 1e9:.1f} GB of memory to simulate a frame, but "
            f"{have / 1e9:.1f} GB is available; choose a smaller --size (at most about "
            f"{side * 4}x{side * 3} here)"
        )


def write_dataset(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
    n_sensors: int = 2,
    n_scenes: int = 4,
    n_clean: int = 2,
    masked_border: int = 0,
    progress: Callable[[int], None] | None = None,
) -> SynthSummary:
    """Write the synthetic dataset to ``out`` and return a summary.

    Parameters
    ----------
    out
        Output folder (created; existing files with the same names are overwritten).
    seed
        Everything (scene choice, brightness, every noise sample) follows from it: same seed, same bytes.
    size
        Frame size ``(width, height)`` in mosaic pixels, both even.
    n_sensors
        How many virtual sensors (1 to 4; see :data:`rawlab.synth.sensors.SENSORS`).
    n_scenes
        Scenes per sensor: the chart plus ``n_scenes - 1`` photographs.
    n_clean
        Base-ISO frames per scene (the first is the default clean reference).
    masked_border
        Mosaic pixels (even) of optically masked border around each frame, as many cameras record
        (:func:`with_masked_border`); 0: none. The frames' own pixels are the same with or without it.
    progress
        Called with the number of frames just written (for a progress bar).

    Raises
    ------
    RawlabError
        If ``out`` cannot be written, or a frame of ``size`` cannot fit in the memory available
        (:func:`check_size`); both before anything is simulated.
    """
    from ..outputs import output_folder

    width, height = size
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"--size must be even and at least 16x16, got {width}x{height}")
    if masked_border < 0 or masked_border % 2:
        raise ValueError(f"--masked-border must be even and at least 0, got {masked_border}")
    check_size(width + 2 * masked_border, height + 2 * masked_border)
    sensors = get_sensors(n_sensors)
    plans = plan_dataset(sensors, seed=seed, n_scenes=n_scenes, n_clean=n_clean)
    out = output_folder(out, "OUT")
    nbytes = 0
    scene_cache: dict[tuple[int, int], np.ndarray] = {}
    for plan in plans:
        sensor = sensors[plan.sensor_index]
        key = (plan.sensor_index, plan.scene_index)
        if key not in scene_cache:
            scene_cache.clear()  # frames are planned scene by scene: keep one scene in memory
            rgb = render_scene_rgb(plan.scene, sensor, height, width)
            write_truth_rgb(out / truth_rgb_relpath(plan, sensor), rgb * plan.brightness)
            scene_cache[key] = mosaic(rgb, sensor.cfa) * plan.brightness  # = render_scene(...) * brightness
            del rgb
        rng = np.random.default_rng(
            np.random.SeedSequence([seed, plan.sensor_index, plan.scene_index, plan.frame_index])
        )
        planes = simulate_frame(scene_cache[key], sensor, plan.iso, rng)
        path = out / plan.relpath
        tags = frame_tags(sensor, plan.iso, plan.exposure_time)
        frame = unpack(planes, sensor.cfa)
        if masked_border:
            dark = np.random.default_rng(
                np.random.SeedSequence([seed, plan.sensor_index, plan.scene_index, plan.frame_index, 1])
            )  # a stream of its own: the frame's pixels are those it has without a border
            frame, tags["extra_tags"] = with_masked_border(frame, sensor, plan.iso, masked_border, dark)
        write_frame(path, frame, **tags)
        nbytes += path.stat().st_size
        if progress is not None:
            progress(1)
    truth_path = out / "truth.json"
    save_profiles(_truth(sensors, plans, width, height, seed), truth_path)
    n_scenes_total = len({(p.sensor_index, p.scene_index) for p in plans})
    return SynthSummary(out, len(plans), len(sensors), n_scenes_total, truth_path, nbytes)

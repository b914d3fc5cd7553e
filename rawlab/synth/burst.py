"""Synthetic bursts with truth: several raw frames of one scene under hand shake, optionally with a moving
object, each with its own Poisson-Gaussian noise (``rawlab synth --burst N``).

How a burst is made (:func:`simulate_burst`):

- the scene (:func:`rawlab.synth.scenes.render_scene_rgb`) is rendered in linear camera RGB at ``SUPERSAMPLE``
  times the frame's resolution, over the frame plus a margin that the motion can bring into view;
- each frame is a **camera motion** of that scene: frame ``k`` at mosaic pixel ``p`` shows the scene at
  ``M_k(p) = R(-theta_k) (p - c - d_k) + c`` (``c`` the frame's centre), i.e. the reference's content turned by
  ``theta_k`` about the centre and moved by ``d_k = (dx, dy)`` mosaic pixels. For a pure translation this is the
  catalog's convention, ``frame(y, x) = ref(y - dy, x - dx)`` (docs/architecture.md, "Shifts"). The first frame
  is the reference: ``d = 0``, ``theta = 0``;
- every mosaic pixel integrates its area: the mean of ``SUPERSAMPLE x SUPERSAMPLE`` samples of the scene taken
  through ``M_k`` with a cubic spline, so sub-pixel motion is real (and the reference is an exact box average
  of the rendered scene); then mosaicked through the sensor's CFA (:func:`rawlab.synth.procedural.mosaic`);
- the **moving object** (optional) is a textured disc that moves across the scene in a straight line, a
  fixed step per frame; it is drawn analytically at the same sample positions (anti-aliased by the
  supersampling), so its image moves with the camera too. Its centre, radius and box in each frame's pixels
  are in the truth, and its mask (pixels it covers in part or whole) is returned per frame;
- each frame gets its own noise at the burst's ISO exactly as the pair dataset's frames do
  (:func:`rawlab.synth.generate.simulate_frame`: Poisson-Gaussian, black level, rounded to DN, clipped).

:func:`write_bursts` writes them as DNG sequences, one folder a burst::

    OUT/<sensor>/<scene>/burst_iso<ISO>/<scene>_iso<ISO>_f<k>.dng    # k = 0 is the reference
    OUT/.truth/<sensor>/<scene>_iso<ISO>_ref.npy    # float32 (H, W): the reference's noise-free mosaic
    OUT/.truth/<sensor>/<scene>_iso<ISO>_mask.npy   # uint8 (N, H, W): the moving object's mask per frame
    OUT/truth.json   # rawlab.noise/1 (true a, b per sensor and ISO) with a top-level "bursts" list

The clean reference is in the frames' normalised units (``(DN - black) / (white - black)`` per CFA site, 1.0
the white level, not clipped), mosaic layout in the sensor's CFA.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._version import __version__
from ..bayer import unpack
from ..noise.profile import ISOProfile, NoiseProfileSet, SensorProfile, save_profiles
from .generate import (
    TRUTH_DIR,
    SynthSummary,
    check_size,
    frame_tags,
    sensor_dirname,
    simulate_frame,
    write_frame,
)
from .procedural import mosaic
from .scenes import NATURAL_SCENES, render_scene_rgb
from .sensors import VirtualSensor, get_sensors

__all__ = [
    "SUPERSAMPLE",
    "Burst",
    "BurstPlan",
    "FrameMotion",
    "MovingObject",
    "plan_bursts",
    "simulate_burst",
    "write_bursts",
]

SUPERSAMPLE = 2  # scene samples per mosaic pixel and axis: each pixel integrates its area
MAX_SHIFT = 4.0  # hand shake, mosaic pixels: translation drawn uniformly in [-MAX_SHIFT, MAX_SHIFT] per axis
MAX_ROTATION = 0.25  # degrees, drawn uniformly in [-MAX_ROTATION, MAX_ROTATION]
_T0 = _dt.datetime(2024, 1, 1, 12, 0, 0)  # the first burst's capture time


@dataclass(frozen=True)
class FrameMotion:
    """A frame's camera motion relative to the reference: the content moved by ``(dx, dy)`` mosaic pixels
    and turned by ``rotation`` degrees (counter-clockwise on screen, y down) about the frame's centre."""

    dx: float
    dy: float
    rotation: float

    def to_dict(self) -> dict:
        return {"dx": self.dx, "dy": self.dy, "rotation_deg": self.rotation}


@dataclass(frozen=True)
class MovingObject:
    """The moving disc in one frame: centre ``(x, y)`` and radius in that frame's mosaic pixels, its box
    ``[x0, y0, x1, y1)`` (whole pixels, clipped to the frame) and how many pixels its mask holds."""

    x: float
    y: float
    radius: float
    box: tuple[int, int, int, int]
    pixels: int

    def to_dict(self) -> dict:
        return {
            "centre": [self.x, self.y],
            "radius": self.radius,
            "box": list(self.box),
            "pixels": self.pixels,
        }


@dataclass
class Burst:
    """One simulated burst, in memory.

    Attributes
    ----------
    frames
        ``uint16 (N, 4, h, w)``: each frame's packed planes R, G1, G2, B in DN, as a sensor records them.
    clean
        ``float32 (N, 4, h, w)``: each frame's noise-free planes, normalised (``clean[0]`` the reference's).
    masks
        ``bool (N, H, W)``: the moving object's pixels in each frame (all False without one), mosaic layout.
    motion
        Per frame, its :class:`FrameMotion` (the first is zero).
    objects
        Per frame, the :class:`MovingObject`, or an empty list without one.
    sensor, iso, scene, exposure_time
        What recorded it.
    """

    frames: np.ndarray
    clean: np.ndarray
    masks: np.ndarray
    motion: list[FrameMotion]
    objects: list[MovingObject]
    sensor: VirtualSensor
    iso: int
    scene: str
    exposure_time: float
    brightness: float = 1.0
    extra: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    def normalized(self) -> np.ndarray:
        """``float32 (N, 4, h, w)``: the frames in normalised units (:func:`rawlab.bayer.normalise`)."""
        from ..bayer import normalise

        return np.stack([normalise(f, self.sensor.black_level, self.sensor.white_level) for f in self.frames])

    def mosaics(self) -> np.ndarray:
        """``uint16 (N, H, W)``: the frames as the sensor's mosaic."""
        return np.stack([unpack(f, self.sensor.cfa) for f in self.frames])

    def moving_region(self) -> np.ndarray:
        """``bool (H, W)``: pixels the object covers in any frame (where a merge can ghost)."""
        return self.masks.any(axis=0)


def _shake(rng: np.random.Generator, n: int, max_shift: float, max_rotation: float) -> list[FrameMotion]:
    out = [FrameMotion(0.0, 0.0, 0.0)]
    for _ in range(n - 1):
        dx, dy = rng.uniform(-max_shift, max_shift, 2)
        rot = rng.uniform(-max_rotation, max_rotation) if max_rotation > 0 else 0.0
        out.append(FrameMotion(float(dx), float(dy), float(rot)))
    return out


def _scene_to_frame(m: FrameMotion, px, py, cx: float, cy: float):
    """Where frame pixel ``(px, py)`` looks in the reference's (scene) coordinates: ``M_k`` of the docstring."""
    t = math.radians(m.rotation)
    c, s = math.cos(t), math.sin(t)
    ux, uy = px - cx - m.dx, py - cy - m.dy
    return c * ux + s * uy + cx, -s * ux + c * uy + cy  # R(-theta) (p - c - d) + c


def _frame_of_scene(m: FrameMotion, x: float, y: float, cx: float, cy: float) -> tuple[float, float]:
    """The inverse: where scene point ``(x, y)`` appears in the frame, ``R(theta) (x - c) + c + d``."""
    t = math.radians(m.rotation)
    c, s = math.cos(t), math.sin(t)
    ux, uy = x - cx, y - cy
    return c * ux - s * uy + cx + m.dx, s * ux + c * uy + cy + m.dy


@dataclass(frozen=True)
class _Disc:
    """The moving object in scene coordinates: a disc with a colour and a grating that moves with it."""

    x0: float
    y0: float
    vx: float
    vy: float
    radius: float
    colour: np.ndarray  # linear camera RGB
    period: float
    angle: float

    def at(self, k: int) -> tuple[float, float]:
        return self.x0 + k * self.vx, self.y0 + k * self.vy

    def draw(self, k: int, sx: np.ndarray, sy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coverage ``alpha`` and RGB of the disc at scene sample positions ``(sx, sy)`` in frame ``k``."""
        x, y = self.at(k)
        ux, uy = sx - x, sy - y
        alpha = np.clip(self.radius - np.hypot(ux, uy) + 0.5, 0.0, 1.0)  # a one-pixel soft edge
        phase = (ux * math.cos(self.angle) + uy * math.sin(self.angle)) * (2 * math.pi / self.period)
        texture = 1.0 + 0.5 * np.sin(phase)
        return alpha, texture[..., None] * self.colour


def _disc(rng: np.random.Generator, n: int, height: int, width: int, level: float) -> _Disc:
    """A disc about a tenth of the frame across whose path over ``n`` frames stays inside the frame; it moves
    half its radius a frame (so successive frames overlap, as a walking person does in a burst)."""
    radius = max(3.0, 0.1 * min(height, width))
    step = 0.5 * radius
    angle = rng.uniform(0, 2 * math.pi)
    vx, vy = step * math.cos(angle), step * math.sin(angle)
    span_x, span_y = abs(vx) * (n - 1), abs(vy) * (n - 1)
    lo_x, hi_x = radius + 2, width - radius - 2 - span_x
    lo_y, hi_y = radius + 2, height - radius - 2 - span_y
    if hi_x < lo_x or hi_y < lo_y:  # a long burst in a small frame: the path is shortened to fit
        scale = min(
            (width - 2 * radius - 4) / max(span_x, 1e-9), (height - 2 * radius - 4) / max(span_y, 1e-9)
        )
        vx, vy = vx * max(scale, 0.0), vy * max(scale, 0.0)
        span_x, span_y = abs(vx) * (n - 1), abs(vy) * (n - 1)
        hi_x, hi_y = max(lo_x, width - radius - 2 - span_x), max(lo_y, height - radius - 2 - span_y)
    xs = rng.uniform(lo_x, hi_x) + (span_x if vx < 0 else 0.0)
    ys = rng.uniform(lo_y, hi_y) + (span_y if vy < 0 else 0.0)
    hue = rng.dirichlet(np.full(3, 0.7))
    colour = level * (0.4 + 1.8 * hue)
    return _Disc(
        xs, ys, vx, vy, radius, colour, float(rng.uniform(4.0, 12.0)), float(rng.uniform(0, math.pi))
    )


def simulate_burst(
    sensor: VirtualSensor,
    scene: str,
    iso: int,
    n_frames: int,
    size: tuple[int, int],
    *,
    seed: int | np.random.SeedSequence = 0,
    moving: bool = True,
    max_shift: float = MAX_SHIFT,
    max_rotation: float = MAX_ROTATION,
    brightness: float = 1.0,
    exposure_time: float = 1 / 60,
    scene_rgb: np.ndarray | None = None,
    motion: list[FrameMotion] | None = None,
) -> Burst:
    """Simulate one burst in memory (module docstring).

    Parameters
    ----------
    sensor
        The virtual sensor (:data:`rawlab.synth.sensors.SENSORS`).
    scene
        ``"chart"`` or a name in :data:`rawlab.synth.scenes.NATURAL_SCENES`.
    iso
        Every frame's ISO (its noise is the sensor's law there).
    n_frames
        Frames in the burst, at least 1; the first is the reference.
    size
        ``(width, height)`` in mosaic pixels, both even.
    seed
        The shake, the object and every noise sample follow from it.
    moving
        Add a moving object.
    max_shift, max_rotation
        Hand shake: each frame's translation (mosaic pixels, per axis) and rotation (degrees) are drawn
        uniformly within these bounds; ``max_rotation = 0`` gives pure translations.
    brightness
        The scene's level (its 99th percentile, 1.0 = white).
    motion
        The frames' motion (the first must be zero), instead of drawing the shake; the margin of scene around
        the frame still follows ``max_shift`` and ``max_rotation``, which must bound it.
    scene_rgb
        The scene already rendered at ``SUPERSAMPLE`` times the size plus the margin (:func:`_margin`), to
        share one render between bursts of the same scene; rendered here when None.
    """
    from scipy.ndimage import map_coordinates, spline_filter

    width, height = size
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"burst frames must be even and at least 16x16, got {width}x{height}")
    if n_frames < 1:
        raise ValueError(f"a burst needs at least one frame, got {n_frames}")
    ss = np.random.SeedSequence(seed) if not isinstance(seed, np.random.SeedSequence) else seed
    motion_seq, object_seq, noise_seq = ss.spawn(3)
    motion_rng, object_rng = np.random.default_rng(motion_seq), np.random.default_rng(object_seq)
    drawn = _shake(motion_rng, n_frames, max_shift, max_rotation)
    if motion is None:
        motion = drawn
    elif len(motion) != n_frames or motion[0] != FrameMotion(0.0, 0.0, 0.0):
        raise ValueError("motion must give one FrameMotion per frame, the first zero")
    m = _margin(width, height, max_shift, max_rotation)
    s = SUPERSAMPLE
    if scene_rgb is None:
        scene_rgb = render_scene_rgb(scene, sensor, s * (height + 2 * m), s * (width + 2 * m))
    rgb_scene = np.asarray(scene_rgb, np.float64) * brightness
    coeffs = [spline_filter(rgb_scene[..., ch], order=3, mode="mirror") for ch in range(3)]
    disc = _disc(object_rng, n_frames, height, width, float(np.median(rgb_scene))) if moving else None
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # Sample positions in frame pixels: SUPERSAMPLE x SUPERSAMPLE per pixel, at the centres of its sub-pixels.
    sub = (np.arange(s) + 0.5) / s - 0.5
    py = (np.arange(height)[:, None] + sub[None, :]).reshape(-1)  # (H*s,)
    px = (np.arange(width)[:, None] + sub[None, :]).reshape(-1)  # (W*s,)
    gy, gx = np.meshgrid(py, px, indexing="ij")
    frames, clean, masks, objects = [], [], [], []
    noise_rngs = [np.random.default_rng(q) for q in noise_seq.spawn(n_frames)]
    for k, mk in enumerate(motion):
        sx, sy = _scene_to_frame(mk, gx, gy, cx, cy)
        # Scene coordinates -> index in the supersampled render (pixel centres at (j + 0.5) / s - 0.5 - m).
        jy, jx = (sy + m + 0.5) * s - 0.5, (sx + m + 0.5) * s - 0.5
        rgb = np.stack(
            [map_coordinates(c, [jy, jx], order=3, mode="mirror", prefilter=False) for c in coeffs], axis=-1
        )
        mask = np.zeros((height, width), bool)
        if disc is not None:
            alpha, colour = disc.draw(k, sx, sy)
            rgb += alpha[..., None] * (colour - rgb)
            mask = alpha.reshape(height, s, width, s).max(axis=(1, 3)) > 0
            x, y = _frame_of_scene(mk, *disc.at(k), cx, cy)
            r = disc.radius + 0.5
            box = (
                max(0, math.floor(x - r)), max(0, math.floor(y - r)),
                min(width, math.ceil(x + r) + 1), min(height, math.ceil(y + r) + 1),
            )  # fmt: skip
            objects.append(MovingObject(x, y, disc.radius, box, int(mask.sum())))
        rgb = rgb.reshape(height, s, width, s, 3).mean(axis=(1, 3))  # each pixel integrates its area
        planes = mosaic(rgb, sensor.cfa)
        clean.append(planes.astype(np.float32))
        frames.append(simulate_frame(planes, sensor, iso, noise_rngs[k]))
        masks.append(mask)
    return Burst(
        np.stack(frames), np.stack(clean), np.stack(masks), motion, objects, sensor, int(iso), scene,
        exposure_time, brightness,
    )  # fmt: skip


def _margin(width: int, height: int, max_shift: float, max_rotation: float) -> int:
    """Mosaic pixels of scene around the frame that the shake can bring into view (plus the spline's reach)."""
    turn = math.sin(math.radians(abs(max_rotation))) * math.hypot(width, height) / 2
    return math.ceil(abs(max_shift) + turn) + 4


# -- the dataset on disk --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BurstPlan:
    """One burst to write."""

    sensor_index: int
    scene_index: int
    scene: str
    iso: int
    exposure_time: float
    brightness: float
    folder: str  # relative to OUT

    def frame_relpath(self, k: int) -> str:
        return f"{self.folder}/{self.scene}_iso{self.iso}_f{k}.dng"

    def truth_stem(self, sensor: VirtualSensor) -> str:
        return f"{TRUTH_DIR}/{sensor_dirname(sensor)}/{self.scene}_iso{self.iso}"


def plan_bursts(sensors, *, seed: int, n_scenes: int) -> list[BurstPlan]:
    """Every burst (scene, ISO, exposure, brightness): per sensor and scene, one burst at each ISO of the
    sensor's ladder, the exposure shortened by the ISO ratio so every burst has the same brightness."""
    if n_scenes < 1:
        raise ValueError("need at least one scene")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB0257]))
    plans = []
    for si, sensor in enumerate(sensors):
        naturals = [NATURAL_SCENES[(si * 3 + k) % len(NATURAL_SCENES)] for k in range(n_scenes - 1)]
        for ci, scene in enumerate(["chart", *naturals]):
            brightness = 1.0 if scene == "chart" else float(rng.uniform(0.3, 0.95))
            base_exposure = float(rng.choice([1 / 15, 1 / 30, 1 / 60, 1 / 125]))
            for iso in sensor.iso_ladder:
                folder = f"{sensor_dirname(sensor)}/{scene}/burst_iso{iso}"
                exposure = base_exposure * sensor.base_iso / iso
                plans.append(BurstPlan(si, ci, scene, int(iso), exposure, brightness, folder))
    return plans


def _write_npy(path: Path, array: np.ndarray) -> None:
    from ..errors import RawlabError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, array, allow_pickle=False)
    except OSError as e:
        raise RawlabError(
            f"cannot write {path}: {e.strerror or e}; free space or choose another OUT"
        ) from None


def _burst_truth(plan: BurstPlan, sensor: VirtualSensor, burst: Burst, stem: str) -> dict:
    return {
        "sensor": sensor.name,
        "scene": plan.scene,
        "folder": plan.folder,
        "iso": plan.iso,
        "exposure_time": plan.exposure_time,
        "brightness": plan.brightness,
        "reference": 0,
        "frames": [plan.frame_relpath(k).rsplit("/", 1)[1] for k in range(burst.n_frames)],
        "motion": [m.to_dict() for m in burst.motion],
        "moving_object": [o.to_dict() for o in burst.objects] or None,
        "clean_reference": f"{stem}_ref.npy",
        "object_mask": f"{stem}_mask.npy" if burst.objects else None,
    }


def write_bursts(
    out: str | os.PathLike[str],
    *,
    n_frames: int,
    seed: int = 0,
    size: tuple[int, int] = (512, 384),
    n_sensors: int = 2,
    n_scenes: int = 4,
    moving: bool = True,
    progress: Callable[[int], None] | None = None,
) -> SynthSummary:
    """Write bursts of ``n_frames`` DNGs per sensor, scene and ISO, and their truth (module docstring).

    ``progress`` is called with the number of frames just written. Same seed, same bytes.

    Raises
    ------
    RawlabError
        ``out`` cannot be written, or a frame of ``size`` cannot fit in memory (before anything is simulated).
    """
    from ..outputs import output_folder

    width, height = size
    if width % 2 or height % 2 or width < 16 or height < 16:
        raise ValueError(f"--size must be even and at least 16x16, got {width}x{height}")
    if n_frames < 2:
        raise ValueError(f"--burst needs at least 2 frames, got {n_frames}")
    check_size(width * SUPERSAMPLE, height * SUPERSAMPLE)
    sensors = get_sensors(n_sensors)
    plans = plan_bursts(sensors, seed=seed, n_scenes=n_scenes)
    out = output_folder(out, "OUT")
    nbytes, bursts = 0, []
    m = _margin(width, height, MAX_SHIFT, MAX_ROTATION)
    scene_key, scene_rgb = None, None
    for bi, plan in enumerate(plans):
        sensor = sensors[plan.sensor_index]
        if scene_key != (plan.sensor_index, plan.scene_index):  # bursts are planned scene by scene
            scene_key, scene_rgb = None, None
            scene_rgb = render_scene_rgb(
                plan.scene, sensor, SUPERSAMPLE * (height + 2 * m), SUPERSAMPLE * (width + 2 * m)
            )
            scene_key = (plan.sensor_index, plan.scene_index)
        burst = simulate_burst(
            sensor, plan.scene, plan.iso, n_frames, size, seed=np.random.SeedSequence([seed, 0xB0257, bi]),
            moving=moving, brightness=plan.brightness, exposure_time=plan.exposure_time, scene_rgb=scene_rgb,
        )  # fmt: skip
        for k, planes in enumerate(burst.frames):
            path = out / plan.frame_relpath(k)
            write_frame(
                path,
                unpack(planes, sensor.cfa),
                **frame_tags(sensor, plan.iso, plan.exposure_time),
                # Capture times in frame order, a second apart (EXIF DateTime holds whole seconds), one
                # minute between bursts: a catalog can tell the sequence from the times alone.
                datetime=_T0 + _dt.timedelta(minutes=bi, seconds=k),
            )
            nbytes += path.stat().st_size
            if progress is not None:
                progress(1)
        stem = plan.truth_stem(sensor)
        _write_npy(out / f"{stem}_ref.npy", unpack(burst.clean[0], sensor.cfa).astype(np.float32))
        if burst.objects:
            _write_npy(out / f"{stem}_mask.npy", burst.masks.astype(np.uint8))
        bursts.append(_burst_truth(plan, sensor, burst, stem))
    truth_path = out / "truth.json"
    save_profiles(_truth(sensors, plans, bursts, n_frames, width, height, seed, moving), truth_path)
    n_scenes_total = len({(p.sensor_index, p.scene_index) for p in plans})
    return SynthSummary(out, len(plans) * n_frames, len(sensors), n_scenes_total, truth_path, nbytes)


def _truth(sensors, plans, bursts, n_frames, width, height, seed, moving) -> NoiseProfileSet:
    out = []
    for si, sensor in enumerate(sensors):
        profiles = []
        for iso in sensor.iso_ladder:
            a, b = sensor.noise_params(iso)
            n = n_frames * sum(1 for p in plans if p.sensor_index == si and p.iso == iso)
            profiles.append(ISOProfile(iso, a.tolist(), b.tolist(), n_frames=n, n_pixels=n * width * height))
        extra = {
            "make": sensor.make,
            "model": sensor.model,
            "cfa": sensor.cfa,
            "black_level": list(sensor.black_level),
            "white_level": sensor.white_level,
            "base_iso": sensor.base_iso,
            "full_well_electrons": sensor.full_well,
        }
        out.append(SensorProfile(sensor.name, "truth", profiles, sensor.iso_model(), extra))
    meta = {
        "generator": {
            "rawlab_version": __version__,
            "seed": seed,
            "size": [width, height],
            "burst": n_frames,
            "moving": moving,
            "supersample": SUPERSAMPLE,
            "max_shift": MAX_SHIFT,
            "max_rotation_deg": MAX_ROTATION,
        },
        "burst_truth": "bursts[]: folder (relative to this file) and frames (file names in it; frames[0] the reference), "
        "motion per frame relative to the reference (the content moved by dx, dy mosaic pixels and turned by "
        "rotation_deg about the frame centre: frame(p) = ref(R(-t) (p - c - d) + c)), the moving object per "
        "frame (centre, radius, box [x0, y0, x1, y1) in that frame's mosaic pixels), clean_reference: float32 "
        "(H, W) noise-free mosaic of the reference, normalised (1.0 = white, not clipped), object_mask: uint8 "
        "(N, H, W)",
        "bursts": bursts,
    }
    return NoiseProfileSet(out, meta)

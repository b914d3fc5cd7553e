"""Virtual sensors for the synthetic dataset, and the physics that gives their noise law.

Each sensor is described in physical units (full-well capacity, read noise before and after the analog gain,
bit depth, black level) and its noise parameters in normalised units follow from them (docs/architecture.md, "Units
model"). With ``g`` the conversion gain in DN per electron at a given ISO and ``R = white - black`` the
usable range in DN:

- shot noise: ``a = g / R`` (one electron is ``g / R`` normalised units, and Poisson variance equals the mean);
- read noise before the gain (``s_pre`` electrons) and after it (``s_post`` DN), plus rounding to integer DN:
  ``b = (s_pre * a)**2 + (s_post / R)**2 + 1 / (12 * R**2)``.

So ``a`` is proportional to ISO and ``b = b0 + b1 * ISO**2`` within one conversion-gain mode, the two-term law
used by Foi et al. (2008) and by Brooks et al. (CVPR 2019). The values are realistic rather than copied from
one camera: full wells, read noise and gain breaks are in the ranges published for DSLR and phone sensors
(darktable's noise profiles and the ELD calibrations of Wei et al., CVPR 2020, bracket them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SENSORS", "VirtualSensor", "get_sensors"]

# XYZ (D65) -> camera matrices, the DNG ColorMatrix1 convention. They are plausible CMOS responses (strong
# green, R/B cross-talk) so that the unprocessed scenes get realistic channel ratios.
_XYZ_TO_CAM_DSLR = ((0.6722, -0.0635, -0.0963), (-0.4287, 1.2460, 0.2028), (-0.0908, 0.2162, 0.5668))
_XYZ_TO_CAM_PHONE = ((0.7950, -0.2100, -0.0660), (-0.4420, 1.1980, 0.2720), (-0.0560, 0.1780, 0.6090))


@dataclass(frozen=True)
class VirtualSensor:
    """A simulated camera sensor with a physically derived Poisson-Gaussian noise law.

    Parameters
    ----------
    make, model
        As the camera would write them in EXIF; the rawlab sensor name is ``"{make} {model}"``.
    cfa
        Bayer pattern of the mosaic.
    bits
        ADC bit depth; the white level is ``2**bits - 1`` DN.
    black_level
        Black level per channel R, G1, G2, B in DN. 0 means the camera clips black in-camera (shadows are
        clipped at 0, as on older Nikon bodies).
    full_well
        Electrons that fill the range at base ISO.
    iso_ladder
        ISOs written; the first is the base ISO (clean references are shot there).
    read_pre
        Pre-gain read noise in electrons: one value, or ``(iso_threshold, value)`` steps for sensors with
        dual conversion gain (the read noise drops above the threshold).
    read_post
        Post-gain read noise in DN.
    channel_gain
        Relative gain of each channel R, G1, G2, B (per-channel analog gain on some phone sensors).
    """

    make: str
    model: str
    cfa: str
    bits: int
    black_level: tuple[int, int, int, int]
    full_well: float
    iso_ladder: tuple[int, ...]
    read_pre: tuple[tuple[int, float], ...]
    read_post: float
    channel_gain: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    xyz_to_cam: tuple[tuple[float, float, float], ...] = _XYZ_TO_CAM_DSLR
    wb_gains: tuple[float, float, float] = (2.1, 1.0, 1.55)  # camera R, G, B multipliers at D65
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        return f"{self.make} {self.model}"

    @property
    def white_level(self) -> int:
        return 2**self.bits - 1

    @property
    def base_iso(self) -> int:
        return self.iso_ladder[0]

    @property
    def dn_range(self) -> np.ndarray:
        """Usable range ``white - black`` per channel R, G1, G2, B, in DN."""
        return self.white_level - np.asarray(self.black_level, dtype=np.float64)

    def read_noise_pre(self, iso: float) -> float:
        """Pre-gain read noise (electrons) at ``iso``: the last step whose threshold is <= iso."""
        value = self.read_pre[0][1]
        for threshold, v in self.read_pre:
            if iso >= threshold:
                value = v
        return value

    def noise_params(self, iso: float) -> tuple[np.ndarray, np.ndarray]:
        """True ``(a, b)`` per channel R, G1, G2, B at ``iso``, normalised units (see module docstring)."""
        rng = self.dn_range
        gain_dn_per_e = rng / self.full_well * (iso / self.base_iso) * np.asarray(self.channel_gain)
        a = gain_dn_per_e / rng
        b = (self.read_noise_pre(iso) * a) ** 2 + (self.read_post / rng) ** 2 + 1.0 / (12.0 * rng**2)
        return a, b

    def iso_model(self) -> dict:
        """The law over ISO in closed form, in the shape noise-fit reports it."""
        a0, _ = self.noise_params(self.base_iso)
        rng = self.dn_range
        segments = []
        thresholds = [t for t, _ in self.read_pre]
        for i, (t, s_pre) in enumerate(self.read_pre):
            upper = thresholds[i + 1] if i + 1 < len(thresholds) else None
            segments.append(
                {
                    "iso_min": t,
                    "iso_max_exclusive": upper,
                    "b0": ((self.read_post / rng) ** 2 + 1.0 / (12.0 * rng**2)).tolist(),
                    "b1": ((s_pre * a0 / self.base_iso) ** 2).tolist(),
                }
            )
        return {
            "form": "a = ga * iso; b = b0 + b1 * iso^2 (per conversion-gain segment)",
            "ga": (a0 / self.base_iso).tolist(),
            "segments": segments,
        }


SENSORS: tuple[VirtualSensor, ...] = (
    # A DSLR-like 12-bit sensor that clips black in-camera: shadows are clipped at 0 DN.
    VirtualSensor(
        make="SynthCam",
        model="PG-1",
        cfa="RGGB",
        bits=12,
        black_level=(0, 0, 0, 0),
        full_well=26000.0,
        iso_ladder=(100, 400, 800, 1600, 3200, 6400),
        read_pre=((0, 2.2),),
        read_post=1.1,
    ),
    # A phone-like 10-bit sensor: small full well, per-channel black and gain, dual conversion gain at ISO 800.
    VirtualSensor(
        make="SynthCam",
        model="MP-2",
        cfa="BGGR",
        bits=10,
        black_level=(64, 65, 63, 64),
        full_well=5200.0,
        iso_ladder=(50, 100, 200, 400, 800, 1600, 3200),
        read_pre=((0, 2.8), (800, 1.3)),
        read_post=0.7,
        channel_gain=(1.02, 1.0, 0.99, 1.03),
        xyz_to_cam=_XYZ_TO_CAM_PHONE,
        wb_gains=(1.9, 1.0, 1.7),
    ),
    # A 14-bit full-frame-like sensor with a high black level (Canon-style).
    VirtualSensor(
        make="SynthCam",
        model="GR-3",
        cfa="GRBG",
        bits=14,
        black_level=(512, 512, 512, 512),
        full_well=62000.0,
        iso_ladder=(100, 800, 3200, 12800),
        read_pre=((0, 1.6),),
        read_post=2.4,
    ),
    # A 16-bit scientific/medium-format-like sensor.
    VirtualSensor(
        make="SynthCam",
        model="GB-4",
        cfa="GBRG",
        bits=16,
        black_level=(1024, 1024, 1024, 1024),
        full_well=48000.0,
        iso_ladder=(64, 200, 800, 3200),
        read_pre=((0, 1.9),),
        read_post=9.0,
        wb_gains=(2.3, 1.0, 1.4),
    ),
)


def get_sensors(k: int) -> tuple[VirtualSensor, ...]:
    """The first ``k`` virtual sensors (1 to 4)."""
    if not 1 <= k <= len(SENSORS):
        raise ValueError(f"--sensors must be between 1 and {len(SENSORS)}, got {k}")
    return SENSORS[:k]

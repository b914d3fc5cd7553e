"""Training content without limit: procedural scenes and randomised sensors, generated in memory on the fly.

**Scenes** are dead-leaves images (Matheron's model; as a training prior for restoration networks, Achddou,
Gousseau and Ladjal, "Synthetic images as a regularity prior for image restoration neural networks", 2021):
opaque shapes dropped one over another, with radii from a power law ``p(r) ∝ r^-3`` between about a pixel and
the image size, which gives the scale invariance and the ``1/f^2`` power spectrum of natural images. Each
shape gets a colour, and often a texture (gratings, value noise at several scales, pixel-scale patterns such
as halftone screens, grass or gravel that single-image noise estimators mistake for noise) or a gradient;
its edge is sharp or soft. A smooth illumination field, an exposure that puts part of the scene in deep
shadow and part beyond white (clipped highlights), and sometimes a defocus blur, finish the scene. Scenes are
rendered in linear camera RGB at mosaic resolution, then mosaicked for any CFA and packed to ``R, G1, G2, B``.

**Sensors** (:func:`random_sensor`) draw the CFA, bit depth, black and white levels and Poisson-Gaussian
``(a, b)`` per example from wide, realistic ranges: ``a`` from base ISO on a full-frame camera to ISO 25600
on a phone, read noise from under one to tens of electrons, with or without in-camera black clipping.

Nothing is read from or written to disk; every output is a pure function of the generator's state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..bayer import CFA_PATTERNS, channel_offsets

__all__ = ["RandomSensor", "dead_leaves", "mosaic", "random_sensor"]

# Shot term a (normalised units): 3e-6 is base ISO of a 14-bit full-frame sensor (60 000 e- full well);
# 5e-2 is a small phone sensor at its top ISO (20 e- full well). Read noise in electrons, log-uniform.
A_RANGE = (3e-6, 5e-2)
READ_NOISE_E = (0.5, 40.0)
BITS = (10, 12, 14, 16)
MAX_READ_SIGMA = 0.03  # normalised: read noise at most 3% of white (a phone at ISO 3200+ reads ~1.6%)


def _power_law_radii(rng: np.random.Generator, n: int, rmin: float, rmax: float, alpha: float = 3.0):
    """``n`` radii with density ``∝ r^-alpha`` on ``[rmin, rmax]`` (inverse CDF)."""
    u = rng.random(n)
    e = 1.0 - alpha
    return (rmin**e + u * (rmax**e - rmin**e)) ** (1.0 / e)


def _colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` linear RGB colours ``(n, 3)``: log-uniform brightness over ~2 decades, random hue and saturation."""
    lum = np.exp(rng.uniform(math.log(0.02), 0.0, n))[:, None]
    pure = rng.dirichlet(np.full(3, 0.7), n) * 3.0 * lum
    sat = rng.uniform(0.0, 1.0, n)[:, None] ** 1.5
    return ((1.0 - sat) * lum + sat * pure).astype(np.float32)


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A multiplicative texture ``(h, w)`` around 1: grating, value noise or a pixel-scale pattern."""
    kind = rng.integers(4)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    if kind == 0:  # a grating at any frequency up to near Nyquist, any orientation
        f = math.exp(rng.uniform(math.log(0.01), math.log(0.45)))
        t = rng.uniform(0, math.pi)
        pattern = np.sin(
            2 * math.pi * f * (xx * math.cos(t) + yy * math.sin(t)) + rng.uniform(0, 2 * math.pi)
        )
    elif kind == 1:  # value noise: a coarse random grid, upsampled (mottled surfaces, foliage)
        cell = int(rng.integers(2, 24))
        grid = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
        pattern = grid[np.arange(h)[:, None] // cell, np.arange(w)[None, :] // cell]
        if cell > 2:
            from scipy.ndimage import uniform_filter

            pattern = uniform_filter(pattern, cell)
        pattern /= max(float(pattern.std()), 1e-6)
    elif kind == 2:  # pixel-scale texture: gravel, grass, printed halftone; what noise estimators misread
        pattern = rng.standard_normal((h, w)).astype(np.float32)
        if rng.random() < 0.5:
            period = float(rng.uniform(2.0, 6.0))
            pattern = np.sign(np.sin(2 * math.pi * xx / period) * np.sin(2 * math.pi * yy / period))
    else:  # a linear gradient across the shape
        t = rng.uniform(0, 2 * math.pi)
        pattern = (xx * math.cos(t) + yy * math.sin(t)) / max(h, w, 1) * 2.0
    amp = rng.uniform(0.05, 0.6)
    return np.clip(1.0 + amp * pattern, 0.05, None).astype(np.float32)


def dead_leaves(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    n_leaves: int | None = None,
    rmin: float = 2.0,
    coverage: float = 3.0,
    textured: float = 0.5,
) -> np.ndarray:
    """A dead-leaves scene in linear camera RGB, ``(height, width, 3)`` float32; 1.0 is white (values above
    clip at the sensor), 0 is black.

    Parameters
    ----------
    rng
        The source of randomness: the same state gives the same scene.
    height, width
        Size in mosaic pixels.
    n_leaves
        Shapes to drop (default: enough for their areas to add up to ``coverage`` times the image's, so
        about ``exp(-coverage)`` of the background shows).
    rmin
        Smallest radius in pixels; the largest is the image's larger side.
    coverage
        See ``n_leaves``.
    textured
        Share (0..1) of shapes that carry a texture or gradient.
    """
    h, w = int(height), int(width)
    rmax = float(max(h, w))
    # E[pi r^2] under p(r) ∝ r^-3 on [rmin, rmax] is pi * ln(rmax / rmin) / ((rmin^-2 - rmax^-2) / 2)
    mean_area = math.pi * math.log(rmax / rmin) / ((rmin**-2 - rmax**-2) / 2)
    n = int(n_leaves if n_leaves is not None else max(16, round(coverage * h * w / mean_area)))
    radii = np.sort(_power_law_radii(rng, n, rmin, rmax))[::-1]  # big first: small ones stay visible on top
    centres_y = rng.uniform(-radii, h + radii)
    centres_x = rng.uniform(-radii, w + radii)
    colours = _colours(rng, n + 1)
    is_disk = rng.random(n) < 0.7
    angles = rng.uniform(0, math.pi, n)
    aspect = rng.uniform(0.25, 1.0, n)
    soft = np.where(rng.random(n) < 0.7, 0.5, rng.uniform(0.5, np.maximum(0.6, radii / 3)))
    has_texture = (rng.random(n) < textured) & (radii > 4)
    img = np.empty((h, w, 3), np.float32)
    img[:] = colours[n]
    n_big = int(np.count_nonzero(radii >= _SMALL))
    for k in range(n_big):
        r, cy, cx = radii[k], centres_y[k], centres_x[k]
        y0, y1 = max(0, int(cy - r) - 1), min(h, int(cy + r) + 2)
        x0, x1 = max(0, int(cx - r) - 1), min(w, int(cx + r) + 2)
        if y1 <= y0 or x1 <= x0:
            continue
        dy = (np.arange(y0, y1, dtype=np.float32) - cy)[:, None]
        dx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :]
        if is_disk[k]:
            inside = r - np.sqrt(dy * dy + dx * dx)
        else:  # rotated rectangle, aspect up to 4:1
            c, s_ = math.cos(angles[k]), math.sin(angles[k])
            inside = np.minimum(r - np.abs(dx * c + dy * s_), r * aspect[k] - np.abs(dy * c - dx * s_))
        alpha = np.clip(inside * (1.0 / soft[k]) + 0.5, 0.0, 1.0)[..., None]
        leaf = colours[k] * _texture(rng, y1 - y0, x1 - x0)[..., None] if has_texture[k] else colours[k]
        patch = img[y0:y1, x0:x1]
        patch += alpha * (leaf - patch)
    shape = (centres_y, centres_x, is_disk, angles, aspect, soft)
    for k0 in range(n_big, n, _CHUNK):  # the many small leaves, painted last, a chunk at a time
        k1 = min(n, k0 + _CHUNK)
        _paint_small(img, radii[k0:k1], *(v[k0:k1] for v in shape), colours[k0:k1])
    # Illumination: a smooth multiplicative field over up to ~3 stops across the frame.
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    t = rng.uniform(0, 2 * math.pi)
    ramp = (xx * math.cos(t) + yy * math.sin(t)) / max(h, w)
    img *= np.exp2(rng.uniform(0, 3) * (ramp - ramp.mean()))[..., None]
    if rng.random() < 0.3:  # defocus
        from scipy.ndimage import gaussian_filter

        img = gaussian_filter(img, sigma=(rng.uniform(0.5, 2.0),) * 2 + (0,))
    # Exposure: the median anywhere from deep shadow to bright, so some scenes clip and some are all shadow.
    level = math.exp(rng.uniform(math.log(0.005), math.log(0.4)))
    img *= level / max(float(np.median(img)), 1e-6)
    return np.clip(img, 0.0, 4.0).astype(np.float32)  # 2 stops over white is clipped at the sensor anyway


_SMALL = 4.0  # leaves under this radius (px) are painted together, vectorised: most leaves are this small
_CHUNK = 64  # small leaves painted at once; they cover ~3% of a 256-px scene, so few overlap in a chunk


def _paint_small(img, radii, cy, cx, is_disk, angles, aspect, soft, colours) -> None:
    """Paint small leaves (radius < ``_SMALL``) in one pass over their stencils; where two of them overlap,
    the later one is painted over the image as it was before the chunk (a negligible difference)."""
    h, w = img.shape[:2]
    half = math.ceil(_SMALL) + 1
    off = np.arange(-half, half + 1)
    ys = np.floor(cy).astype(int)[:, None, None] + off[None, :, None]  # (m, S, 1)
    xs = np.floor(cx).astype(int)[:, None, None] + off[None, None, :]  # (m, 1, S)
    dy = (ys - cy[:, None, None]).astype(np.float32)
    dx = (xs - cx[:, None, None]).astype(np.float32)
    r = radii[:, None, None].astype(np.float32)
    c, s = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    rect = np.minimum(r - np.abs(dx * c + dy * s), r * aspect[:, None, None] - np.abs(dy * c - dx * s))
    inside = np.where(is_disk[:, None, None], r - np.sqrt(dy * dy + dx * dx), rect)
    alpha = np.clip(inside / soft[:, None, None] + 0.5, 0.0, 1.0)
    ys, xs = np.broadcast_arrays(ys, xs)
    keep = (alpha > 0) & (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    leaf = np.nonzero(keep)[0]
    yk, xk, ak = ys[keep], xs[keep], alpha[keep][:, None].astype(np.float32)
    before = img[yk, xk]
    img[yk, xk] = before + ak * (colours[leaf] - before)


def mosaic(rgb: np.ndarray, cfa: str, wb_gains=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Sample a linear RGB image ``(H, W, 3)`` through a CFA into packed planes ``(4, H/2, W/2)``
    (``R, G1, G2, B``), each colour divided by its white-balance gain (a raw's red and blue are darker)."""
    colour_of = (0, 1, 1, 2)  # R, G1, G2, B
    gains = np.asarray(wb_gains, np.float32)
    h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    return np.stack(
        [
            rgb[dy:h:2, dx:w:2, colour_of[c]] / gains[colour_of[c]]
            for c, (dy, dx) in enumerate(channel_offsets(cfa))
        ]
    )


@dataclass(frozen=True)
class RandomSensor:
    """One draw of a virtual sensor: what a training example is recorded with (levels in DN; ``a``, ``b``
    normalised, per channel R, G1, G2, B; ``wb_gains`` the as-shot white balance R, G, B)."""

    cfa: str
    bits: int
    black_level: tuple[float, float, float, float]
    white_level: float
    a: np.ndarray
    b: np.ndarray
    wb_gains: tuple[float, float, float]

    @property
    def quantisation(self) -> float:
        """The variance rounding to whole DN adds, ``1 / (12 (white - black)^2)`` (normalised units)."""
        return 1.0 / (12.0 * (self.white_level - self.black_level[0]) ** 2)

    @property
    def read_noise_e(self) -> float:
        """Read noise in electrons (G1): ``sqrt(b) / a``."""
        return float(math.sqrt(self.b[1]) / self.a[1])


def random_sensor(rng: np.random.Generator, *, a_range=A_RANGE, read_noise_e=READ_NOISE_E) -> RandomSensor:
    """A sensor drawn from wide, realistic ranges (see the module docstring).

    ``a`` is log-uniform over ``a_range``; the read term is ``b = (sigma_e * a)^2`` with ``sigma_e``
    log-uniform over ``read_noise_e`` electrons (its square root capped at ``MAX_READ_SIGMA``), plus the
    quantisation step's ``1/12`` DN^2 (:attr:`RandomSensor.quantisation`: recording rounds to whole DN, so a
    simulation draws ``b - quantisation`` before rounding); the channels differ by a few per cent. A third of the sensors clip black in-camera (black level 0 DN).
    """
    cfa = CFA_PATTERNS[int(rng.integers(len(CFA_PATTERNS)))]
    bits = int(BITS[int(rng.integers(len(BITS)))])
    white = float(2**bits - 1)
    black = 0.0 if rng.random() < 1 / 3 else float(round(white * rng.uniform(1 / 64, 1 / 16)))
    span = white - black
    a = math.exp(rng.uniform(math.log(a_range[0]), math.log(a_range[1])))
    sigma_e = math.exp(rng.uniform(math.log(read_noise_e[0]), math.log(read_noise_e[1])))
    # Read noise in electrons falls as gain rises; cap it at MAX_READ_SIGMA of white, the noisiest phones'
    # top ISO (a read noise of tens of electrons at a gain of a few electrons per white is no real sensor).
    read = min((sigma_e * a) ** 2, MAX_READ_SIGMA**2)
    a4 = a * rng.uniform(0.95, 1.05, 4)
    b4 = read * rng.uniform(0.9, 1.1, 4) + 1.0 / (12.0 * span * span)
    wb = (float(rng.uniform(1.5, 2.6)), 1.0, float(rng.uniform(1.2, 2.2)))
    return RandomSensor(cfa, bits, (black,) * 4, white, a4, b4, wb)

"""Single-image noise estimates on photographs recorded by sensors no estimator was tuned on: the estimate
``rawlab denoise`` falls back on when neither the model's law nor the file knows the sensor (#12).

    python benchmarks/noise_estimate.py [--size 384x512] [--scenes all] [--no-real] [--rows] [--sensors tune]

Scenes: scikit-image's bundled photographs, unprocessed to linear raw (:mod:`rawlab.synth.scenes`); crops of
real base-ISO raws from ``../shared/raw-samples/bayer`` (skipped when absent), made demosaic-free: the packed
planes, averaged over 2x2 (their own noise variance drops to a quarter, an eighth in green), are an RGB image
that is mosaicked again through the sensor's CFA; and two textured dead-leaves scenes
(:func:`rawlab.synth.procedural.dead_leaves`), reported apart (not photographs). Sensors: four defined here
(10 to 16 bits, black clipped or not, ``a`` from 1e-5 to 1e-2 and ``b`` from 1e-8 to 1e-4 over their ISOs)
and four drawn by :func:`rawlab.synth.procedural.random_sensor` with seeds no estimator was tuned on
(``--sensors tune`` swaps them for the ten random sensors, seeds 100-109, that the estimator's settings were
chosen on: the texture threshold ``kappa``; the read-noise prior comes from real cameras, not from here). Each
frame is Poisson-Gaussian noise at the sensor's ``(a, b)``, quantised to its DN and clipped to ``[0, white]``.
The truth ``b`` is the variance at zero signal of the recorded DN, rounding included: the read noise (before
and after the gain) plus ``1 / 12`` DN^2, as the sensors here define it and as a fit of the recorded frame
sees it (the frame draws ``b - 1/12 DN^2`` of Gaussian noise, then rounds to whole DN).
The real crops keep some noise of their own (about ``a_src / 8`` in green), so they are used only where the
added ``a`` is at least 1e-3, and they count in the medians.

Estimators: ``old``, an ablation: :func:`rawlab.noise.quincunx.estimate_noise` without the read-noise prior
and with the texture threshold of before (``prior=False, kappa=1.5``; the estimator of commit 8618123
measured 14.0 % and 69.8 % here, and Foi et al. per plane, before it, failed on most frames: median
``|da|/a`` 100 %), ``new``, :func:`rawlab.deploy.noiseparams.single_image_noise` as it runs on a file with no
masked pixels, and ``masked``, as ``rawlab denoise`` runs it on a file that keeps some
(:func:`rawlab.deploy.noiseparams.masked_read_noise`): 16 columns of the frame's height recorded by the same
sensor with no light, ``b`` from them (fitted as a clipped normal where the sensor clips them at 0 DN, as
DX12clip and two of the random sensors do), ``a`` from the quincunx. Errors
are ``|estimate - truth| / truth`` per channel; the medians are over channels and frames (photographs and real
crops), against the targets 15 % (a) and 25 % (b). ``b`` is measurable only where the frame has signal near
black: each frame's Cramer-Rao bound for ``b`` (:func:`b_bound`, column ``crlb b``) says how well any estimator
could do; the frames where it is at most 10 % are summarised apart as well (the headline stays over all
frames). About a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

TARGET_A, TARGET_B = 0.15, 0.25
# Masked columns simulated for the "masked" estimator: 16 columns of the frame's height (6,144 pixels at 384 rows,
# 3 % of the frame; the Canon PowerShot S40 keeps 109,263 usable ones, 2.7 % of its 4.1 M).
MASKED_COLUMNS = 16
B_IDENTIFIABLE = 0.10  # frames whose b has a Cramer-Rao bound (relative sd) at most this are reported apart
SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "raw-samples" / "bayer"
REAL = ("canon_powershot-s40_iso50_crw-0119.CRW", "canon_powershot-g2_iso50_crw-0304.CRW",
        "canon_powershot-s30_iso50_raw-canon-s30.CRW")  # fmt: skip


@dataclass(frozen=True)
class Sensor:
    """A sensor at one gain: ``(a, b)`` per channel (normalised), levels in DN."""

    name: str
    cfa: str
    bits: int
    black: tuple[float, float, float, float]
    a: np.ndarray
    b: np.ndarray

    @property
    def white(self) -> float:
        return float(2**self.bits - 1)

    @property
    def span(self) -> np.ndarray:
        return self.white - np.asarray(self.black, np.float64)


def physical(name, cfa, bits, black, full_well, read_e, post_dn, gains) -> list[Sensor]:
    """One :class:`Sensor` per analog gain: ``a = gain / full_well`` per electron (normalised), the read noise
    ``read_e`` electrons before the gain and ``post_dn`` DN after it, plus quantisation."""
    black4 = (black,) * 4 if np.ndim(black) == 0 else tuple(black)
    span = 2**bits - 1 - np.asarray(black4, np.float64)
    out = []
    for g in gains:
        a = np.full(4, g / full_well) * span / span[1]  # one electron is the same DN in every channel
        b = (read_e * a) ** 2 + (post_dn / span) ** 2 + 1.0 / (12.0 * span**2)
        out.append(Sensor(f"{name} x{g:g}", cfa, bits, black4, a, b))
    return out


def tuning_sensors() -> list[Sensor]:
    """The ten random sensors the estimator's settings were chosen on (never in the headline)."""
    from rawlab.synth.procedural import random_sensor

    out = []
    for seed in range(100, 110):
        s = random_sensor(np.random.default_rng(seed))
        out.append(Sensor(f"tune#{seed}", s.cfa, s.bits, tuple(s.black_level), s.a, s.b))
    return out


def sensors() -> list[Sensor]:
    from rawlab.synth.procedural import random_sensor

    out = (
        physical("FF14", "RGGB", 14, 512, 60000, 1.6, 2.0, (1, 16, 128))  # a 1.7e-5 .. 2.1e-3
        + physical("DX12clip", "GRBG", 12, 0, 25000, 2.5, 1.0, (1, 8, 64))  # black clipped; a 4e-5 .. 2.6e-3
        + physical("Phone10", "BGGR", 10, (64, 65, 63, 64), 4000, 1.2, 0.6, (1, 8, 40))  # a 2.5e-4 .. 1e-2
        + physical("MF16", "GBRG", 16, 1024, 80000, 2.0, 9.0, (1, 10, 50))  # a 1.25e-5 .. 6e-4
    )
    for seed in (1201, 1202, 1203, 1204):
        s = random_sensor(np.random.default_rng(seed))
        out.append(Sensor(f"random#{seed}", s.cfa, s.bits, tuple(s.black_level), s.a, s.b))
    return out


def photo_rgb(name: str, h: int, w: int) -> np.ndarray:
    """A bundled photograph unprocessed to linear raw (:func:`rawlab.synth.scenes.natural_scene`) at twice
    the size, as RGB at ``h x w`` (each packed pixel's R, mean of G1 and G2, B)."""
    from rawlab.synth.scenes import natural_scene
    from rawlab.synth.sensors import SENSORS

    p = natural_scene(name, SENSORS[0], 2 * h, 2 * w)
    return np.stack([p[0], 0.5 * (p[1] + p[2]), p[3]], axis=-1)


def real_rgb(path: Path) -> np.ndarray:
    """A real raw's packed planes averaged over 2x2, as linear RGB (G the mean of G1 and G2)."""
    from rawlab.rawio import read_raw

    x = read_raw(path).normalized().astype(np.float64)
    h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    x = x[:, :h, :w].reshape(4, h // 2, 2, w // 2, 2).mean(axis=(2, 4))
    return np.stack([x[0], 0.5 * (x[1] + x[2]), x[3]], axis=-1)


def dead_leaves_rgb(seed: int, h: int, w: int) -> np.ndarray:
    from rawlab.synth.procedural import dead_leaves

    return dead_leaves(np.random.default_rng(seed), h, w, textured=0.9).astype(np.float64)


def from_rgb(rgb: np.ndarray, cfa: str, h: int, w: int, blur: float = 0.0) -> np.ndarray:
    """Packed planes of the central ``h x w`` of a linear RGB image through ``cfa``, after a Gaussian blur of
    ``blur`` pixels (the lens and anti-aliasing filter), scaled to put the 99th percentile at 1."""
    from scipy.ndimage import gaussian_filter

    from rawlab.synth.procedural import mosaic

    top, left = (rgb.shape[0] - h) // 2, (rgb.shape[1] - w) // 2
    img = rgb[top : top + h, left : left + w]
    if blur > 0:
        img = gaussian_filter(img, (blur, blur, 0), mode="nearest")
    p = mosaic(img, cfa).astype(np.float64)
    return p / max(np.percentile(p, 99.0), 1e-6)


def _size(rgb: np.ndarray, h: int, w: int) -> tuple[int, int]:
    return min(h, rgb.shape[0] // 2 * 2), min(w, rgb.shape[1] // 2 * 2)


def record(clean: np.ndarray, s: Sensor, rng: np.random.Generator) -> np.ndarray:
    """Noisy normalised planes as the sensor records them: Poisson-Gaussian, whole DN, clipped to [0, white]."""
    from rawlab.bayer import normalise
    from rawlab.noise.model import sample_poisson_gaussian

    span = s.span[:, None, None]
    x = sample_poisson_gaussian(clean, s.a, s.b - 1.0 / (12.0 * s.span**2), rng)
    dn = np.clip(np.rint(np.asarray(s.black)[:, None, None] + x * span), 0, s.white).astype(np.uint16)
    return normalise(dn, s.black, s.white)


def b_bound(clean: np.ndarray, s: Sensor) -> float:
    """The least relative sd of ``b`` any estimator from this frame's green quincunx samples can reach: the
    Cramer-Rao bound for ``(a, b)`` from one Gaussian sample of variance ``a x + b`` per G1 pixel at its clean
    signal ``x``, over the pixels at least 3 sd inside the clipping bounds. It ignores texture (optimistic):
    where it is large, no single-image estimate can tell ``b``, and the frame says nothing about an estimator's
    ``b``."""
    a, b, span = s.a[1], s.b[1], s.span[1]
    x = clean[1].ravel()
    sd = np.sqrt(a * np.maximum(x, 0.0) + b)
    x = x[(x - 3 * sd > -s.black[1] / span) & (x + 3 * sd < 1.0)]
    w = 0.5 / (a * np.maximum(x, 0.0) + b) ** 2
    fisher = np.array([[np.sum(w * x * x), np.sum(w * x)], [np.sum(w * x), np.sum(w)]])
    try:
        return float(math.sqrt(max(np.linalg.inv(fisher)[1, 1], 0.0)) / b)
    except np.linalg.LinAlgError:
        return math.inf


def old_estimate(planes, black, white) -> tuple[np.ndarray, np.ndarray]:
    """The green quincunx before the read-noise prior (and with the texture threshold it had then)."""
    from rawlab.noise.quincunx import estimate_noise

    est = estimate_noise(planes, black, white, prior=False, kappa=1.5)
    return est.a, est.b


def new_estimate(planes, black, white) -> tuple[np.ndarray, np.ndarray]:
    from rawlab.deploy.noiseparams import single_image_noise

    return single_image_noise(planes, black, white)


def masked_strip(s: Sensor, rows: int, rng: np.random.Generator) -> np.ndarray:
    """``MASKED_COLUMNS`` columns of ``rows`` optically masked pixels as the sensor records them: no light, so
    its read noise at the black level, whole DN, clipped to ``[0, white]`` (all zero-signal pixels of
    :func:`record`, the G1 plane's black level)."""
    x = rng.normal(0.0, math.sqrt(s.b[1] - 1.0 / (12.0 * s.span[1] ** 2)), (rows, MASKED_COLUMNS))
    return np.clip(np.rint(s.black[1] + x * s.span[1]), 0, s.white)


def masked_estimate(planes, black, white, strip) -> tuple[np.ndarray, np.ndarray]:
    """``rawlab denoise``'s estimate for a file that keeps masked pixels (:func:`masked_strip`): ``b`` from
    them where they read as unclipped black (:func:`rawlab.deploy.noiseparams.masked_read_noise`), the
    quincunx for ``a``."""
    from types import SimpleNamespace

    from rawlab.deploy.noiseparams import masked_read_noise, single_image_noise
    from rawlab.rawio import masked_pixel_stats

    info = SimpleNamespace(black_level=black, white_level=white, masked=masked_pixel_stats(strip, black[1]))
    return single_image_noise(planes, black, white, read_noise=masked_read_noise(info)[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="384x512", help="mosaic size HxW of the photographs")
    ap.add_argument("--scenes", default="all", help="comma-separated photograph names, or all")
    ap.add_argument("--no-real", action="store_true", help="leave out the real-raw crops")
    ap.add_argument("--rows", action="store_true", help="print every frame, not only the summaries per scene")
    ap.add_argument("--blur", type=float, default=0.6,
                    help="Gaussian blur (mosaic px) of the photographs and dead leaves before the CFA: the lens and "
                         "anti-aliasing filter a real raw has (0: none)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sensors", choices=("held-out", "tune"), default="held-out",
                    help="held-out: the eight sensors of the headline; tune: the ten the settings were chosen on")  # fmt: skip
    args = ap.parse_args()
    from rawlab.synth.scenes import NATURAL_SCENES

    h, w = (int(v) for v in args.size.split("x"))
    names = NATURAL_SCENES if args.scenes == "all" else tuple(args.scenes.split(","))
    scenes: list[tuple[str, str, object]] = [("photo", n, n) for n in names]
    if not args.no_real and SAMPLES.is_dir():
        scenes += [("real", f.split("_")[1] + "-" + f.rsplit("_", 1)[1].split(".")[0], SAMPLES / f)
                   for f in REAL if (SAMPLES / f).exists()]  # fmt: skip
    elif not args.no_real:
        print(f"(no real raws: {SAMPLES} is absent)")
    scenes += [("texture", f"dead-leaves-{k}", k) for k in (1, 2)]
    cams = sensors() if args.sensors == "held-out" else tuning_sensors()
    rgb: dict = {}
    floors: dict = {}
    for kind, label, src in scenes:
        if kind == "photo":
            rgb[label] = photo_rgb(src, h, w)
        else:
            rgb[label] = real_rgb(src) if kind == "real" else dead_leaves_rgb(src, h, w)
        # The scene's own apparent noise: each estimator's a (G1) on the noise-free scene at exposure 0.7.
        clean = from_rgb(rgb[label], "RGGB", *_size(rgb[label], h, w), 0.0 if kind == "real" else args.blur)
        floors[label] = tuple(float(fn(0.7 * clean, 0.0, 1.0)[0][1]) for fn in (old_estimate, new_estimate))
    rows, t0 = [], time.perf_counter()
    timing = {"old": 0.0, "new": 0.0, "masked": 0.0}
    for kind, label, _src in scenes:
        for si, s in enumerate(cams):
            if kind == "real" and s.a[1] < 1e-3:
                continue
            blur = 0.0 if kind == "real" else args.blur
            clean = from_rgb(rgb[label], s.cfa, *_size(rgb[label], h, w), blur)
            # Exposure: the 99th percentile anywhere from a third of white to just past it.
            rng = np.random.default_rng([args.seed, si, len(rows)])
            clean = clean * math.exp(rng.uniform(math.log(0.3), math.log(1.1)))
            y = record(clean, s, rng)
            strip = masked_strip(s, 2 * y.shape[1], rng)
            est = {}
            for name, fn in (("old", old_estimate), ("new", new_estimate),
                             ("masked", lambda *a, st=strip: masked_estimate(*a, st))):  # fmt: skip
                t = time.perf_counter()
                est[name] = fn(y, s.black, s.white)
                timing[name] += time.perf_counter() - t
            err = {k: (np.abs(v[0] - s.a) / s.a, np.abs(v[1] - s.b) / s.b) for k, v in est.items()}
            rows.append((kind, label, s, est, err, b_bound(clean, s)))
    print("scenes' own apparent noise (a of G1 on the noise-free scene, old / new): " + ", ".join(
        f"{k} {o:.1e} / {n:.1e}" for k, (o, n) in floors.items()))  # fmt: skip
    print(f"{len(rows)} frames ({h}x{w} mosaic photographs) in {time.perf_counter() - t0:.0f} s; estimator time "
          f"old {timing['old']:.0f} s, new {timing['new']:.0f} s, masked {timing['masked']:.0f} s")  # fmt: skip
    print()
    hdr = (f"{'scene':27s} {'sensor':13s} {'a true':>8s} {'b true':>8s} | {'a old':>8s} {'b old':>8s} "
           f"{'da old':>7s} {'db old':>7s} | {'a new':>8s} {'b new':>8s} {'da new':>7s} {'db new':>7s} | {'crlb b':>7s}")  # fmt: skip
    print(hdr)
    print("-" * len(hdr))
    for kind, label, s, est, err, bound in rows:
        if not args.rows and not (
            kind != "photo" or s is cams[0] or s.name.endswith("x8") or "#1201" in s.name
        ):
            continue

        cells = [f"{est[k][0][1]:8.2e} {est[k][1][1]:8.2e} {np.median(err[k][0]):7.1%} {np.median(err[k][1]):7.1%}"
                 for k in ("old", "new")]  # fmt: skip
        print(
            f"{label:27s} {s.name:13s} {s.a[1]:8.2e} {s.b[1]:8.2e} | {cells[0]} | {cells[1]} | {bound:7.1%}"
        )
    print("(a and b of G1; errors: median over the 4 channels" + ("" if args.rows else
          "; a sample of rows, --rows prints all") + ")")  # fmt: skip
    print()
    for group, kinds in (("photographs + real crops", ("photo", "real")), ("photographs", ("photo",)),
                         ("real crops", ("real",)), ("dead leaves (texture, not photographs)", ("texture",))):  # fmt: skip
        sel = [r for r in rows if r[0] in kinds]
        if not sel:
            continue
        line = f"{group:40s} {len(sel):4d} frames:"
        for k in ("old", "new", "masked"):
            da = np.concatenate([r[4][k][0] for r in sel])
            db = np.concatenate([r[4][k][1] for r in sel])
            line += (f"  {k}: |da|/a median {np.nanmedian(da):6.1%} p90 {np.nanpercentile(da, 90):6.1%}, "
                     f"|db|/b median {np.nanmedian(db):6.1%} p90 {np.nanpercentile(db, 90):6.1%}"
                     f" ({np.isnan(da).sum()} NaN)")  # fmt: skip
        print(line)
    clear = [r for r in rows if r[0] in ("photo", "real") and r[2].a[1] >= 10 * max(floors[r[1]])]
    line = f"{'  of which a >= 10x the scene floor':40s} {len(clear):4d} frames:"
    for k in ("old", "new", "masked"):
        da = np.concatenate([r[4][k][0] for r in clear])
        db = np.concatenate([r[4][k][1] for r in clear])
        line += f"  {k}: |da|/a median {np.nanmedian(da):6.1%}, |db|/b median {np.nanmedian(db):6.1%}"
    print(line)
    ident = [r for r in rows if r[0] in ("photo", "real") and r[5] <= B_IDENTIFIABLE]
    line = f"{'  of which b identifiable (CRLB sd <= 10%)':40s} {len(ident):4d} frames:"
    for k in ("old", "new", "masked"):
        db = np.concatenate([r[4][k][1] for r in ident])
        line += f"  {k}: |db|/b median {np.nanmedian(db):6.1%} p90 {np.nanpercentile(db, 90):6.1%}"
    print(line)
    sel = [r for r in rows if r[0] in ("photo", "real")]
    print(
        f"b's Cramer-Rao bound (relative sd) over these {len(sel)} frames: median "
        f"{np.median([r[5] for r in sel]):.1%}; an efficient estimator's median |db|/b would be about 0.67 of it"
    )
    for k in ("old", "new", "masked"):
        da = np.nanmedian(np.concatenate([r[4][k][0] for r in sel]))
        db = np.nanmedian(np.concatenate([r[4][k][1] for r in sel]))
        met = da <= TARGET_A and db <= TARGET_B
        print(f"target (median |da|/a <= {TARGET_A:.0%}, |db|/b <= {TARGET_B:.0%}) {k}: "
              f"{'met' if met else 'NOT met'} ({da:.1%}, {db:.1%})")  # fmt: skip


if __name__ == "__main__":
    main()

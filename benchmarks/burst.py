"""Burst merging on synthetic bursts with truth (issue 14): per sensor and ISO, for 2, 4 and 8 frames, the
reference frame's PSNR, the classical merge's (``rawlab.burst.merge_burst``: HDR+ tile alignment and pairwise
Wiener merge) and its gain, on static bursts; and on bursts with a moving object, the PSNR of both on the
region the object covers in any frame (where a merge ghosts). The learned burst model's column comes later.

    python benchmarks/burst.py [--size 384x256] [--scenes coffee,chelsea,rocket] [--sensors 2] [--seed 1000]
                               [--isos 800,1600,3200,6400] [--robustness 3] [--per-plane] [--out FILE.json]

Bursts come from the library (:func:`rawlab.synth.burst.simulate_burst`: hand shake up to 4 mosaic pixels and
0.25 degrees a frame, sub-pixel, rendered on a 2x supersampled scene; each frame its own Poisson-Gaussian noise),
with seeds and scenes the tests do not use (held out); the merge gets the sensor's true noise law, as a
calibrated camera's NoiseProfile gives it. PSNR is over the packed planes in normalised units (peak 1 = white)
against the reference's noise-free planes clipped to [0, 1], from the mean squared error over the scenes.
Targets (issue 14): 8 static frames at least +6 dB over the reference at ISO >= 1600 (ideal +9.0 dB), and on
the moving region never below the reference.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def _psnr(mse: float) -> float:
    from rawlab.evaluation.bursts import psnr_db

    return psnr_db(mse)


def squared_errors(sensor, scene: str, iso: int, size, seed: int, counts, methods) -> dict:
    """Squared errors ``{(n, method, static|moving): (sum, count)}`` of one held-out scene at one ISO, static
    (the whole frame of a burst without a moving object) and with a moving object (on the region it covers).
    ``methods(x, a, b)``, given the burst's normalised frames and noise law, returns ``images(n)``: each
    method's estimate of the reference from ``n`` frames. The scoring is ``rawlab eval``'s on bursts
    (:func:`rawlab.evaluation.bursts.squared_errors`)."""
    from rawlab.bayer import pack
    from rawlab.evaluation.bursts import squared_errors as scored
    from rawlab.synth.burst import simulate_burst

    a, b = sensor.noise_params(iso)
    out = {}
    for moving in (False, True):
        burst = simulate_burst(
            sensor, scene, iso, max(counts), size, seed=[seed, iso, int(moving)], moving=moving
        )
        region = pack(burst.moving_region().astype(np.uint8), sensor.cfa).astype(bool) if moving else None
        got = scored(methods(burst.normalized(), a, b), burst.clean[0], region, counts)
        out.update({k: v for k, v in got.items() if k[2] == ("moving" if moving else "static")})
    return out


def measure(
    sensor, scene: str, iso: int, size, seed: int, counts, robustness: float, per_plane: bool
) -> dict:
    """Squared errors of reference and merge for each frame count, static and with a moving object."""
    from rawlab.evaluation.bursts import burst_estimates

    def methods(x, a, b):
        return burst_estimates(x, a, b, None if per_plane else sensor.cfa, robustness=robustness)

    return squared_errors(sensor, scene, iso, size, seed, counts, methods)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=_size, default=(384, 256))
    p.add_argument("--scenes", default="coffee,chelsea,rocket")
    p.add_argument("--sensors", type=int, default=2)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--isos", default="800,1600,3200,6400")
    p.add_argument("--robustness", type=float, default=None)
    p.add_argument("--per-plane", action="store_true", help="resample each Bayer plane alone (no demosaic)")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    from rawlab.burst.merge import ROBUSTNESS
    from rawlab.synth.sensors import get_sensors

    robustness = ROBUSTNESS if args.robustness is None else args.robustness
    counts = (2, 4, 8)
    isos = [int(v) for v in args.isos.split(",")]
    scenes = args.scenes.split(",")
    rows = []
    t0 = time.perf_counter()
    header = (
        f"{'sensor':<14} {'ISO':>5} {'N':>2} | {'ref':>6} {'merge':>6} {'gain':>6} | "
        f"{'moving ref':>10} {'moving merge':>12} {'diff':>6}"
    )
    how = "each plane alone" if args.per_plane else "through the demosaic"
    print(
        f"size {args.size[0]}x{args.size[1]}, scenes {', '.join(scenes)}, robustness c = {robustness:g}, "
        f"alternates resampled {how}"
    )
    print(header)
    print("-" * len(header))
    for sensor in get_sensors(args.sensors):
        for iso in [i for i in isos if i in sensor.iso_ladder]:
            sums: dict = {}
            for k, scene in enumerate(scenes):
                for key, (s, n) in measure(
                    sensor, scene, iso, args.size, args.seed + k, counts, robustness, args.per_plane
                ).items():
                    s0, n0 = sums.get(key, (0.0, 0))
                    sums[key] = (s0 + s, n0 + n)
            for n in counts:
                v = {key[1:]: _psnr(s / c) for key, (s, c) in sums.items() if key[0] == n}
                row = {
                    "sensor": sensor.name,
                    "iso": iso,
                    "frames": n,
                    "ref_psnr": v[("ref", "static")],
                    "merge_psnr": v[("merge", "static")],
                    "gain_db": v[("merge", "static")] - v[("ref", "static")],
                    "moving_ref_psnr": v[("ref", "moving")],
                    "moving_merge_psnr": v[("merge", "moving")],
                }
                rows.append(row)
                print(
                    f"{sensor.name:<14} {iso:>5} {n:>2} | {row['ref_psnr']:6.2f} {row['merge_psnr']:6.2f} "
                    f"{row['gain_db']:+6.2f} | {row['moving_ref_psnr']:10.2f} {row['moving_merge_psnr']:12.2f} "
                    f"{row['moving_merge_psnr'] - row['moving_ref_psnr']:+6.2f}",
                    flush=True,
                )
    print(f"({time.perf_counter() - t0:.0f} s; PSNR in dB over the packed planes, peak = white)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(
                {"size": args.size, "scenes": scenes, "robustness": robustness, "rows": rows}, f, indent=2
            )


if __name__ == "__main__":
    main()

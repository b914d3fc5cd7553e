"""The learned burst model against the reference frame, the single-frame model and the classical merge (issue 14):
per sensor and ISO, for 2, 4 and 8 frames, PSNR on static bursts and on the region a moving object covers.

    python benchmarks/burst_model.py --model runs/burst [--single builtin] [--size 384x256]
                                     [--scenes coffee,chelsea,rocket] [--sensors 2] [--seed 1000]
                                     [--isos 800,1600,3200,6400] [--out FILE.json] [--no-fuse] [--no-fuse-single]

Bursts, seeds, scenes and the PSNR are :mod:`benchmarks.burst`'s; the methods and the scoring are ``rawlab eval``'s on
bursts (:func:`rawlab.evaluation.bursts.burst_estimates`, :func:`~rawlab.evaluation.bursts.squared_errors`), which
scores bursts written to disk by ``rawlab synth --burst`` (held-out seeds and scenes here; the methods get
the sensor's true noise law; PSNR over the packed planes against the reference's noise-free planes clipped to
[0, 1], from the mean squared error over the scenes). Columns: ``ref`` the reference frame; ``single`` the
single-frame model on the reference alone (``--single``, default the shipped ``builtin``, through the deploy
runtime with its SURE guard and fusion, as ``rawlab denoise`` runs it); ``merge`` the classical merge
(:func:`rawlab.burst.merge_burst`, as ``rawlab burst merge``); ``model`` the burst model (``--model``, through
:func:`rawlab.deploy.burst.denoise_burst`, as ``rawlab denoise --burst``: the aligner, the resampler, tiles, the
4 rotations, its SURE fusion with VST+NL-means and VST+DCT of the merge, then its fusion with the single-frame
model's output on the reference; ``--no-fuse-single`` leaves that last one out, as ``rawlab denoise --burst
--no-fuse-single``; ``--no-fuse`` runs both models unfused).
Targets (issue 14): the burst model of 8 frames at least +1 dB over the merge and +2.5 dB over the single-frame
model at every ISO from 800 up.
"""

from __future__ import annotations

import argparse
import json
import time

from burst import _psnr, _size, squared_errors

METHODS = ("ref", "single", "merge", "model")


def measure(sensor, scene: str, iso: int, size, seed: int, counts, single, runner, frames: int) -> dict:
    """Squared errors ``{(n, method, static|moving): (sum, count)}`` of one scene at one ISO."""
    from rawlab.evaluation.bursts import burst_estimates

    def methods(x, a, b):
        return burst_estimates(x, a, b, sensor.cfa, single=single, burst=(runner, frames))

    return squared_errors(sensor, scene, iso, size, seed, counts, methods)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the burst model (a model directory or .tflite)")
    p.add_argument("--single", default="builtin", help="the single-frame model")
    p.add_argument("--size", type=_size, default=(384, 256))
    p.add_argument("--scenes", default="coffee,chelsea,rocket")
    p.add_argument("--sensors", type=int, default=2)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--isos", default="800,1600,3200,6400")
    p.add_argument("--out", default=None)
    p.add_argument("--no-fuse", action="store_true",
                   help="run both models without their SURE fusion with VST+NL-means (the default fuses)")  # fmt: skip
    p.add_argument("--no-fuse-single", action="store_true",
                   help="do not fuse the burst model's output with the single-frame model's on the reference, as "
                   "rawlab denoise --burst --no-fuse-single (the default fuses)")  # fmt: skip
    args = p.parse_args()

    from rawlab.deploy.burst import burst_model
    from rawlab.deploy.runtime import load_denoiser
    from rawlab.synth.sensors import get_sensors

    runner, frames = burst_model(args.model, fuse=not args.no_fuse, fuse_single=not args.no_fuse_single)
    single = load_denoiser(args.single)
    single.fuse = not args.no_fuse
    counts = (2, 4, 8)
    isos = [int(v) for v in args.isos.split(",")]
    scenes = args.scenes.split(",")
    rows = []
    t0 = time.perf_counter()
    print(
        f"size {args.size[0]}x{args.size[1]}, scenes {', '.join(scenes)}; single-frame {args.single}; burst model "
        f"{args.model} (K = {frames}, step {runner.config.get('step')}); "
        + ("unfused" if args.no_fuse else "both fused with VST+NL-means by SURE")
        + ("; the burst model then with the single-frame model on the reference" if runner.single else "")
    )
    header = (
        f"{'sensor':<14} {'ISO':>5} {'N':>2} | {'ref':>6} {'single':>6} {'merge':>6} {'model':>6} "
        f"{'-merge':>6} {'-single':>7} | moving: {'ref':>6} {'single':>6} {'merge':>6} {'model':>6}"
    )
    print(header)
    print("-" * len(header))
    for sensor in get_sensors(args.sensors):
        for iso in [i for i in isos if i in sensor.iso_ladder]:
            sums: dict = {}
            for k, scene in enumerate(scenes):
                got = measure(sensor, scene, iso, args.size, args.seed + k, counts, single, runner, frames)
                for key, (s, n) in got.items():
                    s0, n0 = sums.get(key, (0.0, 0))
                    sums[key] = (s0 + s, n0 + n)
            for n in counts:
                v = {key[1:]: _psnr(s / c) for key, (s, c) in sums.items() if key[0] == n}
                row = {"sensor": sensor.name, "iso": iso, "frames": n}
                row.update({f"{m}_psnr": v[(m, "static")] for m in METHODS})
                row.update({f"moving_{m}_psnr": v[(m, "moving")] for m in METHODS})
                rows.append(row)
                s_, m_ = (
                    " ".join(f"{row[f'{pre}{m}_psnr']:6.2f}" for m in METHODS) for pre in ("", "moving_")
                )
                print(
                    f"{sensor.name:<14} {iso:>5} {n:>2} | {s_} {row['model_psnr'] - row['merge_psnr']:+6.2f} "
                    f"{row['model_psnr'] - row['single_psnr']:+7.2f} | moving: {m_}",
                    flush=True,
                )
    print(f"({time.perf_counter() - t0:.0f} s; PSNR in dB over the packed planes, peak = white)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"size": args.size, "scenes": scenes, "model": args.model, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()

"""Seconds per burst (issue 14: "seconds per 12 MP burst on 2 cores"): the classical merge, the burst model (as
``rawlab denoise --burst`` runs it, and with ``--no-fuse-single`` and ``--no-fuse``) and, for scale, the
single-frame model on the reference alone, measured side by side in one run, medians of repeats.

    python benchmarks/burst_speed.py --model runs/burst [--size 4000x3000] [--frames 8] [--repeats 3]

The burst is made in memory: a photograph (scikit-image's, tiled to the size) mosaicked as RGGB, each frame
moved by a whole Bayer period (the aligner still searches every tile at every level, as on any burst) with its own
Poisson-Gaussian noise at a high-ISO law; what is timed is what ``rawlab burst merge`` and ``rawlab denoise
--burst`` run between reading the frames and writing the DNG: :func:`rawlab.burst.merge_burst` (align and merge),
:func:`rawlab.deploy.burst.denoise_burst` (with the merge in front when the model has it: align, merge, resample
the frames, the network tile by tile, 4 rotations, and by default the SURE fusion with VST+NL-means and VST+DCT
of the merge and then with the single-frame model on the reference; also timed without the second fusion and
without either) and the single-frame runtime's ``denoise`` on the reference.
"""

from __future__ import annotations

import argparse

import numpy as np
from burst import _size

from _common import median_time

A, B = 2e-3, 1e-5  # normalised Var[x] = A x + B: a phone's ISO 1600 or so


def make_burst(width: int, height: int, frames: int, seed: int = 0) -> np.ndarray:
    """``float32 (frames, 4, height / 2, width / 2)``: packed RGGB planes of one scene, shifted and noisy."""
    from skimage import data
    from skimage.transform import resize

    rgb = resize(data.astronaut() / 255.0, (height // 2 + 8, width // 2 + 8, 3), order=1, anti_aliasing=True)
    rgb = (0.8 * rgb).astype(np.float32)
    planes = np.stack([rgb[..., 0], rgb[..., 1], rgb[..., 1], rgb[..., 2]])
    rng = np.random.default_rng(seed)
    out = np.empty((frames, 4, height // 2, width // 2), np.float32)
    for k in range(frames):
        dy, dx = (0, 0) if k == 0 else (int(v) for v in rng.integers(-3, 4, 2))
        clean = planes[:, 4 + dy : 4 + dy + height // 2, 4 + dx : 4 + dx + width // 2]
        out[k] = clean + rng.standard_normal(clean.shape, np.float32) * np.sqrt(A * clean + B)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the burst model (a model directory or an export)")
    p.add_argument("--single", default="builtin", help="the single-frame model timed for scale")
    p.add_argument("--size", type=_size, default=(4000, 3000), help="mosaic WxH")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from rawlab.burst.merge import merge_burst
    from rawlab.deploy.burst import burst_model, denoise_burst
    from rawlab.deploy.runtime import load_denoiser

    w, h = args.size
    x = make_burst(w, h, args.frames)
    a4, b4 = np.full(4, A, np.float32), np.full(4, B, np.float32)
    runner, k = burst_model(args.model)
    merge_fused, _ = burst_model(args.model, fuse_single=False)
    unfused, _ = burst_model(args.model, fuse=False)
    single = load_denoiser(args.single)
    mp = w * h / 1e6
    print(f"{args.frames} frames of {w}x{h} ({mp:.1f} MP), burst model {args.model} (K = {k}), medians of "
          f"{args.repeats}")  # fmt: skip
    rows = [
        ("merge (rawlab burst merge)", lambda: merge_burst(x, a4, b4, cfa="RGGB")),
        ("burst model (rawlab denoise --burst)", lambda: denoise_burst(runner, k, x, "RGGB", a4, b4)),
        ("burst model, --no-fuse-single", lambda: denoise_burst(merge_fused, k, x, "RGGB", a4, b4)),
        ("burst model, --no-fuse", lambda: denoise_burst(unfused, k, x, "RGGB", a4, b4)),
        (f"single-frame {args.single} on the reference", lambda: single.denoise(np.moveaxis(x[0], 0, -1), a4, b4)),
    ]  # fmt: skip
    base = None
    for name, fn in rows:
        med, times = median_time(fn, args.repeats)
        base = base or med
        print(f"{name:<42} {med:7.1f} s  {med / mp:5.2f} s/MP  {med / base:5.2f}x merge  "
              f"(runs: {', '.join(f'{t:.1f}' for t in times)})")  # fmt: skip


if __name__ == "__main__":
    main()

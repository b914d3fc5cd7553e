"""What the SURE fusion's classical candidates cost (issue 12): seconds per mosaic megapixel of one pass of each
classical denoiser, and of the fusion's candidates with and without the DCT, side by side in one run, medians of
repeats.

    python benchmarks/fusion_speed.py [--size 4000x3000] [--repeats 3] [--single builtin]

The frame is made in memory: a photograph (scikit-image's, resized to the size) as packed planes with
Poisson-Gaussian noise at a phone's ISO 1600 or so. Timed: one pass of VST+NL-means
(:func:`rawlab.deploy.classical.denoise_baseline`, ``vst-nlm``) and of VST+DCT (``vst-dct``,
:func:`rawlab.deploy.classical.dct_wiener`); the fusion's candidates as ``rawlab denoise`` computes them
(:func:`rawlab.deploy.guard.classical_estimates`: NL-means at three strengths and the DCT, each with the second
pass of its probe) and the same without the DCT (``dct=False``, the fusion before it); and, with ``--single``,
the whole single-frame runtime (guarded, 4 rotations, fused) for scale.
"""

from __future__ import annotations

import argparse

import numpy as np
from burst import _size

from _common import median_time

A, B = 2e-3, 1e-5  # normalised Var[x] = A x + B


def make_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """``float32 (height / 2, width / 2, 4)``: packed RGGB planes of a photograph with its noise."""
    from skimage import data
    from skimage.transform import resize

    rgb = resize(data.astronaut() / 255.0, (height // 2, width // 2, 3), order=1, anti_aliasing=True)
    clean = (0.8 * np.stack([rgb[..., 0], rgb[..., 1], rgb[..., 1], rgb[..., 2]], axis=-1)).astype(np.float32)
    rng = np.random.default_rng(seed)
    return clean + rng.standard_normal(clean.shape, np.float32) * np.sqrt(A * clean + B)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=_size, default=(4000, 3000), help="mosaic WxH")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--single", default=None, help="also time this model as rawlab denoise runs it (e.g. builtin)"
    )
    args = p.parse_args()

    from rawlab.deploy.classical import denoise_baseline
    from rawlab.deploy.guard import classical_estimates

    w, h = args.size
    mp = w * h / 1e6
    x = make_frame(w, h)
    a4, b4 = np.full(4, A, np.float32), np.full(4, B, np.float32)
    runs = {
        "one NL-means pass": lambda: denoise_baseline("vst-nlm", x, a4, b4),
        "one DCT pass": lambda: denoise_baseline("vst-dct", x, a4, b4),
        "candidates, NL-means only": lambda: classical_estimates(x, a4, b4, dct=False),
        "candidates, NL-means and DCT": lambda: classical_estimates(x, a4, b4),
    }
    if args.single:
        from rawlab.deploy.runtime import load_denoiser

        single = load_denoiser(args.single)
        runs["the single-frame runtime"] = lambda: single.denoise(x, a4, b4, cfa="RGGB")
    got = {}
    print(f"{w}x{h} mosaic ({mp:.1f} MP), medians of {args.repeats}:")
    for name, fn in runs.items():
        got[name], times = median_time(fn, args.repeats)
        print(
            f"  {name:<30} {got[name]:7.2f} s  {got[name] / mp:6.2f} s/MP  ({', '.join(f'{t:.1f}' for t in times)})"
        )
    base, both = got["candidates, NL-means only"], got["candidates, NL-means and DCT"]
    print(
        f"the DCT candidate adds x{both / base:.2f} to the fusion's classical work (+{(both - base) / mp:.2f} s/MP)"
    )
    if args.single:
        total = got["the single-frame runtime"]
        print(f"and is {(both - base) / total:.0%} of the whole single-frame runtime ({total / mp:.2f} s/MP)")


if __name__ == "__main__":
    main()

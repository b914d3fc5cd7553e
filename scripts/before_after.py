"""Before/after crops of ``rawlab denoise`` with the built-in model, for the docs.

    python scripts/before_after.py RAW [RAW ...] --out docs/img [--crop 192] [--model builtin]

For each raw: the noisy input and the denoised output rendered alike (the same preview pipeline and white
point as ``rawlab denoise --format png``), a ``crop x crop`` window at 100% (2x enlarged, nearest neighbour)
from the most detailed part of the frame, side by side in one PNG.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    from PIL import Image

    from rawlab.deploy.denoise import denoise_frame
    from rawlab.deploy.render import linear_preview, render_preview
    from rawlab.deploy.runtime import load_denoiser
    from rawlab.dng import color_matrix_of
    from rawlab.rawio import read_raw

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("raws", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--crop", type=int, default=192, help="window side in output pixels")
    ap.add_argument("--model", default="builtin")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    den = load_denoiser(args.model)
    for raw in args.raws:
        frame = read_raw(raw)
        d = denoise_frame(frame, den)
        cm = color_matrix_of(frame.info)
        white = float(np.percentile(linear_preview(d.clean, frame.info, cm), 99.0))
        before = render_preview(d.noisy, frame.info, cm, white=white)
        after = render_preview(d.clean, frame.info, cm, white=white)
        # the window with the most local contrast (the most to lose to over-smoothing)
        g = after.mean(-1)
        c = args.crop
        best, where = -1.0, (0, 0)
        for y in range(0, g.shape[0] - c, c // 2):
            for x in range(0, g.shape[1] - c, c // 2):
                v = float(np.abs(np.diff(g[y : y + c, x : x + c], axis=1)).mean())
                if v > best:
                    best, where = v, (y, x)
        y, x = where
        pair = [np.round(im[y : y + c, x : x + c] * 255).astype(np.uint8) for im in (before, after)]
        gap = np.full((c, 8, 3), 255, np.uint8)
        tile = np.concatenate([pair[0], gap, pair[1]], axis=1).repeat(2, axis=0).repeat(2, axis=1)
        path = args.out / f"{raw.stem}_before_after.png"
        Image.fromarray(tile).save(path)
        print(f"{raw.name}: noise {d.noise.source}; window at ({x}, {y}) px -> {path}")


if __name__ == "__main__":
    main()

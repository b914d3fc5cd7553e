"""Which Zarr codec for raw Bayer planes? Compression ratio and CPU cost on realistic noisy frames.

    python benchmarks/codecs.py [--size 4000x3000] [--frames 4]

Prints, per codec: ratio (raw bytes / stored bytes), encode and decode time per 12 MP frame (median).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from _common import median_time, synth_dataset


def main():
    import zarr
    from zarr.codecs import BloscCodec, ZstdCodec

    from rawlab.rawio import read_raw

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="4000x3000")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="rawlab-codecs-"))
    files = synth_dataset(tmp / "data", size=(w, h), n_scenes=2, n_sensors=2)
    # A spread of ISOs and both bit depths (12-bit black-clipped, 10-bit phone).
    pick = [files[i] for i in np.linspace(0, len(files) - 1, args.frames).astype(int)]
    frames = [read_raw(f).packed() for f in pick]
    raw_bytes = sum(f.nbytes for f in frames)
    codecs = {
        "blosc-lz4-shuffle": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
        "blosc-lz4-bitshuffle": BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
        "blosc-zstd1-bitshuffle": BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"),
        "blosc-zstd3-bitshuffle": BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),
        "blosc-zstd5-shuffle": BloscCodec(cname="zstd", clevel=5, shuffle="shuffle"),
        "zstd3": ZstdCodec(level=3),
    }
    print(
        f"{len(frames)} frames {w}x{h} ({raw_bytes / 1e6:.0f} MB raw), chunks (4, 256, 256), median of {args.repeats}"
    )
    print(f"{'codec':<24} {'ratio':>6} {'encode s/frame':>15} {'decode s/frame':>15}")
    for name, codec in codecs.items():
        path = tmp / f"{name}.zarr"

        def write(path=path, codec=codec):
            g = zarr.open_group(path, mode="w", zarr_format=3)
            for i, f in enumerate(frames):
                a = g.create_array(
                    f"f{i}", shape=f.shape, dtype=f.dtype, chunks=(4, 256, 256), compressors=[codec]
                )
                a[...] = f

        def read(path=path):
            g = zarr.open_group(path, mode="r")
            for i in range(len(frames)):
                g[f"f{i}"][...]

        t_enc, _ = median_time(write, args.repeats)
        t_dec, _ = median_time(read, args.repeats)
        stored = sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and p.name != "zarr.json")
        print(
            f"{name:<24} {raw_bytes / stored:>6.2f} {t_enc / len(frames):>15.3f} {t_dec / len(frames):>15.3f}"
        )


if __name__ == "__main__":
    main()

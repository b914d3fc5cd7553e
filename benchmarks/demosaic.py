"""Denoise before or after demosaicing, and a joint model against them: LibRaw's demosaics with VST + NL-means on
the raw (raw first), rawlab's own Bayer denoiser on the raw (builtin first), or VST + NL-means on the RGB (RGB
after), and a joint demosaic+denoise model, scored in linear camera RGB against synth's colour truth, per sensor
and ISO, on held-out scenes (issue 13).

    python benchmarks/demosaic.py [--joint DIR] [--denoiser builtin|MODEL|none] [--size 512x384] [--scenes 8]
                                  [--sensors 2] [--data DIR] [--out FILE.json]

The claims tested: "denoising the mosaic before demosaicing beats denoising after by 2-3 dB" and "a learned
pipeline beats the PPG demosaic by 2 dB". Each NL-means chain's strength is tuned per sensor and ISO on one
training scene (``rawlab.evaluation.demosaic.tune_strength``, AHD), then every chain runs every LibRaw demosaic
on the held-out scenes of ``rawlab.learn.split``. The builtin-first chain runs the shipped model as ``rawlab
denoise`` does (deploy runtime, tiles, SURE guard) with the frame's noise law, as the classical chains get it.
The table gives raw-first minus RGB-after CPSNR with each chain's best demosaic, with PPG and with AHD, the
same for builtin first, and the chroma error at edges (``chroma_edge_error``, x 1e3 of white) with AHD. With
``--joint DIR`` (a model directory, ``.tflite`` or ``.onnx`` of the ``joint`` config), the joint model's CPSNR
and its margin over the best classical chain (LibRaw demosaic with or without VST + NL-means) that ends in PPG,
in AHD, and over the best of all; without it the joint columns are left out, and the script says so. From
Python, ``evaluate(root, joint={name: fn(noisy, cfa, a, b)})`` takes any callable (noisy packed planes ``(h, w,
4)`` in, linear RGB ``(2h, 2w, 3)`` out). The chart is left out: its truth is 2x2 blocks by construction. The
default run without the model columns took 2.6 min on 2 cores (the dataset already written).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np

from _common import synth_dataset


def catalog(root: Path):
    """The synthetic set's frames, paired as ``rawlab catalog build ROOT`` would pair them (scenes named by
    their folder under ROOT), without building a store: enough for the split and the truth links."""
    import pandas as pd

    from rawlab.catalog.pairing import pair_frames
    from rawlab.rawio import read_info

    rows = []
    for path in sorted(root.rglob("*.dng")):
        info = read_info(str(path))
        rows.append({
            "path": str(path), "relpath": path.relative_to(root).as_posix(), "sensor": info.sensor,
            "iso": info.iso, "exposure_time": info.exposure_time, "status": "ok",
        })  # fmt: skip
    return pair_frames(pd.DataFrame(rows))


def _frame(row, truth_set, read_truth):
    """``(noisy planes (h, w, 4), cfa, a, b, truth RGB, lower)`` of a catalog row, with the law's noise."""
    from rawlab.noise.moments import clip_bounds
    from rawlab.rawio import read_raw

    frame = read_raw(row["path"])
    noise = truth_set.noise_at(row["sensor"], row["iso"])
    lower = clip_bounds(list(frame.info.black_level), frame.info.white_level)[0]
    truth = read_truth(row["truth_path"])
    return np.moveaxis(frame.normalized(), 0, -1), frame.info.cfa, noise.a, noise.b, truth, lower


def evaluate(root: Path, *, joint=None, denoiser=None, echo=print) -> list[dict]:
    """Score every chain on the held-out photographs under ``root`` (a ``rawlab synth`` OUT): one row per frame,
    chain and demosaic, with ``sensor``, ``iso``, ``scene``. ``joint``: extra columns (module docstring);
    ``denoiser``: ``fn(noisy, a, b)``, rawlab's Bayer denoiser for the ``model-first`` chain, or None."""
    import tifffile

    from rawlab.evaluation.demosaic import available_demosaics, run_chains, tune_strength
    from rawlab.learn.split import eval_scenes
    from rawlab.noise.profile import load_profiles

    methods, missing = available_demosaics()
    if missing:
        echo(f"this rawpy build lacks {', '.join(missing)}; scoring {', '.join(methods)}")
    cat = catalog(root)
    truth_set = load_profiles(root / "truth.json")
    held = eval_scenes(cat)
    noisy = cat[(cat["role"] == "noisy") & cat["truth_path"].notna() & ~cat["scene"].str.endswith("/chart")]
    is_held = [(s, c) in held for s, c in zip(noisy["sensor"], noisy["scene"], strict=True)]
    test, train = noisy[is_held], noisy[[not h for h in is_held]]
    echo(
        f"{len(test)} held-out frames ({', '.join(sorted({c for _, c in held}))}); tuning on "
        f"{train.groupby('sensor')['scene'].min().to_dict()}"
    )
    rows, n_read = [], 0
    for sensor, by_sensor in test.groupby("sensor", sort=True):
        # Every ISO of a scene shares its truth: each is read once per sensor (its held-out scenes and its
        # tuning scene stay in memory while that sensor's ISOs are scored, and no longer).
        tune_scene = train[train["sensor"] == sensor]["scene"].min()

        @lru_cache(maxsize=by_sensor["scene"].nunique() + 1)
        def read_truth(path):
            nonlocal n_read
            n_read += 1
            return tifffile.imread(path)

        for iso, group in by_sensor.groupby("iso", sort=True):
            t = time.perf_counter()
            tune = train[(train["sensor"] == sensor) & (train["iso"] == iso) & (train["scene"] == tune_scene)]
            h_raw, h_rgb = tune_strength([_frame(r, truth_set, read_truth) for _, r in tune.iterrows()])
            for _, r in group.iterrows():
                x, cfa, a, b, truth, lower = _frame(r, truth_set, read_truth)
                for out in run_chains(
                    x, cfa, a, b, truth, methods=methods, lower=lower, joint=joint, denoiser=denoiser,
                    h_raw=h_raw, h_rgb=h_rgb,
                ):  # fmt: skip
                    rows.append({"sensor": sensor, "iso": float(iso), "scene": r["scene"], "path": r["path"],
                                 "h_raw": h_raw, "h_rgb": h_rgb, **out})  # fmt: skip
            echo(
                f"  {sensor} ISO {iso:g}: {len(group)} frames, h raw {h_raw} / rgb {h_rgb} "
                f"({time.perf_counter() - t:.0f} s)"
            )
    echo(f"truth TIFFs read: {n_read} (one per scene and sensor)")
    return rows


CLASSICAL = ("noisy", "raw-first", "rgb-after")  # LibRaw's demosaics with or without VST + NL-means


def _best(m: dict, sensor: str, iso: float, chains, method: str | None = None) -> tuple[str, float]:
    """The (chain's) demosaic with the highest mean CPSNR among ``chains`` (one name or several) at a sensor and
    ISO, restricted to ``method`` if given, and that CPSNR."""
    chains = (chains,) if isinstance(chains, str) else tuple(chains)
    got = {k[3] if len(chains) == 1 else f"{k[2]} {k[3]}": v[0] for k, v in m.items()
           if k[:2] == (sensor, iso) and k[2] in chains and method in (None, k[3])}  # fmt: skip
    name = max(got, key=got.get)
    return name, got[name]


def table(rows: list[dict], *, model: str = "builtin") -> tuple[list[str], dict[str, list]]:
    """The printed table (mean over frames per sensor and ISO) and the margins the summary judges:
    ``first_after`` (raw first - RGB after, best demosaics), ``model_after`` (``model`` first - RGB after) and
    per joint model ``joint:NAME`` rows of ``(sensor, iso, - PPG, - AHD, - best classical, - AHD noisy)``."""
    mean = defaultdict(list)
    for r in rows:
        mean[(r["sensor"], r["iso"], r["chain"], r["method"])].append((r["cpsnr"], r["chroma"]))
    m = {k: np.mean(v, axis=0) for k, v in mean.items()}
    joint = sorted({r["method"] for r in rows if r["chain"] == "joint"})
    has_model = any(r["chain"] == "model-first" for r in rows)
    head = "| sensor | ISO | noisy, best | raw first, best |"
    head += f" {model} first, best |" if has_model else ""
    head += " RGB after, best | first - after, best | first - after, PPG | first - after, AHD |"
    head += f" {model} first - after, best |" if has_model else ""
    head += f" chroma x1e3 AHD: first / {model + ' first / ' if has_model else ''}after |"
    for j in joint:
        head += f" {j} | {j} - PPG | {j} - AHD | {j} - best classical | {j} chroma x1e3 |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    margins: dict[str, list] = {"first_after": [], "model_after": [], **{f"joint:{j}": [] for j in joint}}
    for sensor, iso in sorted({(k[0], k[1]) for k in m}):
        (nb, nv), (fb, fv), (ab, av) = (_best(m, sensor, iso, c) for c in CLASSICAL)
        d = {
            k: m[(sensor, iso, "raw-first", k)][0] - m[(sensor, iso, "rgb-after", k)][0]
            for k in ("PPG", "AHD")
        }
        margins["first_after"].append(fv - av)
        chroma = [m[(sensor, iso, c, "AHD")][1] * 1e3 for c in ("raw-first", "model-first", "rgb-after")
                  if (sensor, iso, c, "AHD") in m]  # fmt: skip
        line = f"| {sensor} | {iso:g} | {nv:.2f} ({nb}) | {fv:.2f} ({fb}) |"
        if has_model:
            mb, mv = _best(m, sensor, iso, "model-first")
            line += f" {mv:.2f} ({mb}) |"
            margins["model_after"].append(mv - av)
        line += f" {av:.2f} ({ab}) | {fv - av:+.2f} | {d['PPG']:+.2f} | {d['AHD']:+.2f} |"
        line += f" {mv - av:+.2f} |" if has_model else ""
        line += " " + " / ".join(f"{c:.1f}" for c in chroma) + " |"
        # The joint model against LibRaw's demosaics with or without classical denoising: the best such chain
        # ending in PPG, in AHD, and the best of all (rawlab's own denoiser is not a classical chain).
        _, ppg = _best(m, sensor, iso, CLASSICAL, "PPG")
        _, ahd = _best(m, sensor, iso, CLASSICAL, "AHD")
        _, best = _best(m, sensor, iso, CLASSICAL)
        for j in joint:
            jv, jc = m[(sensor, iso, "joint", j)]
            line += f" {jv:.2f} | {jv - ppg:+.2f} | {jv - ahd:+.2f} | {jv - best:+.2f} | {jc * 1e3:.1f} |"
            ahd_noisy, ahd_chroma = m[(sensor, iso, "noisy", "AHD")]
            margins[f"joint:{j}"].append((sensor, iso, jv - ppg, jv - ahd, jv - best, jv - ahd_noisy,
                                          jc - ahd_chroma))  # fmt: skip
        lines.append(line)
    return lines, margins


def _verdict(holds: int, n: int) -> str:
    return "it holds." if holds == n else "it does not hold here." if holds == 0 else "it holds in part."


def summary(margins: dict[str, list], *, model: str = "builtin") -> list[str]:
    """Plain sentences on the two claims of issue 13 and the joint model's targets."""
    fa = margins["first_after"]
    holds = sum(2.0 <= d for d in fa)
    out = [
        f"claim 'denoising the mosaic before demosaicing beats denoising after by 2-3 dB' (VST + NL-means, "
        f"each chain's best LibRaw demosaic): raw first - RGB after = {min(fa):+.2f} to {max(fa):+.2f} dB over "
        f"{len(fa)} sensor-ISOs; at least +2 dB at {holds}: {_verdict(holds, len(fa))}"
    ]
    if margins["model_after"]:
        ma = margins["model_after"]
        holds = sum(2.0 <= d for d in ma)
        out.append(
            f"with rawlab's {model} denoiser on the mosaic instead: {model} first - RGB after = {min(ma):+.2f} to "
            f"{max(ma):+.2f} dB; at least +2 dB at {holds} of {len(ma)}: {_verdict(holds, len(ma))}"
        )
    for key, rows in margins.items():
        if not key.startswith("joint:") or not rows:
            continue
        name = key.split(":", 1)[1]
        ppg = [r[2] for r in rows]
        holds = sum(2.0 <= d for d in ppg)
        out.append(
            f"claim 'a learned pipeline beats the PPG demosaic by 2 dB' ({name} - best classical chain ending in "
            f"PPG): {min(ppg):+.2f} to {max(ppg):+.2f} dB; at least +2 dB at {holds} of {len(ppg)}: "
            f"{_verdict(holds, len(ppg))}"
        )
        high = [r[4] for r in rows if r[1] >= 800]
        if high:
            ok = sum(2.0 <= d for d in high)
            out.append(
                f"target: {name} at least +2 dB over the best classical chain from ISO 800: {min(high):+.2f} to "
                f"{max(high):+.2f} dB, met at {ok} of {len(high)}; below it at "
                f"{sum(r[4] < 0 for r in rows)} of {len(rows)} sensor-ISOs"
            )
        base = {}
        for r in rows:  # each sensor's lowest ISO
            if r[0] not in base or r[1] < base[r[0]][1]:
                base[r[0]] = r
        out.append(
            f"target: {name} within 0.5 dB of AHD (no denoising) at base ISO with fewer colour artefacts: "
            + "; ".join(
                f"{s} ISO {r[1]:g}: {r[5]:+.2f} dB, chroma {r[6] * 1e3:+.1f} x1e-3 "
                f"({'met' if r[5] >= -0.5 and r[6] < 0 else 'not met'})"
                for s, r in sorted(base.items())
            )
        )
    return out


def main(joint=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="512x384", help="frame size WxH (mosaic px)")
    ap.add_argument(
        "--scenes", type=int, default=8, help="scenes per sensor (a quarter, rounded up, held out)"
    )
    ap.add_argument("--sensors", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=None, help="synthetic dataset folder to (re)use")
    ap.add_argument("--out", type=Path, default=None, help="write every per-frame row here (JSON)")
    ap.add_argument(
        "--denoiser", default="builtin",
        help="rawlab Bayer denoiser for the 'first' chain (builtin, a model directory, .tflite or .onnx), run "
        "as `rawlab denoise` runs it (tiled, SURE-guarded); 'none' to leave the chain out",
    )  # fmt: skip
    ap.add_argument(
        "--joint", action="append", default=[], metavar="DIR",
        help="a joint demosaic+denoise model (model directory, .tflite or .onnx) to score; repeat for several",
    )  # fmt: skip
    ap.add_argument(
        "--ensemble", type=int, default=4, choices=(1, 2, 4, 8),
        help="rotations each model averages (rawlab denoise --ensemble; default 4, as rawlab denoise)",
    )  # fmt: skip
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    root = args.data or Path(tempfile.mkdtemp(prefix="rawlab-demosaic-"))
    t0 = time.perf_counter()
    from rawlab.evaluation.demosaic import joint_model, model_denoiser

    joint = dict(joint or {})
    for path in args.joint:
        joint[Path(path).name if Path(path).name not in joint else path] = joint_model(
            path, ensemble=args.ensemble
        )
    if not joint:
        print("no joint model given (--joint DIR): the joint model's columns are left out", flush=True)
    denoiser = None if args.denoiser == "none" else model_denoiser(args.denoiser, ensemble=args.ensemble)
    model = Path(args.denoiser).name
    files = synth_dataset(root, size=(w, h), n_scenes=args.scenes, n_sensors=args.sensors, seed=args.seed)
    print(
        f"{len(files)} DNG files, {args.sensors} sensors x {args.scenes} scenes at {w}x{h} in {root}",
        flush=True,
    )
    rows = evaluate(root, joint=joint, denoiser=denoiser, echo=lambda s: print(s, flush=True))
    lines, margins = table(rows, model=model)
    print()
    print("\n".join(lines))
    print()
    print("\n".join(summary(margins, model=model)))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    print(f"wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""Self-supervised fine-tuning: the built-in model on a sensor it handles worst, before and after
`rawlab train --init builtin --config r2r` on that sensor's noisy frames alone (no clean frame at all).

    python benchmarks/finetune.py [--sensor "SynthCam GR-3"] [--size 1024x768] [--scenes 6] [--steps 600]
                                  [--data DIR]

What it does, as a user without clean frames would:

1. writes a synthetic dataset of four virtual sensors and keeps the one asked for (GR-3: GRBG, 12 bits, ISO
   100 to 12800; no rawlab training run has seen it, and the built-in model scores worst there);
2. splits its scenes as rawlab does (:mod:`rawlab.learn.split`): the held-out scenes, with their clean
   references, are only ever used to score; the others give **only their noisy frames** to a second store;
3. fits the noise from those noisy frames alone (``--method single``, what a user without clean frames has)
   and fine-tunes the built-in model on them (Recorrupted-to-Recorrupted, ``configs/r2r.py``);
4. scores the built-in model and the fine-tuned one on the held-out scenes, with the same single-image noise
   for both and the SURE guard on (as ``rawlab denoise`` runs them), next to the noisy input and VST+NL-means.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from _common import synth_dataset


def main():
    from rawlab.catalog import open_catalog
    from rawlab.catalog.build import build_catalog
    from rawlab.cluster import RunOptions, dask_client
    from rawlab.evaluation.scoring import evaluate_store
    from rawlab.learn.configs import load_config
    from rawlab.learn.split import eval_scenes
    from rawlab.learn.train import train_and_evaluate

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sensor", default="SynthCam GR-3")
    ap.add_argument("--size", default="1024x768", help="frame size WxH (mosaic px)")
    ap.add_argument("--scenes", type=int, default=6, help="scenes (a quarter, rounded up, held out)")
    ap.add_argument("--steps", type=int, default=600, help="fine-tuning steps")
    ap.add_argument("--seed", type=int, default=5, help="synthetic dataset seed")
    ap.add_argument("--data", type=Path, default=None, help="folder to (re)use")
    ap.add_argument("--config", default="r2r", help="fine-tuning config (name or .py file)")
    ap.add_argument("--alpha", type=float, default=None, help="R2R alpha (default: the config's)")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the config's)")
    ap.add_argument("--name", default="finetuned", help="model folder under --data (a re-run resumes it)")
    ap.add_argument("--noise", default=None, help="a noise profile to fine-tune and score with instead of the "
                    "single-image fit (e.g. the dataset's truth.json: what the fit costs)")  # fmt: skip
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    root = args.data or Path(tempfile.mkdtemp(prefix="rawlab-finetune-"))
    t0 = time.perf_counter()
    synth_dataset(root / "data", size=(w, h), n_scenes=args.scenes, n_sensors=4, seed=args.seed)
    folder = args.sensor.replace(" ", "_")
    with dask_client(workers=2) as (client, _info):
        opts = RunOptions(client=client)
        full = root / "paired.zarr"
        if not full.exists():
            build_catalog([str(root / "data" / folder)], str(full), options=opts)
        cat = open_catalog(str(full))
        held = {scene for _s, scene in eval_scenes(cat)}
        noisy = cat[(cat["role"] == "noisy") & (cat["status"] == "ok") & ~cat["scene"].isin(held)]
        src = root / "noisy-only"
        if not src.exists():
            for p in noisy["path"]:  # the noisy frames of the training scenes, nothing else
                rel = Path(p).relative_to(root / "data")
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, src / rel)
        store = root / "noisy.zarr"
        if not store.exists():
            build_catalog([str(src)], str(store), options=opts)
        print(
            f"{args.sensor}: {len(noisy)} noisy frames of {cat['scene'].nunique() - len(held)} scenes to fine-tune "
            f"on (no clean frame); held out for scoring: {', '.join(sorted(held))}",
            flush=True,
        )
        workdir = root / args.name
        cfg = load_config(
            args.config,
            steps=args.steps,
            data__r2r_alpha=args.alpha,
            optim__learning_rate=args.lr,
            noise__profile=args.noise,
        )
        t = time.perf_counter()
        trained = train_and_evaluate(cfg, workdir, str(store), options=RunOptions(client=client, echo=print),
                                     init="builtin")  # fmt: skip
        print(trained.line(), f"({time.perf_counter() - t:.0f} s)", flush=True)
        # The single-image fit of the noisy frames (or --noise): the same for both.
        profile = args.noise or workdir / "noise.json"
        before = evaluate_store(str(full), "builtin", methods=["identity", "vst-nlm", "model"], profile=profile,
                                options=opts)  # fmt: skip
        after = evaluate_store(str(full), str(workdir), methods=["model"], profile=profile, options=opts)
    by = {(r["iso"], r["method"]): r["psnr"] for r in before.rows}
    ft = {r["iso"]: r["psnr"] for r in after.rows}
    n = {r["iso"]: r["n_frames"] for r in before.rows}
    print()
    d = cfg["data"]
    how = "" if d["self_supervised_loss"] == "sure" else f", alpha {d['r2r_alpha']:g}"
    print(
        f"{args.sensor}, held-out scenes, PSNR dB (noise {'from ' + args.noise if args.noise else 'from the noisy frames alone'}; guard on); fine-tuned "
        f"{args.steps} steps of {cfg['name']}{how}, lr {cfg['optim']['learning_rate']:g}, "
        f"procedural fraction {d['procedural_fraction']:g}"
    )
    print(f"{'ISO':>6} {'n':>3} {'noisy':>8} {'vst-nlm':>8} {'builtin':>8} {'fine-tuned':>10} {'gain':>7}")
    gains = []
    for iso in sorted(ft):
        gain = ft[iso] - by[(iso, "model")]
        gains.append(gain)
        print(f"{iso:>6g} {n[iso]:>3} {by[(iso, 'identity')]:>8.2f} {by[(iso, 'vst-nlm')]:>8.2f} "
              f"{by[(iso, 'model')]:>8.2f} {ft[iso]:>10.2f} {gain:>+7.2f}")  # fmt: skip
    print(f"fine-tuning gain: mean {sum(gains) / len(gains):+.2f} dB, worst ISO {min(gains):+.2f} dB")
    for note in before.notes + after.notes:
        print(f"note: {note}")
    print(f"wall time {time.perf_counter() - t0:.0f} s; data and models in {root}")


if __name__ == "__main__":
    main()

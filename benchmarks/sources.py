"""What each training source contributes, measured on photographs and sensors the models never saw.

    python benchmarks/sources.py [--config tiny] [--steps 1500] [--size 512x384] [--scenes 6]
                                 [--variants procedural,store,synthetic,mixed] [--data DIR]

One model per training mix, all else equal (config, steps, seed, crops, learning rate), trained on the store
of the two demo sensors (``SynthCam PG-1``, ``MP-2``: photographs unprocessed to raw, their held-out scenes
kept out) and scored on a store of four sensors: the held-out photographs of the two it trained on and every
scene of ``SynthCam GR-3`` and ``GB-4``, which no training run saw (other CFA, bit depth, black level, ISO
range). The mixes (issue 12, item 1):

- ``procedural``: unlimited dead-leaves scenes recorded by a random sensor per example, nothing from the store;
- ``store``: the store's real noisy/clean pairs only;
- ``synthetic``: the store's clean frames with noise drawn from the fitted law, half of the store examples
  (the default of every store-trained config);
- ``mixed``: three quarters procedural, the rest as ``synthetic`` (the recipe of the built-in model);
- ``procedural-narrow``, ``mixed-narrow``: the same with the random sensors' shot-noise term ``a`` drawn over
  the range real sensors use from base ISO up (``data.procedural.a_range`` 1e-4 to 5e-2) instead of down to 3e-6,
  where a noise-free crop teaches the network to pass its input through.

Each model is scored as a network (no SURE guard: the guard would hide what the data taught it) by PSNR over
the noisy input, averaged over ISOs, and against VST+NL-means, per group of sensors.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import synth_dataset

NARROW = [1e-4, 5e-2]  # the shot-noise range of the virtual sensors from base ISO up (a: 1e-4 to 5e-2)
VARIANTS = {
    "procedural": {"procedural_fraction": 1.0, "synthetic_fraction": 0.0},
    "store": {"procedural_fraction": 0.0, "synthetic_fraction": 0.0},
    "synthetic": {"procedural_fraction": 0.0, "synthetic_fraction": 0.5},
    "mixed": {"procedural_fraction": 0.75, "synthetic_fraction": 0.5},
    "procedural-narrow": {"procedural_fraction": 1.0, "synthetic_fraction": 0.0, "a_range": NARROW},
    "mixed-narrow": {"procedural_fraction": 0.75, "synthetic_fraction": 0.5, "a_range": NARROW},
}
TRAIN_SEED, EVAL_SEED = 11, 0  # the built-in model's store, and benchmarks/quality.py --model's


def _store(root: Path, name: str, *, size, scenes, sensors, seed, client) -> str:
    from rawlab.catalog.build import build_catalog
    from rawlab.cluster import RunOptions

    store = root / f"{name}.zarr"
    synth_dataset(root / name, size=size, n_scenes=scenes, n_sensors=sensors, seed=seed)
    if not (store / "catalog.parquet").exists():
        build_catalog([str(root / name)], str(store), options=RunOptions(client=client))
    return str(store)


def _summary(result, trained_on: set[str]) -> dict[str, dict[str, float]]:
    """Mean over the sensor-ISOs of each group: model - identity and model - vst-nlm (dB)."""
    by = {(r["sensor"], r["iso"], r["method"]): r["psnr"] for r in result.rows}
    groups: dict[str, dict[str, list[float]]] = {}
    for sensor, iso, method in by:
        if method != "model":
            continue
        g = groups.setdefault(
            "seen sensors" if sensor in trained_on else "unseen sensors", {"in": [], "nlm": []}
        )
        g["in"].append(by[(sensor, iso, "model")] - by[(sensor, iso, "identity")])
        if (sensor, iso, "vst-nlm") in by:
            g["nlm"].append(by[(sensor, iso, "model")] - by[(sensor, iso, "vst-nlm")])
    return {
        k: {"in": statistics.mean(v["in"]), "worst_in": min(v["in"]), "nlm": statistics.mean(v["nlm"])}
        for k, v in sorted(groups.items())
    }


def main():
    from rawlab.cluster import RunOptions, dask_client
    from rawlab.evaluation.scoring import evaluate_store
    from rawlab.learn.configs import load_config
    from rawlab.learn.train import train_and_evaluate

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny", help="training config (name or .py file), the same for all")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--crop", type=int, default=64, help="training crop, packed px")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--size", default="512x384", help="frame size WxH (mosaic px)")
    ap.add_argument("--scenes", type=int, default=6, help="scenes per sensor")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated: {', '.join(VARIANTS)}")
    ap.add_argument(
        "--eval-crop", type=int, default=128, help="score the central NxN packed px of each frame"
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", type=Path, default=None, help="folder for the data, stores and models (reused)")
    args = ap.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        ap.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    w, h = (int(v) for v in args.size.split("x"))
    root = args.data or Path(tempfile.mkdtemp(prefix="rawlab-sources-"))
    print(
        f"config {args.config}, {args.steps} steps, batch {args.batch_size} x {args.crop}^2 packed px, seed 0; "
        f"train store: 2 sensors x {args.scenes} scenes at {w}x{h} (seed {TRAIN_SEED}); eval store: 4 sensors "
        f"(seed {EVAL_SEED}), scenes each model did not train on, central {args.eval_crop}^2; data in {root}",
        flush=True,
    )
    t0 = time.perf_counter()
    table = {}
    with dask_client(workers=args.workers) as (client, _info):
        common = {"size": (w, h), "scenes": args.scenes, "client": client}
        train_store = _store(root, "train", sensors=2, seed=TRAIN_SEED, **common)
        eval_store = _store(root, "eval", sensors=4, seed=EVAL_SEED, **common)
        for name in variants:
            mix = VARIANTS[name]
            cfg = load_config(
                args.config, steps=args.steps, seed=0, data__crop=args.crop, data__batch_size=args.batch_size,
                data__procedural_fraction=mix["procedural_fraction"],
                data__synthetic_fraction=mix["synthetic_fraction"],
                log_every=max(10, args.steps // 10), eval_every=args.steps, checkpoint_every=args.steps,
                data__procedural__a_range=mix.get("a_range"),
            )  # fmt: skip
            workdir = root / f"model-{name}"
            t = time.perf_counter()
            trained = train_and_evaluate(cfg, workdir, train_store, options=RunOptions(client=client))
            t_train = time.perf_counter() - t
            result = evaluate_store(
                eval_store, str(workdir), methods=["identity", "vst-nlm", "model"], scenes="all",
                crop=args.eval_crop, options=RunOptions(client=client), guard=False,
            )  # fmt: skip
            table[name] = _summary(result, {"SynthCam PG-1", "SynthCam MP-2"})
            print(f"{name}: trained in {t_train:.0f} s ({trained.line()})", flush=True)
    groups = sorted({g for row in table.values() for g in row})
    print("\nPSNR of the network (no guard), mean over sensor-ISOs, dB: over the noisy input (worst sensor-ISO) | "
          "over VST+NL-means")  # fmt: skip
    print(f"{'mix':<12}" + "".join(f"{g:>36}" for g in groups))
    for name, row in table.items():
        cells = "".join(
            f"{row[g]['in']:>+13.2f} ({row[g]['worst_in']:+6.2f}) | {row[g]['nlm']:>+8.2f}".rjust(36)
            for g in groups
        )
        print(f"{name:<12}{cells}")
    print(f"wall time {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""Training step time fed from the store (prefetching pipeline) against the same batches from memory.

    python benchmarks/train.py [--size 4000x3000] [--scenes 3] [--configs tiny,mobile] [--steps 20] [--repeats 3]

Per config, one run, side by side, medians over repeats of ``--steps`` consecutive steps each:

- memory: the batches, made beforehand by the same pipeline, held in RAM as numpy arrays;
- store, warm: the prefetching pipeline (threads) reading the store through its decoded-chunk cache, already
  holding these batches' chunks (the steady state when the dataset fits the cache, ``data.cache_mb``);
- store, cold: the same pipeline with no cache (every crop decodes its Zarr chunks: a dataset far larger than
  RAM);
- train store, cold: no cache either, reading a training store derived with 64-pixel chunks
  (``data.store_chunk``, :mod:`rawlab.learn.trainstore`), as ``tiny`` does.

Every variant runs the same jitted step on the same batches, on a CPU (or whatever JAX finds). Goal: the
store-fed step within 10% of the memory-fed one.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import synth_dataset


def _setup(store: str, truth: Path):
    from rawlab.catalog import open_catalog
    from rawlab.catalog.pairs import pairs_from_catalog
    from rawlab.catalog.store import FrameStore
    from rawlab.learn.split import split_pairs
    from rawlab.learn.synthnoise import sensor_noise
    from rawlab.noise.profile import load_profiles

    cat = open_catalog(store)
    pairs, _ = pairs_from_catalog(cat, split_pairs(cat)[0])
    noise = sensor_noise(load_profiles(truth), {p.sensor for p in pairs}, truth)
    return FrameStore(store), pairs, noise


def bench_config(name: str, fstore, pairs, noise, steps: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    from rawlab.learn.configs import load_config
    from rawlab.learn.input_pipeline import Pipeline
    from rawlab.learn.modelio import init_model
    from rawlab.learn.normalize import Normalisation
    from rawlab.learn.train import TrainState, make_optimizer, make_steps

    cfg = load_config(name)
    d = cfg["data"]
    tm = init_model({"model": cfg["model"], "normalisation": cfg["normalisation"]})
    tx, schedule = make_optimizer(cfg)
    train_fn, _ = make_steps(tm.module, Normalisation.from_dict(tm.config["normalisation"]), tx, schedule,
                             cfg["loss"])  # fmt: skip
    step = jax.jit(train_fn, donate_argnums=0)
    keys = ("noisy", "clean", "a", "b")

    from rawlab.learn.trainstore import derive_training_store

    needed = {fid for p in pairs for fid in (p.frame_id, p.ref_id)}
    small = derive_training_store(fstore, needed, Path(fstore.url).with_name("train-64.zarr"), 64)

    def pipeline(cache_mb, fstore=fstore):
        return Pipeline(fstore, pairs, noise, crop=d["crop"], batch_size=d["batch_size"],
                        synthetic_fraction=d["synthetic_fraction"], augment=d["augment"], workers=d["workers"],
                        prefetch=d["prefetch"], cache_mb=cache_mb)  # fmt: skip

    warm = pipeline(d["cache_mb"])
    t = time.perf_counter()
    memory = [{k: b[k] for k in keys} for b in map(warm.batch, range(steps + 1))]  # also warms the cache
    make_s = (time.perf_counter() - t) / steps
    state = TrainState(jnp.zeros((), jnp.int32), tm.params, tx.init(tm.params))
    state, m = step(state, memory[0])  # compile
    jax.block_until_ready(m)

    def run(batches):
        """Seconds per step over batches 1..steps; batch 0 is taken before the clock starts (a started
        pipeline, as in training: its thread start-up is paid once per run)."""
        nonlocal state
        batches = iter(batches)
        next(batches)
        t = time.perf_counter()
        for b in batches:
            state, m = step(state, {k: b[k] for k in keys})
        jax.block_until_ready(m)
        return (time.perf_counter() - t) / steps

    times: dict[str, list[float]] = {
        "memory": [],
        "store, warm": [],
        "store, cold": [],
        "train store, cold": [],
    }
    for r in range(repeats):
        times["memory"].append(run(memory))
        times["store, warm"].append(run(b for _, b in warm.batches(0, steps + 1)))
        times["store, cold"].append(run(b for _, b in pipeline(0).batches(0, steps + 1)))
        times["train store, cold"].append(run(b for _, b in pipeline(0, small).batches(0, steps + 1)))
        print(f"  {name} run {r + 1}: " + ", ".join(f"{k} {v[-1] * 1e3:.1f} ms" for k, v in times.items()))
    return {
        "batch": d["batch_size"], "crop": d["crop"], "make_ms": make_s * 1e3, "workers": d["workers"],
        **{k: statistics.median(v) for k, v in times.items()},
    }  # fmt: skip


def main():
    from rawlab.catalog.build import build_catalog
    from rawlab.cluster import RunOptions, dask_client

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="4000x3000")
    ap.add_argument("--scenes", type=int, default=3)
    ap.add_argument("--configs", default="tiny,mobile")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="Dask workers for the store build")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    tmp = Path(tempfile.gettempdir()) / "rawlab-bench-train"
    files = synth_dataset(tmp / "data", size=(w, h), n_scenes=args.scenes)
    store = str(tmp / f"store-{w}x{h}-{args.scenes}.zarr")
    if not Path(store).exists():
        with dask_client(workers=args.workers) as (client, _info):
            build_catalog([str(tmp / "data")], store, options=RunOptions(client=client))
    fstore, pairs, noise = _setup(store, tmp / "data" / "truth.json")
    print(f"{len(files)} frames of {w}x{h}; {len(pairs)} training pairs")
    rows = {
        name: bench_config(name, fstore, pairs, noise, args.steps, args.repeats)
        for name in args.configs.split(",")
    }
    print(f"\nstep time, median of {args.repeats} x {args.steps} steps (ms/step, images/s):")
    for name, r in rows.items():
        line = f"  {name:<7} batch {r['batch']} x {r['crop']}x{r['crop']} packed px, {r['workers']} data threads: "
        line += "; ".join(
            f"{k} {r[k] * 1e3:.0f} ms ({r['batch'] / r[k]:.0f} img/s)"
            for k in ("memory", "store, warm", "store, cold", "train store, cold")
        )
        print(line)
        print(f"          store/memory: warm {r['store, warm'] / r['memory']:.2f}x, cold {r['store, cold'] / r['memory']:.2f}x, "
              f"train store cold {r['train store, cold'] / r['memory']:.2f}x "
              f"(goal <= 1.10); making one batch alone: {r['make_ms']:.0f} ms")  # fmt: skip


if __name__ == "__main__":
    main()

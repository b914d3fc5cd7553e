"""Physics-based noise against Poisson-Gaussian noise for training, on a sensor with strong row noise (#15).

    python benchmarks/physics_noise.py [--steps 1500] [--size 512x384] [--scenes 8] [--repeats 4] [--data DIR]

What it does:

1. writes the calibration set of ``SynthCam CAL-2`` (``rawlab synth --calibration``: 14 bits, heavy-tailed
   Tukey-lambda read noise, strong row noise, column and pixel DSNU, PRNU, dark current, ISO 100-3200) and
   calibrates it (``rawlab calibrate``): the calibration.json both models are built from;
2. writes scenes recorded by the same virtual sensor, with its own simulation (its fixed DSNU and PRNU maps,
   every component; :func:`rawlab.synth.calibration.simulate_calibration_frame`, ``kind="scene"``): a clean
   reference at ISO 100 and a noisy frame at ISO 800 and 3200 per scene, built into a store;
3. trains the ``tiny`` model twice, the same steps, seed, data and noise map (the calibration's equivalent
   Poisson-Gaussian law, :func:`rawlab.noise.physics.equivalent_profiles`), every example synthetic noise on
   a clean reference crop; only the noise model differs: ``noise.kind`` ``poisson_gaussian`` or ``physics``;
4. scores both on the held-out scenes (which neither saw) recorded by the sensor's simulation at each ISO and
   light level (``--repeats`` frames each; ``--light 0.125``: three stops less light at the same ISO, the
   low-light case), PSNR against the noise-free truth (the sensor's mean response, clipped at white), the
   network alone (no tiling, no SURE guard), the noise map from the same law for both.

The sensor's simulation is not the sampler: the physics model only knows what ``rawlab calibrate`` measured.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.asarray(x, np.float64) - y) ** 2)))


def main():
    from rawlab.bayer import normalise
    from rawlab.calibrate import calibrate
    from rawlab.calibrate.report import write_calibration
    from rawlab.catalog.build import build_catalog
    from rawlab.cluster import RunOptions, dask_client
    from rawlab.learn.configs import load_config
    from rawlab.learn.modelio import load_model
    from rawlab.learn.train import train_and_evaluate
    from rawlab.noise.physics import equivalent_profiles, load_calibration
    from rawlab.noise.profile import load_profiles, save_profiles
    from rawlab.synth.calibration import (
        CALIBRATION_SENSORS,
        simulate_calibration_frame,
        write_calibration_set,
    )
    from rawlab.synth.physics import record_dataset
    from rawlab.synth.procedural import mosaic

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500, help="training steps of each model")
    ap.add_argument("--size", default="512x384", help="scene frame size WxH (mosaic px)")
    ap.add_argument("--cal-size", default="384x256", help="calibration frame size WxH (mosaic px)")
    ap.add_argument("--scenes", type=int, default=8, help="scenes (a quarter, rounded up, held out)")
    ap.add_argument("--repeats", type=int, default=4, help="noisy frames per held-out scene, ISO and light")
    ap.add_argument("--isos", default="100,400,800,1600,3200", help="ISOs to score")
    ap.add_argument("--light", default="1,0.125,0.03",
                    help="light levels to score, relative to the scenes' exposure (0.125: three stops darker at the "
                    "same ISO, the low-light case where read and row noise weigh more against shot noise)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=None, help="folder to (re)use")
    args = ap.parse_args()
    t0 = time.perf_counter()
    root = args.data or Path(tempfile.mkdtemp(prefix="rawlab-physics-"))
    sensor = next(s for s in CALIBRATION_SENSORS if s.base.model == "CAL-2")
    w, h = (int(v) for v in args.size.split("x"))
    cw, ch = (int(v) for v in args.cal_size.split("x"))
    pats = sensor.patterns(args.seed, h // 2, w // 2)  # the sensor's own fixed patterns in its scene frames

    def record(clean, iso, t, rng):
        return simulate_calibration_frame(sensor, pats, iso, "scene", t, rng, scene=clean)

    with dask_client(workers=2) as (client, _info):
        opts = RunOptions(client=client)
        calib = root / "calib" / "calibration.json"
        if not calib.exists():
            write_calibration_set(root / "cal", seed=args.seed, size=(cw, ch), sensors=(sensor,))
            write_calibration(calibrate([str(root / "cal")], options=opts), root / "calib")
        doc = load_calibration(calib)
        save_profiles(equivalent_profiles(doc), root / "noise.json")
        store = root / "store.zarr"
        if not store.exists():
            record_dataset(root / "data", sensor.base, record, seed=args.seed, size=(w, h),
                           n_scenes=args.scenes, n_clean=1)  # fmt: skip
            build_catalog([str(root / "data")], str(store), options=opts)
        print(f"calibration and store ready in {time.perf_counter() - t0:.0f} s ({root})")
        runs = {}
        for kind in ("poisson_gaussian", "physics"):
            cfg = load_config("tiny", steps=args.steps, seed=args.seed, noise__profile=str(root / "noise.json"),
                              noise__kind=kind, noise__calibration=str(calib) if kind == "physics" else None)  # fmt: skip
            cfg["data"].update(synthetic_fraction=1.0)
            cfg.update(eval_every=max(100, args.steps // 4), checkpoint_every=args.steps)
            t = time.perf_counter()
            res = train_and_evaluate(cfg, root / f"run-{kind}", str(store), options=opts, progress=False)
            print(f"trained {kind}: {res.step} steps in {time.perf_counter() - t:.0f} s, eval {res.eval}")
            runs[kind] = root / f"run-{kind}"

    models = {k: load_model(v) for k, v in runs.items()}
    config = json.loads((runs["physics"] / "config.json").read_text())
    held = sorted(scene.rsplit("/", 1)[-1] for _sensor, scene in config["split"]["eval_scenes"])
    law = load_profiles(root / "noise.json").sensor(sensor.name)
    span = sensor.base.dn_range
    import tifffile

    rows = []
    for light in (float(v) for v in args.light.split(",")):
        for iso in (float(v) for v in args.isos.split(",")):
            a, b = law.noise_at(iso).a, law.noise_at(iso).b
            scores = {"noisy": [], "poisson_gaussian": [], "physics": []}
            for si, scene in enumerate(held):
                rgb = tifffile.imread(
                    root / "data" / ".truth" / sensor.name.replace(" ", "_") / f"{scene}_rgb.tiff"
                )
                clean = mosaic(rgb.astype(np.float64), sensor.base.cfa) * light  # (4, h, w), normalised
                resp = sensor.response(clean * span[:, None, None], span[:, None, None]) / span[:, None, None]
                target = np.moveaxis(np.clip(resp, None, 1.0), 0, -1)
                for r in range(args.repeats):
                    rng = np.random.default_rng([args.seed, 0xE7A1, int(iso), si, r, round(1e6 * light)])
                    dn = record(clean, iso, 1 / 60, rng)
                    noisy = normalise(np.moveaxis(dn, 0, -1), sensor.base.black_level, sensor.base.white_level,
                                      channel_axis=-1)  # fmt: skip
                    scores["noisy"].append(psnr(noisy, target))
                    for kind, m in models.items():
                        scores[kind].append(psnr(m.denoise(noisy, a, b), target))
            diff = np.subtract(scores["physics"], scores["poisson_gaussian"])
            se = float(np.std(diff, ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else float("nan")
            rows.append((light, iso, diff.size, *(float(np.mean(v)) for v in scores.values()), se))

    print(f"\nSynthCam CAL-2, held-out scenes {', '.join(held)}; tiny model, {args.steps} steps each, seed "
          f"{args.seed}; PSNR in dB (mean over frames); gain = physics - PG, with the standard error of the "
          "mean of its per-frame paired differences\n")  # fmt: skip
    print(
        f"{'light':>6} {'ISO':>6} {'frames':>6} {'noisy':>8} {'PG':>8} {'physics':>8} {'gain':>8} {'+-':>6}"
    )
    for light, iso, n, noisy, pg, ph, se in rows:
        print(
            f"{light:>6g} {iso:>6g} {n:>6d} {noisy:>8.2f} {pg:>8.2f} {ph:>8.2f} {ph - pg:>+8.2f} {se:>6.2f}"
        )
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

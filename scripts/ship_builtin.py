"""Copy a trained model into the package as the built-in model (``--model builtin``), recording how it was made.

    python scripts/ship_builtin.py runs/builtin --hardware "2-core CPU (shared)" [--note "..."]

Writes ``rawlab/learn/builtin/config.json`` and ``model.msgpack``. The config gains a ``builtin`` block: the
commands that re-train the model (from ``rawlab/learn/configs/builtin.py``), the steps it trained, the data
recipe, the hardware and the date, so the shipped weights say where they came from.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

RETRAIN = [
    "rawlab synth builtin-data --size 1024x768 --scenes 6 --sensors 2 --seed 11",
    "rawlab catalog build builtin-data --out builtin.zarr",
    "rawlab train builtin.zarr --config builtin --workdir runs/builtin --steps {steps}",
]
# A run that started from an earlier built-in model (`rawlab train --init builtin`): that model's own recipe,
# then this stage, which starts from its result.
STAGE = "rawlab train builtin.zarr --config builtin --init {prev} --workdir runs/builtin-{n} --steps {steps}"


def main() -> None:
    from rawlab.learn.modelio import BUILTIN_DIR, CONFIG, PARAMS, load_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workdir", type=Path, help="the trained model directory (rawlab train --workdir)")
    ap.add_argument("--hardware", required=True, help="what it trained on, e.g. '2-core CPU'")
    ap.add_argument("--note", default="", help="anything a reader of the config should know")
    ap.add_argument(
        "--stage-command",
        default=None,
        help="the command that trained this stage, when it was not the default one (another --config)",
    )
    args = ap.parse_args()
    model = load_model(args.workdir)  # checks it loads
    config = json.loads((args.workdir / CONFIG).read_text())
    training = config.get("training", {})
    steps = config.get("step") or training.get("steps")
    init = training.get("init")
    if init:  # fine-tuned from the shipped model: its recipe first, then this stage
        before = json.loads((BUILTIN_DIR / CONFIG).read_text()).get("builtin", {})
        n = len(before.get("stages", [None])) + 1
        prev = "runs/builtin" if n == 2 else f"runs/builtin-{n - 1}"
        stage = args.stage_command or STAGE.format(prev=prev, n=n, steps=steps)
        retrain = [*before.get("retrain", []), stage]
        stages = [*before.get("stages", [before.get("steps")]), steps]
    else:
        retrain, stages = [c.format(steps=steps) for c in RETRAIN], [steps]
    config["builtin"] = {
        "retrain": retrain,
        "steps": sum(s for s in stages if s),
        "stages": stages,
        "data": {
            "store": "2 virtual sensors (SynthCam PG-1, MP-2) x 6 scenes at 1024x768, seed 11; its held-out "
            "scenes were not trained on",
            "procedural_fraction": training.get("data", {}).get("procedural_fraction"),
            "synthetic_fraction": training.get("data", {}).get("synthetic_fraction"),
        },
        "hardware": args.hardware,
        "machine": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "note": args.note,
    }
    config["training"] = {k: v for k, v in training.items() if k != "store"}  # a path on the trainer's disk
    BUILTIN_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.workdir / PARAMS, BUILTIN_DIR / PARAMS)
    (BUILTIN_DIR / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    size = (BUILTIN_DIR / PARAMS).stat().st_size / 1e6
    print(f"built-in model: {model.name} -> {BUILTIN_DIR} ({size:.1f} MB), {steps} steps on {args.hardware}")


if __name__ == "__main__":
    main()

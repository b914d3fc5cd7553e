"""Write the built-in burst model (``--model builtin-burst``, ``rawlab denoise --burst``'s default) into the package.

    python scripts/ship_builtin_burst.py                     # the burst config's start: the builtin on the merge
    python scripts/ship_builtin_burst.py --run runs/burst    # or a trained `rawlab burst train` run

Without ``--run`` the model is config ``burst``'s (the classical merge in front of 8 aligned frames) with every
U-Net parameter from the built-in single-frame model (``burst.init``) and ``frames_in`` zero: the built-in model
run on the classical merge with the merge's noise law. That is what ships today: fine-tuned on simulated bursts
on the CPU (3000 steps of dead leaves; 2000 steps with half of the bursts filmed from photographs) the model gained
on its own held-out bursts but lost 0.1 to 1.3 dB on the held-out photographs of ``benchmarks/burst_model.py``.
Either way the config gains the built-in model's sensor noise laws (``rawlab denoise``'s first choice of law) and
a ``builtin`` block saying how it was made.
"""

from __future__ import annotations

import argparse
import json
import time

UNTRAINED = (
    "config burst's model with every U-Net parameter from the built-in single-frame model (burst.init) and "
    "frames_in zero: the built-in model on the classical merge with the merge's noise law; fine-tuned on "
    "simulated bursts on the CPU it lost 0.1 to 1.3 dB on the held-out photographs of benchmarks/burst_model.py"
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--run", default=None, help="a trained `rawlab burst train` workdir (default: untrained start)"
    )
    args = p.parse_args()

    from rawlab.learn.bursttrain import burst_init, load_burst_config
    from rawlab.learn.modelio import BUILTIN, BUILTIN_BURST, BUILTINS, init_model, load_model, save_model

    if args.run:
        tm, how = load_model(args.run), f"rawlab burst train --workdir {args.run} (step {{step}})"
    else:
        cfg = load_burst_config("burst")
        base = {k: cfg[k] for k in ("model", "normalisation", "tile", "burst")}
        tm, record = burst_init(init_model({"name": BUILTIN_BURST, **base}), BUILTIN)
        tm.config.update(step=0, training={"init": record, "steps": 0})
        how = UNTRAINED
    tm.config["name"] = BUILTIN_BURST
    tm.config["noise"] = load_model(BUILTIN).config["noise"]
    tm.config["builtin"] = {"made": how.format(step=tm.config.get("step")), "date": time.strftime("%Y-%m-%d")}
    out = save_model(BUILTINS[BUILTIN_BURST], tm)
    print(f"wrote {out}: {json.dumps(tm.config['builtin'])}")


if __name__ == "__main__":
    main()

"""Write the built-in joint demosaic model (``--model builtin-joint``, ``rawlab denoise --output rgb``'s default).

    python scripts/ship_builtin_joint.py                           # config joint_mobile started from builtin
    python scripts/ship_builtin_joint.py --run runs/joint-mobile   # or a trained run of it

Without ``--run`` the model is config ``joint_mobile``'s (the ``mobile`` U-Net with the Bayer head and the RGB
head, ``model.spec.denoise_first``) with every parameter of the built-in denoiser and a zero RGB head: the
built-in denoiser followed by the fixed least-squares linear demosaic (``rawlab.learn.lsdemosaic``). Either way the config gains the built-in model's sensor
noise laws and a ``builtin`` block saying how it was made.
"""

from __future__ import annotations

import argparse
import json
import time

UNTRAINED = (
    "config joint_mobile's model started from the built-in denoiser (rawlab train --init builtin), not trained: "
    "the built-in denoiser, then the fixed least-squares linear demosaic (model.spec.demosaic 'ls')"
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--run", default=None, help="a trained `rawlab train --config joint_mobile` run (default: its start)"
    )
    p.add_argument("--made", default=None, help="how the run was trained, for the config's builtin block")
    args = p.parse_args()

    from rawlab.learn.configs import load_config
    from rawlab.learn.modelio import BUILTIN, BUILTIN_JOINT, BUILTINS, init_model, load_model, save_model
    from rawlab.learn.train import initial_params

    if args.run:
        tm = load_model(args.run)
        how = (
            args.made
            or f"rawlab train --config joint_mobile --init builtin --workdir {args.run} (step {tm.config.get('step')})"
        )
    else:
        cfg = load_config("joint_mobile")
        tm, record = initial_params(
            BUILTIN, init_model({k: cfg[k] for k in ("model", "normalisation", "tile")})
        )
        tm.config.update(step=0, training={"init": record, "steps": 0})
        how = UNTRAINED
    tm.config["name"] = BUILTIN_JOINT
    tm.config["noise"] = load_model(BUILTIN).config["noise"]
    tm.config["builtin"] = {"made": how, "date": time.strftime("%Y-%m-%d")}
    out = save_model(BUILTINS[BUILTIN_JOINT], tm)
    print(f"wrote {out}: {json.dumps(tm.config['builtin'])}")


if __name__ == "__main__":
    main()

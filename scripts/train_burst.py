"""Train the burst model (config ``burst``, issue 14) into a workdir; re-running resumes from its checkpoint.

python scripts/train_burst.py --workdir runs/burst [--steps 1000] [--frames 8] [--config my_burst.py]
"""

from __future__ import annotations

import argparse


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True)
    p.add_argument(
        "--config", default="burst", help="'burst' or a .py file with get_config() and a burst block"
    )
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--frames", type=int, default=None, help="K, the model's frame slots")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument(
        "--stop-after", type=int, default=None, help="stop at this step (the schedule keeps --steps)"
    )
    args = p.parse_args()
    from rawlab.learn.bursttrain import load_burst_config, train_burst

    cfg = load_burst_config(args.config, steps=args.steps, burst__frames=args.frames,
                            data__batch_size=args.batch_size)  # fmt: skip
    result = train_burst(cfg, args.workdir, stop_after=args.stop_after, echo=print)
    print(result.line())


if __name__ == "__main__":
    main()

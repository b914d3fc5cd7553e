"""``r2r``: self-supervised fine-tuning of the built-in model on a sensor's noisy frames alone.

For a sensor with no clean frames at all: Recorrupted-to-Recorrupted (Pang et al., CVPR 2021) on the store's
noisy frames, with the sensor's noise law (fitted from the store with ``--method single``, or given with
``--noise``), mixed with the built-in model's procedural content (clean targets) so that it does not forget
the rest. The architecture is the built-in model's, so start from it::

    rawlab train NOISY_STORE --init builtin --config r2r --workdir runs/mysensor [--noise PROFILE]

A gentle schedule (a tenth of the built-in model's peak rate, short warmup): fine-tuning, not training.
"""

from __future__ import annotations

from rawlab.learn.configs.builtin import get_config as builtin


def get_config() -> dict:
    c = builtin()
    c["name"] = "r2r"
    c["steps"] = 1000
    c["data"].update(self_supervised=True, r2r_alpha=0.5, synthetic_fraction=0.0, procedural_fraction=0.25)
    c["loss"].update(kind="mse")
    c["optim"].update(learning_rate=1e-4, warmup_steps=50)
    c.update(log_every=50, eval_every=250, checkpoint_every=250)
    return c

"""``sure``: self-supervised fine-tuning of the built-in model on a sensor's noisy frames alone, by SURE.

As ``r2r`` (the same data, schedule and mix with procedural content), but each noisy crop is the input as it
is, and its loss is Stein's unbiased estimate of the squared error against the unknown clean signal under the
sensor's noise law (:func:`rawlab.learn.losses.sure_mse`), not the error against a recorrupted target, whose
noise is five times the frame's at ``alpha`` 0.5. A second network pass per step estimates the divergence::

    rawlab train NOISY_STORE --init builtin --config sure --workdir runs/mysensor [--noise PROFILE]
"""

from __future__ import annotations

from rawlab.learn.configs.r2r import get_config as r2r


def get_config() -> dict:
    c = r2r()
    c["name"] = "sure"
    c["data"].update(self_supervised_loss="sure")
    return c

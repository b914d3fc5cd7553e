"""``joint_mobile``: the joint demosaic+denoise model on the built-in denoiser's U-Net, denoising first.

The ``mobile`` U-Net with both heads (``model.spec.denoise_first``, :mod:`rawlab.learn.models`): the Bayer head
denoises the packed planes, the fixed least-squares linear demosaic (``model.spec.demosaic`` ``"ls"``,
:mod:`rawlab.learn.lsdemosaic`) reads them, and the RGB head adds its correction at full resolution. Started
from a denoiser of the same U-Net, it is that denoiser followed by that demosaic, and training teaches the
demosaic (the shipped ``builtin-joint`` is this model started from ``builtin``;
``scripts/ship_builtin_joint.py``)::

    rawlab train STORE --config joint_mobile --init builtin --workdir runs/joint-mobile

Training content as ``joint``'s: procedural scenes recorded by randomly drawn sensors, scored against their
linear camera RGB. Crops of 96 packed px, as the built-in model's: its deepest level (1/16) is wider than its
context there.
"""

from __future__ import annotations

from rawlab.learn.configs.joint import get_config as joint


def get_config() -> dict:
    c = joint()
    c["name"] = c["model"]["arch"] = "joint_mobile"  # the arch is a name only: the spec is built
    c["model"]["spec"].update(
        widths=[8, 16, 40, 80, 160], convs_per_block=[1, 2, 2, 2, 2], denoise_first=True, demosaic="ls"
    )
    c["steps"] = 2000
    c["data"].update(crop=96, batch_size=8)
    c["optim"].update(learning_rate=2e-4, warmup_steps=100)
    c["tile"] = {"size": 256, "overlap": 32}
    return c

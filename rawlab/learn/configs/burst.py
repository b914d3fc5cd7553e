"""``burst``: the burst model (issue 14): K aligned raw frames as channels in, the clean reference out.

The U-Net family (:func:`rawlab.learn.models.burst_spec`): the reference's packed planes and ``K - 1``
alternates resampled onto it by :mod:`rawlab.burst`'s aligner and resampler, each with its noise map, so
``in_channels = 8 K``; trained on bursts simulated on the fly from unlimited procedural scenes and random
sensors (:mod:`rawlab.learn.burstdata`), with the training loop, checkpoints and resume of ``rawlab train``
(:func:`rawlab.learn.bursttrain.train_burst`). The ``burst`` block is the burst source's::

    python rawlab burst train --workdir runs/burst
    rawlab denoise --burst burst/*.dng --model runs/burst --out out/
"""

from __future__ import annotations

from rawlab.learn.configs.default import get_config as base

FRAMES = 8


def get_config() -> dict:
    c = base()
    c["name"] = "burst"
    c["model"]["arch"] = "burst"  # a name only: the spec is what is built
    c["model"]["spec"] = {
        "widths": [16, 32, 64],
        "convs_per_block": [1, 2, 2],
        "in_channels": 8 * FRAMES,
        "out_channels": 4,
        "negative_slope": 0.2,
    }
    c["steps"] = 4000
    c["data"].update(crop=32, batch_size=8, synthetic_fraction=0.0, procedural_fraction=1.0, eval_batches=4,
                     augment=False, workers=2, prefetch=4)  # fmt: skip
    c["optim"].update(learning_rate=3e-3, warmup_steps=50)
    c.update(log_every=25, eval_every=250, checkpoint_every=100)
    c["tile"] = {"size": 128, "overlap": 16}
    c["burst"] = {
        "frames": FRAMES,  # K: frame slots; a shorter burst repeats its reference
        "align": "true",  # training alternates resampled at the true motion ("aligner": the aligner's estimate)
        "full": 0.5,  # share of training bursts with all K frames (the rest 1 to K - 1)
        "moving": 0.5,  # share with a moving object
        "max_shift": 4.0,  # hand shake, mosaic px per axis
        "max_rotation": 0.25,  # degrees
        "pool": 8,
        "reuse": 16,  # batches sharing the noise-free bursts (each example its own noise law and noise)
        # The shot term a of the random sensors, log-uniform: bursts are for high ISO (a = 3e-4 is ISO 800 on a
        # full-frame sensor, 3e-3 on a phone); the procedural source's range, down to 3e-6, is mostly clean
        # examples, and on CPU budgets the network then learned nothing in 500 steps (it stayed the identity).
        "a_range": [2e-4, 5e-2],
    }
    return c

"""``burst``: the burst model (issue 14): K aligned raw frames as channels in, the clean reference out.

The U-Net family (:func:`rawlab.learn.models.burst_spec`): the reference's packed planes and ``K - 1``
alternates resampled onto it by :mod:`rawlab.burst`'s aligner and resampler, each with its noise map, and in
front of them the classical merge of the burst with its own (``model.spec.merge_frames``), so ``in_channels =
8 (K + 1)``; the U-Net proper is the builtin's (mobile), started from its weights (``burst.init``); trained on bursts simulated on the fly from unlimited procedural scenes and random
sensors (:mod:`rawlab.learn.burstdata`), with the training loop, checkpoints and resume of ``rawlab train``
(:func:`rawlab.learn.bursttrain.train_burst`). The ``burst`` block is the burst source's::

    rawlab burst train --workdir runs/burst
    rawlab denoise --burst burst/*.dng --model runs/burst --out out/
"""

from __future__ import annotations

from rawlab.learn.configs.default import get_config as base

FRAMES = 8


def get_config() -> dict:
    c = base()
    c["name"] = "burst"
    c["model"]["arch"] = "burst"  # a name only: the spec is what is built
    # The classical merge of the frames (rawlab.burst.merge_burst) in front of them (model.spec.merge_frames)
    # and the builtin's U-Net (mobile), whose weights it starts from (burst.init): step 0 is the single-frame
    # denoiser run on the merge; training adapts it to merged noise (lower, not white, not the frame's law) and
    # teaches the zero-initialised frames_in to use the frames themselves.
    c["model"]["spec"] = {
        "widths": [8, 16, 40, 80, 160],
        "convs_per_block": [1, 2, 2, 2, 2],
        "in_channels": 8 * (FRAMES + 1),
        "out_channels": 4,
        "negative_slope": 0.2,
        "merge_frames": FRAMES,
    }
    c["steps"] = 2000
    c["data"].update(crop=96, batch_size=4, synthetic_fraction=0.0, procedural_fraction=1.0, eval_batches=4,
                     augment=False, workers=2, prefetch=4)  # fmt: skip
    c["optim"].update(learning_rate=3e-5, warmup_steps=50)
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
        # Share of bursts filmed from bundled photographs (rawlab.learn.burstdata.PHOTOS; the benchmark's scenes
        # are not among them) instead of dead leaves: fine-tuned on dead leaves alone, the model lost about 1 dB
        # on held-out photographs while gaining on dead leaves.
        "photos": 0.5,
        # Parameters to start from: a model ("builtin" or a directory) whose U-Net is this spec's (its
        # parameters are copied; frames_in starts at zero); None: random.
        "init": "builtin",
    }
    return c

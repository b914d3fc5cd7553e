"""``joint``: demosaicking and denoising in one network, noisy mosaic in, clean linear camera RGB out (issue 13).

The U-Net family with the full-resolution RGB head (``model.spec.head = "rgb"``, :mod:`rawlab.learn.models`):
packed planes in the RGGB phase (any CFA is flipped into it) plus the noise-level map in, ``(2h, 2w, 3)``
camera RGB out, starting from a bilinear demosaic. Trained on unlimited procedural scenes recorded by randomly
drawn sensors (``procedural_fraction`` 1, so any store will do; set it below 1 to mix in the store's pairs,
whose scenes then need a colour truth in the catalog, ``truth_path``, as ``rawlab synth`` writes, and keep
``augment`` off); evaluated on procedural scenes of another stream. The loss compares the RGB with the
scene's linear camera RGB::

    rawlab train STORE --config joint --workdir runs/joint
    rawlab denoise photo.dng --model runs/joint --output rgb --format dng --out out/
"""

from __future__ import annotations

from rawlab.learn.configs.default import get_config as base


def get_config() -> dict:
    c = base()
    c["name"] = "joint"
    c["model"]["arch"] = "joint"  # a name only: with a spec, the spec is what is built
    c["model"]["spec"] = {
        "widths": [16, 32, 64],
        "convs_per_block": [1, 2, 2],
        "in_channels": 4,
        "out_channels": 3,
        "negative_slope": 0.2,
        "head": "rgb",
    }
    c["steps"] = 4000
    c["data"].update(
        crop=48, batch_size=8, synthetic_fraction=0.0, procedural_fraction=1.0, eval_batches=4, augment=False
    )
    c["data"]["procedural"].update(pool=8, reuse=4)
    c["optim"].update(learning_rate=2e-3, warmup_steps=100)
    c.update(log_every=50, eval_every=250, checkpoint_every=250)
    c["tile"] = {"size": 128, "overlap": 16}
    return c

"""``builtin``: the model shipped inside rawlab (``--model builtin``), trained for sensors it never saw.

A ``mobile`` U-Net (about 1 M parameters) whose batches are mostly procedural dead-leaves scenes recorded by a
randomly drawn sensor per example (``data.procedural_fraction``: CFA, bit depth, black and white levels and
Poisson-Gaussian ``(a, b)`` over four decades; :mod:`rawlab.learn.procedural`), the rest real pairs and
synthetic noise on the clean frames of a synthetic store (the two demo sensors, photographs unprocessed to
raw). The held-out scenes of that store, and the two virtual sensors it lacks (``SynthCam GR-3``, ``GB-4``),
are what ``benchmarks/quality.py --builtin`` scores it on.

Re-train it (the command and hardware of the shipped weights are in ``rawlab/models/builtin/config.json``)::

    rawlab synth builtin-data --size 1024x768 --scenes 6 --sensors 2 --seed 11
    rawlab catalog build builtin-data --out builtin.zarr
    rawlab train builtin.zarr --config builtin --workdir runs/builtin [--steps N]
"""

from __future__ import annotations

from rawlab.learn.configs.default import get_config as base

# Crops of 96 packed px: the deepest level (1/16) is 6x6 there, wider than its 5x5 context, so what the
# model learns on crops holds on whole frames (at 32 px the deepest level saw the whole crop, and a model that
# did well on crops fell 10-28 dB below its input on full frames). tests/test_train.py checks every config.


def get_config() -> dict:
    c = base()
    c["name"] = "builtin"
    c["model"]["arch"] = "mobile"
    c["steps"] = 100_000
    c["data"].update(
        crop=96, batch_size=8, synthetic_fraction=0.5, procedural_fraction=0.75, eval_batches=8,
        workers=2, prefetch=6, cache_mb=1024,
    )  # fmt: skip
    c["data"]["procedural"].update(pool=8, reuse=8, scene_size=512)
    c["optim"].update(learning_rate=1e-3, warmup_steps=500)
    c.update(log_every=100, eval_every=1000, checkpoint_every=1000)
    c["tile"] = {"size": 256, "overlap": 32}
    return c

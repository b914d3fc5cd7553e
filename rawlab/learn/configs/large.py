"""``large``: a wider 5-level U-Net (about 2.5 M parameters) for the best quality on a GPU."""

from __future__ import annotations

from rawlab.learn.configs.default import get_config as base


def get_config() -> dict:
    c = base()
    c["name"] = "large"
    c["model"]["arch"] = "large"
    c["steps"] = 300_000
    c["data"].update(crop=256, batch_size=16, eval_batches=16, workers=8, prefetch=16, cache_mb=8192)
    c["optim"].update(learning_rate=5e-4, warmup_steps=2000)
    c.update(log_every=100, eval_every=5000, checkpoint_every=5000)
    return c

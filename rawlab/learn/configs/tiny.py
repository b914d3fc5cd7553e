"""``tiny``: the smallest U-Net, a few hundred steps on small crops; seconds on a CPU (tests, the demo)."""

from __future__ import annotations

from rawlab.learn.configs.default import get_config as base


def get_config() -> dict:
    c = base()
    c["name"] = "tiny"
    c["model"]["arch"] = "tiny"
    c["steps"] = 600  # measured on the demo data: 300 steps end below the noisy input on held-out scenes
    c["data"].update(crop=32, batch_size=16, eval_batches=2, cache_mb=256, store_chunk=64)
    c["optim"].update(learning_rate=3e-3, warmup_steps=20)
    c.update(log_every=10, eval_every=100, checkpoint_every=100)
    c["tile"] = {"size": 128, "overlap": 16}
    return c

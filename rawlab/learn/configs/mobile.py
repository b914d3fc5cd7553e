"""``mobile``: the PMRID-class U-Net (about 1 M parameters, 4 GMAC per megapixel) for phones; a GPU run."""

from __future__ import annotations

from rawlab.learn.configs.default import get_config as base


def get_config() -> dict:
    c = base()
    c["name"] = "mobile"
    c["model"]["arch"] = "mobile"
    c["steps"] = 100_000
    c["data"].update(crop=128, batch_size=16, eval_batches=16, workers=4, prefetch=8, cache_mb=4096)
    c["optim"].update(learning_rate=1e-3, warmup_steps=1000)
    c.update(log_every=100, eval_every=2000, checkpoint_every=2000)
    return c

"""Stage 5 of the built-in model, from stage 4's weights with ``--init``: stage 4's data recipe (the random
sensors' shot-noise term from base ISO up, half the examples photographs) for longer, at a lower peak learning
rate."""

from rawlab.learn.configs import load_config


def get_config() -> dict:
    from pathlib import Path

    c = load_config(Path(__file__).with_name("builtin_stage4.py"))
    c["optim"].update(learning_rate=2e-4, warmup_steps=100)
    return c

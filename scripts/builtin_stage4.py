"""Stage 4 of the built-in model, from stage 3's weights with ``--init``: what ``benchmarks/sources.py`` found
teaches more per step (README, "What each source of training content gives"): the random sensors' shot-noise
term drawn only over the range real sensors use from base ISO up (``a_range``), and half the examples from the
store's photographs instead of a quarter; a lower peak learning rate for fine-tuning."""

from rawlab.learn.configs.builtin import get_config as builtin


def get_config() -> dict:
    c = builtin()
    c["data"]["procedural_fraction"] = 0.5
    c["data"]["procedural"]["a_range"] = [1e-4, 5e-2]
    c["optim"].update(learning_rate=3e-4, warmup_steps=100)
    return c

"""Stage 3 of the built-in model: the ``builtin`` config at a lower peak learning rate (4e-4, 200 warmup steps),
started from stage 2's weights with ``--init``. The command is recorded in the shipped config.json."""

from rawlab.learn.configs.builtin import get_config as builtin


def get_config() -> dict:
    c = builtin()
    c["optim"].update(learning_rate=4e-4, warmup_steps=200)
    return c

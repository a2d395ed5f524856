"""The ``arm-jax`` subcommands: which module defines each and its one-line help.

Nothing here imports JAX: ``arm-jax --help`` and ``arm-jax --version`` read only this table, and
a command's own module (its flags, which take their defaults from the model and training
configs) is imported only when that command runs or shows its help.
"""
from __future__ import annotations

#: command -> (module with its ``register(subparsers)``, one-line help)
COMMANDS = {
    "run": ("arm_jax.cli.experiment", "run the paper's active-learning experiment (many strategies and seeds)"),
    "figure1": ("arm_jax.cli.experiment", "draw the paper's Figure 1: which pairs each strategy compares on a 2-D task"),
    "select": ("arm_jax.cli.data", "train on the labels so far and write the next k pairs to label"),
    "train": ("arm_jax.cli.data", "train the reward model on the labels, report held-out accuracy, save it"),
    "score": ("arm_jax.cli.data", "write the reward of every pool item under a saved model"),
}


def help_of(command: str) -> str:
    """The one-line help of ``command`` (what ``arm-jax --help`` lists)."""
    return COMMANDS[command][1]

"""Flags shared by the subcommands: argument types and the reward model / training group."""
from __future__ import annotations

import argparse

from arm_jax.model import ACTIVATIONS, ModelConfig
from arm_jax.train import TrainConfig


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written; adds "(default: X)" to a flag's help unless the default
    is None/False or the help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: {default})"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"seed must be in [0, 2^32), got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def add_model_flags(group, steps_default: int | None = 1000) -> None:
    """--depth --width --activation --steps --batch-size --lr --weight-decay --max-epochs.

    ``steps_default=None`` leaves --steps unset (a preset fills it in).
    """
    steps_help = "AdamW steps per training" + (f" (default: {steps_default})" if steps_default else " (default: from --preset)")
    group.add_argument("--steps", type=positive_int, default=steps_default, help=steps_help)
    group.add_argument("--batch-size", type=positive_int, default=256, help="comparisons per step (default: 256)")
    group.add_argument("--lr", type=positive_float, default=1e-3, help="AdamW learning rate (default: 1e-3)")
    group.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default: 1e-4)")
    group.add_argument("--max-epochs", type=positive_float, default=None,
                       help="stop updating after this many passes over the labelled pairs "
                            "(default: all --steps; 10 avoids memorising label noise, see benchmarks/RESULTS.md)")
    group.add_argument("--depth", type=positive_int, default=3, help="hidden layers of the reward MLP (default: 3)")
    group.add_argument("--width", type=positive_int, default=64, help="units per hidden layer = feature dimension H (default: 64)")
    group.add_argument("--activation", choices=sorted(ACTIVATIONS), default="relu", help="hidden activation (default: relu)")


def model_and_train_configs(args) -> tuple[ModelConfig, TrainConfig]:
    """The configurations the flags of :func:`add_model_flags` describe."""
    model_config = ModelConfig(depth=args.depth, width=args.width, activation=args.activation)
    train_config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr,
        weight_decay=args.weight_decay, max_epochs=args.max_epochs,
    )
    return model_config, train_config

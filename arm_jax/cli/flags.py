"""Flags shared by the subcommands: argument types and the reward model / training group."""
from __future__ import annotations

import argparse
import dataclasses

from arm_jax.model.config import TrainConfig
from arm_jax.model.network import ACTIVATIONS, ModelConfig


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions as written; adds "(default: X)" to a flag's help unless the default
    is None/False or the help already says it."""

    def _split_lines(self, text, width):
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: {default})"


def _int_at_least(minimum: int, what: str):
    """An argparse type: an integer >= ``minimum``, else "expected <what>, got ..."."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")
non_negative_int = _int_at_least(0, "an integer >= 0")


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


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def count_or_never(text: str) -> int | None:
    """``--random-after``: a count of labelled pairs (an int >= 0) or 'never' (None)."""
    if text == "never":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of labelled pairs or 'never', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of labelled pairs >= 0 or 'never', got {text!r}")
    return value


def _field_defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls)}


# Flags of the reward model and its training: (flag, config class, field, type, help).
# Defaults come from the dataclasses, and the configs are built from this table.
CONFIG_FLAGS = (
    ("--schedule", TrainConfig, "early_stopping", "schedule",
     "early-stopping: hold out 20%% of the labels, stop when their loss stops improving, then "
     "refit on all labels for the epochs chosen (the default: as good as the best hand-tuned "
     "setting from 100 to 10 000 labels, see benchmarks/RESULTS.md); fixed: exactly --steps "
     "steps (or --max-epochs), the paper's protocol. With --depth 0 the default is an exact fit "
     "instead (Newton's method), its Gaussian prior chosen by 5-fold cross-validation"),
    ("--steps", TrainConfig, "steps", positive_int, "AdamW steps per training (early stopping: the most)"),
    ("--batch-size", TrainConfig, "batch_size", positive_int, "comparisons per step"),
    ("--lr", TrainConfig, "learning_rate", positive_float, "AdamW learning rate"),
    ("--weight-decay", TrainConfig, "weight_decay", non_negative_float, "AdamW weight decay"),
    ("--max-epochs", TrainConfig, "max_epochs", positive_float,
     "stop updating after this many passes over the labelled pairs, but not before 50 steps "
     "(default: no cap beyond --steps)"),
    ("--depth", ModelConfig, "depth", non_negative_int,
     "hidden layers of the reward MLP; 0: a linear reward on the embeddings (BT logistic regression, "
     "fitted exactly, its prior chosen by cross-validation)"),
    ("--width", ModelConfig, "width", positive_int, "units per hidden layer = feature dimension H"),
    ("--activation", ModelConfig, "activation", None, "hidden activation"),
)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


SCHEDULES = ("early-stopping", "fixed")


def depth_or_auto(text: str):
    """--depth: an integer >= 0, or "auto" (select: the linear model or the MLP, by held-out loss)."""
    return "auto" if text == "auto" else non_negative_int(text)


def add_model_flags(
    group, steps_default: int | None = TrainConfig.steps, preset_schedule: bool = False, depth_help: str | None = None,
    depth_auto: bool = False,
) -> None:
    """The flags of :data:`CONFIG_FLAGS` (--schedule --steps --batch-size --lr --weight-decay
    --max-epochs --depth --width --activation), with the dataclasses' defaults.

    ``steps_default=None`` leaves --steps unset, ``preset_schedule`` --schedule, ``depth_help``
    (what the default is) --depth (a preset fills them in); ``depth_auto``: --depth also takes "auto".
    """
    for flag, cls, field, kind, help_text in CONFIG_FLAGS:
        default = _field_defaults(cls)[field]
        if flag == "--steps":
            default = steps_default
            help_text += " (default: from --preset)" if default is None else ""
        if flag == "--depth" and depth_help is not None:
            default, help_text = None, f"{help_text} ({depth_help})"
        if flag == "--depth" and depth_auto:
            kind = depth_or_auto
            help_text += ("; auto: fit the linear model and the MLP of --width/--activation (3 layers) and keep "
                          "the one of lower held-out log-loss, said in the log")
        if kind == "schedule":
            default = None if preset_schedule else SCHEDULES[0 if default else 1]
            group.add_argument(flag, choices=SCHEDULES, default=default, help=help_text)
        elif kind is None:
            group.add_argument(flag, choices=sorted(ACTIVATIONS), default=default, help=help_text)
        else:
            group.add_argument(flag, type=kind, default=default, help=help_text)


def add_label_model_flags(group) -> None:
    """--no-tie-model and --no-reliability: how the labels' ties and raters enter the likelihood
    (the same two flags for ``run``, ``select`` and ``train``)."""
    group.add_argument("--no-tie-model", action="store_true",
                       help="train on the decided votes only (Bradley-Terry), dropping tie votes, instead of "
                            "Davidson's tie model (ties still count as labelled pairs)")
    group.add_argument("--no-reliability", action="store_true",
                       help="with labels from several raters, count every rater alike instead of fitting a "
                            "reliability per rater")


def model_and_train_configs(args) -> tuple[ModelConfig, TrainConfig]:
    """The configurations the flags of :func:`add_model_flags` describe."""
    values = {ModelConfig: {}, TrainConfig: {}}
    for flag, cls, field, kind, _ in CONFIG_FLAGS:
        value = getattr(args, _dest(flag))
        values[cls][field] = value == "early-stopping" if kind == "schedule" else value
    return ModelConfig(**values[ModelConfig]), TrainConfig(**values[TrainConfig])

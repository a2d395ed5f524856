"""The selection policy ``select`` and ``train`` use when not told otherwise, and the paper's.

A policy is a reward model and a selection rule. The default is a claim measured in
benchmarks/RESULTS.md ("The default policy, by measurement"): on every real-rater corpus and
pair mode of the benchmark suite, under the empirical annotator, 8 seeds, the linear reward
model with ``iopt`` was never worse than random pairs on the same model by more than one
standard error and had the highest mean label efficiency of the policies studied, while the
paper's policy (the 3-layer MLP with ``dopt``) was worse than random pairs. Run to 3 000 labels,
``iopt`` alone fell behind random pairs late on tweets (beyond two s.e. at 2 000 and 2 500) and
within Amazon reviews; handing off to random pairs from 1 000 labelled pairs on (``random_after``, "The hand-off")
kept its early saving, was level with or ahead of random pairs to 3 000 labels in four of the
five settings and halved ``iopt``'s late loss in the fifth (within an Amazon review). ``--preset paper``
(``POLICIES["paper"]``) keeps the paper's settings reachable.
"""
from __future__ import annotations

from typing import NamedTuple

from arm_jax.errors import InputError
from arm_jax.model.network import ModelConfig

__all__ = ["DEFAULT", "POLICIES", "Policy", "policy"]


class Policy(NamedTuple):
    """A reward model and a selection rule; ``what``: one line for ``--help``."""

    model: ModelConfig
    strategy: str
    what: str
    random_after: int | None = None  # the hand-off (select --random-after): None, never


POLICIES = {
    "default": Policy(
        ModelConfig(depth=0), "iopt",
        "the linear reward model (exact fit, prior by cross-validation) with iopt, handing off to random pairs "
        "from 1000 labelled pairs on: it saved labels early on the real-rater corpora of benchmarks/RESULTS.md "
        "and, to 3000 labels, trailed random pairs by no more than 1.4 standard errors anywhere",
        random_after=1000,
    ),
    "paper": Policy(
        ModelConfig(depth=3, width=64, activation="relu"), "dopt",
        "the 3-layer MLP (64 units, relu) with dopt, the paper's method",
    ),
}
DEFAULT = POLICIES["default"]


def policy(name: str) -> Policy:
    """The policy called ``name``; an InputError naming the choices otherwise."""
    try:
        return POLICIES[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; expected one of: {', '.join(POLICIES)}") from None

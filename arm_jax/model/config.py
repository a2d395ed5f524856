"""TODO docstring."""
from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from arm_jax.errors import InputError
from arm_jax.model import likelihood as likelihood_lib


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings for one fit (AdamW on the Bradley–Terry loss).

    The default is early stopping on held-out labels, then a refit on all labels for the
    epochs it chose: on noisy labels it matched the best hand-tuned fixed schedule at 100,
    1 000 and 10 000 labels (benchmarks/bench_training.py, benchmarks/RESULTS.md). The paper's
    fixed schedule is ``TrainConfig(steps=1000, early_stopping=False)`` (``--schedule fixed``).

    steps: optimiser steps per fit (each a minibatch drawn from the filled buffer rows); with
      early stopping, the most it may take.
    batch_size: comparisons per minibatch (drawn with replacement).
    learning_rate, weight_decay: AdamW.
    max_epochs: optional cap on passes over the filled buffer: steps after the first
      ceil(max_epochs · count / batch_size) leave the parameters unchanged (the program still
      runs ``steps`` steps, so the shape is fixed). ``None`` (the paper's protocol) trains all
      ``steps``. A small labelled set trained for a fixed 1 000 steps is seen hundreds of
      times and its label noise is memorised; see benchmarks/RESULTS.md. With a cap, at
      least ``min_steps`` steps are taken (a tiny labelled set still gets optimised).
    early_stopping: hold out a seeded ``val_fraction`` of the labels (none when fewer than
      ``min_val_labels`` would be held out), evaluate their BT loss every ``eval_every`` steps
      (on at most ``max_val_labels`` of them), keep the best parameters and stop after
      ``patience`` evaluations without an improvement of ``min_delta`` (never before
      ``min_steps``). ``steps`` is then the largest number of steps, ``max_epochs`` a budget.
    refit: after early stopping, train again from the same initialisation on all the labels
      (held-out ones too) for the number of epochs the early stop chose.
    linear_prior: the linear model's (depth 0) prior precision in labels' worth of information
      (see ``_fit_linear``); ``None`` (the default) chooses it by ``linear_prior_rule``.
    linear_prior_rule: ``"cross-validation"`` (the default), ``"evidence"`` or ``"held-out"``;
      see :data:`LINEAR_PRIOR_RULES`.
    ties: when the labels carry votes (``LabelBuffer.counts``), train on their tie votes with
      Davidson's likelihood and fit its tie strength ν (:mod:`arm_jax.model.likelihood`); False
      drops the tie votes (ν = 0: Bradley–Terry on the decided votes).
    annotators: reliability slots: with A > 0, a label of rater j < A (``LabelBuffer.annotator``)
      has the logit scale q_j = exp(u_j) under the prior u_j ~ N(0, 1); the linear model
      alternates exact fits of the head and of the q's; the MLP is fitted with every rater
      alike, the q's are estimated at its rewards, and it is refitted with them held fixed
      (learning them jointly by Adam made it worse than ignoring them). 0 (the default)
      treats every rater alike (q = 1).

    The linear model (``ModelConfig(depth=0)``) with ``early_stopping`` is not trained by AdamW
    at all: it is fitted exactly (:data:`LINEAR_PRIOR_GRID`, ``_fit_linear``), its prior chosen
    by cross-validation (or the evidence, or the held-out split); ``steps``, ``batch_size``, ``learning_rate``,
    ``weight_decay`` and ``max_epochs`` are then unused.
    """

    steps: int = 2000
    batch_size: int = 256
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    max_epochs: float | None = None
    early_stopping: bool = True
    refit: bool = True
    val_fraction: float = 0.2
    min_val_labels: int = 8
    max_val_labels: int = 4096
    eval_every: int = 10
    patience: int = 10
    min_steps: int = 50
    min_delta: float = 1e-4
    linear_prior: float | None = None
    linear_prior_rule: str = "cross-validation"
    ties: bool = True
    annotators: int = 0

    def __post_init__(self):
        if self.steps < 1:
            raise InputError(f"training steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise InputError(f"training batch size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise InputError(f"learning rate must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise InputError(f"weight decay must be >= 0, got {self.weight_decay}")
        if self.max_epochs is not None and not self.max_epochs > 0:
            raise InputError(f"max epochs must be > 0, got {self.max_epochs}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"validation fraction must be in [0, 1), got {self.val_fraction}")
        for name in ("eval_every", "patience", "max_val_labels"):
            if getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', ' ')} must be >= 1, got {getattr(self, name)}")
        if self.linear_prior_rule not in LINEAR_PRIOR_RULES:
            raise InputError(f"linear prior rule must be one of {LINEAR_PRIOR_RULES}, got {self.linear_prior_rule!r}")
        if self.linear_prior is not None and not self.linear_prior > 0:
            raise InputError(f"linear prior must be > 0, got {self.linear_prior}")
        for name in ("min_steps", "min_val_labels", "annotators"):
            if getattr(self, name) < 0:
                raise InputError(f"{name.replace('_', ' ')} must be >= 0, got {getattr(self, name)}")


def _optimizer(config: TrainConfig):
    import optax  # here, not at the top: commands that train no MLP start without importing it

    return optax.adamw(config.learning_rate, weight_decay=config.weight_decay)



class FitStats(NamedTuple):
    """What one fit reports (every field a JAX value; under ``vmap`` each gains the batch axis).

    losses: (steps,) training BT loss of each step's minibatch (0 for steps not run).
    steps_run: () int32, optimiser steps run (where training stopped).
    steps_taken: () int32, optimiser steps the returned parameters were trained for (the best
      held-out evaluation when early stopping, else every active step).
    epochs: () float32, ``steps_taken · batch_size / n_fit``: passes over the fitted labels.
    n_fit, n_val: () int32, labels trained on and held out.
    val_loss, val_accuracy: () float32, held-out BT loss and pairwise accuracy of the returned
      parameters (NaN when nothing is held out).
    prior_precision: () float32, the precision λ of the Gaussian prior on the head β that the
      fit used: chosen on held-out labels by the linear model's exact fit
      (``_fit_linear``), else :data:`arm_jax.model.likelihood.DEFAULT_PRIOR_PRECISION`. The
      last-layer posterior (:func:`arm_jax.selection.posterior.laplace`) takes it.
    tie: () float32, Davidson's fitted tie strength ν (0 without tie votes or for a buffer
      without votes; :mod:`arm_jax.model.likelihood`).
    reliability: (A,) float32 fitted rater reliabilities q_j (``TrainConfig.annotators``).
    """

    losses: jax.Array
    steps_run: jax.Array
    steps_taken: jax.Array
    epochs: jax.Array
    n_fit: jax.Array
    n_val: jax.Array
    val_loss: jax.Array
    val_accuracy: jax.Array
    prior_precision: jax.Array
    tie: jax.Array
    reliability: jax.Array


def _default_prior() -> jax.Array:
    return jnp.float32(likelihood_lib.DEFAULT_PRIOR_PRECISION)
#: How the linear model's prior is chosen along the grid: "cross-validation" (the default:
#: 5-fold, the one-standard-error rule on the held-out BT loss of every label), "evidence"
#: (the Laplace approximation of the marginal likelihood of all the labels) or "held-out"
#: (the one-standard-error rule on the early-stopping split alone). Measured
#: (benchmarks/bench_training.py, benchmarks/RESULTS.md): on real ratings cross-validation is
#: within 0.015 of the best fixed prior from 100 to 1 000 labels where the evidence lags by
#: up to 0.047; on the built-in task the evidence is within 0.022 while cross-validation lags
#: by 0.078 at 100 labels (0.029 at 300, none at 1 000).
LINEAR_PRIOR_RULES = ("cross-validation", "evidence", "held-out")


def final_loss(stats: FitStats) -> jax.Array:
    """Mean minibatch loss over the last 10 % of the steps run (at least one). ``-> ()``."""
    idx = jnp.arange(stats.losses.shape[-1])
    last = stats.steps_run
    window = (idx < last) & (idx >= last - jnp.maximum(last // 10, 1))
    return jnp.sum(jnp.where(window, stats.losses, 0.0)) / jnp.maximum(jnp.sum(window), 1)

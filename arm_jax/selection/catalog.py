"""What the selection layer offers, readable without JAX: every strategy's name, one-line
description and capabilities, and the candidate pair modes.

This is the one definition of those facts. :mod:`arm_jax.selection.registry` binds each
strategy's functions to its :class:`StrategyInfo` (a registry entry *is* a ``StrategyInfo``
with its functions, in the same order); ``arm-jax strategies`` prints this table without
importing JAX (keep this module free of JAX, NumPy and every arm_jax module that imports them).
"""
from __future__ import annotations

import dataclasses

#: The candidate pair modes, the same meaning everywhere in arm-jax (the paper's):
#: ``in-prompt``: two responses to the same prompt; ``cross-prompt``: two responses to
#: different prompts; ``all-cross``: every pair of items, scored without listing them (the
#: pair-score strategies only).
PAIR_MODES = ("in-prompt", "cross-prompt", "all-cross")
#: The modes whose candidates are listed (a uniform sample of pairs).
SAMPLED_PAIR_MODES = PAIR_MODES[:2]
#: Which comparisons the I-optimal rules (``StrategyInfo.spread``) average the predictive
#: variance over (``--target-pairs``): ``candidates``, the round's candidate pairs (S of
#: :func:`arm_jax.selection.scores.spread_matrix`); ``in-prompt``, two responses to one prompt,
#: the comparisons a reward model ranks (S of :func:`arm_jax.selection.scores.prompt_spread`).
TARGET_PAIRS = ("candidates", "in-prompt")


@dataclasses.dataclass(frozen=True)
class StrategyInfo:
    """A strategy as ``arm-jax strategies`` lists it, and what it can do.

    name: the CLI name. description: one line for ``arm-jax strategies``.
    paper: one of the paper's eight strategies (the others are listed "[beyond the paper]").
    additive: defined by a per-pair score (a :class:`~arm_jax.selection.scores.PairScore`), so
      every driver runs it: the pool, all pairs, sharded. False: a batch procedure (random
      draws, greedy batches, clustering, the response rules), which only the pool driver runs.
    uses_past: reads the labelled pairs (I_past or the posterior built on them).
    response_rule: needs the candidates' items (``SelectionInputs.items``): the rules that
      choose among a prompt's responses, and ``eubo`` (each response's own reward).
    budget: picks within a budget (``select --budget``, the experiment's ``cost_aware``):
      every additive strategy (greedily by gain per unit cost), ``random`` (a random order)
      and ``greedy_dopt`` (its knapsack form).
    spread: an I-optimal rule, which averages the predictive variance over target pairs with a
      matrix S (``--target-pairs``: the candidates, or the in-prompt pairs the model will rank).
    """

    name: str
    description: str
    paper: bool = False
    additive: bool = False
    uses_past: bool = False
    response_rule: bool = False
    budget: bool = False
    spread: bool = False


def _additive(name: str, description: str, **flags) -> StrategyInfo:
    """An additive strategy: every driver runs it, within a budget too."""
    return StrategyInfo(name, description, additive=True, budget=True, **flags)


def _response_rule(name: str, description: str) -> StrategyInfo:
    """A rule over a prompt's responses, drawn from the last-layer posterior."""
    return StrategyInfo(name, description, uses_past=True, response_rule=True)


#: Every strategy, in the order ``arm-jax strategies`` lists them (the paper's eight first).
CATALOG: tuple[StrategyInfo, ...] = (
    StrategyInfo("random", "uniform random pairs (the baseline)", paper=True, budget=True),
    _additive("entropy", "pairs whose predicted win probability is closest to 1/2", paper=True),
    _additive("maxdiff", "pairs with the largest predicted reward gap |r_a - r_b|", paper=True),
    _additive("xtx", "D-optimal design matrix X^T X (feature diversity, ignores p(1-p))", paper=True),
    _additive("dopt", "D-optimal Fisher information: gradient of log det sum v x x^T (the paper's method)",
              paper=True),
    _additive("pa_dopt", "past-aware D-opt: log det(I_past + pool information)", paper=True, uses_past=True),
    StrategyInfo("coreset", "Huggins et al. 2016 logistic-regression coreset, sampled by sensitivity", paper=True),
    StrategyInfo("batchbald", "BatchBALD greedy mutual information, Laplace posterior on the last layer",
                 paper=True, uses_past=True),
    StrategyInfo("greedy_dopt", "exact greedy D-optimal batch via Sherman-Morrison", uses_past=True, budget=True),
    _additive("iopt", "I-optimal: largest drop of the mean predictive reward variance tr(S Lambda^-1) over the pool "
              "(Lambda: last-layer posterior precision)", uses_past=True, spread=True),
    StrategyInfo("greedy_iopt", "greedy I-optimal batch via Sherman-Morrison (each pick updates the posterior)",
                 uses_past=True, spread=True),
    StrategyInfo("fw_iopt", "the optimal continuous I-optimal design of the batch (multiplicative algorithm), "
                 "k pairs sampled by its weights", uses_past=True, spread=True),
    _additive("delta_ucb", "DeltaUCB (ActiveUltraFeedback): largest upper confidence bound |mu| + w s of the reward "
              "gap under the posterior", uses_past=True),
    _additive("infomax", "InfoMax (ActiveUltraFeedback): widest confidence interval of P(a beats b) under the "
              "posterior", uses_past=True),
    _additive("bald", "pairwise BALD: mutual information of the label and the head under the posterior (probit "
              "approximation, as BoTorch)", uses_past=True),
    StrategyInfo("uncertain_iopt", "hybrid: the greedy I-optimal batch among the 4k pairs whose preference is most "
                 "uncertain under the posterior", uses_past=True, spread=True),
    StrategyInfo("eubo", "EUBO (as BoTorch's analytic expected utility of the best option): largest "
                 "E[max(r_a, r_b)] under the posterior; a rule for finding the best response", uses_past=True,
                 response_rule=True),
    _response_rule("dts", "double Thompson sampling: per prompt, the argmaxes of two posterior draws that differ"),
    _response_rule("drts", "double reversed Thompson sampling: per prompt, the argmax of one posterior draw against "
                   "the argmin of another"),
    _response_rule("maxmin_lcb", "MaxMinLCB (Pasztor et al. 2024): per prompt, the response whose worst lower "
                   "confidence bound is largest, against its worst opponent"),
)


def listing() -> list[str]:
    """The lines of ``arm-jax strategies``: each strategy's name, padded to the longest, its
    description and, unless it is one of the paper's, ``[beyond the paper]``."""
    width = max(len(info.name) for info in CATALOG)
    return [
        f"{info.name:<{width}}  {info.description}{'' if info.paper else '  [beyond the paper]'}" for info in CATALOG
    ]

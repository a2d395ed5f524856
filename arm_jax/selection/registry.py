"""TODO docstring."""
from __future__ import annotations

from typing import NamedTuple

from arm_jax.errors import InputError
from arm_jax.runtime import precision
from arm_jax.selection.batch import (
    batchbald_strategy,
    coreset_strategy,
    greedy_dopt_strategy,
    greedy_iopt_strategy,
    random_strategy,
    uncertain_iopt_strategy,
)
from arm_jax.selection.rules import response_rule_strategy
from arm_jax.selection.scores import (
    DELTA_UCB,
    DOPT,
    ENTROPY,
    INFOMAX,
    IOPT,
    MAXDIFF,
    PA_DOPT,
    XTX,
    PairScore,
    StrategyFn,
    pair_score_strategy,
)


class Strategy(NamedTuple):
    """A registry entry.

    name: the CLI name. description: one line for ``arm-jax strategies``.
    fn: ``fn(key, inputs, k) -> Selection`` on an explicit candidate pool (every strategy has
      one; for pair-score strategies it is built from ``pair_score``).
    pair_score: :class:`PairScore` for additive strategies, ``None`` for batch procedures
      (random draws, greedy batches, clustering), which only the pool driver runs.
    uses_past: reads the labelled pairs (I_past or the posterior built on them).
    """

    name: str
    fn: StrategyFn
    description: str
    pair_score: PairScore | None = None
    uses_past: bool = False

    @property
    def drivers(self) -> tuple[str, ...]:
        """Where it runs: ``pool`` always; ``all-pairs`` and ``sharded`` for pair scores."""
        return ("pool", "all-pairs", "sharded") if self.pair_score is not None else ("pool",)


# Every strategy traces its matrix products at full float32 (see fisher.MATMUL_PRECISION).
_ENTRIES = [
    Strategy("random", random_strategy, "uniform random pairs (the baseline)"),
    Strategy("entropy", None, "pairs whose predicted win probability is closest to 1/2", ENTROPY),
    Strategy("maxdiff", None, "pairs with the largest predicted reward gap |r_a - r_b|", MAXDIFF),
    Strategy("xtx", None, "D-optimal design matrix X^T X (feature diversity, ignores p(1-p))", XTX),
    Strategy("dopt", None, "D-optimal Fisher information: gradient of log det sum v x x^T (the paper's method)", DOPT),
    Strategy("pa_dopt", None, "past-aware D-opt: log det(I_past + pool information)", PA_DOPT, uses_past=True),
    Strategy("coreset", coreset_strategy, "Huggins et al. 2016 logistic-regression coreset, sampled by sensitivity"),
    Strategy("batchbald", batchbald_strategy, "BatchBALD greedy mutual information, Laplace posterior on the last layer", uses_past=True),
    Strategy("greedy_dopt", greedy_dopt_strategy, "exact greedy D-optimal batch via Sherman-Morrison", uses_past=True),
    Strategy("iopt", None, "I-optimal: largest drop of the mean predictive reward variance tr(S Lambda^-1) over the pool "
             "(Lambda: last-layer posterior precision)", IOPT, uses_past=True),
    Strategy("greedy_iopt", greedy_iopt_strategy, "greedy I-optimal batch via Sherman-Morrison (each pick updates "
             "the posterior)", uses_past=True),
    Strategy("delta_ucb", None, "DeltaUCB (ActiveUltraFeedback): largest upper confidence bound |mu| + w s of the reward "
             "gap under the posterior", DELTA_UCB, uses_past=True),
    Strategy("infomax", None, "InfoMax (ActiveUltraFeedback): widest confidence interval of P(a beats b) under the "
             "posterior", INFOMAX, uses_past=True),
    Strategy("uncertain_iopt", uncertain_iopt_strategy, "hybrid: the greedy I-optimal batch among the 4k pairs whose "
             "preference is most uncertain under the posterior", uses_past=True),
    Strategy("dts", response_rule_strategy("dts"), "double Thompson sampling: per prompt, the argmaxes of two "
             "posterior draws that differ", uses_past=True),
    Strategy("drts", response_rule_strategy("drts"), "double reversed Thompson sampling: per prompt, the argmax of "
             "one posterior draw against the argmin of another", uses_past=True),
    Strategy("maxmin_lcb", response_rule_strategy("maxmin_lcb"), "MaxMinLCB (Pasztor et al. 2024): per prompt, the "
             "response whose worst lower confidence bound is largest, against its worst opponent", uses_past=True),
]
STRATEGIES: dict[str, Strategy] = {
    s.name: s._replace(fn=precision.full_precision(s.fn if s.pair_score is None else pair_score_strategy(s.pair_score)))
    for s in _ENTRIES
}
#: Strategies defined by a per-pair score: every driver runs them (pool, all pairs, sharded).
PAIR_SCORE_STRATEGIES = tuple(name for name, s in STRATEGIES.items() if s.pair_score is not None)
#: Strategies that choose among a prompt's responses: they need ``SelectionInputs.items``.
RESPONSE_RULES = ("dts", "drts", "maxmin_lcb")
#: Strategies that read the labelled pairs.
PAST_AWARE = frozenset(name for name, s in STRATEGIES.items() if s.uses_past)

PAPER_STRATEGIES = ("random", "entropy", "maxdiff", "xtx", "dopt", "pa_dopt", "coreset", "batchbald")


def get_strategy(name: str) -> Strategy:
    """Look a strategy up by its CLI name; a clear InputError for an unknown one."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise InputError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}") from None


#: The strategies ``select --budget`` runs: every pair score (greedy by score per unit cost),
#: ``random`` (a random order, each pair that still fits) and ``greedy_dopt`` (its knapsack form).
BUDGET_STRATEGIES = ("random", "greedy_dopt")  # besides every strategy of PAIR_SCORE_STRATEGIES

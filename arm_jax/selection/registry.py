"""The strategies by CLI name: each :class:`~arm_jax.selection.catalog.StrategyInfo` of the
catalog bound to its functions (:class:`Strategy`), and the names by capability.

The drivers (:func:`arm_jax.selection.pool.select`, :mod:`arm_jax.selection.allpairs`,
:mod:`arm_jax.selection.sharded`, the experiment) take a :class:`Strategy` (or a name, or a
:class:`~arm_jax.selection.scores.PairScore` of your own) and pass the object itself to their
jit-compiled kernels; :func:`resolve` turns what a caller gave into a :class:`Strategy`.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Union

import numpy as np

from arm_jax.errors import InputError
from arm_jax.runtime import precision
from arm_jax.selection.batch import (
    batchbald_strategy,
    coreset_strategy,
    explore_strategy,
    fw_iopt_strategy,
    greedy_dopt_strategy,
    greedy_iopt_strategy,
    handoff_strategy,
    random_strategy,
    uncertain_iopt_strategy,
)
from arm_jax.selection.catalog import CATALOG, StrategyInfo
from arm_jax.selection.rules import eubo_strategy, response_rule_strategy
from arm_jax.selection.scores import (
    BALD,
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


@dataclasses.dataclass(frozen=True)
class Strategy(StrategyInfo):
    """A registry entry: its :class:`~arm_jax.selection.catalog.StrategyInfo` (name,
    description, capabilities) with its functions bound. Hashable, so a jit-compiled kernel
    takes it as a static argument.

    fn: ``fn(key, inputs, k) -> Selection`` on an explicit candidate pool (every strategy has
      one; for the additive strategies it is built from ``pair_score``), traced at full float32
      (see :data:`arm_jax.runtime.precision.MATMUL_PRECISION`).
    pair_score: the :class:`PairScore` of an additive strategy, ``None`` for the batch
      procedures (random draws, greedy batches, clustering, response rules), which only the
      pool driver runs.
    """

    fn: StrategyFn | None = None
    pair_score: PairScore | None = None

    def __post_init__(self):
        if self.additive != (self.pair_score is not None):
            raise ValueError(f"strategy {self.name!r}: additive={self.additive} but pair_score={self.pair_score}")

    @property
    def drivers(self) -> tuple[str, ...]:
        """Where it runs: ``pool`` always; ``all-pairs`` and ``sharded`` for pair scores."""
        return ("pool", "all-pairs", "sharded") if self.pair_score is not None else ("pool",)


def bind(info: StrategyInfo, fn: StrategyFn | None = None, pair_score: PairScore | None = None) -> Strategy:
    """The :class:`Strategy` of ``info`` with its functions: ``fn`` for a batch procedure, or
    the ``pair_score`` of an additive one (its pool function is then built from it)."""
    fn = pair_score_strategy(pair_score) if pair_score is not None else fn
    fields = {f.name: getattr(info, f.name) for f in dataclasses.fields(StrategyInfo)}
    return Strategy(**fields, fn=precision.full_precision(fn), pair_score=pair_score)


#: What each strategy of the catalog runs: a PairScore (additive) or its pool function.
_BINDINGS: dict[str, PairScore | StrategyFn] = {
    "random": random_strategy,
    "entropy": ENTROPY,
    "maxdiff": MAXDIFF,
    "xtx": XTX,
    "dopt": DOPT,
    "pa_dopt": PA_DOPT,
    "coreset": coreset_strategy,
    "batchbald": batchbald_strategy,
    "greedy_dopt": greedy_dopt_strategy,
    "iopt": IOPT,
    "greedy_iopt": greedy_iopt_strategy,
    "fw_iopt": fw_iopt_strategy,
    "delta_ucb": DELTA_UCB,
    "infomax": INFOMAX,
    "bald": BALD,
    "uncertain_iopt": uncertain_iopt_strategy,
    "eubo": eubo_strategy,
    "dts": response_rule_strategy("dts"),
    "drts": response_rule_strategy("drts"),
    "maxmin_lcb": response_rule_strategy("maxmin_lcb"),
}


def _bind_catalog() -> dict[str, Strategy]:
    """Every catalog entry bound to its :data:`_BINDINGS`, in the catalog's order."""
    strategies = {}
    for info in CATALOG:
        what = _BINDINGS[info.name]
        strategies[info.name] = bind(info, pair_score=what) if isinstance(what, PairScore) else bind(info, fn=what)
    return strategies


STRATEGIES: dict[str, Strategy] = _bind_catalog()


def names_where(capability: Callable[[Strategy], bool]) -> tuple[str, ...]:
    """The names of the registered strategies that have ``capability``, in registry order."""
    return tuple(name for name, s in STRATEGIES.items() if capability(s))


# The names by capability, for the callers that list or check names (the one place they are made).
#: Strategies defined by a per-pair score: every driver runs them (pool, all pairs, sharded).
PAIR_SCORE_STRATEGIES = names_where(lambda s: s.pair_score is not None)
#: Strategies that choose among a prompt's responses: they need ``SelectionInputs.items``.
RESPONSE_RULES = names_where(lambda s: s.response_rule)
#: The I-optimal rules, which read the target pairs' S (``--target-pairs``).
SPREAD_RULES = names_where(lambda s: s.spread)
#: Strategies that read the labelled pairs.
PAST_AWARE = frozenset(names_where(lambda s: s.uses_past))
#: The paper's eight strategies.
PAPER_STRATEGIES = names_where(lambda s: s.paper)
#: The strategies ``select --budget`` runs besides every one of :data:`PAIR_SCORE_STRATEGIES`
#: (greedy by score per unit cost): ``random`` (a random order, each pair that still fits) and
#: ``greedy_dopt`` (its knapsack form).
BUDGET_STRATEGIES = names_where(lambda s: s.budget and s.pair_score is None)


def get_strategy(name: str) -> Strategy:
    """Look a strategy up by its CLI name; a clear InputError for an unknown one."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise InputError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}") from None


@functools.lru_cache(maxsize=None)
def custom_strategy(score: PairScore, name: str = "custom", description: str = "a pair score of your own") -> Strategy:
    """A :class:`Strategy` of your own :class:`PairScore`: every driver runs it (pool, all
    pairs, sharded, within a budget); it reads the labelled pairs when ``score.uses_past``.
    The same arguments give the same object, so its kernels compile once."""
    info = StrategyInfo(name, description, additive=True, budget=True, uses_past=score.uses_past)
    return bind(info, pair_score=score)


def check_random_after(random_after, name: str = "random-after") -> None:
    """InputError unless ``random_after`` (the hand-off's count, ``name`` in the message) is None
    or a whole number >= 0."""
    if random_after is not None and (isinstance(random_after, bool) or not isinstance(random_after, (int, np.integer))
                                     or random_after < 0):
        raise InputError(f"{name} must be a whole number of labelled pairs >= 0, got {random_after!r}")


@functools.lru_cache(maxsize=None)
def hedged(strategy: "Strategy", explore: float, random_after: int | None = None) -> Strategy:
    """``strategy`` with a fraction ``explore`` (0 … 1) of each batch drawn at random instead
    (:func:`arm_jax.selection.batch.explore_strategy`) and, given ``random_after``, every batch
    drawn at random once that many pairs are labelled (:func:`arm_jax.selection.batch.handoff_strategy`;
    it reads the labelled rows, so the result ``uses_past``); ``strategy`` itself for 0 and None,
    and for ``random``. A batch procedure: the pool driver runs it, not all pairs, a budget or
    sharding. The same arguments give the same object, so its kernels compile once."""
    if not 0.0 <= explore <= 1.0:
        raise InputError(f"explore must be a fraction in [0, 1], got {explore}")
    check_random_after(random_after)
    if (explore == 0.0 and random_after is None) or strategy.name == "random":
        return strategy
    name, what, fn = strategy.name, strategy.description, strategy.fn
    if explore:
        name, what, fn = f"{name}+explore{explore:g}", f"{what}; {explore:g} of each batch drawn at random", \
            explore_strategy(fn, explore)
    if random_after is not None:
        name, what, fn = f"{name}+random_after{random_after}", \
            f"{what}; every batch drawn at random from {random_after} labelled pairs on", handoff_strategy(fn, random_after)
    info = StrategyInfo(name, what, uses_past=strategy.uses_past or random_after is not None,
                        response_rule=strategy.response_rule)
    return bind(info, fn=fn)


#: What the drivers accept as a strategy: its registry name, a :class:`Strategy`, or a :class:`PairScore`.
StrategyLike = Union[str, Strategy, PairScore]


def resolve(strategy: StrategyLike) -> Strategy:
    """What a driver runs: a registered strategy by name (InputError for an unknown one), a
    :class:`Strategy` itself, or a :class:`PairScore` as :func:`custom_strategy`."""
    if isinstance(strategy, Strategy):
        return strategy
    if isinstance(strategy, PairScore):
        return custom_strategy(strategy)
    return get_strategy(strategy)

"""TODO docstring."""
from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from arm_jax.errors import InputError, SelectionFailed
from arm_jax.model import likelihood
from arm_jax.runtime import programs
from arm_jax.selection import fisher
from arm_jax.selection.batch import greedy_dopt_budget_strategy
from arm_jax.selection.registry import (
    BUDGET_STRATEGIES,
    PAIR_SCORE_STRATEGIES,
    STRATEGIES,
    Strategy,
    StrategyLike,
    resolve,
)
from arm_jax.selection.rules import _need_items
from arm_jax.selection.scores import (
    PairItems,
    PairScore,
    Selection,
    SelectionInputs,
    make_inputs,
    pair_gains,
)


def validate_selection(phi_diff, beta, k, valid=None, past_phi_diff=None, past_mask=None) -> jax.Array | None:
    """Boundary checks; raises InputError with a one-line message. Returns ``phi_diff`` as the
    float32 device array it checked (None for :class:`arm_jax.runtime.mesh.Rows`, which whoever
    builds them checks): the candidates are checked finite on the device
    (:func:`check_finite_on_device`), the small inputs on the host."""
    fisher.check_shapes(phi_diff, beta, past_phi_diff, past_mask)
    shape = np.shape(phi_diff)
    n = shape[0]
    if valid is not None and np.shape(valid) != (n,):
        raise InputError(f"valid must have shape ({n},) to match phi_diff {shape}, got {np.shape(valid)}")
    x = None if hasattr(phi_diff, "rows") else check_finite_on_device("phi_diff", phi_diff)
    fisher.check_finite(beta=beta, past_phi_diff=past_phi_diff)
    fisher.check_k(k)
    n_valid = n if valid is None else int(np.count_nonzero(np.asarray(valid)))
    if k > n_valid:
        raise InputError(f"k = {k} is larger than the pool of {n_valid} candidate pairs")
    return x


@jax.jit
def _count_not_finite(x: jax.Array) -> jax.Array:
    """() int32: how many entries of ``x`` are NaN or ±inf."""
    return jnp.count_nonzero(~jnp.isfinite(x))


def check_finite_on_device(label: str, x) -> jax.Array:
    """``x`` as a float32 device array, checked finite there: only the count of NaN/inf
    entries comes back to the host (not the array). InputError "LABEL contains N NaN/inf
    values" (:func:`arm_jax.selection.fisher.check_finite`'s message) when there are any."""
    x = jax.device_put(np.asarray(x, np.float32)) if isinstance(x, np.ndarray) else jnp.asarray(x, jnp.float32)
    bad = int(programs.call(_count_not_finite, "arm_jax.selection.pool.count_not_finite", (x,)))
    if bad:
        raise InputError(f"{label} contains {bad} NaN/inf values")
    return x


def _check_items(items: PairItems, diff_shape) -> None:
    n, h = diff_shape
    k_items = np.shape(items.phi)[0]
    if np.shape(items.phi)[1:] != (h,):
        raise InputError(f"items.phi must have shape (K, {h}), got {np.shape(items.phi)}")
    for field in ("a", "b", "group"):
        if np.shape(getattr(items, field)) != (n,):
            raise InputError(f"items.{field} must have shape ({n},) to match phi_diff {diff_shape}, "
                             f"got {np.shape(getattr(items, field))}")
    a, b = np.asarray(items.a), np.asarray(items.b)
    if n and (a.min() < 0 or b.min() < 0 or a.max() >= k_items or b.max() >= k_items or np.any(a == b)):
        raise InputError(f"items.a and items.b must be distinct rows of items.phi (0..{k_items - 1})")


def check_inputs(inputs: SelectionInputs) -> None:
    """The kernels' contract, asserted when traced (chex): float32 (N, H) pairs, (H,) head,
    (N,) bool mask, (M, H) past with an (M,) bool mask."""
    chex.assert_rank(inputs.phi_diff, 2)
    n, h = inputs.phi_diff.shape
    chex.assert_shape(inputs.beta, (h,))
    chex.assert_shape(inputs.valid, (n,))
    chex.assert_shape(inputs.past_phi_diff, (None, h))
    chex.assert_shape(inputs.past_mask, inputs.past_phi_diff.shape[:1])
    chex.assert_type([inputs.phi_diff, inputs.beta, inputs.past_phi_diff], jnp.float32)
    chex.assert_type([inputs.valid, inputs.past_mask], bool)
    if inputs.past_weight is not None:
        chex.assert_shape(inputs.past_weight, inputs.past_mask.shape)
        chex.assert_type(inputs.past_weight, jnp.float32)


@functools.partial(jax.jit, static_argnames=("strategy", "k"))
def select_program(strategy: Strategy, key, inputs, k):
    check_inputs(inputs)
    return strategy.fn(key, inputs, k)


def check_selection(name: str, scores) -> None:
    """Raise :class:`SelectionFailed` unless every picked score is finite."""
    bad = int(np.size(scores) - np.count_nonzero(np.isfinite(np.asarray(scores))))
    if bad:
        raise SelectionFailed(
            f"strategy {name!r}: {bad} of {np.size(scores)} picked scores are not finite; "
            "the information matrix could not be factorised even with a larger ridge"
        )


def select_within_budget(
    name: StrategyLike, key: jax.Array, phi_diff, beta, costs, budget: float, k_max: int, valid=None,
    past_phi_diff=None, past_mask=None, prior_precision: float = likelihood.DEFAULT_PRIOR_PRECISION,
    past_weight=None, tie=None, spread=None,
) -> Selection:
    """The batch of largest gain per unit cost whose total cost is at most ``budget`` (and at
    most ``k_max`` pairs). ``costs``: (N,) > 0, each candidate's cost (e.g. the two items'
    reading times). Additive scores: greedily by score / cost (entropy by its entropy), each pair
    that still fits; ``random``: in a random order; ``greedy_dopt``: the knapsack greedy
    D-optimal batch (:func:`greedy_dopt_budget_strategy`). ``name``: the strategy (its name,
    a :class:`~arm_jax.selection.registry.Strategy` or a :class:`PairScore`). Returns the picks
    in order (fewer than ``k_max`` when the budget runs out). ``spread``: the I-optimal rules'
    S (:class:`SelectionInputs`). InputError for strategies without a budget form or bad costs."""
    strategy = resolve(name)
    if tie is not None and not (np.isfinite(tie) and tie >= 0):
        raise InputError(f"tie strength must be a number >= 0, got {tie}")
    if not strategy.budget:
        raise InputError(
            f"strategy {strategy.name!r} cannot pick within a budget; use one of: "
            + ", ".join(BUDGET_STRATEGIES + PAIR_SCORE_STRATEGIES)
        )
    costs = np.asarray(costs, np.float64)
    if costs.shape != (np.shape(phi_diff)[0],) or not np.all(np.isfinite(costs)) or np.any(costs <= 0):
        raise InputError("pair costs must be finite and > 0, one per candidate")
    if not (np.isfinite(budget) and budget > 0):
        raise InputError(f"--budget must be a positive number, got {budget}")
    phi_diff = validate_selection(phi_diff, beta, 1, valid, past_phi_diff, past_mask)
    fisher.check_spread(spread, np.shape(phi_diff)[1])
    inputs = make_inputs(
        phi_diff, beta, valid, past_phi_diff, past_mask, prior_precision, None, past_weight, tie, spread
    )
    ok = np.asarray(inputs.valid)
    # at most every candidate, not every valid one: a count that changes from round to round
    # would compile the knapsack again (picks past the last that fits are -1 and dropped)
    k_max = int(max(1, min(k_max, ok.size)))
    if strategy.pair_score is not None:
        gain = np.asarray(_pair_gains_jit(strategy.pair_score, inputs), np.float64)
        check_selection(strategy.name, gain[ok])
        ratio = gain / costs
    elif strategy.name == "greedy_dopt":
        return _knapsack_within_budget(key, inputs, costs, budget, k_max)
    else:  # random
        gain = np.asarray(jax.random.uniform(key, ok.shape))
        ratio = gain  # a random order, whatever the cost
    order = np.argsort(-np.where(ok, ratio, -np.inf), kind="stable")
    idx = order[fit_in_order(costs[order], ok[order], budget, k_max)].astype(np.int32)
    return Selection(idx, np.asarray(gain, np.float32)[idx])


def _knapsack_within_budget(key, inputs: SelectionInputs, costs: np.ndarray, budget: float, k_max: int) -> Selection:
    """``greedy_dopt``'s knapsack form (:func:`greedy_dopt_budget_strategy`) within ``budget``:
    its picks in order, those past the last that fits dropped. ``costs``: (N,) float64."""
    chosen = _budget_dopt_jit(key, inputs, k_max, jnp.asarray(costs, jnp.float32), jnp.float32(budget))
    idx, sc = np.asarray(chosen.indices), np.asarray(chosen.scores)
    keep = idx >= 0
    idx, sc = idx[keep], sc[keep]
    # the knapsack ran in float32: hold the total to the budget in float64
    within = np.cumsum(costs[idx]) <= budget
    idx, sc = idx[within], sc[within]
    check_selection("greedy_dopt", sc)
    return Selection(idx.astype(np.int32), sc)


def fit_in_order(costs: np.ndarray, valid: np.ndarray, budget: float, k_max: int) -> np.ndarray:
    """(N,) bool: which candidates, taken in this order, are picked by the budget greedy: each
    valid one whose cost still fits what is left of ``budget`` (then subtracted), at most
    ``k_max`` of them. One ``lax.scan`` in float64 (the host loop's arithmetic, so the same
    picks), compiled once per number of candidates. ``costs``: (N,) float64 > 0."""
    with jax.enable_x64(True):
        taken = _fit_in_order_jit(
            np.asarray(costs, np.float64), np.asarray(valid, bool), np.float64(budget), np.int64(k_max)
        )
        return np.asarray(taken)


@jax.jit
def _fit_in_order_jit(costs, valid, budget, k_max):
    """The scan of :func:`fit_in_order`; its carry is (budget left, picks so far)."""

    def step(carry, cost_ok):
        left, n = carry
        cost, ok = cost_ok
        take = ok & (cost <= left) & (n < k_max)
        return (jnp.where(take, left - cost, left), n + take.astype(n.dtype)), take

    _, taken = jax.lax.scan(step, (budget, jnp.zeros((), k_max.dtype)), (costs, valid))
    return taken


@functools.partial(jax.jit, static_argnames=("k",))
def _budget_dopt_jit(key, inputs, k, costs, budget):
    return greedy_dopt_budget_strategy(key, inputs, k, costs, budget)


@functools.partial(jax.jit, static_argnames=("spec",))
def _pair_gains_jit(spec: PairScore, inputs):
    return pair_gains(spec, inputs)


def select(
    name: StrategyLike,
    key: jax.Array,
    phi_diff,
    beta,
    k: int,
    valid=None,
    past_phi_diff=None,
    past_mask=None,
    prior_precision: float = likelihood.DEFAULT_PRIOR_PRECISION,
    items: PairItems | None = None,
    past_weight=None,
    tie=None,
    spread=None,
) -> Selection:
    """Validate the inputs, then run strategy ``name`` (jit-compiled) and return k picks.

    name: the strategy: its registry name, a :class:`~arm_jax.selection.registry.Strategy`,
    or a :class:`PairScore` of your own (:func:`arm_jax.selection.registry.resolve`); the
    compiled kernel takes the strategy object itself as its static argument.
    phi_diff: (N, H) feature differences; beta: (H,); valid: optional (N,) bool;
    past_phi_diff / past_mask: optional labelled pairs (used by the past-aware strategies);
    prior_precision: λ of the head's prior (the fit's ``FitStats.prior_precision``);
    items: the candidates' items (:class:`PairItems`; required by the response rules,
    :data:`arm_jax.selection.registry.RESPONSE_RULES`);
    past_weight, tie: the labelled rows' votes and Davidson's ν (:class:`SelectionInputs`);
    spread: the S of the I-optimal rules (:func:`arm_jax.selection.scores.prompt_spread`; None: the
    candidates'). Raises :class:`~arm_jax.errors.InputError` on an unknown name, k ≤ 0, k > number
    of valid candidates, NaN/inf, or mismatched shapes; :class:`SelectionFailed` rather than
    returning picks whose scores are not finite.
    """
    strategy = resolve(name)
    phi_diff = validate_selection(phi_diff, beta, k, valid, past_phi_diff, past_mask)
    if not (np.isfinite(prior_precision) and prior_precision > 0):
        raise InputError(f"prior precision must be a positive number, got {prior_precision}")
    if items is not None:
        _check_items(items, np.shape(phi_diff))
    elif strategy.response_rule:
        _need_items(None, strategy.name)
    if tie is not None and not (np.isfinite(tie) and tie >= 0):
        raise InputError(f"tie strength must be a number >= 0, got {tie}")
    fisher.check_spread(spread, np.shape(phi_diff)[1])
    inputs = make_inputs(
        phi_diff, beta, valid, past_phi_diff, past_mask, prior_precision, items, past_weight, tie, spread
    )
    static = dict(strategy=strategy, k=int(k))
    if STRATEGIES.get(strategy.name) is strategy:  # a built-in: its name says what it computes
        chosen = programs.call(select_program, "arm_jax.selection.pool.select_program", (), dict(key=key, inputs=inputs),
                                  static, static_key=f"{strategy.name}|k={int(k)}")
    else:
        chosen = select_program(key=key, inputs=inputs, **static)
    check_selection(strategy.name, chosen.scores)
    return chosen

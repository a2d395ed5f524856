"""TODO docstring."""
from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np

from arm_jax.errors import InputError, SelectionFailed
from arm_jax.model import likelihood
from arm_jax.selection import fisher
from arm_jax.selection.batch import greedy_dopt_budget_strategy
from arm_jax.selection.registry import (
    BUDGET_STRATEGIES,
    PAIR_SCORE_STRATEGIES,
    RESPONSE_RULES,
    STRATEGIES,
    get_strategy,
)
from arm_jax.selection.rules import _need_items
from arm_jax.selection.scores import (
    PairItems,
    Selection,
    SelectionInputs,
    make_inputs,
    pair_gains,
)


def validate_selection(phi_diff, beta, k, valid=None, past_phi_diff=None, past_mask=None) -> None:
    """Host-side boundary checks; raises InputError with a one-line message."""
    fisher.check_shapes(phi_diff, beta, past_phi_diff, past_mask)
    shape = np.shape(phi_diff)
    n = shape[0]
    if valid is not None and np.shape(valid) != (n,):
        raise InputError(f"valid must have shape ({n},) to match phi_diff {shape}, got {np.shape(valid)}")
    # rows given by a function (arm_jax.runtime.mesh.Rows) are checked by whoever builds them
    rows = None if hasattr(phi_diff, "rows") else phi_diff
    fisher.check_finite(phi_diff=rows, beta=beta, past_phi_diff=past_phi_diff)
    fisher.check_k(k)
    n_valid = n if valid is None else int(np.count_nonzero(np.asarray(valid)))
    if k > n_valid:
        raise InputError(f"k = {k} is larger than the pool of {n_valid} candidate pairs")


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


@functools.partial(jax.jit, static_argnames=("name", "k"))
def _select_jit(name, key, inputs, k):
    check_inputs(inputs)
    return STRATEGIES[name].fn(key, inputs, k)


def check_selection(name: str, scores) -> None:
    """Raise :class:`SelectionFailed` unless every picked score is finite."""
    bad = int(np.size(scores) - np.count_nonzero(np.isfinite(np.asarray(scores))))
    if bad:
        raise SelectionFailed(
            f"strategy {name!r}: {bad} of {np.size(scores)} picked scores are not finite; "
            "the information matrix could not be factorised even with a larger ridge"
        )


def select_within_budget(
    name: str, key: jax.Array, phi_diff, beta, costs, budget: float, k_max: int, valid=None,
    past_phi_diff=None, past_mask=None, prior_precision: float = likelihood.DEFAULT_PRIOR_PRECISION,
    past_weight=None, tie=None,
) -> Selection:
    """The batch of largest gain per unit cost whose total cost is at most ``budget`` (and at
    most ``k_max`` pairs). ``costs``: (N,) > 0, each candidate's cost (e.g. the two items'
    reading times). Additive scores: greedily by score / cost (entropy by its entropy), each pair
    that still fits; ``random``: in a random order; ``greedy_dopt``: the knapsack greedy
    D-optimal batch (:func:`greedy_dopt_budget_strategy`). Returns the picks in order (fewer
    than ``k_max`` when the budget runs out). InputError for other strategies or bad costs."""
    get_strategy(name)
    if tie is not None and not (np.isfinite(tie) and tie >= 0):
        raise InputError(f"tie strength must be a number >= 0, got {tie}")
    if name not in BUDGET_STRATEGIES + PAIR_SCORE_STRATEGIES:
        raise InputError(
            f"strategy {name!r} cannot pick within a budget; use one of: "
            + ", ".join(BUDGET_STRATEGIES + PAIR_SCORE_STRATEGIES)
        )
    costs = np.asarray(costs, np.float64)
    if costs.shape != (np.shape(phi_diff)[0],) or not np.all(np.isfinite(costs)) or np.any(costs <= 0):
        raise InputError("pair costs must be finite and > 0, one per candidate")
    if not (np.isfinite(budget) and budget > 0):
        raise InputError(f"--budget must be a positive number, got {budget}")
    validate_selection(phi_diff, beta, 1, valid, past_phi_diff, past_mask)
    inputs = make_inputs(phi_diff, beta, valid, past_phi_diff, past_mask, prior_precision, None, past_weight, tie)
    ok = np.asarray(inputs.valid)
    k_max = int(max(1, min(k_max, ok.sum())))
    if name == "greedy_dopt":
        chosen = _budget_dopt_jit(key, inputs, k_max, jnp.asarray(costs, jnp.float32), jnp.float32(budget))
        idx, sc = np.asarray(chosen.indices), np.asarray(chosen.scores)
        keep = idx >= 0
        idx, sc = idx[keep], sc[keep]
        # the knapsack ran in float32: hold the total to the budget in float64
        within = np.cumsum(costs[idx]) <= budget
        idx, sc = idx[within], sc[within]
        check_selection(name, sc)
        return Selection(idx.astype(np.int32), sc)
    if name == "random":
        gain = np.asarray(jax.random.uniform(key, ok.shape))
        ratio = gain  # a random order, whatever the cost
    else:
        gain = np.asarray(_pair_gains_jit(name, inputs), np.float64)
        check_selection(name, gain[ok])
        ratio = gain / costs
    order = np.argsort(-np.where(ok, ratio, -np.inf), kind="stable")
    picks, left = [], float(budget)
    for j in order[: ok.sum()]:
        if costs[j] <= left:
            picks.append(int(j))
            left -= costs[j]
            if len(picks) == k_max:
                break
    idx = np.asarray(picks, np.int32)
    return Selection(idx, np.asarray(gain, np.float32)[idx])


@functools.partial(jax.jit, static_argnames=("k",))
def _budget_dopt_jit(key, inputs, k, costs, budget):
    return greedy_dopt_budget_strategy(key, inputs, k, costs, budget)


@functools.partial(jax.jit, static_argnames=("name",))
def _pair_gains_jit(name, inputs):
    return pair_gains(STRATEGIES[name].pair_score, inputs)


def select(
    name: str,
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
) -> Selection:
    """Validate the inputs, then run strategy ``name`` (jit-compiled) and return k picks.

    phi_diff: (N, H) feature differences; beta: (H,); valid: optional (N,) bool;
    past_phi_diff / past_mask: optional labelled pairs (used by the past-aware strategies);
    prior_precision: λ of the head's prior (the fit's ``FitStats.prior_precision``);
    items: the candidates' items (:class:`PairItems`; required by :data:`RESPONSE_RULES`);
    past_weight, tie: the labelled rows' votes and Davidson's ν (:class:`SelectionInputs`). Raises :class:`~arm_jax.errors.InputError` on an unknown name, k ≤ 0, k > number
    of valid candidates, NaN/inf, or mismatched shapes; :class:`SelectionFailed` rather than
    returning picks whose scores are not finite.
    """
    get_strategy(name)
    validate_selection(phi_diff, beta, k, valid, past_phi_diff, past_mask)
    if not (np.isfinite(prior_precision) and prior_precision > 0):
        raise InputError(f"prior precision must be a positive number, got {prior_precision}")
    if items is not None:
        _check_items(items, np.shape(phi_diff))
    elif name in RESPONSE_RULES:
        _need_items(None, name)
    if tie is not None and not (np.isfinite(tie) and tie >= 0):
        raise InputError(f"tie strength must be a number >= 0, got {tie}")
    inputs = make_inputs(phi_diff, beta, valid, past_phi_diff, past_mask, prior_precision, items, past_weight, tie)
    chosen = _select_jit(name, key, inputs, int(k))
    check_selection(name, chosen.scores)
    return chosen

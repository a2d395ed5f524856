"""The design math runs at full float32 on every backend.

On recent NVIDIA GPUs JAX's default computes float32 matrix products in TF32; on the CPU the
precision flag changes nothing, so these tests read the lowered programs instead: every
``dot_general`` of a selection must ask for HIGHEST, also when the caller's default is lower.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax.model import likelihood
from arm_jax.selection import allpairs, fisher, registry, sharded
from arm_jax.selection import pool as pool_lib
from arm_jax.selection import scores as strategies

DOT = re.compile(r"stablehlo\.dot_general.*precision = \[(\w+), (\w+)\]")


def dot_precisions(lowered) -> list[tuple[str, str]]:
    text = lowered.as_text()
    n_dots = text.count("stablehlo.dot_general")
    found = DOT.findall(text)
    assert len(found) == n_dots, "a dot_general without a precision attribute"
    return found


def assert_all_highest(lowered):
    found = dot_precisions(lowered)
    assert found, "no matrix product in the program: the test checks nothing"
    assert set(found) == {("HIGHEST", "HIGHEST")}, found


@pytest.fixture(scope="module")
def pool():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(40, 6)), jnp.float32)
    beta = jnp.asarray(rng.normal(size=6), jnp.float32)
    past = jnp.asarray(rng.normal(size=(10, 6)), jnp.float32)
    # the items behind the pairs (item 2i has features x_i, item 2i+1 zeros), for the
    # response-level rules; groups of 8 pairs
    phi = jnp.zeros((80, 6), jnp.float32).at[0::2].set(x)
    items = strategies.PairItems(phi, np.arange(0, 80, 2), np.arange(1, 80, 2), np.arange(40) // 8)
    return strategies.make_inputs(x, beta, past_phi_diff=past, past_mask=jnp.arange(10) < 7, items=items)


def test_the_check_sees_default_precision(pool):
    """Without the guard a product lowers with DEFAULT: the check below can fail."""
    lowered = jax.jit(lambda x, b: x @ b).lower(pool.phi_diff, pool.beta)
    assert dot_precisions(lowered) == [("DEFAULT", "DEFAULT")]


@pytest.mark.parametrize("name", [n for n in registry.STRATEGIES if n != "random"])
@pytest.mark.parametrize("outer", [None, "bfloat16"])
def test_every_strategy_multiplies_at_full_precision(pool, name, outer):
    key = jax.random.PRNGKey(0)
    if outer is None:
        lowered = pool_lib.select_program.lower(registry.STRATEGIES[name], key, pool, 5)
    else:
        with jax.default_matmul_precision(outer):
            lowered = jax.jit(registry.STRATEGIES[name].fn, static_argnums=2).lower(key, pool, 5)
    assert_all_highest(lowered)


@pytest.mark.parametrize("name", registry.PAIR_SCORE_STRATEGIES)
def test_all_pairs_multiplies_at_full_precision(pool, name):
    phi = pool.phi_diff[:24]
    with jax.default_matmul_precision("bfloat16"):
        lowered = allpairs.top_k_program.lower(
            name, None, phi, pool.beta, 5, pool.past_phi_diff, pool.past_mask, None, 8
        )
    if name in ("entropy", "maxdiff"):  # gaps only: r = Φβ is the one product
        assert len(dot_precisions(lowered)) >= 1
    assert_all_highest(lowered)
    assert_all_highest(jax.jit(allpairs.all_pairs_information, static_argnames="tile").lower(phi, pool.beta, tile=8))


def test_fisher_functions_multiply_at_full_precision(pool):
    x, beta = pool.phi_diff, pool.beta
    v = likelihood.bernoulli_variance(x, beta)
    with jax.default_matmul_precision("bfloat16"):
        assert_all_highest(jax.jit(fisher.dopt_scores).lower(x, beta, pool.past_phi_diff))
        assert_all_highest(jax.jit(fisher.dopt_scores_autodiff).lower(x, v))


def test_sharded_scores_multiply_at_full_precision(pool):
    mesh, _, x, valid, beta, past, prior = sharded.pool_setup(
        pool.phi_diff, pool.beta, None, None, None, jax.devices()[:1]
    )
    for name in ("dopt", "entropy", "iopt"):
        spec = registry.STRATEGIES[name].pair_score
        assert_all_highest(sharded.top_k_program.lower(spec, mesh, x, valid, beta, past, prior, 5, 1e-6))

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax.model import likelihood
from arm_jax.selection import allpairs, fisher, pool
from arm_jax.selection.allpairs import select_all_pairs
from arm_jax.selection.registry import PAIR_SCORE_STRATEGIES


def _items(seed=0, k_items=37, h=5, m=9):
    """ReLU-like features with a large common mean (the hard case for the all-pairs identities)."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    phi = jax.nn.relu(jax.random.normal(k1, (k_items, h)) + 2.0)
    return phi, 0.7 * jax.random.normal(k2, (h,)), jax.random.normal(k3, (m, h))


def _pairs_of(sel):
    return set(zip(np.asarray(sel.u).tolist(), np.asarray(sel.v).tolist()))


def _explicit(name, phi, beta, k, past=None, item_valid=None):
    """Score the materialised pair list with the ordinary strategy: the ground truth."""
    u, v, x = allpairs.explicit_pairs(phi, item_valid)
    sel = pool.select(name, jax.random.PRNGKey(0), x, beta, k, past_phi_diff=past)
    idx = np.asarray(sel.indices)
    return set(zip(np.asarray(u)[idx].tolist(), np.asarray(v)[idx].tolist())), np.asarray(sel.scores)


@pytest.mark.parametrize("weighted", [True, False])
def test_all_pairs_information_matches_explicit_pairs(weighted):
    phi, beta, _ = _items()
    valid = jnp.arange(phi.shape[0]) % 6 != 1
    _, _, x = allpairs.explicit_pairs(phi, valid)
    w = likelihood.bernoulli_variance(x, beta) if weighted else jnp.ones(x.shape[0])
    expected = np.asarray(fisher.information_matrix(x, w))
    got = np.asarray(allpairs.all_pairs_information(phi, beta, weighted, item_valid=valid, tile=8))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", PAIR_SCORE_STRATEGIES)
def test_agrees_with_scoring_the_explicit_pair_list(name, masked):
    phi, beta, past = _items(1)
    valid = (jnp.arange(phi.shape[0]) % 5 != 2) if masked else None
    k = 70  # more than one 8 × 8 block holds: exercises the merge of partial top-k lists
    sel = select_all_pairs(name, jax.random.PRNGKey(0), phi, beta, k, past_phi_diff=past, item_valid=valid, tile=8)
    expected_pairs, expected_scores = _explicit(name, phi, beta, k, past, valid)
    assert _pairs_of(sel) == expected_pairs
    u, v, scores = (np.asarray(a) for a in sel)
    assert u.dtype == np.int32 and v.dtype == np.int32 and scores.shape == (k,)
    assert np.all(u < v)
    if valid is not None:
        assert np.all(np.asarray(valid)[u]) and np.all(np.asarray(valid)[v])
    assert np.all(np.diff(scores) <= 0), "best first"
    np.testing.assert_allclose(np.sort(scores), np.sort(expected_scores), rtol=2e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["dopt", "entropy"])
def test_tile_size_does_not_change_the_answer(name):
    phi, beta, _ = _items(2, k_items=50)
    runs = [select_all_pairs(name, None, phi, beta, 40, tile=t) for t in (8, 16, 64)]
    for other in runs[1:]:
        assert _pairs_of(other) == _pairs_of(runs[0])
        np.testing.assert_allclose(other.scores, runs[0].scores, rtol=1e-5)


def test_can_take_every_pair():
    phi, beta, _ = _items(3, k_items=12)
    sel = select_all_pairs("dopt", None, phi, beta, 66, tile=8)
    assert _pairs_of(sel) == {(u, v) for u in range(12) for v in range(u + 1, 12)}


def test_pa_dopt_without_past_is_dopt_and_the_past_matters():
    phi, beta, past = _items(4)
    dopt = select_all_pairs("dopt", None, phi, beta, 30, tile=8)
    pa_none = select_all_pairs("pa_dopt", None, phi, beta, 30, tile=8)
    np.testing.assert_array_equal(dopt.u, pa_none.u)
    np.testing.assert_array_equal(dopt.v, pa_none.v)
    pa = select_all_pairs("pa_dopt", None, phi, beta, 30, past_phi_diff=jnp.tile(past, (50, 1)), tile=8)
    assert not np.allclose(pa.scores, dopt.scores)


def test_jit_and_no_pair_sized_buffer():
    """The kernel is jit-able with name/k/tile static and no array has a pair-sized axis."""
    k_items, h, tile = 200, 4, 32
    phi, beta, _ = _items(5, k_items=k_items, h=h)
    fn = jax.jit(allpairs.top_k_all_pairs, static_argnames=("name", "k", "tile"))
    sel = fn("dopt", None, phi, beta, 10, tile=tile)
    assert sel.u.shape == (10,)
    hlo = fn.lower("dopt", None, phi, beta, 10, tile=tile).compile().as_text().replace(" ", "")
    n_pairs = k_items * (k_items - 1) // 2
    assert f"[{n_pairs}" not in hlo and f"{k_items * k_items}]" not in hlo


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="coreset"), "strategy 'coreset' is not supported for all-pairs selection; supported: entropy, maxdiff, xtx, dopt, pa_dopt"),
        (dict(name="best"), "unknown strategy 'best'; all-pairs selection supports: entropy, maxdiff, xtx, dopt, pa_dopt"),
        (dict(k=0), "k must be positive, got 0"),
        (dict(k=-1), "k must be positive, got -1"),
        (dict(k=667), "k = 667 is larger than the 666 pairs of 37 valid items"),
        (dict(k=7, item_valid=jnp.arange(37) < 4), "k = 7 is larger than the 6 pairs of 4 valid items"),
        (dict(k=1.5), "k must be an integer, got 1.5"),
        (dict(phi=jnp.ones((37, 5)).at[0, 0].set(jnp.nan)), "phi contains 1 NaN/inf values"),
        (dict(beta=jnp.full(5, jnp.inf)), "beta contains 5 NaN/inf values"),
        (dict(beta=jnp.ones(4)), r"beta must have shape \(5,\) to match phi \(37, 5\), got \(4,\)"),
        (dict(phi=jnp.ones(37)), r"phi must be \(K, H\) item features, got shape \(37,\)"),
        (dict(past_phi_diff=jnp.ones((3, 4))), r"past_phi_diff must be \(M, 5\)"),
        (dict(past_phi_diff=jnp.ones((3, 5)), past_mask=jnp.ones(2, bool)), r"past_mask must have shape \(3,\)"),
        (dict(item_valid=jnp.ones(36, bool)), r"item_valid must have shape \(37,\)"),
        (dict(tile=0), "tile must be a positive integer, got 0"),
    ],
)
def test_bad_input_raises_one_line_value_error(kwargs, message):
    phi, beta, _ = _items()
    args = dict(name="dopt", key=None, phi=phi, beta=beta, k=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message) as info:
        select_all_pairs(**args)
    assert "\n" not in str(info.value)


def test_excluded_pairs_that_crowd_the_top_are_never_picked():
    """The 100 best pairs are labelled: the kernel's exclusion picks the next 5."""
    rng = np.random.default_rng(0)
    n = 40
    phi = rng.normal(size=(n, 4)).astype(np.float32)
    beta = rng.normal(size=4).astype(np.float32)
    r = phi @ beta
    a, b = np.triu_indices(n, 1)
    order = np.argsort(-np.abs(r[a] - r[b]), kind="stable")
    exclude = (a[order[:100]][::-1], b[order[:100]][::-1])  # the 100 largest gaps, either order is one pair
    got = allpairs.select_all_pairs("maxdiff", None, phi, beta, 5, exclude=exclude)
    got_a, got_b, scores = np.asarray(got.u), np.asarray(got.v), np.asarray(got.scores)
    assert set(zip(got_a.tolist(), got_b.tolist())) == set(zip(a[order[100:105]].tolist(), b[order[100:105]].tolist()))
    np.testing.assert_allclose(scores, np.abs(r[a] - r[b])[order[100:105]], rtol=1e-4)

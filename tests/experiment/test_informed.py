"""The informed reference arm: the true rewards on the labels' logit scale, the best head β*,
and the arm in a study. Checked against float64 NumPy on the definitions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax.errors import InputError
from arm_jax.experiment import config as config_lib
from arm_jax.experiment import datasets as data
from arm_jax.experiment import informed
from arm_jax.experiment import program as experiment
from arm_jax.experiment.config import ExperimentConfig
from arm_jax.model import config as model_config
from arm_jax.model import network as model

RATINGS = np.array([[1, 2, np.nan], [2, np.nan, 3], [np.nan, 2, np.nan], [-4, 4, 0]], np.float32)


def _rates_float64(ratings, a, b):
    """P(a wins), P(tie) over every pair of the two items' recorded ratings."""
    ra, rb = ratings[a][~np.isnan(ratings[a])], ratings[b][~np.isnan(ratings[b])]
    diff = ra[:, None] - rb[None, :]
    return np.mean(diff > 0), np.mean(diff == 0)


def test_outcome_rates_count_every_pair_of_ratings():
    a, b = np.array([0, 1, 0, 2, 3, 3]), np.array([1, 0, 2, 2, 0, 3])
    wins, ties = informed.outcome_rates(jnp.asarray(RATINGS), jnp.asarray(a), jnp.asarray(b))
    expected = np.array([_rates_float64(RATINGS.astype(np.float64), i, j) for i, j in zip(a, b)])
    np.testing.assert_allclose(wins, expected[:, 0], atol=1e-7)
    np.testing.assert_allclose(ties, expected[:, 1], atol=1e-7)


def test_empirical_scale_maximises_the_bradley_terry_fit_of_the_outcomes():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=60)
    ratings = np.clip(np.round(mean[:, None] * 2 + rng.normal(size=(60, 15)) * 1.5), -4, 4).astype(np.float32)
    ratings[rng.random(ratings.shape) < 0.2] = np.nan
    ratings[:, 0] = 0.0  # every item keeps a rating
    c = float(informed.empirical_scale(jnp.asarray(ratings)))
    # the definition in float64: the same pairs, a fine grid of c
    a, b = (np.asarray(v) for v in jax.random.randint(jax.random.PRNGKey(0), (2, informed.SCALE_PAIRS), 0, 60))
    rates = np.array([_rates_float64(ratings.astype(np.float64), i, j) for i, j in zip(a, b)])
    p = rates[:, 0] + 0.5 * rates[:, 1]
    means = np.nanmean(ratings.astype(np.float64), axis=1)
    delta = means[a] - means[b]
    grid = np.linspace(0.01, 5.0, 5000)
    loglik = [np.sum(p * -np.logaddexp(0, -g * delta) + (1 - p) * -np.logaddexp(0, g * delta)) for g in grid]
    assert c > 0 and abs(c - grid[int(np.argmax(loglik))]) <= 2e-3 * c + 1e-3
    # ratings whose means are all equal carry no scale
    assert float(informed.empirical_scale(jnp.zeros((5, 3), jnp.float32))) == 0.0


def test_true_reward_of_the_simulated_annotator_is_its_logit_scale():
    rewards = jnp.asarray([0.0, 1.0, 3.0, -2.0], jnp.float32)
    t = informed.true_reward(rewards, jnp.float32(2.0), (1.0, 3.0))
    np.testing.assert_allclose(t, 2.0 * np.asarray(rewards) / 2.0, rtol=1e-6)  # mean quality 2
    assert np.all(np.isfinite(informed.true_reward(rewards, jnp.float32(2.0), (np.inf,))))
    assert np.all(np.asarray(informed.true_reward(rewards, jnp.float32(0.0), (1.0,))) == 0)


@pytest.mark.parametrize("rank_deficient", [False, True])
def test_best_head_is_least_squares_of_the_centred_target(rank_deficient):
    rng = np.random.default_rng(1)
    phi = rng.normal(size=(200, 12))
    if rank_deficient:
        phi[:, 11] = phi[:, 10]  # two equal columns: the minimum-norm solution splits the weight
    target = phi @ rng.normal(size=12) + 5.0 + 0.1 * rng.normal(size=200)
    beta = np.asarray(informed.best_head(jnp.asarray(phi, jnp.float32), jnp.asarray(target, jnp.float32)))
    centred = phi - phi.mean(axis=0)
    reference = np.linalg.lstsq(centred, target - target.mean(), rcond=None)[0]
    np.testing.assert_allclose(centred @ beta, centred @ reference, atol=2e-3 * np.abs(centred @ reference).max())
    if rank_deficient:
        np.testing.assert_allclose(beta[10], beta[11], rtol=1e-3)


TINY = dict(
    rounds=1, k=8, initial_labels=10, n_prompts=8, n_candidates=40, best_of_n=(4,),
    model=model.ModelConfig(depth=0), train=model_config.TrainConfig(linear_prior=3.0),
)


def test_the_informed_arm_runs_beside_the_others_and_changes_nothing_of_theirs():
    dataset = data.llm_like(jax.random.PRNGKey(0), n_train_prompts=30, n_responses=5, n_test_prompts=4,
                            n_test_responses=8, dim=10)
    prepared = config_lib.prepare_data(dataset)
    keys = jax.random.split(jax.random.PRNGKey(2), 2)
    configs = [ExperimentConfig(strategy=n, **TINY) for n in ("greedy_iopt", informed.INFORMED)]
    study = experiment.make_study(configs, prepared).run_seeds(keys)
    alone = experiment.make_experiment(configs[0], prepared).run_seeds(keys)
    np.testing.assert_array_equal(study.labelled.pairs[:, 0], alone.labelled.pairs)
    assert np.all(np.asarray(study.metrics.picks_ok))
    # the informed arm is greedy_iopt at another head: it picks other pairs
    later = np.asarray(study.labelled.pairs[:, :, TINY["initial_labels"]:])
    assert not np.array_equal(later[:, 0], later[:, 1])


def test_the_informed_arm_refuses_all_pairs():
    with pytest.raises(InputError, match="informed arm"):
        ExperimentConfig(strategy=informed.INFORMED, pairs="all-cross")

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax.model import network as model


def test_reward_is_features_dot_head():
    cfg = model.ModelConfig(depth=2, width=8, activation="tanh")
    params = model.init_params(jax.random.PRNGKey(0), cfg, 5)
    x = jax.random.normal(jax.random.PRNGKey(1), (7, 5))
    phi = model.features(params, cfg, x)
    beta = model.head(params)
    assert phi.shape == (7, 8) and beta.shape == (8,)
    np.testing.assert_array_equal(model.reward(params, cfg, x), phi @ beta)


def test_default_architecture_and_no_head_bias():
    cfg = model.ModelConfig()
    params = model.init_params(jax.random.PRNGKey(0), cfg, 12)["params"]
    assert sorted(params) == ["head", "hidden_0", "hidden_1", "hidden_2"]
    assert params["head"].shape == (64, 1)
    assert params["hidden_0"]["kernel"].shape == (12, 64)


def test_reward_shift_free():
    """No bias on the head: the zero feature vector has reward exactly 0."""
    cfg = model.ModelConfig(depth=1, width=4)
    params = model.init_params(jax.random.PRNGKey(3), cfg, 3)
    params = jax.tree_util.tree_map(lambda p: p, params)
    params["params"]["hidden_0"]["bias"] = jnp.zeros(4)
    assert float(model.reward(params, cfg, jnp.zeros((1, 3)))[0]) == 0.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=-1), "depth must be >= 0"),
        (dict(width=0), "width must be >= 1"),
        (dict(activation="softsign"), "unknown activation 'softsign'"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.ModelConfig(**kwargs)


def test_depth_zero_is_the_linear_reward_model():
    """depth 0: Φ = ψ (H = D) and r = ψᵀβ; the D-optimal scores are the classical ones."""
    cfg = model.ModelConfig(depth=0)
    params = model.init_params(jax.random.PRNGKey(0), cfg, 6)
    assert sorted(params["params"]) == ["head"] and params["params"]["head"].shape == (6, 1)
    assert cfg.feature_dim(6) == 6 and model.ModelConfig().feature_dim(6) == 64
    x = jax.random.normal(jax.random.PRNGKey(1), (9, 6))
    np.testing.assert_array_equal(model.features(params, cfg, x), x)
    np.testing.assert_allclose(model.reward(params, cfg, x), x @ model.head(params), rtol=1e-6)


def test_linear_model_runs_in_the_experiment():
    from arm_jax.experiment import config
    from arm_jax.experiment import datasets as data
    from arm_jax.experiment import program as experiment
    from arm_jax.model import config as config_lib

    ds = data.llm_like(jax.random.PRNGKey(0), n_train_prompts=30, n_responses=4, n_test_prompts=4,
                       n_test_responses=6, dim=8)
    cfg = config.ExperimentConfig(
        strategy="pa_dopt", rounds=2, k=6, initial_labels=6, n_prompts=6, n_candidates=30, best_of_n=(3,),
        model=model.ModelConfig(depth=0), train=config_lib.TrainConfig(steps=40, batch_size=8),
    )
    result = experiment.make_experiment(cfg, ds).run(jax.random.PRNGKey(1))
    assert np.all(np.isfinite(np.asarray(result.metrics.one_minus_spearman)))
    assert bool(np.all(np.asarray(result.metrics.picks_ok)))

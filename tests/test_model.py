import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax import model


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
        (dict(depth=0), "depth must be >= 1"),
        (dict(width=0), "width must be >= 1"),
        (dict(activation="softsign"), "unknown activation 'softsign'"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.ModelConfig(**kwargs)

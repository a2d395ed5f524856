"""The Bradley–Terry reward model: an MLP feature map F_θ followed by a bias-free head β.

    r(Ψ) = F_θ(Ψ)ᵀ β          Φ = F_θ(Ψ) are the *last-layer features*

The head has no bias because the BT likelihood P(a ≻ b) = σ(r(a) − r(b)) only sees reward
differences. Parameters are a plain Flax pytree, so ``jax.vmap`` over seeds is free.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp

from arm_jax.errors import InputError

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,  # the functions flax.linen exports under these names
    "gelu": jax.nn.gelu,
    "tanh": jnp.tanh,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape of the reward MLP.

    depth: number of hidden layers (the paper: 3). 0 is the linear reward model r = ψᵀβ:
      Bradley–Terry logistic regression on the embeddings, Φ = ψ (H = D), where D-optimal
      design is the classical exact one.
    width: units per hidden layer, which is also H, the dimension of Φ (the paper: 64);
      unused at depth 0.
    activation: one of ``ACTIVATIONS``.
    """

    depth: int = 3
    width: int = 64
    activation: str = "relu"

    def __post_init__(self):
        if self.depth < 0:
            raise InputError(f"model depth must be >= 0, got {self.depth}")
        if self.width < 1:
            raise InputError(f"model width must be >= 1, got {self.width}")
        if self.activation not in ACTIVATIONS:
            raise InputError(
                f"unknown activation {self.activation!r}; choose one of {sorted(ACTIVATIONS)}"
            )

    def feature_dim(self, input_dim: int) -> int:
        """H, the dimension of the last-layer features Φ, for inputs of dimension D."""
        return self.width if self.depth else int(input_dim)


@functools.lru_cache(maxsize=None)
def _reward_mlp():
    """The Flax module class, made on first use: Flax is imported only when a program that
    uses the model is traced (a command whose programs all come from the store of
    :mod:`arm_jax.runtime.programs` starts without it)."""
    import flax.linen as nn

    class RewardMLP(nn.Module):
        """MLP with ``depth`` hidden layers of ``width`` units and a bias-free scalar head.

        ``__call__(x: (..., D)) -> (phi: (..., H), reward: (...,))``.
        """

        depth: int = 3
        width: int = 64
        activation: str = "relu"

        @nn.compact
        def __call__(self, x):
            act = ACTIVATIONS[self.activation]
            h = x
            for i in range(self.depth):
                h = act(nn.Dense(self.width, name=f"hidden_{i}")(h))
            h_dim = self.width if self.depth else x.shape[-1]
            beta = self.param("head", nn.initializers.lecun_normal(), (h_dim, 1))[:, 0]
            return h, h @ beta

    return RewardMLP


def __getattr__(name: str):
    if name == "RewardMLP":
        return _reward_mlp()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _module(config: ModelConfig):
    return _reward_mlp()(depth=config.depth, width=config.width, activation=config.activation)


def init_params(key: jax.Array, config: ModelConfig, input_dim: int):
    """Fresh parameters for inputs of dimension ``input_dim`` (a pytree of float32 arrays)."""
    return _module(config).init(key, jnp.zeros((1, input_dim), jnp.float32))


def features(params, config: ModelConfig, x: jax.Array) -> jax.Array:
    """Last-layer features Φ. ``x: (..., D) -> (..., H)``."""
    phi, _ = _module(config).apply(params, x)
    return phi


def head(params) -> jax.Array:
    """The last layer β: ``(H,)``."""
    return params["params"]["head"][:, 0]


def reward(params, config: ModelConfig, x: jax.Array) -> jax.Array:
    """Predicted reward r = Φ·β. ``x: (..., D) -> (...,)``; equals ``features(...) @ head(...)``."""
    _, r = _module(config).apply(params, x)
    return r


def features_and_reward(params, config: ModelConfig, x: jax.Array):
    """``(Φ: (..., H), r: (...,))`` in one forward pass."""
    return _module(config).apply(params, x)

"""arm-jax: active reward modeling in JAX.

D-optimal selection of preference pairs on a Bradley–Terry reward model's last layer (the
method of "Active Reward Modeling", ICML 2025), the baselines it is compared with, and the
paper's active-learning experiment as one jit-compiled program.
"""


def _version() -> str:
    """The installed distribution's version; in a source tree that is not installed, the
    one pyproject.toml names (else "unknown")."""
    from importlib import metadata

    try:
        return metadata.version("arm-jax")
    except metadata.PackageNotFoundError:
        import pathlib
        import re

        pyproject = pathlib.Path(__file__).resolve().parent.parent / "pyproject.toml"
        try:
            found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(), re.MULTILINE)
        except OSError:
            found = None
        return found.group(1) if found else "unknown"


__version__ = _version()

from arm_jax.allpairs import AllPairsSelection, select_all_pairs, top_k_all_pairs
from arm_jax.errors import InputError
from arm_jax.experiment import ExperimentConfig, make_experiment, make_study
from arm_jax.fisher import bernoulli_variance, dopt_scores, information_matrix, leverage_scores
from arm_jax.model import ModelConfig, features, head, init_params, reward
from arm_jax.strategies import (
    PAPER_STRATEGIES,
    STRATEGIES,
    Selection,
    SelectionInputs,
    get_strategy,
    make_inputs,
    select,
)
from arm_jax.parallel import shard_seeds, sharded_dopt_scores, sharded_select
from arm_jax.train import LabelBuffer, TrainConfig, buffer_from_pairs, empty_buffer, fit, fit_jit

__all__ = [
    "__version__",
    "AllPairsSelection",
    "ExperimentConfig",
    "InputError",
    "fit_jit",
    "make_experiment",
    "make_study",
    "select_all_pairs",
    "shard_seeds",
    "sharded_dopt_scores",
    "sharded_select",
    "top_k_all_pairs",
    "ModelConfig",
    "TrainConfig",
    "LabelBuffer",
    "Selection",
    "SelectionInputs",
    "STRATEGIES",
    "PAPER_STRATEGIES",
    "bernoulli_variance",
    "buffer_from_pairs",
    "dopt_scores",
    "empty_buffer",
    "features",
    "fit",
    "get_strategy",
    "head",
    "information_matrix",
    "init_params",
    "leverage_scores",
    "make_inputs",
    "reward",
    "select",
]

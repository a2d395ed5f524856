"""arm-jax: active reward modeling in JAX.

D-optimal selection of preference pairs on a Bradley–Terry reward model's last layer (the
method of "Active Reward Modeling", ICML 2025), the baselines it is compared with, and the
paper's active-learning experiment as one jit-compiled program.

The package is folders by audience, imports one way
(``cli → {workflow, experiment} → selection → model → runtime``):

- :mod:`arm_jax.model`: the Bradley–Terry reward model and how it is fitted;
- :mod:`arm_jax.selection`: the last-layer posterior, each strategy's score, the drivers;
- :mod:`arm_jax.experiment`: the paper's experiment (Algorithm 1) as one program;
- :mod:`arm_jax.workflow`: your own data — pools, labels, select / train / score;
- :mod:`arm_jax.runtime`: devices, processes, files, the compilation cache, progress;
- :mod:`arm_jax.cli`: the ``arm-jax`` command line.

This module only re-exports the names most users need. They are loaded when first used, so
``import arm_jax`` (and ``arm-jax --help``) does not import JAX.
"""
from __future__ import annotations

import importlib

from arm_jax._version import __version__
from arm_jax.errors import InputError

#: public name -> the module that defines it
_EXPORTS = {
    "ModelConfig": "arm_jax.model.network",
    "features": "arm_jax.model.network",
    "head": "arm_jax.model.network",
    "init_params": "arm_jax.model.network",
    "reward": "arm_jax.model.network",
    "TrainConfig": "arm_jax.model.config",
    "LabelBuffer": "arm_jax.model.buffer",
    "buffer_from_pairs": "arm_jax.model.buffer",
    "empty_buffer": "arm_jax.model.buffer",
    "fit": "arm_jax.model.fit",
    "fit_jit": "arm_jax.model.fit",
    "bernoulli_variance": "arm_jax.model.likelihood",
    "dopt_scores": "arm_jax.selection.fisher",
    "information_matrix": "arm_jax.selection.fisher",
    "leverage_scores": "arm_jax.selection.fisher",
    "Selection": "arm_jax.selection.scores",
    "SelectionInputs": "arm_jax.selection.scores",
    "PairScore": "arm_jax.selection.scores",
    "make_inputs": "arm_jax.selection.scores",
    "STRATEGIES": "arm_jax.selection.registry",
    "PAPER_STRATEGIES": "arm_jax.selection.registry",
    "get_strategy": "arm_jax.selection.registry",
    "select": "arm_jax.selection.pool",
    "AllPairsSelection": "arm_jax.selection.allpairs",
    "select_all_pairs": "arm_jax.selection.allpairs",
    "top_k_all_pairs": "arm_jax.selection.allpairs",
    "sharded_dopt_scores": "arm_jax.selection.sharded",
    "sharded_select": "arm_jax.selection.sharded",
    "shard_seeds": "arm_jax.runtime.mesh",
    "ExperimentConfig": "arm_jax.experiment.config",
    "make_experiment": "arm_jax.experiment.program",
    "make_study": "arm_jax.experiment.program",
}
_NAMESPACES = ("model", "selection", "experiment", "workflow", "runtime", "cli")

__all__ = ["__version__", "InputError", *_EXPORTS, *_NAMESPACES]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _NAMESPACES:
        value = importlib.import_module(f"arm_jax.{name}")
    else:
        raise AttributeError(f"module 'arm_jax' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))

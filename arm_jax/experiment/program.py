"""The paper's active-learning experiment (Algorithm 1) as one jit-compiled program.

Each round: draw a candidate pool, score it with the previous round's model, select ``k``
pairs, label them with the simulated annotator, append them to the fixed-capacity labelled
buffer, retrain the reward model from scratch, evaluate on the test set. Round 0 labels a
small random set. All rounds are one ``lax.scan`` inside ``jax.jit``; seeds are
``jax.vmap``. Data always enters the compiled program as an argument, never as a closure
constant, so compile time does not grow with the data.

    exp = make_experiment(ExperimentConfig(strategy="dopt"), dataset)
    result = exp.run_seeds(jax.random.split(key, 5))   # every array has a leading (seeds,) axis
    result.metrics.one_minus_spearman                   # (5, rounds + 1)

Several strategies compared on the same seeds are one program too (:func:`make_study`): each
round every strategy picks its own pairs, then all the strategies' models are retrained at
once (``jax.vmap`` over strategies) and evaluated one after another (``lax.map``). The
numbers are those of the strategies run apart; the program compiles once for all of them
(most of its code, training and evaluation, is shared) and keeps an accelerator busier.

    study = make_study([config.replace(strategy=s) for s in ("random", "dopt")], dataset)
    study.run_seeds(keys).metrics.one_minus_spearman    # (seeds, 2 strategies, rounds + 1)
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from arm_jax.errors import RunFailed
from arm_jax.experiment.config import (
    ExperimentConfig,
    ExperimentData,
    ExperimentResult,
    RoundMetrics,
    check_config_against_data,
    check_data,
    prepare_data,
)
from arm_jax.experiment.round import (
    _index,
    _stack,
    check_study,
    initial_buffer,
    initial_model,
    study_round_step,
    study_simulation,
)


def run_study_single(key, configs: tuple[ExperimentConfig, ...], data: ExperimentData, sink=None) -> ExperimentResult:
    """The whole experiment of one seed for S strategies, rounds 0..``rounds`` as one
    ``lax.scan``. Every leaf of the result has a leading (S,) strategies axis. ``sink``:
    where progress reports go (see :func:`make_study`)."""
    base = configs[0]
    check_data(data)
    init_key, round_key = jax.random.split(key)
    sim = study_simulation(configs, data)  # once per run, not every round
    buffer, ok = initial_buffer(init_key, base, data, sim)  # round 0 is random: the same for every strategy
    xs = (jnp.arange(base.rounds + 1, dtype=jnp.int32), jax.random.split(round_key, base.rounds + 1))
    step = functools.partial(study_round_step, configs=configs, data=data, sink=sink, sim=sim)
    carry = _stack([(buffer, initial_model(base, data), ok)] * len(configs))
    (buffers, _, _), outs = jax.lax.scan(step, carry, xs)
    by_strategy = lambda x: jnp.moveaxis(x, 0, 1)  # (rounds + 1, S, ...) -> (S, rounds + 1, ...)
    metrics = RoundMetrics(*(by_strategy(x) for x in outs))
    return ExperimentResult(metrics, buffers)


def run_single(key, config: ExperimentConfig, data: ExperimentData) -> ExperimentResult:
    """The whole experiment for one seed: rounds 0..``config.rounds`` as one ``lax.scan``."""
    return _index(run_study_single(key, (config,), data), 0)


class _Program(NamedTuple):
    """What one compiled program runs (a static, hashable jit argument): the configurations,
    whether it is one strategy (results without the strategies axis), the progress sink."""

    configs: tuple
    single: bool
    sink: Callable | None = None


@functools.partial(jax.jit, static_argnames=("what",))
def _run_jit(key, what, data):
    return _run_one(key, what, data)


def _run_one(key, what: _Program, data):
    out = run_study_single(key, what.configs, data, what.sink)
    return _index(out, 0) if what.single else out


@functools.partial(jax.jit, static_argnames=("what",))
def _run_seeds_jit(keys, what, data):
    return jax.vmap(_run_one, in_axes=(0, None, None))(keys, what, data)


@functools.lru_cache(maxsize=None)
def _seed_fn(what):
    """``run(key, data)`` for one configuration or study: one stable function object per
    configuration, so the sharded program is compiled once."""

    def run(key, data):
        return _run_one(key, what, data)

    return run


def check_result(result: ExperimentResult) -> ExperimentResult:
    """Raise :class:`RunFailed` unless every round's picks were sound (``picks_ok``).
    Reduces on the device, so it is safe on arrays sharded over processes."""
    if not bool(jnp.all(result.metrics.picks_ok)):
        from arm_jax.runtime import mesh as parallel

        ok = parallel.to_host(result.metrics.picks_ok)  # gathered when the seeds span processes
        rounds = ", ".join(str(r) for r in np.flatnonzero(~ok.reshape(-1, ok.shape[-1]).all(0))[:5].tolist())
        raise RunFailed(
            f"round(s) {rounds}: a strategy picked a pair that was not a valid, scored candidate "
            "(fewer unlabelled candidates than k left, or the information matrix could not be "
            "factorised); raise --candidates or lower --k, or pass --allow-relabel"
        )
    return result


def _seed_runners(what, data: ExperimentData, devices) -> tuple[Callable, Callable]:
    """(run_seeds, lower_seeds) for a configuration or study: vmapped over the seeds, which
    are split over ``devices`` when there are several. ``run_seeds`` checks the result
    (:func:`check_result`)."""
    devices = tuple(jax.devices() if devices is None else devices)
    if len(devices) > 1:
        from arm_jax.runtime import mesh as parallel

        sharded = parallel.sharded_vmap(_seed_fn(what), devices)
        return (lambda keys: check_result(sharded(keys, data))), (lambda keys: sharded.lower(keys, data))
    return (
        (lambda keys: check_result(_run_seeds_jit(keys, what, data))),
        (lambda keys: _run_seeds_jit.lower(keys, what, data)),
    )


class Experiment(NamedTuple):
    """What :func:`make_experiment` returns.

    run: ``run(key) -> ExperimentResult`` for one seed (jit-compiled; the data is an argument).
    run_seeds: ``run_seeds(keys: (S, 2)) -> ExperimentResult`` with a leading seeds axis (vmap).
    lower_seeds: ``lower_seeds(keys).compile()`` → a compiled ``run(keys, data)``: tracing apart
      from compiling (to time them apart).
    config, data: what it runs on.
    """

    run: Callable
    run_seeds: Callable
    lower_seeds: Callable
    config: ExperimentConfig
    data: ExperimentData

    def __call__(self, key):
        return self.run(key)


def make_experiment(config: ExperimentConfig, dataset, devices=None, progress: Callable | None = None) -> Experiment:
    """Bind a configuration to a dataset (``Dataset`` or ``ExperimentData``).

    The returned ``run``/``run_seeds`` compile once per configuration and pass the data into
    the compiled program as arguments. ``devices``: with more than one (default: all local
    devices), ``run_seeds`` splits the seeds over them (``arm_jax.runtime.mesh``, a ``Mesh`` over
    the seed axis); the numbers are those of one device. ``progress``: see :func:`make_study`.
    """
    check_config_against_data(config, dataset)
    data = dataset if isinstance(dataset, ExperimentData) else prepare_data(dataset)
    program = _Program((config,), True, progress)
    run_seeds, lower_seeds = _seed_runners(program, data, devices)
    return Experiment(lambda key: check_result(_run_jit(key, program, data)), run_seeds, lower_seeds, config, data)


class Study(NamedTuple):
    """What :func:`make_study` returns.

    run_seeds: ``run_seeds(keys: (n, 2)) -> ExperimentResult``; every leaf has leading
      (seeds, strategies) axes, strategies in the order of ``configs``.
    lower_seeds: ``lower_seeds(keys).compile()`` → a compiled ``run(keys, data)``.
    configs, data: what it runs on.
    """

    run_seeds: Callable
    lower_seeds: Callable
    configs: tuple[ExperimentConfig, ...]
    data: ExperimentData


def make_study(configs, dataset, devices=None, progress: Callable | None = None) -> Study:
    """Several strategies on the same seeds as one compiled program (what ``arm-jax run`` runs).

    configs: :class:`ExperimentConfig` s that differ only in ``strategy`` (ValueError otherwise).
    Strategy s of seed i gives the numbers ``make_experiment(configs[s], ...)`` gives for seed
    i; the program compiles once for all strategies, trains all their models at once, and its
    seeds are split over ``devices`` as in :func:`make_experiment`.

    progress: with ``config.progress`` on, ``progress(report)`` is called from inside the
    running program once per strategy, seed and round with a :class:`RoundReport` (host
    values); default :func:`print_report`. It is part of what is compiled: pass the same
    object to reuse a compiled program.
    """
    configs = check_study(configs)
    check_config_against_data(configs[0], dataset)  # the data sees no difference between them
    data = dataset if isinstance(dataset, ExperimentData) else prepare_data(dataset)
    run_seeds, lower_seeds = _seed_runners(_Program(configs, False, progress), data, devices)
    return Study(run_seeds, lower_seeds, configs, data)

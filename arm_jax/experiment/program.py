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
    send_reports,
    study_round_step,
    study_simulation,
)


def run_study_single(key, configs: tuple[ExperimentConfig, ...], data: ExperimentData, sink=None) -> ExperimentResult:
    """The whole experiment of one seed for S strategies, rounds 0..``rounds`` as one
    ``lax.scan``. Every leaf of the result has a leading (S,) strategies axis. ``sink``:
    where progress reports go (see :func:`make_study`)."""
    carry, xs, sim = _study_start(key, configs, data)
    (buffers, _, _), outs = _study_rounds(carry, xs, sim, configs, data, sink)
    return _study_result(buffers, outs)


def _study_start(key, configs: tuple[ExperimentConfig, ...], data: ExperimentData):
    """(carry, xs, sim) of one seed before round 0: the initial random labels (the same for
    every strategy), the untrained models, and the rounds' (index, key)."""
    base = configs[0]
    check_data(data)
    init_key, round_key = jax.random.split(key)
    sim = study_simulation(configs, data)  # once per run, not every round
    buffer, ok = initial_buffer(init_key, base, data, sim)  # round 0 is random: the same for every strategy
    xs = (jnp.arange(base.rounds + 1, dtype=jnp.int32), jax.random.split(round_key, base.rounds + 1))
    return _stack([(buffer, initial_model(base, data), ok)] * len(configs)), xs, sim


def _study_rounds(carry, xs, sim, configs: tuple[ExperimentConfig, ...], data: ExperimentData, sink=None):
    """The rounds of ``xs`` (a ``lax.scan``): (carry, per-round outputs)."""
    step = functools.partial(study_round_step, configs=configs, data=data, sink=sink, sim=sim)
    return jax.lax.scan(step, carry, xs)


def _study_result(buffers, outs) -> ExperimentResult:
    by_strategy = lambda x: jnp.moveaxis(x, 0, 1)  # (rounds + 1, S, ...) -> (S, rounds + 1, ...)
    return ExperimentResult(RoundMetrics(*(by_strategy(x) for x in outs)), buffers)


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


@functools.partial(jax.jit, static_argnames=("what",))
def _start_seeds_jit(keys, what, data):
    return jax.vmap(lambda key: _study_start(key, what.configs, data))(keys)


@functools.partial(jax.jit, static_argnames=("what",))
def _rounds_seeds_jit(carry, xs, sim, what, data):
    return jax.vmap(lambda c, x, s: _study_rounds(c, x, s, what.configs, data))(carry, xs, sim)


@functools.partial(jax.jit, static_argnames=("single",))
def _result_seeds_jit(buffers, outs, single):
    result = jax.vmap(_study_result)(buffers, outs)
    return jax.tree_util.tree_map(lambda x: x[:, 0], result) if single else result


class _RoundByRound(NamedTuple):
    """The lowered programs of a round-by-round run (:func:`_round_by_round`); ``compile()``
    compiles them and returns ``run(keys, data)``, as a lowered one-program run does."""

    what: _Program
    start: object
    rounds: object
    result: object

    def compile(self) -> Callable:
        return functools.partial(_run_rounds, self.what, self.start.compile(), self.rounds.compile(),
                                 self.result.compile())

    @property
    def out_info(self):
        """The result's shapes and dtypes, as a lowered one-program run has them."""
        return self.result.out_info


def _run_rounds(what: _Program, start, rounds, result, keys, data) -> ExperimentResult:
    """Round 0, 1, ... as calls of the compiled round program, each round's progress reported
    from its results on the host (:func:`arm_jax.experiment.round.send_reports`)."""
    carry, xs, sim = start(keys, data)
    outs = []
    for r in range(what.configs[0].rounds + 1):
        xs_r = jax.tree_util.tree_map(lambda x: x[:, r:r + 1], xs)
        carry, out = rounds(carry, xs_r, sim, data)
        oms, bon, round_keys = jax.device_get((out[0][:, 0], out[1][:, 0], xs_r[1][:, 0]))
        for seed in range(oms.shape[0]):
            send_reports(what.configs, what.sink, r, oms[seed], bon[seed], round_keys[seed])
        outs.append(out)
    return result(carry[0], jax.tree_util.tree_map(lambda *x: jnp.concatenate(x, axis=1), *outs))


def _round_by_round(what: _Program, data: ExperimentData) -> tuple[Callable, Callable]:
    """(run_seeds, lower_seeds) that run the rounds as repeated calls of one compiled round
    program and report progress from each round's results on the host, instead of a host
    callback inside one program: JAX never writes a program with host callbacks to the
    persistent compilation cache, so this is what lets a repeated ``arm-jax run`` load its
    programs instead of compiling them. The same round step as the one-program run."""
    quiet = _Program(tuple(c.replace(progress=False) for c in what.configs), what.single)

    def lower_seeds(keys) -> _RoundByRound:
        # each program traced once: the shapes between them come from the lowered programs
        start = _start_seeds_jit.lower(keys, quiet, data)
        carry, xs, sim = start.out_info
        with_rounds = lambda n: lambda x: jax.ShapeDtypeStruct((x.shape[0], n, *x.shape[2:]), x.dtype)
        rounds = _rounds_seeds_jit.lower(carry, jax.tree_util.tree_map(with_rounds(1), xs), sim, quiet, data)
        every = jax.tree_util.tree_map(with_rounds(what.configs[0].rounds + 1), rounds.out_info[1])
        return _RoundByRound(what, start, rounds, _result_seeds_jit.lower(carry[0], every, what.single))

    def run_seeds(keys):
        return check_result(lower_seeds(keys).compile()(keys, data))

    return run_seeds, lower_seeds


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
    if len(devices) == 1 and what.configs[0].progress and jax.process_count() == 1:
        return _round_by_round(what, data)
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

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax import errors
from arm_jax.errors import InputError
from arm_jax.experiment import config as config_lib
from arm_jax.experiment import datasets as data
from arm_jax.experiment import program as experiment
from arm_jax.experiment import round as round_lib
from arm_jax.experiment.config import ExperimentConfig
from arm_jax.model import config as model_config
from arm_jax.model import network as model
from arm_jax.selection import pool

TINY = dict(
    rounds=3, k=12, initial_labels=10, n_prompts=8, n_candidates=60, best_of_n=(4, 8),
    # the fixed schedule: these tests are about the experiment, and it compiles faster
    model=model.ModelConfig(depth=2, width=8), train=model_config.TrainConfig(steps=15, batch_size=16, early_stopping=False),
)


@pytest.fixture(scope="module")
def dataset():
    return data.llm_like(jax.random.PRNGKey(0), n_train_prompts=40, n_responses=5, n_test_prompts=6,
                         n_test_responses=8, dim=12)


@pytest.fixture(scope="module")
def prepared(dataset):
    return config_lib.prepare_data(dataset)


# a round's pieces, each compiled once per configuration (called op by op they compile a
# hundred small programs a test)
_initial_buffer = jax.jit(round_lib.initial_buffer, static_argnums=1)
_initial_model = jax.jit(round_lib.initial_model, static_argnums=0)
_choose_pairs = jax.jit(round_lib.choose_pairs, static_argnames=("config", "strategy", "k"))


def _trees_close(a, b, rtol=1e-5, atol=1e-6):
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


@pytest.mark.parametrize("strategy", ["pa_dopt"])
def test_scan_equals_python_loop(prepared, strategy):
    """The compiled scan is the same computation as the rounds run one by one in Python."""
    cfg = ExperimentConfig(strategy=strategy, **TINY)
    key = jax.random.PRNGKey(3)
    scanned = experiment.make_experiment(cfg, prepared).run(key)

    init_key, round_key = jax.random.split(key)
    buffer, ok = _initial_buffer(init_key, cfg, prepared)
    fitted = _initial_model(cfg, prepared)
    round_keys = jax.random.split(round_key, cfg.rounds + 1)
    step = jax.jit(lambda c, xs: round_lib.round_step(c, xs, cfg, prepared))
    outs = []
    for r in range(cfg.rounds + 1):
        (buffer, fitted, ok), out = step((buffer, fitted, ok), (jnp.int32(r), round_keys[r]))
        outs.append(out)
    oms, bon, loss, picks_ok, epochs, *_ = (jnp.stack(x) for x in zip(*outs))
    assert bool(jnp.all(picks_ok)) and bool(jnp.all(scanned.metrics.picks_ok))
    np.testing.assert_allclose(scanned.metrics.one_minus_spearman, oms, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scanned.metrics.best_of_n, bon, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(scanned.metrics.train_loss, loss, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(scanned.labelled.pairs, buffer.pairs)


def test_study_equals_each_strategy_run_alone(prepared):
    """One study of several strategies gives each strategy's own numbers and labels. The study
    runs with progress on, so round by round (:func:`_round_by_round_study`), and each strategy
    alone as one program: the two ways of running agree too. The seeds vmapped in one program
    equal each seed run alone."""
    names = ("random", "entropy")  # two cheap compiles; LAPACK strategies in a study: test_cli_experiment
    configs = [ExperimentConfig(strategy=n, **TINY) for n in names]
    keys = jax.random.split(jax.random.PRNGKey(6), 2)
    study, reports = _round_by_round_study(prepared, configs, keys)
    assert study.metrics.one_minus_spearman.shape == (2, len(names), TINY["rounds"] + 1)
    for s, config in enumerate(configs):
        exp = experiment.make_experiment(config, prepared)
        alone = exp.run_seeds(keys)
        np.testing.assert_array_equal(study.labelled.pairs[:, s], alone.labelled.pairs)
        _trees_close(jax.tree_util.tree_map(lambda x: x[:, s], study.metrics), alone.metrics, rtol=1e-4, atol=1e-5)
    for i in range(len(keys)):  # the last strategy's seeds, one program per seed
        single = exp.run(keys[i])
        _trees_close(jax.tree_util.tree_map(lambda x: x[i], alone.metrics), single.metrics, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(alone.labelled.pairs[i], single.labelled.pairs)
    # the strategies did pick differently after round 0 (else the test could not tell them apart)
    later = study.labelled.pairs[:, :, TINY["initial_labels"]:]
    assert not np.array_equal(later[:, 0], later[:, 1])
    # every strategy, seed and round reported once, with the round's numbers
    assert len(reports) == 2 * 2 * (TINY["rounds"] + 1)
    assert {(r.strategy, r.round_index) for r in reports} == {(n, i) for n in names for i in range(TINY["rounds"] + 1)}
    first = next(r for r in reports if r.strategy == "entropy" and r.round_index == 2)
    seed = [tuple(np.asarray(jax.random.split(jax.random.split(k)[1], TINY["rounds"] + 1)[2]).ravel().tolist())
            for k in keys].index(first.seed)
    assert first.one_minus_spearman == pytest.approx(float(study.metrics.one_minus_spearman[seed, 1, 2]))


@pytest.mark.parametrize(
    "configs, message",
    [
        ([], "a study needs at least one strategy"),
        ([dict(strategy="dopt"), dict(strategy="dopt")], "a study names a strategy twice: dopt, dopt"),
        ([dict(strategy="dopt"), dict(strategy="random", k=11)],
         "the configurations of a study may differ only in strategy; 'k' differs (random: 11, dopt: 12)"),
    ],
)
def test_study_rejects_configs_that_differ_beyond_strategy(prepared, configs, message):
    with pytest.raises(ValueError, match=f"^{message.replace('(', '[(]').replace(')', '[)]')}$"):
        experiment.make_study([ExperimentConfig(**{**TINY, **c}) for c in configs], prepared)


@pytest.mark.parametrize(
    "strategy, pairs",
    [("dopt", "in-prompt"), ("greedy_dopt", "cross-prompt"), ("batchbald", "in-prompt"), ("coreset", "cross-prompt"),
     ("dts", "in-prompt")],
)
def test_labelled_buffer_has_no_pair_twice(prepared, strategy, pairs):
    """No pair is labelled twice, within a round or across rounds (as in ``arm-jax select``),
    cross-prompt pairs join different prompts, and every round's picks are sound."""
    cfg = ExperimentConfig(strategy=strategy, pairs=pairs, **TINY)
    result = experiment.make_experiment(cfg, prepared).run(jax.random.PRNGKey(2))
    buf = np.asarray(result.labelled.pairs)
    assert int(result.labelled.count) == cfg.capacity == buf.shape[0]
    p, r = 40, 5
    bounds = [0, cfg.initial_labels] + [cfg.initial_labels + cfg.k * i for i in range(1, cfg.rounds + 1)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        rows = buf[lo:hi]
        assert np.all(rows[:, 0] != rows[:, 1])
        unordered = {tuple(sorted(row)) for row in rows.tolist()}
        assert len(unordered) == hi - lo
        if pairs == "in-prompt":
            assert np.all(rows[:, 0] // r == rows[:, 1] // r)
        else:
            assert np.all(rows[:, 0] // r != rows[:, 1] // r)
    assert buf.min() >= 0 and buf.max() < p * r
    assert len({tuple(sorted(row)) for row in buf.tolist()}) == cfg.capacity
    assert bool(np.all(np.asarray(result.metrics.picks_ok)))


def test_the_fits_prior_reaches_the_posterior_rules(prepared):
    """A round's picks use the previous fit's prior precision (Fitted.prior_precision): with
    the same parameters and buffer, iopt picks differently under λ = 1e-3 and λ = 1e3, while
    dopt (no prior in its score) picks the same."""
    cfg = ExperimentConfig(strategy="iopt", **TINY)
    buffer, _ = _initial_buffer(jax.random.PRNGKey(0), cfg, prepared)
    fitted, _, _ = jax.jit(round_lib.retrain, static_argnums=2)(jax.random.PRNGKey(1), buffer, cfg, prepared)
    picks = {}
    for name in ("iopt", "dopt"):
        for lam in (1e-3, 1e3):
            a, b, ok = _choose_pairs(jax.random.PRNGKey(2), fitted.params, buffer, config=cfg, data=prepared,
                                     strategy=name, k=cfg.k, prior_precision=lam)
            assert bool(ok)
            picks[name, lam] = (np.asarray(a).tolist(), np.asarray(b).tolist())
    assert picks["iopt", 1e-3] != picks["iopt", 1e3]
    assert picks["dopt", 1e-3] == picks["dopt", 1e3]
    # the linear model's study (its fit's prior reaching the rules): tests/model/test_network.py


def test_in_prompt_target_is_the_rounds_in_prompt_pairs(prepared):
    """target_pairs='in-prompt': the I-optimal rules' S is ½·mean x xᵀ over every pair of two
    responses to one of the round's prompts (float64, pair by pair), in a cross-prompt round;
    'candidates' leaves S to the candidates; both rounds pick valid pairs, and differently."""
    import itertools

    cfg = ExperimentConfig(strategy="iopt", pairs="cross-prompt", target_pairs="in-prompt", **TINY)
    buffer, _ = round_lib.initial_buffer(jax.random.PRNGKey(0), cfg, prepared)
    params = model.init_params(jax.random.PRNGKey(1), cfg.model, prepared.train_items.shape[-1])
    pool_ = round_lib.draw_pool(jax.random.PRNGKey(2), cfg, prepared)
    spread = np.asarray(round_lib.selection_inputs(params, cfg, prepared, pool_, buffer).spread)
    phi = np.asarray(model.features(params, cfg.model, prepared.train_items[pool_.items]), np.float64)
    prompt = np.asarray(pool_.items) // 5
    pairs = [(u, v) for u, v in itertools.combinations(range(phi.shape[0]), 2) if prompt[u] == prompt[v]]
    expected = sum(np.outer(phi[u] - phi[v], phi[u] - phi[v]) for u, v in pairs) / (2 * len(pairs))
    np.testing.assert_allclose(spread, expected, rtol=1e-4, atol=1e-6 * np.abs(expected).max())
    plain = dataclasses.replace(cfg, target_pairs="candidates")
    assert round_lib.selection_inputs(params, plain, prepared, pool_, buffer).spread is None
    picks = []
    for c in (cfg, plain):
        a, b, ok = round_lib.choose_pairs(jax.random.PRNGKey(3), params, buffer, c, prepared, "iopt", c.k)
        assert bool(ok)
        picks.append(sorted(zip(np.asarray(a).tolist(), np.asarray(b).tolist())))
    assert picks[0] != picks[1]
    with pytest.raises(InputError, match="target pairs must be one of"):
        ExperimentConfig(target_pairs="test")


def test_the_selection_reads_the_fits_tie_strength_whenever_the_labels_have_ties():
    """Ties come from the simulated raters' tie rate or from equal recorded ratings (the empirical
    annotator); either way the rules' Fisher weights are Davidson's at the fit's ν, as in select.
    (Before, the empirical annotator's ties were left out of the selection's weights.)"""
    nu = jnp.float32(0.4)
    assert round_lib._tie_of(ExperimentConfig(annotator="empirical"), nu) is nu
    assert round_lib._tie_of(ExperimentConfig(tie_rate=0.2), nu) is nu
    assert round_lib._tie_of(ExperimentConfig(), nu) is None
    no_tie_model = dataclasses.replace(TINY["train"], ties=False)
    assert round_lib._tie_of(ExperimentConfig(annotator="empirical", train=no_tie_model), nu) is None


@pytest.fixture(scope="module")
def one_prompt():
    """One training prompt of 5 responses: 10 possible pairs in all."""
    return config_lib.prepare_data(data.llm_like(
        jax.random.PRNGKey(0), n_train_prompts=1, n_responses=5, n_test_prompts=2, n_test_responses=8, dim=12
    ))


def test_a_run_that_runs_out_of_candidates_is_refused(one_prompt):
    """6 labels, then 6 more from the 4 unlabelled pairs left: RunFailed, not a run that
    labels padding; with allow_relabel the labelled pairs come back and the run is sound."""
    tight = {**TINY, "n_prompts": 1, "n_candidates": 10, "k": 6, "initial_labels": 6, "rounds": 1}
    exp = experiment.make_experiment(ExperimentConfig(strategy="entropy", **tight), one_prompt)
    with pytest.raises(errors.RunFailed, match=r"round\(s\) 1: a strategy picked a pair that was not a valid"):
        exp.run(jax.random.PRNGKey(0))
    loose = experiment.make_experiment(ExperimentConfig(strategy="entropy", allow_relabel=True, **tight), one_prompt)
    result = loose.run(jax.random.PRNGKey(0))
    rows = np.asarray(result.labelled.pairs).tolist()
    assert len({tuple(sorted(r)) for r in rows}) < len(rows) == 12  # pigeonhole: 12 labels, 10 pairs
    assert bool(np.all(np.asarray(result.metrics.picks_ok)))


@pytest.mark.parametrize("strategy", ["pa_dopt", "maxdiff"])
def test_all_cross_scores_every_pair_of_the_rounds_items(prepared, strategy):
    """With all-cross the round's picks are the top k of all unlabelled pairs among its items."""
    from arm_jax.experiment import pools
    from arm_jax.selection import allpairs

    cfg = ExperimentConfig(strategy=strategy, pairs="all-cross", **TINY)
    buffer, _ = round_lib.initial_buffer(jax.random.PRNGKey(0), cfg, prepared)
    params = model.init_params(jax.random.PRNGKey(1), cfg.model, prepared.train_items.shape[-1])
    key = jax.random.PRNGKey(2)
    a, b, ok = jax.jit(lambda k, p, b: round_lib.choose_pairs(k, p, b, cfg, prepared, strategy, cfg.k))(key, params, buffer)
    assert bool(ok)
    items = np.asarray(pools.round_items(jax.random.split(key)[0], 40, 5, cfg.n_prompts))
    phi = model.features(params, cfg.model, prepared.train_items[items])
    u, v, phi_diff = allpairs.explicit_pairs(phi)
    labelled = {tuple(sorted(p)) for p in np.asarray(buffer.pairs)[: int(buffer.count)].tolist()}
    pairs = list(zip(items[np.asarray(u)].tolist(), items[np.asarray(v)].tolist()))
    unlabelled = np.array([tuple(sorted(p)) not in labelled for p in pairs])
    past = round_lib.past_inputs(params, cfg, prepared, buffer, strategy)
    explicit = pool.select(strategy, None, phi_diff, model.head(params), cfg.k, valid=unlabelled,
                                 past_phi_diff=past[0], past_mask=past[1])
    expected = {tuple(sorted(p)) for p in zip(items[np.asarray(u)[explicit.indices]].tolist(),
                                               items[np.asarray(v)[explicit.indices]].tolist())}
    assert {tuple(sorted(p)) for p in zip(np.asarray(a).tolist(), np.asarray(b).tolist())} == expected


def test_all_cross_runs_end_to_end(prepared):
    cfg = ExperimentConfig(strategy="dopt", pairs="all-cross", **TINY)
    result = experiment.make_experiment(cfg, prepared).run(jax.random.PRNGKey(5))
    assert np.all(np.isfinite(np.asarray(result.metrics.one_minus_spearman)))
    rows = np.asarray(result.labelled.pairs)[cfg.initial_labels:]
    assert len({tuple(sorted(r)) for r in rows[: cfg.k].tolist()}) == cfg.k


def test_labels_follow_the_golden_reward_when_the_annotator_is_perfect(prepared):
    cfg = ExperimentConfig(strategy="maxdiff", annotation_quality=float("inf"), **TINY)
    result = experiment.make_experiment(cfg, prepared).run(jax.random.PRNGKey(4))
    buf = np.asarray(result.labelled.pairs)
    gold = np.asarray(prepared.train_rewards)
    assert np.all(gold[buf[:, 0]] >= gold[buf[:, 1]])


def test_dopt_learns_on_llm_like_data():
    """More labels help: 1 − Spearman falls well below its round-0 value."""
    ds = data.llm_like(jax.random.PRNGKey(0), n_train_prompts=200, n_responses=10, n_test_prompts=20,
                       n_test_responses=20, dim=32)
    cfg = ExperimentConfig(
        strategy="dopt", rounds=4, k=60, initial_labels=40, n_prompts=40, n_candidates=600, best_of_n=(20,),
        model=model.ModelConfig(depth=2, width=32), train=model_config.TrainConfig(steps=200, learning_rate=3e-3),
    )
    m = experiment.make_experiment(cfg, ds).run_seeds(jax.random.split(jax.random.PRNGKey(0), 2)).metrics
    oms = np.asarray(m.one_minus_spearman).mean(0)
    assert oms[-1] < oms[0] - 0.1
    assert oms[-1] < 0.5


def test_the_rounds_hand_off_at_the_buffers_count(prepared):
    """A round's selection (``choose_pairs``, what the scanned program runs) with ``random_after``
    above the buffer's labelled count picks exactly the plain rule's pairs, and at the count other
    pairs (a draw: its scores are 0), valid and distinct."""
    cfg = ExperimentConfig(strategy="iopt", **TINY)
    buffer, ok = _initial_buffer(jax.random.PRNGKey(1), cfg, prepared)
    n = int(buffer.mask.sum())
    assert bool(ok) and n == TINY["initial_labels"]
    params = _initial_model(cfg, prepared).params
    picks = {after: _choose_pairs(jax.random.PRNGKey(2), params, buffer,
                                  config=dataclasses.replace(cfg, random_after=after), data=prepared, strategy="iopt",
                                  k=TINY["k"])
             for after in (None, n + 1, n)}
    plain, below, at = ([tuple(p) for p in zip(np.asarray(a), np.asarray(b))] for a, b, _ in picks.values())
    assert below == plain and at != plain and len(set(at)) == TINY["k"] and all(bool(p[2]) for p in picks.values())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(strategy="best"), "unknown strategy 'best'"),
        (dict(pairs="all"), "unknown pair mode 'all'"),
        (dict(pairs="all-cross", strategy="coreset"), "strategy 'coreset' cannot score all pairs; with pairs='all-cross' use one of: entropy"),
        (dict(k=0), "k must be >= 1, got 0"),
        (dict(k=100, n_candidates=50), "k = 100 is larger than the 50 candidates per round"),
        (dict(rounds=-1), "rounds must be >= 0"),
        (dict(best_of_n=()), "best_of_n must be positive integers"),
        (dict(explore=-0.1), r"explore must be a fraction in \[0, 1\], got -0.1"),
        (dict(explore=0.2, pairs="all-cross", strategy="dopt"), "explore draws among sampled candidates"),
        (dict(random_after=-1), "random-after must be a whole number of labelled pairs >= 0, got -1"),
        (dict(random_after=100, pairs="all-cross", strategy="dopt"), "random_after draws among sampled candidates"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExperimentConfig(**kwargs)


def test_config_checked_against_data(dataset):
    with pytest.raises(ValueError, match="n_prompts = 50 is more than the 40 training prompts"):
        experiment.make_experiment(ExperimentConfig(**{**TINY, "n_prompts": 50}), dataset)
    with pytest.raises(ValueError, match="best_of_n N = 9 is more than the 8 responses per test prompt"):
        experiment.make_experiment(ExperimentConfig(**{**TINY, "best_of_n": (9,)}), dataset)
    with pytest.raises(ValueError, match="a round has only 20 possible in-prompt pairs, fewer than k = 30"):
        experiment.make_experiment(ExperimentConfig(**{**TINY, "n_prompts": 2, "k": 30}), dataset)


def test_progress_reaches_the_callback_given_and_nothing_is_printed(prepared, capsys):
    """Progress goes to the ``progress`` argument (no module-level sink, no printing): one
    report per strategy, seed and round, with the numbers the result holds."""
    reports = []
    configs = [ExperimentConfig(strategy=s, progress=True, **TINY) for s in ("random", "maxdiff")]
    keys = jax.random.split(jax.random.PRNGKey(6), 2)
    result = experiment.make_study(configs, prepared, progress=reports.append).run_seeds(keys)
    assert capsys.readouterr().out == ""
    assert len(reports) == 2 * 2 * (TINY["rounds"] + 1)
    oms = np.asarray(result.metrics.one_minus_spearman)  # (seeds, strategies, rounds + 1)
    got = sorted((r.strategy, r.round_index, round(r.one_minus_spearman, 5)) for r in reports)
    want = sorted((c.strategy, i, round(float(oms[seed, s, i]), 5)) for seed in range(2)
                  for s, c in enumerate(configs) for i in range(TINY["rounds"] + 1))
    assert got == want


def test_ties_a_panel_and_costs_run_end_to_end(prepared):
    """The simulator's ties and panel: one vote per row, raters recorded, the fits' tie
    strength and reliabilities reported every round, and the tie-aware selection runs; with
    simulated costs and cost-aware picks, the cost spent is that of the labelled pairs and
    every round's batch gain is finite."""
    cfg = ExperimentConfig(strategy="pa_dopt", **TINY).replace(
        tie_rate=0.3, annotator_quality=(0.0, 1.0, 4.0), train=dataclasses.replace(TINY["train"], annotators=3),
        item_costs="lognormal", cost_aware=True,
    )
    # one strategy that reads the weighted, reliability-scaled past and the tie (the posterior's
    # greedy batch, in its cost-aware knapsack form); the study machinery is tested elsewhere
    cfg = cfg.replace(strategy="greedy_dopt")
    result = experiment.make_study([cfg], prepared).run_seeds(jax.random.split(jax.random.PRNGKey(3), 2))
    m = result.metrics
    assert np.asarray(m.reliability).shape == (2, 1, cfg.rounds + 1, 3)
    assert np.all(np.asarray(m.tie_strength)[:, :, -1] > 0)
    buf = result.labelled
    counts, rater = np.asarray(buf.counts), np.asarray(buf.annotator)
    assert np.all(counts.sum(-1) == 1) and set(np.unique(rater).tolist()) <= {0, 1, 2}
    assert counts[..., 2].sum() > 0  # some ties were drawn
    costs = np.asarray(config_lib.item_costs(cfg, prepared))
    pairs = np.asarray(buf.pairs)
    ends = cfg.annotations()
    spent = np.asarray(m.cost_spent)
    for r, end in enumerate(ends):
        np.testing.assert_allclose(spent[..., r], (costs[pairs[..., :end, 0]] + costs[pairs[..., :end, 1]]).sum(-1),
                                   rtol=1e-5)
    assert np.all(np.isfinite(np.asarray(m.batch_gain))) and np.all(np.asarray(m.batch_gain) > 0)
    with pytest.raises(InputError, match="reliabilities to fit"):
        cfg.replace(train=dataclasses.replace(TINY["train"], annotators=4))


def _round_by_round_study(prepared, configs, keys):
    """(result, progress reports) of the study of ``configs`` with progress on, on one device:
    its rounds are calls of one compiled round program and the progress comes from their
    results on the host, so no program carries a host callback (JAX never caches those)."""
    reports = []
    loud = experiment.make_study([c.replace(progress=True) for c in configs], prepared,
                                 devices=jax.devices()[:1], progress=reports.append)
    lowered = loud.lower_seeds(keys)
    assert "callback" not in lowered.rounds.as_text() and "callback" not in lowered.start.as_text()
    return lowered.compile()(keys, prepared), reports

"""Unit tests of the pieces behind select/train/score (pool_io, labels, candidates, fitting,
model_files) and of the loop in arm_jax.workflow.select."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import jax
import numpy as np
import pytest

from arm_jax.errors import InputError
from arm_jax.model import buffer as buffer_lib
from arm_jax.model import evaluate
from arm_jax.model import fit as train_lib
from arm_jax.model import network as model_lib
from arm_jax.model.config import TrainConfig
from arm_jax.model.network import ModelConfig
from arm_jax.workflow import candidates, fitting, score
from arm_jax.workflow import checkpoint as model_files
from arm_jax.workflow import fitting as fitting_lib
from arm_jax.workflow import labels as labels_lib
from arm_jax.workflow import pool as pool_io
from arm_jax.workflow import select as realdata

MODEL = ModelConfig(depth=2, width=8)
TRAIN = TrainConfig(steps=30, batch_size=16)


def _npz(path, n=20, d=4, prompts=None, item_ids=None, seed=0, **extra):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    arrays = {"embeddings": x, **extra}
    if prompts is not None:
        arrays["prompt_ids"] = prompts
    if item_ids is not None:
        arrays["item_ids"] = item_ids
    np.savez(path, **arrays)
    return x


def _write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


# ----------------------------------------------------------------------------- pools


def test_npy_paper_layout_is_memory_mapped_with_prompt_ids(tmp_path):
    x = np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5)
    np.save(tmp_path / "pool.npy", x)
    pool = pool_io.load_pool(tmp_path / "pool.npy")
    assert isinstance(pool.embeddings, np.memmap)
    assert (pool.n, pool.dim) == (12, 5)
    assert pool.item_ids.tolist()[:5] == ["0:0", "0:1", "0:2", "0:3", "1:0"]
    assert pool.prompt_ids.tolist() == ["0"] * 4 + ["1"] * 4 + ["2"] * 4
    np.testing.assert_array_equal(pool.embeddings[pool.index_of()["2:1"]], x[2, 1])


def test_npy_two_dimensional_has_row_ids_and_no_prompts(tmp_path):
    np.save(tmp_path / "pool.npy", np.ones((3, 2), np.float64))
    pool = pool_io.load_pool(tmp_path / "pool.npy")
    assert pool.item_ids.tolist() == ["0", "1", "2"] and pool.prompt_ids is None


def test_npz_ids_integers_become_strings(tmp_path):
    _npz(tmp_path / "p.npz", n=4, prompts=np.array([7, 7, 8, 8]), item_ids=np.array([10, 11, 12, 13]))
    pool = pool_io.load_pool(tmp_path / "p.npz")
    assert pool.item_ids.tolist() == ["10", "11", "12", "13"]
    assert pool.prompt_ids.tolist() == ["7", "7", "8", "8"]


def test_npz_default_ids_are_row_numbers(tmp_path):
    _npz(tmp_path / "p.npz", n=3)
    pool = pool_io.load_pool(tmp_path / "p.npz")
    assert pool.item_ids.tolist() == ["0", "1", "2"] and pool.prompt_ids is None


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"embeddings": np.zeros((2, 3, 4, 5), np.float32)}, "expected (N, D)"),
        ({"embeddings": np.zeros((5, 3), np.int64)}, "dtype int64, expected float16, float32 or float64"),
        ({"vectors": np.zeros((5, 3), np.float32)}, "no 'embeddings' array (found: vectors)"),
        ({"embeddings": np.zeros((1, 3), np.float32)}, "at least 2 are needed"),
        ({"embeddings": np.zeros((3, 2), np.float32), "item_ids": np.array(["a", "b", "a"])},
         "item_ids are not unique ('a' at rows 0 and 2)"),
        ({"embeddings": np.zeros((3, 2), np.float32), "prompt_ids": np.array([1, 2])},
         "prompt_ids has shape (2,), expected (3,)"),
        ({"embeddings": np.zeros((3, 2), np.float32), "item_ids": np.array([0.5, 1.5, 2.5])},
         "item_ids has dtype float64, expected strings or integers"),
        ({"embeddings": np.zeros((2, 2), np.float32), "item_ids": np.array(["a", None], dtype=object)},
         "item_ids cannot be read without pickle"),
    ],
)
def test_bad_npz_pools(tmp_path, arrays, message):
    np.savez(tmp_path / "p.npz", **arrays)
    with pytest.raises(InputError, match=None) as err:
        pool_io.load_pool(tmp_path / "p.npz")
    assert message in str(err.value)
    assert str(tmp_path / "p.npz") in str(err.value)


def test_nonfinite_rows_are_counted(tmp_path):
    x = np.zeros((50, 3), np.float32)
    x[7, 1] = np.nan
    x[9] = np.inf
    x[40, 0] = -np.inf
    np.save(tmp_path / "p.npy", x)
    assert pool_io.nonfinite_rows(np.load(tmp_path / "p.npy", mmap_mode="r"), chunk_bytes=24) == (3, 7)
    with pytest.raises(InputError, match=r"3 row\(s\) of embeddings contain NaN or inf \(first: row 7, item '7'\)"):
        pool_io.load_pool(tmp_path / "p.npy")


def test_missing_unknown_and_garbage_pools(tmp_path):
    with pytest.raises(FileNotFoundError):
        pool_io.load_pool(tmp_path / "nope.npz")
    (tmp_path / "p.txt").write_text("1 2 3")
    with pytest.raises(InputError, match="unknown pool format '.txt'"):
        pool_io.load_pool(tmp_path / "p.txt")
    (tmp_path / "p.npy").write_text("not numpy")
    with pytest.raises(InputError, match="not a readable .npy file"):
        pool_io.load_pool(tmp_path / "p.npy")


# ----------------------------------------------------------------------------- labels


@pytest.fixture
def pool(tmp_path):
    _npz(tmp_path / "pool.npz", n=6, prompts=np.array([0, 0, 0, 1, 1, 1]),
         item_ids=np.array(["a", "b", "c", "3", "4", "5"]))
    return pool_io.load_pool(tmp_path / "pool.npz")


def test_labels_ids_compare_as_strings_ties_and_blank_lines(tmp_path, pool):
    path = _write_lines(tmp_path / "l.jsonl", [
        '{"winner": "a", "loser": 3, "annotator": "x"}',
        "",
        '{"winner": "4", "loser": "b"}',
        '{"winner": 5, "loser": "c", "tie": true}',
        '{"winner": "c", "loser": "a", "tie": false}',
    ])
    labels = labels_lib.load_labels(path, pool)
    assert labels.winner.tolist() == [0, 4, 2] and labels.loser.tolist() == [3, 1, 0]
    assert labels.line.tolist() == [1, 3, 5]
    assert (labels.tie_a.tolist(), labels.tie_b.tolist()) == ([5], [2])
    keys = labels_lib.labelled_keys(labels, pool.n)
    assert sorted(keys.tolist()) == sorted({min(a, b) * 6 + max(a, b) for a, b in [(0, 3), (4, 1), (5, 2), (2, 0)]})


def test_label_kinds_become_vote_counts(tmp_path, pool):
    """Ties, a and b with a winner, soft labels, vote counts and raters: every line a row of
    votes (first, second, tie) with its rater; the pairs count as labelled."""
    path = _write_lines(tmp_path / "l.jsonl", [
        '{"winner": "a", "loser": 3, "annotator": "x"}',
        '{"a": "b", "b": "c", "tie": true, "annotator": "y"}',
        '{"a": "4", "b": "5", "winner": "5", "annotator": 7}',
        '{"a": "a", "b": "c", "p_a": 0.25}',
        '{"a": "3", "b": "b", "votes_a": 7, "votes_b": 3, "votes_tie": 1, "annotator": "x"}',
    ])
    labels = labels_lib.load_labels(path, pool)
    v = labels.votes
    assert v.first.tolist() == [0, 1, 4, 0, 3] and v.second.tolist() == [3, 2, 5, 2, 1]
    np.testing.assert_array_equal(v.counts, [[1, 0, 0], [0, 0, 1], [0, 1, 0], [0.25, 0.75, 0], [7, 3, 1]])
    assert v.annotators == ("x", "y", "7") and v.annotator.tolist() == [0, 1, 2, -1, 0]
    assert v.per_annotator().tolist() == [2, 1, 1]
    assert (labels.winner.tolist(), labels.loser.tolist()) == ([0, 5], [3, 4])  # the decided lines
    assert (labels.n, labels.n_ties, labels.n_soft, labels.n_train) == (2, 1, 2, 5)
    assert labels_lib.labelled_keys(labels, 6).size == 5


def test_decided_labels_with_one_rater_are_plain_bradley_terry(tmp_path, pool):
    """One rater (or none) and decided lines only: no votes, the Bradley–Terry path."""
    path = _write_lines(tmp_path / "l.jsonl", [
        '{"winner": "a", "loser": 3, "annotator": "x"}', '{"winner": "b", "loser": "c", "annotator": "x"}',
    ])
    assert labels_lib.load_labels(path, pool).votes is None


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "l.jsonl:2: not valid JSON"),
        ('["a", "b"]', "l.jsonl:2: expected a JSON object"),
        ('{"winner": "a"}', "l.jsonl:2: missing field 'loser'"),
        ('{"loser": "a"}', "l.jsonl:2: missing field 'winner'"),
        ('{"winner": "zz", "loser": "a"}', "l.jsonl:2: id 'zz' is not in the pool"),
        ('{"winner": 9, "loser": "a"}', "l.jsonl:2: id '9' is not in the pool"),
        ('{"winner": "a", "loser": "a"}', "l.jsonl:2: winner and loser are the same item 'a'"),
        ('{"winner": true, "loser": "a"}', "l.jsonl:2: winner must be a string or an integer id, got true"),
        ('{"winner": 1.5, "loser": "a"}', "l.jsonl:2: winner must be a string or an integer id, got 1.5"),
        ('{"winner": "b", "loser": "a", "tie": "yes"}', "l.jsonl:2: field 'tie' must be true or false"),
        # ties, raters, soft labels
        ('{"a": "a", "b": "b", "tie": true, "winner": "a"}', "l.jsonl:2: a tie line names a winner"),
        ('{"a": "a", "b": "b", "tie": true, "p_a": 0.5}', "l.jsonl:2: a tie line carries 'p_a'"),
        ('{"a": "a", "b": "b", "winner": "c"}', "l.jsonl:2: winner 'c' is neither a ('a') nor b ('b')"),
        ('{"a": "a", "b": "b", "p_a": 1.5}', "l.jsonl:2: p_a must be in [0, 1], got 1.5"),
        ('{"a": "a", "b": "b", "p_a": -0.1}', "l.jsonl:2: p_a must be in [0, 1]"),
        ('{"a": "a", "b": "b", "p_a": "0.7"}', "l.jsonl:2: field 'p_a' must be a number"),
        ('{"a": "a", "b": "b", "votes_a": -1, "votes_b": 3}', "l.jsonl:2: votes_a must be a count >= 0, got -1"),
        ('{"a": "a", "b": "b", "votes_a": 0, "votes_b": 0}', "l.jsonl:2: no votes"),
        ('{"a": "a", "b": "b", "p_a": 0.5, "votes_a": 2}', "l.jsonl:2: give either 'p_a' or vote counts"),
        ('{"a": "a", "b": "b"}', "l.jsonl:2: a line with \"a\" and \"b\" needs"),
        ('{"a": "a"}', "l.jsonl:2: missing field 'b'"),
        ('{"winner": "a", "loser": "b", "p_a": 0.5}', "l.jsonl:2: 'p_a' needs the pair as \"a\" and \"b\""),
        ('{"winner": "a", "loser": "b", "annotator": null}', "l.jsonl:2: annotator must be a string or an integer id"),
        ('{"winner": "a", "loser": "b", "annotator": ["x"]}', "l.jsonl:2: annotator must be a string or an integer"),
        ('{"winner": "a", "loser": "b", "rater": "x"}', "l.jsonl:2: unknown rater field 'rater'"),
        ('{"winner": "a", "loser": "b", "annotator_id": 3}', "l.jsonl:2: unknown rater field 'annotator_id'"),
    ],
)
def test_bad_label_lines(tmp_path, pool, line, message):
    path = _write_lines(tmp_path / "l.jsonl", ['{"winner": "a", "loser": "b"}', line])
    with pytest.raises(InputError) as err:
        labels_lib.load_labels(path, pool)
    assert message in str(err.value)


# ----------------------------------------------------------------------------- candidate pairs


def _brute_force(prompts, mode):
    n = len(prompts)
    out = set()
    for i, j in itertools.combinations(range(n), 2):
        same = prompts is not None and prompts[i] == prompts[j]
        if mode == "all-cross" or prompts is None or (mode == "in-prompt") == same:
            out.add((min(i, j), max(i, j)))
    return out


@pytest.mark.parametrize("mode", ["in-prompt", "cross-prompt", "all-cross"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pair_index_enumerates_exactly_the_mode(mode, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 25))
    prompts = rng.integers(0, 5, size=n).astype(str)
    pool = pool_io.Pool("p", np.zeros((n, 1), np.float32), np.arange(n).astype(str), prompts)
    index = candidates.pair_index(pool, mode)
    a, b = index.decode(np.arange(index.total))
    got = [(min(x, y), max(x, y)) for x, y in zip(a.tolist(), b.tolist())]
    assert len(got) == len(set(got)) == index.total
    assert set(got) == _brute_force(prompts.tolist(), mode)


def test_cross_prompt_without_prompt_ids_is_any_two_items():
    pool = pool_io.Pool("p", np.zeros((5, 1), np.float32), np.arange(5).astype(str), None)
    assert candidates.pair_index(pool, "cross-prompt").total == 10
    with pytest.raises(InputError, match="no prompt_ids"):
        candidates.pair_index(pool, "in-prompt")


@pytest.mark.parametrize("total, m", [(10, 3), (10, 10), (10, 50), (5_000_000, 1000), (3_000_000, 1_000_000)])
def test_sample_distinct(total, m):
    got = candidates.sample_distinct(np.random.default_rng(0), total, m)
    assert got.size == min(total, m) and np.unique(got).size == got.size
    assert got.min() >= 0 and got.max() < total and np.all(np.diff(got) > 0)


def test_sample_distinct_is_uniform():
    counts = np.zeros(10)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        counts[candidates.sample_distinct(rng, 10, 3)] += 1
    np.testing.assert_allclose(counts / 2000, 0.3, atol=0.04)
    # the large-range path (draws with replacement, first occurrences) is uniform too
    hits = candidates.sample_distinct(np.random.default_rng(1), 50_000_000, 200_000)
    frac_low = np.mean(hits < 25_000_000)
    assert abs(frac_low - 0.5) < 0.01


def test_candidate_pairs_mask_labelled_pairs_in_either_order(pool):
    labels = labels_lib.Labels("l", np.array([1, 4]), np.array([0, 3]), np.array([1, 2]), np.zeros(0, np.int64), np.zeros(0, np.int64))
    keys = labels_lib.labelled_keys(labels, pool.n)
    cand = candidates.candidate_pairs(pool, "in-prompt", 100, 0, keys)
    assert cand.universe == 6 and cand.a.size == 6
    masked = {(int(a), int(b)) for a, b, v in zip(cand.a, cand.b, cand.valid) if not v}
    assert {tuple(sorted(p)) for p in masked} == {(0, 1), (3, 4)}
    assert np.all(cand.a != cand.b)
    sub = candidates.candidate_pairs(pool, "cross-prompt", 4, 0, keys)
    assert sub.a.size == 4 and sub.universe == 9
    np.testing.assert_array_equal(sub.a, candidates.candidate_pairs(pool, "cross-prompt", 4, 0, keys).a)


# ----------------------------------------------------------------------------- the model


def test_fit_on_labels_equals_fit_on_the_whole_pool():
    x = np.random.default_rng(0).normal(size=(30, 5)).astype(np.float32)
    w = np.array([3, 7, 7, 20, 1]), np.array([4, 8, 29, 0, 2])
    params, report = fitting.fit_on_labels(5, x, w[0], w[1], MODEL, TRAIN)
    buffer = buffer_lib.buffer_from_pairs(w[0], w[1])
    ref, stats = train_lib.fit_jit(fitting.train_key(5), x, buffer, model_config=MODEL, train_config=TRAIN)
    for p, q in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-6)
    assert report.as_dict() == fitting.fit_report(stats, TRAIN).as_dict()  # NaN -> None: comparable
    assert report.steps_taken == int(stats.steps_taken) and report.n_fit + report.n_val == 5


def test_no_labels_gives_the_seeded_initialisation():
    x = np.zeros((4, 3), np.float32)
    empty = np.zeros(0, np.int64)
    params, report = fitting.fit_on_labels(2, x, empty, empty, MODEL, TRAIN)
    assert report.steps_taken == 0 and report.n_fit == 0 and np.isnan(report.val_accuracy)
    ref, _ = train_lib.fit(fitting.train_key(2), jax.numpy.asarray(x), buffer_lib.empty_buffer(1), MODEL, TrainConfig(steps=1))
    for p, q in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(ref)):
        np.testing.assert_array_equal(p, q)


def test_item_features_in_chunks_match_one_forward_pass(monkeypatch):
    monkeypatch.setattr(fitting, "_FEATURE_CHUNK", 16)
    x = np.random.default_rng(1).normal(size=(37, 6))
    params = model_lib.init_params(jax.random.PRNGKey(0), MODEL, 6)
    phi, r = fitting.item_features(params, MODEL, x)
    ref_phi, ref_r = model_lib.features_and_reward(params, MODEL, x.astype(np.float32))
    np.testing.assert_allclose(phi, ref_phi, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r, ref_r, rtol=1e-5, atol=1e-6)
    rows = np.array([36, 0, 5])
    phi_rows, _ = fitting.item_features(params, MODEL, x, rows)
    np.testing.assert_allclose(phi_rows, np.asarray(ref_phi)[rows], rtol=1e-5, atol=1e-6)


def test_model_file_round_trip_and_errors(tmp_path):
    params = model_lib.init_params(jax.random.PRNGKey(3), MODEL, 7)
    model_files.save_model(tmp_path / "m.msgpack", params, MODEL, 7, {"n_labels": 4})
    saved = model_files.load_model(tmp_path / "m.msgpack")
    assert saved.model_config == MODEL and saved.input_dim == 7 and saved.metadata == {"n_labels": 4}
    for p, q in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(saved.params)):
        np.testing.assert_array_equal(p, q)
    (tmp_path / "junk").write_bytes(b"\x00\x01garbage")
    with pytest.raises(InputError, match="junk: not an arm-jax model file"):
        model_files.load_model(tmp_path / "junk")
    with pytest.raises(FileNotFoundError):
        model_files.load_model(tmp_path / "missing.msgpack")


def test_pairwise_accuracy_and_split():
    assert evaluate.pairwise_accuracy(np.array([1.0, 0.0, 2.0, 1.0]), np.array([0.0, 1.0, 2.0, 0.5])) == pytest.approx(0.625)
    tr, va = labels_lib.split_labels(10, 0.2, 0)
    assert va.size == 2 and tr.size == 8 and set(tr) | set(va) == set(range(10))
    tr, va = labels_lib.split_labels(3, 0.1, 0)
    assert va.size == 1 and tr.size == 2
    tr, va = labels_lib.split_labels(1, 0.1, 0)
    assert va.size == 0 and tr.tolist() == [0]
    with pytest.raises(InputError):
        labels_lib.split_labels(10, 1.0, 0)


def test_pairwise_log_loss():
    # gaps 0, log 3 and -log 3: -log sigmoid = log 2, log(4/3), log 4
    got = evaluate.pairwise_log_loss(np.array([1.0, np.log(3.0), 0.0]), np.array([1.0, 0.0, np.log(3.0)]))
    assert got == pytest.approx((np.log(2.0) + np.log(4.0 / 3.0) + np.log(4.0)) / 3)
    assert evaluate.pairwise_log_loss(np.array([800.0]), np.array([0.0])) == pytest.approx(0.0)  # no overflow
    assert evaluate.pairwise_log_loss(np.array([0.0]), np.array([800.0])) == pytest.approx(800.0)
    assert np.isnan(evaluate.pairwise_log_loss(np.zeros(0), np.zeros(0)))


def test_expected_calibration_error_by_hand():
    # Each comparison enters as (p, 1) and (1 - p, 0); bins of width 0.1. Entries:
    # bin 9: (.95, 1) -> -.05 | bin 0: (.05, 0) -> +.05 | bin 6: (.62, 1), (.65, 0) -> +.27
    # bin 3: (.38, 0), (.35, 1) -> -.27 | bin 8: (.85, 1) -> -.15 | bin 1: (.15, 0) -> +.15
    # ECE = (.05 + .05 + .27 + .27 + .15 + .15) / 8 = .1175
    assert evaluate.expected_calibration_error(np.array([0.95, 0.62, 0.35, 0.85])) == pytest.approx(0.1175)
    # the top-label form: confidences .95 (right), .62 (right), .65 (wrong), .85 (right)
    # in bins [.9, 1), [.6, .7), [.8, .9): (.05 + 2 * |.635 - .5| + .15) / 4 = .1175
    # calibrated: three winners at .75 and one comparison the model gave the loser .75
    assert evaluate.expected_calibration_error(np.array([0.75, 0.75, 0.75, 0.25])) == pytest.approx(0.0)
    # always sure and always right: 0; always sure and always wrong: 1; p = 1 falls in the last bin
    assert evaluate.expected_calibration_error(np.ones(3)) == 0.0
    assert evaluate.expected_calibration_error(np.zeros(3)) == 1.0
    assert np.isnan(evaluate.expected_calibration_error(np.zeros(0)))


def test_expected_calibration_error_equals_top_label_ece():
    p = np.random.default_rng(0).uniform(size=500)
    conf = np.maximum(p, 1 - p)
    right = (p > 0.5).astype(float)
    bins = np.minimum(((conf - 0.5) * 10).astype(int), 4)  # five bins of [.5, 1]
    top_label = sum(abs(np.sum(conf[bins == b] - right[bins == b])) for b in range(5)) / p.size
    assert evaluate.expected_calibration_error(p) == pytest.approx(top_label)


def test_pair_metrics():
    m = evaluate.pair_metrics(np.array([2.0, 0.0]), np.array([0.0, 1.0]))
    assert m.n == 2 and m.accuracy == 0.5
    assert m.log_loss == pytest.approx(np.mean(np.log1p(np.exp([-2.0, 1.0]))))
    assert m.ece == pytest.approx(evaluate.expected_calibration_error(1 / (1 + np.exp([-2.0, 1.0]))))
    assert evaluate.PairMetrics(0, float("nan"), 1.0, 0.5).as_dict() == {"n": 0, "accuracy": None, "log_loss": 1.0,
                                                                       "ece": 0.5}


def test_score_paths():
    assert score.score_paths("out/scores") == (Path("out/scores.npy"), Path("out/scores.csv"))
    assert score.score_paths("s.csv") == score.score_paths("s.npy") == score.score_paths("s")
    assert score.score_paths("run.v2")[1].name == "run.v2.csv"


def test_select_pairs_library_call(tmp_path):
    x = _npz(tmp_path / "pool.npz", n=24, d=5, prompts=np.repeat(np.arange(6), 4))
    golden = x @ np.arange(5.0)
    result = realdata.select_pairs(tmp_path / "pool.npz", None, tmp_path / "a.jsonl", "dopt", 6,
                                   model_config=MODEL, train_config=TRAIN)
    lines = [json.loads(s) for s in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert [r["rank"] for r in lines] == list(range(1, 7)) == [r["rank"] for r in result.rows]
    labels = tmp_path / "l.jsonl"
    labels.write_text("".join(
        json.dumps({"winner": r["a"], "loser": r["b"]} if golden[int(r["a"])] > golden[int(r["b"])]
                   else {"winner": r["b"], "loser": r["a"]}) + "\n" for r in lines))
    result = realdata.select_pairs(tmp_path / "pool.npz", labels, tmp_path / "b.jsonl", "pa_dopt", 6,
                                   model_config=MODEL, train_config=TRAIN)
    old = {frozenset((r["a"], r["b"])) for r in lines}
    new = {frozenset((r["a"], r["b"])) for r in result.rows}
    assert len(new) == 6 and not old & new
    assert result.n_labels == 6 and set(result.timings) >= {"load", "train", "features", "select", "write", "total"}


@pytest.mark.parametrize("strategy", ["dopt", "pa_dopt", "maxdiff"])
def test_all_cross_matches_explicit_pairs(tmp_path, monkeypatch, strategy):
    """The all-pairs kernel and the explicit-pair fallback pick the same pairs."""
    x = _npz(tmp_path / "pool.npz", n=30, d=5)
    golden = x @ np.arange(1.0, 6.0)
    labels = tmp_path / "l.jsonl"
    labels.write_text("".join(
        json.dumps({"winner": str(a), "loser": str(b)} if golden[a] > golden[b] else {"winner": str(b), "loser": str(a)}) + "\n"
        for a, b in [(0, 1), (2, 9), (4, 20), (7, 3), (11, 29), (15, 16)]))
    kwargs = dict(pairs="all-cross", model_config=MODEL, train_config=TRAIN, seed=1)
    if realdata._load_allpairs() is None:
        pytest.skip("arm_jax.selection.allpairs is not available")
    fast = realdata.select_pairs(tmp_path / "pool.npz", labels, tmp_path / "a.jsonl", strategy, 12, **kwargs)
    monkeypatch.setattr(realdata, "_load_allpairs", lambda: None)
    slow = realdata.select_pairs(tmp_path / "pool.npz", labels, tmp_path / "b.jsonl", strategy, 12, **kwargs)
    fast_pairs = [(r["a"], r["b"]) for r in fast.rows]
    slow_pairs = [(r["a"], r["b"]) for r in slow.rows]
    labelled = {("0", "1"), ("2", "9"), ("4", "20"), ("3", "7"), ("11", "29"), ("15", "16")}
    assert not labelled & set(fast_pairs) and fast.n_candidates == 435 and fast.n_masked == 6
    # the explicit path leaves labelled pairs out of the pool information M, the kernel
    # counts them: scores differ slightly and near-ties reorder, so only broad agreement
    assert fast_pairs[0] == slow_pairs[0] and len(set(fast_pairs) & set(slow_pairs)) >= 6
    # cold start (no labels, so the same M): identical picks
    fast = realdata.select_pairs(tmp_path / "pool.npz", None, tmp_path / "c.jsonl", strategy, 12, **kwargs)
    monkeypatch.undo()
    slow = realdata.select_pairs(tmp_path / "pool.npz", None, tmp_path / "d.jsonl", strategy, 12, **kwargs)
    assert [(r["a"], r["b"]) for r in fast.rows] == [(r["a"], r["b"]) for r in slow.rows]
    np.testing.assert_allclose([r["score"] for r in fast.rows], [r["score"] for r in slow.rows], rtol=1e-4)


def test_candidates_are_redrawn_when_the_labels_change():
    n = 200
    pool = pool_io.Pool("p", np.zeros((n, 1), np.float32), np.arange(n).astype(str), None)
    none = np.zeros(0, np.int64)
    first = candidates.candidate_pairs(pool, "cross-prompt", 500, 0, none)
    again = candidates.candidate_pairs(pool, "cross-prompt", 500, 0, none)
    np.testing.assert_array_equal(first.a, again.a)
    np.testing.assert_array_equal(first.b, again.b)
    labelled = np.sort(labels_lib.pair_keys(first.a[:50], first.b[:50], n))
    second = candidates.candidate_pairs(pool, "cross-prompt", 500, 0, labelled)
    overlap = np.intersect1d(labels_lib.pair_keys(first.a, first.b, n), labels_lib.pair_keys(second.a, second.b, n))
    assert overlap.size < 100  # a fresh draw (expected 500 * 500 / 19900 ≈ 13 in common), not the same one
    assert candidates.candidate_pairs(pool, "cross-prompt", 500, 1, none).a.tolist() != first.a.tolist()


def test_all_cross_asks_again_when_labelled_pairs_crowd_the_top():
    if realdata._load_allpairs() is None:
        pytest.skip("arm_jax.selection.allpairs is not available")
    rng = np.random.default_rng(0)
    n = 40
    phi = rng.normal(size=(n, 4)).astype(np.float32)
    beta = rng.normal(size=4).astype(np.float32)
    r = phi @ beta
    a, b = np.triu_indices(n, 1)
    order = np.argsort(-np.abs(r[a] - r[b]), kind="stable")
    labelled = np.sort(labels_lib.pair_keys(a[order[:100]], b[order[:100]], n))  # the 100 largest gaps
    got_a, got_b, scores = realdata._select_all_pairs("maxdiff", 0, phi, beta, 5, None, labelled, n)
    assert set(zip(got_a.tolist(), got_b.tolist())) == set(zip(a[order[100:105]].tolist(), b[order[100:105]].tolist()))
    np.testing.assert_allclose(scores, np.abs(r[a] - r[b])[order[100:105]], rtol=1e-4)


def test_labels_may_start_with_a_byte_order_mark(tmp_path, pool):
    path = tmp_path / "l.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"winner": "a", "loser": "b"}\n')
    assert labels_lib.load_labels(path, pool).winner.tolist() == [0]


def test_float64_beyond_float32_range_counts_as_not_finite(tmp_path):
    x = np.zeros((5, 2))
    x[2, 1] = 1e300  # finite in float64, inf as float32
    np.save(tmp_path / "p.npy", x)
    with pytest.raises(InputError, match=r"1 row\(s\) of embeddings contain NaN or inf \(or values beyond float32's "
                                         r"range\) \(first: row 2, item '2'\)"):
        pool_io.load_pool(tmp_path / "p.npy")


def test_data_error_is_the_input_error():
    assert fitting_lib.DataError is InputError and issubclass(InputError, ValueError)

"""The labels file: ids, votes, ties, raters, and one-line errors for bad lines."""
from __future__ import annotations

import numpy as np
import pytest

from arm_jax.errors import InputError
from arm_jax.workflow import fitting as fitting_lib
from arm_jax.workflow import labels as labels_lib


def _write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


# ----------------------------------------------------------------------------- labels



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
        ('{"winner": "a", "loser": "b", "annotator": ""}', "l.jsonl:2: annotator is empty (\"\")"),
        ('{"winner": "a", "loser": "b", "annotator": "  "}', "l.jsonl:2: annotator is empty"),
        ('{"a": "a", "b": "b", "votes_a": 1e39, "votes_b": 1}', "l.jsonl:2: votes_a 1e+39 does not fit float32"),
        ('{"a": "a", "b": "b", "votes_a": 3e38, "votes_b": 3e38}', "l.jsonl:2: the votes add up to 6e+38, which does"),
    ],
)
def test_bad_label_lines(tmp_path, pool, line, message):
    path = _write_lines(tmp_path / "l.jsonl", ['{"winner": "a", "loser": "b"}', line])
    with pytest.raises(InputError) as err:
        labels_lib.load_labels(path, pool)
    assert message in str(err.value)


def test_labels_may_start_with_a_byte_order_mark(tmp_path, pool):
    path = tmp_path / "l.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"winner": "a", "loser": "b"}\n')
    assert labels_lib.load_labels(path, pool).winner.tolist() == [0]


def test_data_error_is_the_input_error():
    assert fitting_lib.DataError is InputError and issubclass(InputError, ValueError)

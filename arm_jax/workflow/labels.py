"""Labelled comparisons: the JSON Lines file annotators append to, parsed and checked.

Format (:func:`load_labels`): one comparison per line, UTF-8 (a byte-order mark at the start
is accepted); blank lines are skipped. Ids may be JSON strings or integers and are compared as
strings (``3`` and ``"3"`` are the same item). Kinds of line:

- ``{"winner": ID, "loser": ID}``: a decided comparison;
- ``{"a": ID, "b": ID, "tie": true}`` (or ``{"winner": ID, "loser": ID, "tie": true}``): the
  annotator judged the two equal;
- ``{"a": ID, "b": ID, "winner": ID}``: a decided comparison written with a and b;
- ``{"a": ID, "b": ID, "p_a": 0.7}``: a soft label (aggregated ratings: P(a preferred));
- ``{"a": ID, "b": ID, "votes_a": 7, "votes_b": 3}`` (optionally ``"votes_tie": 1``): vote counts.
  Counts are numbers ≥ 0 that fit float32; a fractional count (2.5) is a weight, as if that
  many raters had voted (the likelihood multiplies each outcome's log-probability by it).

Any line may carry ``"annotator": ID`` (a non-empty string or an integer), the rater who gave it. Other
extra fields are ignored, but fields that look like a misspelt rater field (``rater``,
``annotator_id``, ``worker``, …) are refused. The same pair may be labelled more than once
(repeated annotations, by one rater or several, are all used).

Ties, soft labels and vote counts train with Davidson's likelihood (:mod:`arm_jax.model.likelihood`)
and each rater's reliability can be fitted (``TrainConfig.annotators``). A file of decided
comparisons only, with at most one rater, is the plain Bradley–Terry case (``Labels.votes`` is
None) and trains exactly as before these kinds existed. Every problem raises
:class:`~arm_jax.errors.InputError` naming ``file:line``.
"""
from __future__ import annotations

import json
from typing import NamedTuple

import numpy as np

from arm_jax.errors import InputError
from arm_jax.runtime.files import require_file
from arm_jax.workflow import labelstudio
from arm_jax.workflow.pool import Pool


class LabelVotes(NamedTuple):
    """Every trainable line as vote counts (only when the file has ties, soft labels, vote
    counts or more than one rater).

    first, second: (n,) int64 pool rows of each line's pair (a and b; winner and loser).
    counts: (n, 3) float32 votes for first, for second, ties (:class:`arm_jax.model.buffer.LabelBuffer`).
    annotator: (n,) int32 index into ``annotators`` (−1: the line names no rater).
    annotators: the rater ids, in order of first appearance.
    line: (n,) int64 1-based line numbers.
    """

    first: np.ndarray
    second: np.ndarray
    counts: np.ndarray
    annotator: np.ndarray
    annotators: tuple
    line: np.ndarray

    @property
    def n(self) -> int:
        return int(self.first.shape[0])

    def per_annotator(self) -> np.ndarray:
        """(len(annotators),) lines given by each rater."""
        known = self.annotator[self.annotator >= 0]
        return np.bincount(known, minlength=len(self.annotators))


class Labels(NamedTuple):
    """Comparisons read from a JSON Lines file.

    winner, loser: (L,) int64 pool rows of the decided comparisons.
    line: (L,) int64 1-based line number of each.
    tie_a, tie_b: (T,) int64 rows of the tied comparisons.
    votes: None for a file of decided comparisons with at most one rater (Bradley–Terry);
      else :class:`LabelVotes`, every line (decided, tie, soft, votes) with its rater.
    soft_a, soft_b: (S,) int64 rows of the soft-label and vote-count lines.
    """

    path: str
    winner: np.ndarray
    loser: np.ndarray
    line: np.ndarray
    tie_a: np.ndarray
    tie_b: np.ndarray
    votes: LabelVotes | None = None
    soft_a: np.ndarray = np.zeros(0, np.int64)
    soft_b: np.ndarray = np.zeros(0, np.int64)

    @property
    def n(self) -> int:
        return int(self.winner.shape[0])

    @property
    def n_ties(self) -> int:
        return int(self.tie_a.shape[0])

    @property
    def n_soft(self) -> int:
        return int(self.soft_a.shape[0])

    @property
    def n_train(self) -> int:
        """Lines the model trains on: every line with votes, else the decided ones."""
        return self.n if self.votes is None else self.votes.n


def empty_labels(path: str = "") -> Labels:
    z = np.zeros(0, np.int64)
    return Labels(path, z, z, z, z, z)


#: The largest vote count a label line may hold (the counts are trained on as float32).
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _label_id(where: str, field: str, value) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InputError(f"{where}: {field} must be a string or an integer id, got {json.dumps(value)}")
    if isinstance(value, str) and not value.strip():
        raise InputError(f"{where}: {field} is empty ({json.dumps(value)}); give an id or leave the field out")
    return str(value)


#: Field names that look like a rater field but are not ``"annotator"``: refused, so that a
#: misspelt rater never silently merges every rater into one.
RATER_LOOKALIKES = (
    "annotator_id", "annotators", "annotater", "rater", "rater_id", "worker", "worker_id", "labeler",
    "labeller", "labeler_id", "user", "user_id", "judge",
)


def _number(where: str, field, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise InputError(f"{where}: field '{field}' must be a number, got {json.dumps(value)}")
    return float(value)


class _Line(NamedTuple):
    first: int
    second: int
    counts: tuple  # votes for first, second, tie
    kind: str  # "decided", "tie", "soft"
    annotator: str | None


def _parse_line(path, lineno: int, text: str, index: dict[str, int], pool: Pool) -> _Line:
    """One non-blank line as a :class:`_Line`."""
    try:
        row = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
    return _parse_row(f"{path}:{lineno}", row, index, pool)


def _parse_row(where: str, row, index: dict[str, int], pool: Pool) -> _Line:
    """One label (a decoded JSON value) as a :class:`_Line`; ``where`` starts every message."""
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object like {{\"winner\": ..., \"loser\": ...}}")
    for field in row:
        if field.lower() in RATER_LOOKALIKES:
            raise InputError(f"{where}: unknown rater field '{field}'; the rater goes in \"annotator\"")
    annotator = None
    if "annotator" in row:
        annotator = _label_id(where, "annotator", row["annotator"])
    tie = row.get("tie", False)
    if not isinstance(tie, bool):
        raise InputError(f"{where}: field 'tie' must be true or false, got {json.dumps(tie)}")
    has_ab = "a" in row or "b" in row
    soft = [f for f in ("p_a", "votes_a", "votes_b", "votes_tie") if f in row]
    if has_ab:
        for field in ("a", "b"):
            if field not in row:
                raise InputError(f"{where}: missing field '{field}'")
        fields = ("a", "b")
    else:
        for field in ("winner", "loser"):
            if field not in row:
                raise InputError(f"{where}: missing field '{field}'")
        fields = ("winner", "loser")
        if soft:
            raise InputError(f"{where}: '{soft[0]}' needs the pair as \"a\" and \"b\", not winner/loser")
    ids = [_label_id(where, f, row[f]) for f in fields]
    rows = []
    for item_id in ids:
        if item_id not in index:
            raise InputError(f"{where}: id {item_id!r} is not in the pool {pool.path}")
        rows.append(index[item_id])
    if rows[0] == rows[1]:
        what = "a and b" if has_ab else "winner and loser"
        raise InputError(f"{where}: {what} are the same item {ids[0]!r}")
    first, second = rows
    if tie:
        if has_ab and "winner" in row:
            raise InputError(f"{where}: a tie line names a winner ({json.dumps(row['winner'])}); drop one")
        if soft:
            raise InputError(f"{where}: a tie line carries '{soft[0]}'; drop one")
        return _Line(first, second, (0.0, 0.0, 1.0), "tie", annotator)
    if not has_ab:
        return _Line(first, second, (1.0, 0.0, 0.0), "decided", annotator)
    if "winner" in row:
        if soft:
            raise InputError(f"{where}: a line with a winner carries '{soft[0]}'; drop one")
        won = _label_id(where, "winner", row["winner"])
        if won not in ids:
            raise InputError(f"{where}: winner {won!r} is neither a ({ids[0]!r}) nor b ({ids[1]!r})")
        return _Line(first, second, (1.0, 0.0, 0.0) if won == ids[0] else (0.0, 1.0, 0.0), "decided", annotator)
    if "p_a" in row:
        if len(soft) > 1:
            raise InputError(f"{where}: give either 'p_a' or vote counts, not both")
        p = _number(where, "p_a", row["p_a"])
        if not 0.0 <= p <= 1.0:
            raise InputError(f"{where}: p_a must be in [0, 1], got {json.dumps(row['p_a'])}")
        return _Line(first, second, (p, 1.0 - p, 0.0), "soft", annotator)
    if soft:
        votes = []
        for field in ("votes_a", "votes_b", "votes_tie"):
            v = _number(where, field, row.get(field, 0))
            if v < 0 or v == float("inf"):
                raise InputError(f"{where}: {field} must be a count >= 0, got {json.dumps(row.get(field))}")
            if v > FLOAT32_MAX:
                raise InputError(f"{where}: {field} {json.dumps(row.get(field))} does not fit float32 (at most {FLOAT32_MAX:.4g})")
            votes.append(v)
        if sum(votes) > FLOAT32_MAX:
            raise InputError(f"{where}: the votes add up to {sum(votes):.4g}, which does not fit float32")
        if sum(votes) <= 0:
            raise InputError(f"{where}: no votes (votes_a, votes_b and votes_tie are all 0)")
        return _Line(first, second, tuple(votes), "soft", annotator)
    raise InputError(
        f"{where}: a line with \"a\" and \"b\" needs \"winner\", \"tie\": true, \"p_a\" or vote counts"
    )


def load_labels(path, pool: Pool, allow_unannotated: bool | None = None) -> Labels:
    """Read the comparisons of a JSON Lines file (or a Label Studio export) and map the ids to
    pool rows. ``allow_unannotated``: accept an export in which no task is annotated (no labels);
    False or None refuse it, the message naming the flag that would allow it only for False."""
    path = require_file(path)
    index = pool.index_of()
    parsed: list[tuple[int, _Line]] = []
    try:
        with open(path, encoding="utf-8-sig") as handle:
            text = handle.read()
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 text file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    if labelstudio.looks_like_export(text):
        # Label Studio's JSON export: "line" numbers are the annotations' order
        for n, (where, row) in enumerate(labelstudio.export_rows(path, text, allow_unannotated), start=1):
            parsed.append((n, _parse_row(f"{path}: {where}", row, index, pool)))
    else:
        for lineno, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                parsed.append((lineno, _parse_line(path, lineno, line, index, pool)))

    def arr(xs, dtype=np.int64):
        return np.asarray(xs, dtype).reshape(-1)

    def pick(kind, field):
        return arr([getattr(line, field) for _, line in parsed if line.kind == kind])

    decided = [(n, line) for n, line in parsed if line.kind == "decided"]
    winner = arr([l.first if l.counts[0] else l.second for _, l in decided])
    loser = arr([l.second if l.counts[0] else l.first for _, l in decided])
    raters = list(dict.fromkeys(line.annotator for _, line in parsed if line.annotator is not None))
    votes = None
    if len(decided) < len(parsed) or len(raters) > 1:
        rater_index = {name: i for i, name in enumerate(raters)}
        votes = LabelVotes(
            arr([l.first for _, l in parsed]), arr([l.second for _, l in parsed]),
            np.asarray([l.counts for _, l in parsed], np.float32).reshape(-1, 3),
            arr([rater_index.get(l.annotator, -1) for _, l in parsed], np.int32),
            tuple(raters), arr([n for n, _ in parsed]),
        )
    return Labels(
        str(path), winner, loser, arr([n for n, _ in decided]), pick("tie", "first"), pick("tie", "second"),
        votes, pick("soft", "first"), pick("soft", "second"),
    )


def pair_keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Order-free key min·n + max of each pair (int64)."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    return np.minimum(a, b) * n + np.maximum(a, b)


def labelled_keys(labels: Labels, n: int) -> np.ndarray:
    """Sorted unique keys of every labelled pair (decided, ties, soft labels), either order."""
    return np.unique(np.concatenate([
        pair_keys(labels.winner, labels.loser, n), pair_keys(labels.tie_a, labels.tie_b, n),
        pair_keys(labels.soft_a, labels.soft_b, n),
    ]))


def split_labels(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, validation rows) of n labels: a seeded shuffle (``default_rng([seed, 3])``),
    round(fraction·n) held out, at least one on each side whenever n ≥ 2 and the fraction is
    positive. ``val_fraction`` in [0, 1), as :class:`~arm_jax.model.config.TrainConfig` checks."""
    n_val = 0
    if val_fraction > 0 and n >= 2:
        n_val = min(n - 1, max(1, int(round(val_fraction * n))))
    perm = np.random.default_rng([seed, 3]).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])

"""The stopping report: the information gain against its definition, the rule, select --report."""
from __future__ import annotations

import json

import numpy as np
import pytest

from arm_jax.cli.main import main
from arm_jax.selection import posterior, stopping


def test_information_gain_is_the_logdet_difference_in_float64():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    beta = rng.normal(size=4).astype(np.float32)
    w = rng.integers(1, 4, 30).astype(np.float32)
    before = np.arange(30) < 20
    after = np.arange(30) < 27
    got = float(posterior.information_gain(beta, x, before, after, 2.0, w, np.float32(0.5)))
    x64 = x.astype(np.float64)
    z = x64 @ beta
    v = w * (1 + 0.25 * np.cosh(z / 2)) / (2 * np.cosh(z / 2) + 0.5) ** 2
    lam = lambda m: (x64[m] * v[m, None]).T @ x64[m] + 2.0 * np.eye(4)
    ref = np.linalg.slogdet(lam(after))[1] - np.linalg.slogdet(lam(before))[1]
    assert got == pytest.approx(ref, rel=1e-4)
    assert float(posterior.information_gain(beta, x, after, after, 2.0)) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("gains, expected", [
    ([9.0, 1.0, 0.8, 0.5, 0.2, 0.25, 0.1], 5),   # below 0.3 at rounds 4 and 5: stop at 5
    ([9.0, 1.0, 0.2, 0.5, 0.2, 0.5, 0.2], -1),   # never twice in a row
    ([9.0, 1.0, float("nan"), 0.1, 0.1], 4),      # NaN never counts as below
    ([9.0], -1), ([9.0, 0.0, 0.0, 0.0], -1),       # no reference gain
])
def test_stop_round(gains, expected):
    assert stopping.stop_round(gains, 0.3) == expected


def test_select_report_appends_a_row_per_round_and_says_what_to_do(tmp_path, capsys):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    np.savez(tmp_path / "pool.npz", embeddings=x)
    h = x @ rng.normal(size=4)
    rows = []
    for i in range(40):
        a, b = (int(v) for v in rng.choice(30, 2, replace=False))
        rows.append({"winner": str(a), "loser": str(b)} if h[a] > h[b] else {"winner": str(b), "loser": str(a)})
    fast = ["--depth", "1", "--width", "8", "--steps", "40", "--batch-size", "16"]
    for n, name in ((20, "r1"), (20, "r1b"), (40, "r2")):
        (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:n]))
        code = main(["select", "--pool", str(tmp_path / "pool.npz"), "--labels", str(tmp_path / "labels.jsonl"),
                     "--k", "5", "--out", str(tmp_path / f"{name}.jsonl"), "--report", str(tmp_path / "h.jsonl"), *fast])
        assert code == 0
    out, err = capsys.readouterr()
    assert ", report " in err.splitlines()[-1]  # the timing line counts the report's own work
    history = [json.loads(line) for line in (tmp_path / "h.jsonl").read_text().splitlines()]
    assert [r["labels"] for r in history] == [20, 40]  # the rerun at 20 labels replaced its row
    assert [r["last_batch"] for r in history] == [5, 20]  # then: the lines added since the last report
    assert all(r["gain_last"] > 0 and r["gain_next"] > 0 and r["k"] == 5 for r in history)
    assert "keep labelling" in out.splitlines()[-1]
    (tmp_path / "bad.jsonl").write_text('{"winner": "0"}\n')
    code = main(["select", "--pool", str(tmp_path / "pool.npz"), "--k", "5", "--out", str(tmp_path / "x.jsonl"),
                 "--report", str(tmp_path / "bad.jsonl"), *fast])
    assert code == 2 and "bad.jsonl:1: not a stopping-report row" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_report_reference_skips_a_batch_measured_against_the_prior_alone():
    from arm_jax.cli.data import report_table

    row = lambda n, g, prior=False: {"labels": n, "gain_last": g, "from_prior": prior, "gain_next": g}
    # against the prior alone the first batch looks large; the rule must not stop on it
    history = [row(50, 10.0, True), row(100, 1.0), row(150, 0.5), row(200, 0.4)]
    assert "keep labelling" in report_table(history)
    history += [row(250, 0.05), row(300, 0.05)]
    assert "STOP" in report_table(history)

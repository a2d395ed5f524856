"""Every benchmark script starts and explains itself, and the sharded selection benchmark runs.

Running every benchmark at its smallest size would cost minutes of compiling, more than
``make test``'s budget allows; ``--help`` proves each script's imports and flags are sound, and
the one that broke before (``bench_selection.py --sharded``) runs for real on four devices.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py"))


def _run(*argv, env=None, timeout=300):
    return subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_every_script_is_listed():
    assert "bench_selection.py" in SCRIPTS and len(SCRIPTS) >= 10


HELP_ALL = """
import contextlib, io, runpy, sys
for path in sys.argv[1:]:
    sys.argv, out = [path, "--help"], io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            runpy.run_path(path, run_name="__main__")
        except SystemExit as done:
            code = done.code
        else:
            code = "no exit"
    print(path, code, "usage:" in out.getvalue())
"""


def test_help():
    """Every script's --help, in one process (one JAX import, not one per script)."""
    done = _run("-c", HELP_ALL, *(BENCHMARKS / s for s in SCRIPTS))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert [line.rsplit(" ", 2)[1:] for line in lines] == [["0", "True"]] * len(SCRIPTS), done.stdout


@pytest.mark.multidevice
def test_bench_selection_sharded_runs(tmp_path):
    out = tmp_path / "sel.json"
    done = _run(BENCHMARKS / "bench_selection.py", "--sizes", "256", "--hidden", "8", "--strategies", "dopt",
                "--k", "4", "--repeats", "1", "--budget-s", "1", "--no-baseline", "--sharded", "--json", out)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    sharded = [r for r in rows if "sharded" in str(r.get("strategy", r.get("name", "")))]
    assert len(sharded) == 3, rows
    assert all(r.get("median_ms") for r in sharded)

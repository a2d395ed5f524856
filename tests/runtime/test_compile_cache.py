"""The CLI's persistent compilation cache (arm_jax.runtime.compile_cache): where it lives, the opt-outs,
a directory that cannot be written, and a real cache written and reused by two processes.

The test session runs with ARM_JAX_NO_COMPILE_CACHE=1 (conftest.py); tests that need the
cache on remove it and point XDG_CACHE_HOME at a temporary directory."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from arm_jax.cli import main as cli
from arm_jax.runtime import compile_cache


def _recorder():
    calls = []
    return calls, lambda name, value: calls.append((name, value))


def test_the_test_session_never_writes_to_the_user_cache():
    assert compile_cache.opted_out()


def test_default_cache_dir(tmp_path):
    assert compile_cache.default_cache_dir({"XDG_CACHE_HOME": str(tmp_path), "HOME": "/h"}) == tmp_path / "arm-jax" / "jax"
    # unset or relative XDG_CACHE_HOME: ~/.cache (the XDG rule)
    for env in ({"HOME": "/h"}, {"XDG_CACHE_HOME": "rel/dir", "HOME": "/h"}, {"XDG_CACHE_HOME": "", "HOME": "/h"}):
        assert str(compile_cache.default_cache_dir(env)) == "/h/.cache/arm-jax/jax"


@pytest.mark.parametrize("value, off", [("1", True), ("yes", True), ("true", True), ("", False), ("0", False),
                                        ("false", False), ("no", False)])
def test_opt_out_values(value, off):
    assert compile_cache.opted_out({compile_cache.ENV_OPT_OUT: value}) is off
    assert compile_cache.opted_out({}) is False


@pytest.fixture
def no_user_choice():
    """As for a user who gave JAX no cache directory (the test session gives it one: conftest.py)."""
    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    yield
    jax.config.update("jax_compilation_cache_dir", before)


def test_enable_points_jax_at_the_user_cache_directory(tmp_path, no_user_choice):
    calls, update = _recorder()
    got = compile_cache.enable(environ={"XDG_CACHE_HOME": str(tmp_path)}, update=update)
    want = tmp_path / "arm-jax" / "jax"
    assert got == str(want) and want.is_dir() and not list(want.iterdir())  # the probe file is gone
    assert calls == [("jax_compilation_cache_dir", str(want)),
                     ("jax_persistent_cache_min_compile_time_secs", compile_cache.MIN_COMPILE_TIME_SECS)]
    # a minimum compile time the user gave JAX is kept
    calls.clear()
    compile_cache.enable(environ={"XDG_CACHE_HOME": str(tmp_path), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "2"},
                         update=update)
    assert calls == [("jax_compilation_cache_dir", str(want))]


def test_opt_outs_touch_nothing(tmp_path, no_user_choice):
    calls, update = _recorder()
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    assert compile_cache.enable(disabled=True, environ=env, update=update) is None
    assert compile_cache.enable(environ={**env, compile_cache.ENV_OPT_OUT: "1"}, update=update) is None
    assert calls == [] and not (tmp_path / "arm-jax").exists()


def test_an_unwritable_directory_means_no_cache_and_one_line(tmp_path, no_user_choice):
    (tmp_path / "a_file").write_text("")
    calls, update = _recorder()
    lines = []
    got = compile_cache.enable(environ={"XDG_CACHE_HOME": str(tmp_path / "a_file")}, log=lines.append, update=update)
    assert got is None and calls == []
    assert len(lines) == 1 and "compilation cache off, cannot write" in lines[0]
    assert f"{compile_cache.ENV_OPT_OUT}=1" in lines[0]


def test_a_directory_the_user_gave_jax_is_kept(tmp_path):
    before = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
    try:
        calls, update = _recorder()
        got = compile_cache.enable(environ={"XDG_CACHE_HOME": str(tmp_path)}, update=update)
        assert got == str(tmp_path / "mine") and calls == []
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_every_subcommand_takes_no_compile_cache_and_main_honours_it(monkeypatch, capsys):
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        assert "--no-compile-cache" in sub._option_string_actions, name
    assert "ARM_JAX_NO_COMPILE_CACHE=1" in parser.format_help()
    assert "ARM_JAX_NO_COMPILE_CACHE=1" in subparsers["select"].format_help()
    seen = []
    monkeypatch.setattr(compile_cache, "enable", lambda disabled=False, **kw: seen.append(disabled))
    missing = ["score", "--model", "missing.msgpack", "--pool", "missing.npz", "--out", "never/scores"]
    assert cli.main([*missing, "--no-compile-cache"]) == 2  # the cache is set up before the command runs
    assert cli.main(missing) == 2
    assert seen == [True, False]
    assert cli.main(["strategies", "--no-compile-cache"]) == 0
    assert cli.main(["strategies"]) == 0
    assert seen == [True, False]  # strategies imports no JAX, so it has no cache to set up
    capsys.readouterr()


def _tiny_pool(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "pool.npy", rng.normal(size=(30, 4)).astype(np.float32))
    rows = [{"winner": str(i), "loser": str(i + 1)} for i in range(0, 24, 2)]
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


ARGS = ["select", "--pool", "pool.npy", "--labels", "labels.jsonl", "--k", "3", "--steps", "20",
        "--batch-size", "8", "--depth", "1", "--width", "4"]


def test_an_unwritable_cache_directory_never_stops_a_command(tmp_path, monkeypatch, capsys, no_user_choice):
    _tiny_pool(tmp_path)
    (tmp_path / "a_file").write_text("")
    monkeypatch.delenv(compile_cache.ENV_OPT_OUT)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a_file"))
    monkeypatch.chdir(tmp_path)
    assert cli.main([*ARGS, "--out", "n.jsonl"]) == 0
    err = capsys.readouterr().err
    assert err.count("compilation cache off") == 1 and len((tmp_path / "n.jsonl").read_text().splitlines()) == 3


def test_two_processes_write_and_reuse_the_cache(tmp_path):
    """By default (no opt-out) a first call fills $XDG_CACHE_HOME/arm-jax/jax, a second reads it;
    the output is the same as without the cache."""
    _tiny_pool(tmp_path)
    hidden = (compile_cache.ENV_OPT_OUT, "JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    cache = tmp_path / "xdg" / "arm-jax" / "jax"
    stored = tmp_path / "xdg" / "arm-jax" / "programs"  # the traced programs (arm_jax.runtime.programs)
    outputs = []
    for run in ("cold", "warm"):
        done = subprocess.run([sys.executable, "-m", "arm_jax", *ARGS, "--out", f"{run}.jsonl"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "compilation cache off" not in done.stderr
        entries = sorted(p.name for p in cache.iterdir())
        assert entries and all(name.endswith("-cache") for name in entries)
        programs = sorted(p.name for p in stored.iterdir())
        assert len(programs) >= 3 and all(name.endswith(".pickle") for name in programs)  # fit, features, selection
        outputs.append((entries, programs, (tmp_path / f"{run}.jsonl").read_bytes()))
    assert outputs[0] == outputs[1]  # the warm run compiled and traced nothing new and wrote the same pairs
    assert cli.main([*(str(tmp_path / a) if a.endswith((".npy", ".jsonl")) else a for a in ARGS),
                     "--out", str(tmp_path / "plain.jsonl")]) == 0  # in this process: no cache
    assert (tmp_path / "plain.jsonl").read_bytes() == outputs[0][2]

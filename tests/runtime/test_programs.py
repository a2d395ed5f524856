"""Whole programs kept on disk by the command line (arm_jax.runtime.programs): a stored
program gives what the jitted function gives, a later process runs it without tracing the
Python function, the key changes with everything the program depends on, and a damaged
file means tracing again, never a wrong answer."""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from arm_jax.runtime import programs


class Out(NamedTuple):
    total: jax.Array
    scaled: dict


TRACES = []


@functools.partial(jax.jit, static_argnames=("power",))
def _program(x, w, scale=None, *, power):
    TRACES.append(power)  # runs when JAX traces the function, not when a compiled program runs
    y = (x @ w) ** power
    return Out(total=y.sum(), scaled={"y": y if scale is None else y * scale, "none": None})


@pytest.fixture
def store(tmp_path):
    programs.enable(tmp_path / "programs")
    yield tmp_path / "programs"
    programs.enable(None)


def _args():
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.normal(size=(5, 3)), jnp.float32), jnp.asarray(rng.normal(size=(3,)), jnp.float32)


def _new_process():
    """What a new process has: nothing loaded, nothing traced by jit."""
    programs._LOADED.clear()
    _program.clear_cache()
    TRACES.clear()


def _same(a, b):
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_off_is_the_jitted_call(tmp_path):
    x, w = _args()
    _same(programs.call(_program, "p", (x, w), static=dict(power=2)), _program(x, w, power=2))
    assert not list(tmp_path.iterdir())


def test_a_stored_program_runs_without_tracing_and_gives_the_same_result(store):
    x, w = _args()
    want = _program(x, w, jnp.float32(3.0), power=2)
    _new_process()
    got = programs.call(_program, "p", (x, w), dict(scale=jnp.float32(3.0)), dict(power=2))
    _same(got, want)
    assert isinstance(got, Out) and got.scaled["none"] is None
    assert len(list(store.iterdir())) == 1 and TRACES == [2]
    _new_process()
    again = programs.call(_program, "p", (x, w), dict(scale=jnp.float32(3.0)), dict(power=2))
    _same(again, want)
    assert TRACES == []  # loaded from the file: the Python function was not traced


@pytest.mark.parametrize("change", ["static", "shape", "dtype", "weak type", "tree", "name", "xla flags", "source"])
def test_the_key_changes_with_what_the_program_depends_on(store, monkeypatch, change):
    x, w = _args()
    base = programs.program_key("p", ((x, w), {}), "power=2")
    name, args, static = "p", ((x, w), {}), "power=2"
    if change == "static":
        static = "power=3"
    elif change == "shape":
        args = ((x[:4], w), {})
    elif change == "dtype":
        args = ((x, w.astype(jnp.bfloat16)), {})
    elif change == "weak type":
        args = ((x, w), {"scale": 3.0}), ((x, w), {"scale": jnp.float32(3.0)})
        assert programs.program_key(name, args[0], static) != programs.program_key(name, args[1], static)
        return
    elif change == "tree":
        args = ((x, w), {"scale": None})
    elif change == "name":
        name = "q"
    elif change == "xla flags":
        monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")
    elif change == "source":
        monkeypatch.setattr(programs, "_FINGERPRINT", ["another version of arm_jax"])
    assert programs.program_key(name, args, static) != base


def test_a_damaged_or_foreign_file_means_tracing_again(store):
    x, w = _args()
    want = _program(x, w, power=2)
    _new_process()
    programs.call(_program, "p", (x, w), static=dict(power=2))
    (path,) = store.iterdir()
    for damage in (b"not a pickle", path.read_bytes()[:100]):
        path.write_bytes(damage)
        _new_process()
        _same(programs.call(_program, "p", (x, w), static=dict(power=2)), want)
        assert TRACES == [2]  # traced again, and the file written anew
    _new_process()
    programs.call(_program, "p", (x, w), static=dict(power=2))
    assert TRACES == []


def test_an_unwritable_store_still_runs(tmp_path):
    (tmp_path / "a_file").write_text("")
    programs.enable(tmp_path / "a_file" / "programs")
    try:
        x, w = _args()
        _same(programs.call(_program, "p", (x, w), static=dict(power=2)), _program(x, w, power=2))
    finally:
        programs.enable(None)

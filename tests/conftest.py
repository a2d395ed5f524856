"""Shared pytest configuration.

Tests marked ``multidevice`` need several JAX devices. On a CPU they come from
``XLA_FLAGS=--xla_force_host_platform_device_count=4``, which XLA reads once, when JAX
starts, so those tests run in their own pytest invocation (see the Makefile's ``test``)::

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m pytest -q -m multidevice

The default invocation deselects them with ``-m "not multidevice"``. A bare ``pytest`` (no
``-m``, no flag) skips them with that command as the reason rather than failing; selected
explicitly with ``-m multidevice`` they run, and assert that four devices are present.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# The CLI keeps compiled programs in a per-user cache directory (arm_jax.runtime.compile_cache); the
# tests, and every arm-jax process they start (which inherits this), never write to it. Tests of
# the cache itself point it at a temporary directory.
os.environ["ARM_JAX_NO_COMPILE_CACHE"] = "1"

# Instead the session's processes (pytest-xdist's workers and the arm-jax processes tests start,
# which inherit the environment) share one JAX compilation cache in a temporary directory, so
# a program one of them compiled is loaded from disk by the others: about 30 s of a 9.5-minute
# `make test` on 2 cores. The process that made it (the xdist controller, or a lone pytest)
# removes it at the end. Tests of the cache itself hide it (tests/runtime/test_compile_cache.py),
# and the compile-counting tests count loads from it as compiles.
_SESSION_CACHE = None
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    _SESSION_CACHE = tempfile.mkdtemp(prefix="arm-jax-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _SESSION_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

# The suite compiles hundreds of small programs and runs each for milliseconds: XLA's backend
# (LLVM) optimisations cost more compile time than they save there. Level 0 takes about a
# third off the compile-bound tests; every comparison in the suite is between programs
# compiled alike, or against float64 references with tolerances. XLA reads the flags when the
# backend starts, so this must come before the first computation; arm-jax processes the tests
# start inherit them.
TEST_XLA_FLAG = "--xla_backend_optimization_level=0"
# XLA's older elemental emitters for fused loops, instead of its MLIR fusion emitters, take
# another third off (`make test` on 2 cores: 9.5 min to 6 min). Their rounding depends on the
# batch shape, so a run whose seeds two processes split no longer equals the one-process run
# bit for bit (with the fusion emitters, the default, it does): the multi-process tests
# (tests/runtime/test_distributed.py) run both sides in processes of their own, without it.
FAST_COMPILE_XLA_FLAG = "--xla_cpu_use_fusion_emitters=false"
# for tests that start processes of their own (each test folder may have a conftest of its own,
# so `from conftest import` is ambiguous): read it from the environment
os.environ["ARM_JAX_TEST_XLA_FLAG"] = TEST_XLA_FLAG
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAG} {FAST_COMPILE_XLA_FLAG}".strip()

MULTIDEVICE_FLAG = "--xla_force_host_platform_device_count"
MULTIDEVICE_COMMAND = f"XLA_FLAGS={MULTIDEVICE_FLAG}=4 python -m pytest -q -m multidevice"


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        f"multidevice: needs 4 JAX devices; run with `{MULTIDEVICE_COMMAND}`",
    )
    config.addinivalue_line(
        "markers",
        "processes: a slow check on several real processes; `make test` leaves it to `make test-processes`",
    )


# The slowest tests (20-30 s each on 2 cores, `pytest --durations`), run first: pytest-xdist
# hands out tests in collection order, and one of these started last would leave a worker
# busy alone at the end of `make test`.
SLOW_FIRST = (
    "test_run_writes_json_csv_png",
    "test_readme_python_block_runs",
    "test_readme_own_data_round_trip_runs",
    "test_the_informed_arm_runs_beside_the_others_and_changes_nothing_of_theirs",
    "test_tie_strength_and_reliabilities_are_recovered",
    "test_ties_a_panel_and_costs_run_end_to_end",
)


def pytest_unconfigure(config):
    if _SESSION_CACHE is not None:
        shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: item.originalname not in SLOW_FIRST)  # stable: the rest keep their order
    asked_for = "multidevice" in (config.getoption("-m") or "")
    has_devices = MULTIDEVICE_FLAG in os.environ.get("XLA_FLAGS", "")
    if asked_for or has_devices:
        return
    skip = pytest.mark.skip(reason=f"needs 4 devices: {MULTIDEVICE_COMMAND}")
    for item in items:
        if "multidevice" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def fail_second_replace(monkeypatch):
    """``arm()`` makes the second ``os.replace`` from then on raise ``OSError("injected fault
    between the renames")`` (a crash between two renames); ``monkeypatch.undo()`` ends it."""

    def arm():
        real_replace = os.replace
        calls = []

        def replace(src, dst):
            calls.append(dst)
            if len(calls) == 2:
                raise OSError("injected fault between the renames")
            return real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)

    return arm

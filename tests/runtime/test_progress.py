"""Progress bars: on at a terminal, off otherwise, and never change what is computed."""
import sys

from arm_jax.runtime import progress


def test_progress_is_off_without_a_terminal_and_passes_items_through(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert not progress.enabled()
    assert list(progress.track(range(5), 5, "x")) == [0, 1, 2, 3, 4]


def test_progress_at_a_terminal_and_its_switch(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert progress.enabled()
    assert list(progress.track(iter(range(7)), 7, "x")) == list(range(7))
    with progress.spinner("training"):
        pass
    monkeypatch.setenv("ARM_JAX_PROGRESS", "0")
    assert not progress.enabled()

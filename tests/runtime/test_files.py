import os
import stat

import numpy as np
import pytest

from arm_jax.errors import InputError
from arm_jax.runtime import files as io


def test_atomic_write_leaves_no_file_on_error(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_replaces_existing(tmp_path):
    target = tmp_path / "sub" / "a.npy"
    io.save_npy(target, np.arange(3))
    io.save_npy(target, np.arange(4))
    np.testing.assert_array_equal(np.load(target), np.arange(4))
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.npy"]


def test_csv_and_jsonl(tmp_path):
    io.write_csv(tmp_path / "a.csv", ["x", "y"], [(1, 2.5), (3, "z")])
    assert (tmp_path / "a.csv").read_text() == "x,y\n1,2.5\n3,z\n"
    io.write_jsonl(tmp_path / "a.jsonl", [{"a": 1}, {"b": [2]}])
    assert (tmp_path / "a.jsonl").read_text() == '{"a": 1}\n{"b": [2]}\n'


# ----------------------------------------------------------------------------- modes, fsync


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_new_files_get_the_umask_mode_and_complete_content(tmp_path, mask):
    """Item 5: a plain open(..., "w") gives 0o666 & ~umask; mkstemp gave 0o600."""
    old = os.umask(mask)
    try:
        io.write_text(tmp_path / "a.txt", "x" * 100_000)
        io.save_npy(tmp_path / "b.npy", np.arange(1000))
        with open(tmp_path / "plain", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    want = stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)
    assert want == 0o666 & ~mask
    for name in ("a.txt", "b.npy"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == want, name
    assert (tmp_path / "a.txt").read_text() == "x" * 100_000
    np.testing.assert_array_equal(np.load(tmp_path / "b.npy"), np.arange(1000))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.npy", "plain"]


def test_file_is_fsynced_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        target = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else str(fd)
        events.append(("fsync", os.path.basename(target)))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.basename(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    io.write_text(tmp_path / "out.json", "{}")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    if os.path.exists("/proc/self/fd"):
        assert events[0][1].startswith(".out.json.") and events[0][1].endswith(".tmp")
        assert events[2][1] == tmp_path.name


# ----------------------------------------------------------------------------- several files


def test_atomic_paths_writes_all_or_leaves_no_mixed_set(tmp_path, fail_second_replace):
    a, b = tmp_path / "s.npy", tmp_path / "s.csv"
    with io.atomic_paths([a, b]) as (ta, tb):
        ta.write_text("old")
        tb.write_text("old")
    fail_second_replace()
    with pytest.raises(OSError, match="injected"):
        with io.atomic_paths([a, b]) as (ta, tb):
            ta.write_text("new")
            tb.write_text("new")
    # a new first file never stands beside an old second one; no temporaries are left
    assert a.read_text() == "new" and not b.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npy"]


# ----------------------------------------------------------------------------- output checks


def test_check_output_file(tmp_path):
    (tmp_path / "in.jsonl").write_text("x")
    (tmp_path / "d").mkdir()
    os.symlink(tmp_path / "in.jsonl", tmp_path / "link.jsonl")
    io.check_output_file(tmp_path / "new" / "deeper" / "out.jsonl", {"--labels": tmp_path / "in.jsonl"})
    with pytest.raises(InputError, match="is the input file --labels"):
        io.check_output_file(tmp_path / "." / "in.jsonl", {"--labels": tmp_path / "in.jsonl"})
    with pytest.raises(InputError, match="is the input file --labels"):
        io.check_output_file(tmp_path / "link.jsonl", {"--labels": tmp_path / "in.jsonl"})
    with pytest.raises(InputError, match="is a directory"):
        io.check_output_file(tmp_path / "d", {})
    with pytest.raises(InputError, match="in.jsonl is not a directory"):
        io.check_output_file(tmp_path / "in.jsonl" / "out.jsonl", {})
    with pytest.raises(InputError, match="exists and is not a directory"):
        io.check_output_dir(tmp_path / "in.jsonl")
    with pytest.raises(InputError, match="metrics.json: is a directory"):
        (tmp_path / "res" / "metrics.json").mkdir(parents=True)
        io.check_output_dir(tmp_path / "res", ["metrics.json"])


def test_a_killed_writers_temporaries_are_removed_by_the_next_write(tmp_path):
    """A process killed between creating its temporaries and renaming them leaves hidden files;
    the next write of the same output removes them, and leaves a live process's and others' alone."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    host = io._host_tag()
    stale = tmp_path / f".scores.csv.{host}.{dead_pid}-0123abcd.tmp"
    live = tmp_path / f".scores.csv.{host}.{os.getppid()}-0123abcd.tmp"   # our parent still runs
    other = tmp_path / f".other.csv.{host}.{dead_pid}-0123abcd.tmp"       # another output's
    elsewhere = tmp_path / f".scores.csv.otherhost.{dead_pid}-0123abcd.tmp"  # another host's: unknowable
    for path in (stale, live, other, elsewhere):
        path.write_text("")
    io.write_text(tmp_path / "scores.csv", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([other.name, live.name, elsewhere.name, "scores.csv"])


def test_an_output_on_a_read_only_place_names_the_flag_and_the_reason(tmp_path, monkeypatch):
    import errno
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(InputError, match=r"^x/out.json: cannot write there \(--report\): read-only file system in \.$"):
        io.check_output_file("x/out.json", flag="--report")

import numpy as np
import pytest

from arm_jax import io


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

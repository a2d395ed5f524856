"""The README's Python examples run as shown."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2
    assert len(BLOCKS[0].strip().splitlines()) <= 16


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index):
    exec(compile(BLOCKS[index], f"README.md python block {index}", "exec"), {})


def test_readme_own_data_round_trip_runs(tmp_path):
    """The shell walk-through of "Use it on your own data", run as written."""
    import os
    import subprocess
    import sys

    block = next(b for b in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S) if "mkdir arm-demo" in b)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    done = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()
    assert "item_id,prompt_id,reward" in last and last[0].startswith("held-out pairwise accuracy:")
    assert float(last[-1]) > 0.9  # the labels recovered the hidden reward
    assert sum(1 for _ in open(tmp_path / "arm-demo" / "labels.jsonl")) == 300

"""The package's layers are one-way: ``cli → {workflow, experiment} → selection → model → runtime``.

This test reads every module's imports (top level and inside functions) and fails on an edge
that climbs back up, or that joins the two peers ``workflow`` and ``experiment``. ``errors`` and
``_version`` may be imported from anywhere; the package ``__init__`` imports nothing but them.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "arm_jax"
#: folder -> height; a module may import from its own folder or from a lower height
LAYERS = {"runtime": 1, "model": 2, "selection": 3, "workflow": 4, "experiment": 4, "cli": 5}
ANYWHERE = {"arm_jax.errors", "arm_jax._version"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every ``arm_jax`` module that ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("arm_jax"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("arm_jax"):
            assert node.level == 0, f"{path}: relative import"
            found.update(f"{node.module}.{a.name}" if node.module.count(".") == 1 and node.module[8:] in LAYERS
                         else node.module for a in node.names)
    return found


def folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def upward_edges() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = module_name(path)
        for target in sorted(imported_modules(path)):
            if target in ANYWHERE or target == "arm_jax":
                if target == "arm_jax" and here != "arm_jax":
                    bad.append(f"{here} -> arm_jax (the package root re-exports; import from the defining module)")
                continue
            src, dst = folder(here), folder(target)
            if here == "arm_jax" or here == "arm_jax.__main__":
                if here == "arm_jax" or dst != "cli":
                    bad.append(f"{here} -> {target}")
                continue
            if src is None or dst is None:
                bad.append(f"{here} -> {target} (outside the layers)")
            elif src != dst and LAYERS[dst] >= LAYERS[src]:
                bad.append(f"{here} -> {target}")
    return bad


def test_no_import_climbs_a_layer():
    assert upward_edges() == []


def test_the_check_sees_an_upward_edge(tmp_path, monkeypatch):
    """The check itself can fail: a model module that imports selection is an upward edge."""
    fake = tmp_path / "arm_jax"
    (fake / "model").mkdir(parents=True)
    (fake / "selection").mkdir()
    (fake / "model" / "bad.py").write_text("from arm_jax.selection import fisher\n")
    (fake / "selection" / "fisher.py").write_text("from arm_jax.model import network\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "PACKAGE", fake)
    assert upward_edges() == ["arm_jax.model.bad -> arm_jax.selection.fisher"]


@pytest.mark.parametrize("peer", ["workflow", "experiment"])
def test_workflow_and_experiment_are_peers(peer):
    other = {"workflow": "experiment", "experiment": "workflow"}[peer]
    edges = [e for e in upward_edges() if f"arm_jax.{peer}." in e.split(" -> ")[0] and f"arm_jax.{other}" in e]
    assert edges == []

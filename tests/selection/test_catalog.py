"""The catalog (names, descriptions, capabilities; no JAX) and the registry (the functions) agree."""
import dataclasses
import os
import subprocess
import sys

from arm_jax.selection import catalog, registry


def test_the_registry_binds_every_catalog_entry_in_order():
    assert [info.name for info in catalog.CATALOG] == list(registry.STRATEGIES)
    for info in catalog.CATALOG:
        strategy = registry.STRATEGIES[info.name]
        fields = [f.name for f in dataclasses.fields(catalog.StrategyInfo)]
        assert [getattr(strategy, f) for f in fields] == [getattr(info, f) for f in fields], info.name


def test_capabilities_match_the_functions():
    """An additive strategy has a PairScore whose past matches its own; the others have none."""
    for name, strategy in registry.STRATEGIES.items():
        assert strategy.additive == (strategy.pair_score is not None), name
        if strategy.pair_score is not None:
            assert strategy.pair_score.uses_past == strategy.uses_past and strategy.budget, name
        assert not (strategy.response_rule and strategy.additive), name
    assert registry.BUDGET_STRATEGIES == ("random", "greedy_dopt")
    assert registry.RESPONSE_RULES == ("eubo", "dts", "drts", "maxmin_lcb")


def test_the_strategies_command_does_not_import_jax():
    """``arm-jax strategies`` reads the catalog alone: no JAX, not even for the compilation cache."""
    env = {k: v for k, v in os.environ.items() if k != "ARM_JAX_NO_COMPILE_CACHE"}
    code = "import sys; from arm_jax.cli.main import main; main(['strategies']); assert 'jax' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out == "".join(line + "\n" for line in catalog.listing())

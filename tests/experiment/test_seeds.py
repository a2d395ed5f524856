"""The experiment's seed sweep split over 4 (emulated) devices equals one device."""
import jax
import numpy as np
import pytest

from arm_jax.experiment import config
from arm_jax.experiment import datasets as data
from arm_jax.experiment import program as experiment
from arm_jax.model import config as config_lib
from arm_jax.model import network as model

pytestmark = pytest.mark.multidevice


def _tiny():
    ds = data.llm_like(jax.random.PRNGKey(0), n_train_prompts=30, n_responses=4, n_test_prompts=5,
                       n_test_responses=6, dim=8)
    cfg = config.ExperimentConfig(
        strategy="pa_dopt", rounds=2, k=8, initial_labels=8, n_prompts=6, n_candidates=30, best_of_n=(6,),
        model=model.ModelConfig(depth=2, width=8), train=config_lib.TrainConfig(steps=10, batch_size=8, early_stopping=False),
    )
    return ds, cfg


def test_sharded_seed_sweep_equals_one_device():
    assert jax.device_count() == 4, "run with XLA_FLAGS=--xla_force_host_platform_device_count=4"
    ds, cfg = _tiny()
    keys = jax.random.split(jax.random.PRNGKey(1), 5)  # not a multiple of 4: padded and stripped
    sharded = experiment.make_experiment(cfg, ds)
    single = experiment.make_experiment(cfg, ds, devices=jax.devices()[:1])
    out = sharded.run_seeds(keys)
    ref = single.run_seeds(keys)
    assert len(out.metrics.one_minus_spearman.sharding.device_set) == 4
    np.testing.assert_array_equal(out.labelled.pairs, ref.labelled.pairs)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), out.metrics, ref.metrics)
    compiled = sharded.lower_seeds(keys).compile()
    again = compiled(keys, sharded.data)
    np.testing.assert_allclose(again.metrics.train_loss, out.metrics.train_loss, rtol=1e-6)


def test_sharded_study_equals_one_device():
    ds, cfg = _tiny()
    configs = [cfg.replace(strategy=name) for name in ("entropy", "pa_dopt")]
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    out = experiment.make_study(configs, ds).run_seeds(keys)
    ref = experiment.make_study(configs, ds, devices=jax.devices()[:1]).run_seeds(keys)
    assert len(out.metrics.one_minus_spearman.sharding.device_set) == 4
    assert out.labelled.pairs.shape[:2] == (3, 2)
    np.testing.assert_array_equal(out.labelled.pairs, ref.labelled.pairs)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), out.metrics, ref.metrics)

"""What the README promises about the command line matches what it does (issue 10, item 15)."""
from pathlib import Path

README = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())


def test_readme_is_honest_about_make_demo_and_progress():
    assert "takes about a minute" not in README
    assert "about 2.5 minutes" in README and "one progress line per strategy per round" in README


def test_readme_says_where_activate_works():
    assert "works only from the repository root" in README
    assert "source /path/to/arm-jax/.venv/bin/activate" in README


def test_readme_documents_2d_pools_created_directories_and_score_pairs():
    assert "a `.npy` of shape `(N, D)`" in README
    assert "`--out` creates missing directories" in README
    assert "whenever both exist they are from the same run" in README
    assert "`--allow-relabel`" in README and "two responses to different prompts" in README


def test_readme_explains_held_out_accuracy_and_val_labels():
    assert "**Held-out accuracy is no yardstick across strategies.**" in README
    assert "they are not a random sample" in README and "`--val-labels FILE`" in README
    assert "expected calibration error" in README and "never trained on" in README
    assert "held out by early stopping" in README and "stopping epoch: " in README


def test_readme_documents_the_compile_cache_and_its_opt_outs():
    assert "`~/.cache/arm-jax/jax`" in README and "`$XDG_CACHE_HOME/arm-jax/jax`" in README
    assert "`--no-compile-cache`" in README and "`ARM_JAX_NO_COMPILE_CACHE=1`" in README

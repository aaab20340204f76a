"""Anything that turns texts into vectors: a trained model dir, a SavedModel, a preset.

`load_embedder(spec)` accepts what the CLIs accept as MODEL: a trained `model/`
directory, an exported SavedModel directory, a `.tflite` file, or a preset name.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from deepseek_tf.errors import UserError


class Embedder:
    """Base: subclasses implement `_encode(texts, tower)` for one batch of raw strings."""

    name = "embedder"
    fingerprint = ""

    def _encode(self, texts: list[str], tower: str) -> np.ndarray:
        raise NotImplementedError

    def encode(self, texts: list[str], tower: str = "doc", batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        """Encodes in length-sorted batches (padding stays small); rows keep the input order."""
        if not texts:
            return np.zeros((0, 0), np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: np.ndarray | None = None
        batches = range(0, len(order), batch_size)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"encoding {tower}s", unit="batch", leave=False)
        for start in batches:
            idx = order[start:start + batch_size]
            vecs = self._encode([texts[i] for i in idx], tower)
            if out is None:
                out = np.zeros((len(texts), vecs.shape[-1]), np.float32)
            out[idx] = vecs
        return out

    def encode_queries(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self.encode(texts, "query", batch_size)

    def encode_docs(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return self.encode(texts, "doc", batch_size, progress)


class KerasEmbedder(Embedder):
    """A DualEncoder plus its tokenizer, run eagerly-compiled per tower."""

    def __init__(self, model, tokenizer, query_max_length: int, doc_max_length: int, name: str,
                 fingerprint: str = ""):
        self.model, self.tokenizer, self.name, self.fingerprint = model, tokenizer, name, fingerprint
        self.max_length = {"query": query_max_length, "doc": doc_max_length}
        towers = {"query": model.query_encoder, "doc": model.doc_tower}
        self._fns = {
            k: tf.function(lambda t, enc=enc, n=self.max_length[k]: enc(tokenizer(t, n), training=False),
                           input_signature=[tf.TensorSpec([None], tf.string)])
            for k, enc in towers.items()
        }

    def _encode(self, texts: list[str], tower: str) -> np.ndarray:
        return self._fns[tower](tf.constant(texts)).numpy()


class SavedModelEmbedder(Embedder):
    """An exported SavedModel with `encode_query` / `encode_doc` string signatures."""

    def __init__(self, path: Path):
        self.name, self.loaded = path.name, tf.saved_model.load(str(path))
        self.fingerprint = weights_fingerprint(path)
        for sig in ("encode_query", "encode_doc"):
            if not hasattr(self.loaded, sig):
                raise UserError(f"{path}: SavedModel has no '{sig}' endpoint (not a deepseek_tf export?)")

    def _encode(self, texts: list[str], tower: str) -> np.ndarray:
        fn = self.loaded.encode_query if tower == "query" else self.loaded.encode_doc
        return np.asarray(fn(tf.constant(texts)))


def weights_fingerprint(path: Path) -> str:
    """Hash of a model dir's weight files (or of one model file): an index built with other
    weights is refused, a teacher's cached scores are not reused for another teacher."""
    h = hashlib.sha256()
    for f in [path] if path.is_file() else sorted(path.rglob("*")):
        if f.is_file() and f.suffix in (".keras", ".pb", ".index", ".tflite", ".txt") or "variables.data" in f.name:
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def load_trained(path: Path):
    """A trained `model/` dir -> (keras model, Tokenizer, Config)."""
    import keras

    import deepseek_tf.models  # noqa: F401  (registers the serializable classes)
    from deepseek_tf.config import load_config
    from deepseek_tf.tokenizer import Tokenizer

    config = load_config(path / "config.yaml")
    tokenizer = Tokenizer.from_file(path / "vocab.txt", config.model.lowercase)
    try:
        model = keras.models.load_model(path / "model.keras", compile=False)
    except Exception as e:
        raise UserError(f"{path}/model.keras: cannot load ({str(e).splitlines()[0]})") from None
    return model, tokenizer, config


def preset_model(name: str, max_length: int = 256):
    """A preset as an untrained DualEncoder (mean pooling + L2, as sentence-transformers)."""
    from deepseek_tf.config import ModelConfig, config_from_dict
    from deepseek_tf.models import build_model
    from deepseek_tf.models.backbones import vocab_path
    from deepseek_tf.tokenizer import Tokenizer

    config = config_from_dict({"model": {"backbone": name, "query_max_length": max_length,
                                         "doc_max_length": max_length, "pooling": "mean",
                                         "normalize": True}})
    tokenizer = Tokenizer.from_file(vocab_path(name), ModelConfig.lowercase)
    return build_model(config, tokenizer.vocab_size), tokenizer, config


def load_embedder(spec: str) -> Embedder:
    from deepseek_tf.models.backbones import PRESETS

    path = Path(spec)
    if spec in PRESETS:
        model, tokenizer, config = preset_model(spec)
        return KerasEmbedder(model, tokenizer, config.model.query_max_length, config.model.doc_max_length,
                             name=spec, fingerprint=spec)
    if path.suffix == ".tflite":
        if not path.is_file():
            raise UserError(f"TFLite file not found: {path}")
        from deepseek_tf.export import TFLiteEmbedder

        return TFLiteEmbedder(path)
    if (path / "model.keras").is_file():
        model, tokenizer, config = load_trained(path)
        return KerasEmbedder(model, tokenizer, config.model.query_max_length, config.model.doc_max_length,
                             name=path.parent.name or path.name, fingerprint=weights_fingerprint(path))
    if (path / "saved_model.pb").is_file():
        return SavedModelEmbedder(path)
    raise UserError(f"--model {spec!r}: not a trained model dir, a SavedModel, a .tflite file "
                    f"or a preset ({', '.join(PRESETS)})")


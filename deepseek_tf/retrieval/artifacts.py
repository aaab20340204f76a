"""Loading any model artifact for inference: `load_embedder(spec)` takes what the CLIs take as
MODEL: a trained `model/` directory, an exported SavedModel directory, a `.tflite` file, or a preset name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from deepseek_tf.errors import UserError
from deepseek_tf.models import preset_model
from deepseek_tf.models.backbones import PRESETS
from deepseek_tf.models.loading import load_trained, refuse_unfinished, weights_fingerprint
from deepseek_tf.retrieval.embedders import Embedder, KerasEmbedder, SavedModelEmbedder
from deepseek_tf.retrieval.engines import current_engine
from deepseek_tf.retrieval.openvino import openvino_embedder
from deepseek_tf.retrieval.tflite import TFLiteEmbedder, read_meta


def _not_a_retriever(spec: str) -> UserError:
    # a cross-encoder scores (query, document) pairs: it has no towers to embed with
    return UserError(
        f"{spec}: a cross-encoder (reranker), not a retriever; give it as --rerank and a dual encoder as the model"
    )


def load_embedder(spec: str, engine: str | None = None, say: Callable[[str], None] | None = None) -> Embedder:
    """The embedder for MODEL `spec`. A Keras model (preset or trained dir) runs on `engine`
    (`retrieval.openvino.ENGINES`; None: the one `openvino.configure` chose, "auto" unless told);
    `say` hears why "auto" fell back to Keras."""
    path = Path(spec)
    engine = engine or current_engine()
    if spec in PRESETS:
        model, tokenizer, config = preset_model(spec)
        keras = KerasEmbedder(
            model, tokenizer, config.model.query_max_length, config.model.doc_max_length, name=spec, fingerprint=spec
        )
        return openvino_embedder(keras, engine, say)
    refuse_unfinished(path)
    if path.suffix == ".tflite":
        if not path.is_file():
            raise UserError(f"TFLite file not found: {path}")
        if read_meta(path).get("kind") == "cross_encoder":
            raise _not_a_retriever(spec)
        return TFLiteEmbedder(path)
    if (path / "model.keras").is_file():
        model, tokenizer, config = load_trained(path)
        if config.model.kind == "cross_encoder":
            raise _not_a_retriever(spec)
        keras = KerasEmbedder(
            model,
            tokenizer,
            config.model.query_max_length,
            config.model.doc_max_length,
            name=path.parent.name or path.name,
            fingerprint=weights_fingerprint(path),
        )
        if keras.image_dim is not None:  # the image fusion runs in Keras, after the text tower
            return keras
        return openvino_embedder(keras, engine, say)
    if (path / "saved_model.pb").is_file():
        return SavedModelEmbedder(path)
    raise UserError(
        f"--model {spec!r}: not a trained model dir, a SavedModel, a .tflite file or a preset ({', '.join(PRESETS)})"
    )

"""Model builders. One explicit dict maps `model.kind` to its builder."""

from __future__ import annotations

from collections.abc import Callable

import keras

from deepseek_tf.config import Config, ModelConfig, config_from_dict
from deepseek_tf.models.backbones import build_backbone, pretrained_tokenizer
from deepseek_tf.models.cross_encoder import build_cross_encoder
from deepseek_tf.models.dual_encoder import DualEncoder
from deepseek_tf.models.encoder import Encoder
from deepseek_tf.models.fusion import build_fusion
from deepseek_tf.models.images import build_image_encoder


def build_encoder(config: Config, vocab_size: int, name: str) -> Encoder:
    m = config.model
    return Encoder(
        build_backbone(m, vocab_size),
        pooling=m.pooling,
        projection_dim=m.projection_dim,
        normalize=m.normalize,
        name=name,
    )


def build_dual_encoder(config: Config, vocab_size: int) -> keras.Model:
    t = config.train
    query = build_encoder(config, vocab_size, "query_encoder")
    doc = None if config.model.shared_towers else build_encoder(config, vocab_size, "doc_encoder")
    m = config.model
    # the document tower's image fusion reads the text embedding's size
    fusion = build_fusion(m, m.projection_dim or query.backbone.hidden_dim) if "image" in m.doc_inputs else None
    files = fusion is not None and m.image_backbone != "none"  # image files, not precomputed vectors
    return DualEncoder(
        query,
        doc,
        loss=t.loss,
        temperature=t.temperature,
        margin=t.margin,
        mask_duplicates=t.mask_duplicates,
        gather_across_replicas=t.gather_across_replicas,
        distill_weight=t.distill_weight,
        doc_fusion=fusion,
        image_encoder=build_image_encoder(m) if files else None,
        name="dual_encoder",
    )


MODEL_BUILDERS: dict[str, Callable[[Config, int], keras.Model]] = {
    "dual_encoder": build_dual_encoder,
    "cross_encoder": build_cross_encoder,
}


def build_model(config: Config, vocab_size: int) -> keras.Model:
    if config.model.kind not in MODEL_BUILDERS:
        from deepseek_tf.errors import ConfigError

        raise ConfigError(f"model.kind {config.model.kind!r} is not available yet")
    return MODEL_BUILDERS[config.model.kind](config, vocab_size)


def preset_model(name: str, max_length: int = 256):
    """A preset as an untrained DualEncoder (mean pooling + L2, as sentence-transformers)."""
    config = config_from_dict(
        {
            "model": {
                "backbone": name,
                "query_max_length": max_length,
                "doc_max_length": max_length,
                "pooling": "mean",
                "normalize": True,
            }
        }
    )
    tokenizer = pretrained_tokenizer(name, ModelConfig.lowercase)
    return build_model(config, tokenizer.vocab_size), tokenizer, config

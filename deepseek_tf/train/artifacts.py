"""What a trainer writes into its workdir besides checkpoints: the vocabulary and the `model/` dir."""

from __future__ import annotations

import shutil
from pathlib import Path

import keras

from deepseek_tf.config import Config, save_config
from deepseek_tf.data import Pairs
from deepseek_tf.errors import ConfigError
from deepseek_tf.models.backbones import backbone_kind, has_pretrained_sentencepiece, pretrained_tokenizer, vocab_path
from deepseek_tf.text.sentencepiece import SentencePieceTokenizer
from deepseek_tf.text.tokenizer import Tokenizer, build_vocab, read_vocab, save_vocab


def prepare_tokenizer(config: Config, pairs: Pairs, out_dir: Path) -> Tokenizer:
    """Pretrained backbones bring their vocab (or SentencePiece model); from scratch it is learned
    from the pairs. The per-tower prefixes are model.query_prefix / model.doc_prefix, when set."""
    m = config.model
    if has_pretrained_sentencepiece(m.backbone):
        return pretrained_tokenizer(m.backbone).set_prefixes(m.query_prefix, m.doc_prefix)
    return _wordpiece(config, pairs, out_dir).set_prefixes(m.query_prefix, m.doc_prefix)


def _wordpiece(config: Config, pairs: Pairs, out_dir: Path) -> Tokenizer:
    m = config.model
    target = out_dir / "vocab.txt"
    if target.is_file():  # resuming: keep the vocabulary the checkpoint was trained with
        return Tokenizer(read_vocab(target), m.lowercase)
    if m.vocab:
        vocab = read_vocab(m.vocab)
    elif (path := vocab_path(m.backbone)) is not None:
        vocab = read_vocab(path)
    elif backbone_kind(m.backbone) == "scratch":
        texts = pairs.queries + pairs.docs + [t for n in (pairs.negs or []) for t in ([n] if isinstance(n, str) else n)]
        vocab = build_vocab(texts, m.vocab_size, m.lowercase)
    else:
        raise ConfigError(f"model.vocab: backbone {m.backbone!r} ships no vocab.txt; set model.vocab")
    save_vocab(vocab, target)
    return Tokenizer(vocab, m.lowercase)


def save_trained_model(model: keras.Model, tokenizer: Tokenizer, config: Config, out: Path) -> None:
    """`model/` = model.keras + the tokenizer (vocab.txt, or the SentencePiece files) + config.yaml;
    written to a temp dir then renamed."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save(tmp / "model.keras")
    if isinstance(tokenizer, SentencePieceTokenizer):
        tokenizer.save(tmp)
    else:
        save_vocab(tokenizer.vocab, tmp / "vocab.txt")
    save_config(config, tmp / "config.yaml")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)

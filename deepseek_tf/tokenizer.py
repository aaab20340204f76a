"""BERT WordPiece tokenization with tensorflow-text, usable in tf.data and in exported graphs.

Only ops that TFLite can run with the tensorflow-text registrar are used:
`FastBertNormalizer` (lower-casing, NFD accent stripping) and `FastWordpieceTokenizer`
with end-to-end BERT pre-tokenization (whitespace/punctuation split, one token per CJK
character). Truncation goes through `RaggedTensor.to_tensor(shape=...)` because slicing
a ragged tensor adds `RaggedRange`, which TFLite cannot run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import tensorflow as tf
import tensorflow_text as tft

from deepseek_tf.errors import UserError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def read_vocab(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"vocabulary file not found: {path}")
    vocab = path.read_text(encoding="utf-8").splitlines()
    missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if t not in vocab]
    if missing:
        raise UserError(f"{path}: vocabulary lacks special tokens {missing}")
    return vocab


def build_vocab(texts: Iterable[str], vocab_size: int = 8000, lowercase: bool = True) -> list[str]:
    """Learns a WordPiece vocabulary from texts with tensorflow-text's BERT vocab builder.

    CJK characters are split one per token before counting (as BERT does), so every
    Chinese character seen in the data gets its own entry.
    """
    from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset as bvd

    texts = [t for t in texts if t]
    if not texts:
        raise UserError("cannot build a vocabulary from an empty set of texts")
    ds = tf.data.Dataset.from_tensor_slices(texts).batch(1000)
    vocab = bvd.bert_vocab_from_dataset(
        ds,
        vocab_size=vocab_size,
        reserved_tokens=list(SPECIAL_TOKENS),
        bert_tokenizer_params={"lower_case": lowercase},
        learn_params={},
    )
    # FastWordpieceTokenizer needs every single character also as a suffix piece so any
    # seen word can be spelled out; the builder already emits "##c" for seen characters.
    return list(vocab)


def save_vocab(vocab: list[str], path: str | Path) -> None:
    Path(path).write_text("\n".join(vocab) + "\n", encoding="utf-8")


class Tokenizer(tf.Module):
    """Raw strings -> {"token_ids", "padding_mask", "segment_ids"} padded to the batch's longest.

    Args:
      vocab: WordPiece vocabulary (list of tokens, index = id).
      lowercase: lower-case and strip accents (uncased BERT models).
    """

    def __init__(self, vocab: list[str], lowercase: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.vocab = list(vocab)
        self.lowercase = lowercase
        self.normalizer = tft.FastBertNormalizer(lower_case_nfd_strip_accents=lowercase)
        self.wordpiece = tft.FastWordpieceTokenizer(
            vocab=self.vocab,
            token_out_type=tf.int32,
            unknown_token="[UNK]",
            no_pretokenization=False,
            support_detokenization=False,
        )
        self.pad_id = self.vocab.index("[PAD]")
        self.cls_id = self.vocab.index("[CLS]")
        self.sep_id = self.vocab.index("[SEP]")

    @classmethod
    def from_file(cls, path: str | Path, lowercase: bool = True) -> "Tokenizer":
        return cls(read_vocab(path), lowercase=lowercase)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def word_ids(self, texts: tf.Tensor, max_tokens: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Word pieces without special tokens, truncated: (ids (batch, n), lengths (batch,))."""
        texts = tf.reshape(tf.convert_to_tensor(texts, tf.string), [-1])
        if self.lowercase:
            texts = self.normalizer.normalize(texts)
        ragged = self.wordpiece.tokenize(texts)  # (batch, None)
        dense = ragged.to_tensor(default_value=self.pad_id, shape=[None, max_tokens])
        lengths = tf.minimum(tf.cast(ragged.row_lengths(), tf.int32), max_tokens)
        longest = tf.reduce_max(tf.concat([lengths, [0]], 0))
        return dense[:, :longest], lengths

    def __call__(self, texts: tf.Tensor, max_length: int = 128) -> dict[str, tf.Tensor]:
        """`[CLS] text [SEP]`, truncated to max_length, padded to the batch's longest."""
        ids, lengths = self.word_ids(texts, max_length - 2)
        batch = tf.shape(ids)[0]
        cls = tf.fill([batch, 1], self.cls_id)
        pad = tf.fill([batch, 1], self.pad_id)
        ids = tf.concat([cls, ids, pad], axis=1)  # (batch, n + 2)
        positions = tf.range(tf.shape(ids)[1])[None, :]
        ids = tf.where(positions == (lengths + 1)[:, None], self.sep_id, ids)
        mask = positions < (lengths + 2)[:, None]
        return {
            "token_ids": ids,
            "padding_mask": mask,
            "segment_ids": tf.zeros_like(ids),
        }

    def pairs(self, first: tf.Tensor, second: tf.Tensor, max_length: int = 256) -> dict[str, tf.Tensor]:
        """`[CLS] first [SEP] second [SEP]` with segment ids 0/1 (cross-encoder input).

        The first text keeps at most a quarter of the budget if the pair is too long
        (queries are short, documents carry the content); the second gets the rest.
        """
        budget = max_length - 3
        a, la = self.word_ids(first, max(budget // 4, 1))
        b, lb = self.word_ids(second, budget)
        lb = tf.minimum(lb, budget - la)
        batch = tf.shape(a)[0]
        width = tf.reduce_max(tf.concat([la + lb + 3, [3]], 0))
        positions = tf.range(width)[None, :]  # (1, width)
        la_, lb_ = la[:, None], lb[:, None]
        # Gather each row's pieces into one dense row without ragged ops.
        a_pad = tf.pad(a, [[0, 0], [0, width]])
        b_pad = tf.pad(b, [[0, 0], [0, width]])
        a_idx = tf.clip_by_value(positions - 1, 0, tf.shape(a_pad)[1] - 1)
        b_idx = tf.clip_by_value(positions - la_ - 2, 0, tf.shape(b_pad)[1] - 1)
        a_tok = tf.gather(a_pad, tf.broadcast_to(a_idx, [batch, width]), batch_dims=1)
        b_tok = tf.gather(b_pad, tf.broadcast_to(b_idx, [batch, width]), batch_dims=1)
        ids = tf.fill([batch, width], self.pad_id)
        ids = tf.where(positions == 0, self.cls_id, ids)
        ids = tf.where((positions >= 1) & (positions <= la_), a_tok, ids)
        ids = tf.where(positions == la_ + 1, self.sep_id, ids)
        in_b = (positions >= la_ + 2) & (positions < la_ + 2 + lb_)
        ids = tf.where(in_b, b_tok, ids)
        ids = tf.where(positions == la_ + lb_ + 2, self.sep_id, ids)
        mask = positions < (la_ + lb_ + 3)
        segments = tf.cast((positions >= la_ + 2) & mask, tf.int32)
        return {"token_ids": ids, "padding_mask": mask, "segment_ids": segments}

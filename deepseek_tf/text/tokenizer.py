"""BERT WordPiece tokenization with tensorflow-text, usable in tf.data and in exported graphs.

Only ops that TFLite can run with the tensorflow-text registrar are used:
`FastBertNormalizer` and `FastWordpieceTokenizer` with end-to-end BERT pre-tokenization
(whitespace/punctuation split, one token per CJK character). Truncation goes through
`RaggedTensor.to_tensor(shape=...)` because slicing a ragged tensor adds `RaggedRange`,
which TFLite cannot run.

Parity with Hugging Face: the stock `FastBertNormalizer(lower_case_nfd_strip_accents=True)`
case-folds with ICU NFKC_Casefold, so it folds full-width 'ＡＢＣ' to 'abc', 'ß' to 'ss' and
'①' to '1', and turns zero-width/format characters into spaces. Checkpoints trained with
`BertTokenizer` (and their `tokenizer.json`) do none of that: they drop control/format
characters, map whitespace to ' ', NFD-decompose, drop combining marks and lower-case. The
same op takes its per-codepoint table as a flatbuffer (`model_buffer`), so we build that
table here with HF's rules (`hf_normalizer_model`) and the graph stays TFLite-friendly.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import numpy as np
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
    Chinese character seen in the data gets its own entry. Texts go through the same
    normalizer as `Tokenizer` (the builder's own would case-fold 'ß' to 'ss', and the
    tokenizer would then never find 'ß' words in the vocabulary).
    """
    from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset as bvd

    texts = [t for t in texts if t]
    if not texts:
        raise UserError("cannot build a vocabulary from an empty set of texts")
    normalizer = tft.FastBertNormalizer(model_buffer=hf_normalizer_model(bool(lowercase)))
    ds = tf.data.Dataset.from_tensor_slices(texts).batch(1000).map(normalizer.normalize)
    vocab = bvd.bert_vocab_from_dataset(
        ds,
        vocab_size=vocab_size,
        reserved_tokens=list(SPECIAL_TOKENS),
        bert_tokenizer_params={"lower_case": False},  # already normalized above
        learn_params={},
    )
    # FastWordpieceTokenizer needs every single character also as a suffix piece so any
    # seen word can be spelled out; the builder already emits "##c" for seen characters.
    return list(vocab)


def save_vocab(vocab: list[str], path: str | Path) -> None:
    Path(path).write_text("\n".join(vocab) + "\n", encoding="utf-8")


# ---------------------------------------------------------------- HF-parity normalizer
# Unicode White_Space (Rust `char::is_whitespace`, what HF's BertNormalizer uses).
_WHITESPACE = frozenset(
    map(
        chr, [9, 10, 11, 12, 13, 32, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
    )
)
# HF's BertNormalizer decides "mark" and "control" with Unicode 8-era tables: these Mn/Cf
# codepoints (assigned later) pass through it unchanged. U+1734 was Mn then (HF drops it),
# U+166D and U+111C9 punctuation (HF splits there). tests/test_tokenizer_parity.py checks all
# of these tables against HF, codepoint by codepoint.
_HF_KEEPS = (
    "7FD 890-891 898-89F 8CA-8E2 9FE AFA-AFF B55 C04 C3C D00 D3B-D3C D81 EBA 180F "
    "1885-1886 1ABF-1ACE 1DF6-1DFB A82C A8C5 A8FF A9BD 10D24-10D27 10EAB-10EAC "
    "10F46-10F50 10F82-10F85 11070 11073-11074 110C2 110CD 111C9 111CF 1123E 1133B "
    "11438-1143F 11442-11444 11446 1145E 1182F-11837 11839-1183A 1193B-1193C 1193E 11943 "
    "119D4-119D7 119DA-119DB 119E0 11A01-11A0A 11A33-11A38 11A3B-11A3E 11A47 11A51-11A56 "
    "11A59-11A5B 11A8A-11A96 11A98-11A99 11C30-11C36 11C38-11C3D 11C3F 11C92-11CA7 "
    "11CAA-11CB0 11CB2-11CB3 11CB5-11CB6 11D31-11D36 11D3A 11D3C-11D3D 11D3F-11D45 11D47 "
    "11D90-11D91 11D95 11D97 11EF3-11EF4 13430-13438 16F4F 16FE4 1CF00-1CF2D 1CF30-1CF46 "
    "1E000-1E006 1E008-1E018 1E01B-1E021 1E023-1E024 1E026-1E02A 1E130-1E136 1E2AE "
    "1E2EC-1E2EF 1E944-1E94A "
)
# And these it does not split on (newer punctuation, CJK Extension E) while the word-piece
# pre-tokenizer would: they become a private-use character, which keeps the word whole and
# (being in no vocabulary) makes it [UNK], as HF does.
_HF_NO_SPLIT = (
    "61D 9FD A76 C77 C84 1B7D-1B7E 2E43-2E4F 2E52-2E5D 10EAD 10F55-10F59 10F86-10F89 "
    "1144B-1144F 1145A-1145B 1145D 11660-1166C 116B9 1183B 11944-11946 119E2 11A3F-11A46 "
    "11A9A-11A9C 11A9E-11AA2 11C41-11C45 11C70-11C71 11EF7-11EF8 11FFF 12FF1-12FF2 "
    "16E97-16E9A 16FE2 1E95E-1E95F 2B820-2B91F "
)
_HF_SPECIAL = {"\u1734": "", "\u166d": " \u166d ", "\U000111c9": " \U000111c9 "}


def _codepoint_set(spec: str) -> frozenset[str]:
    chars = set()
    for item in spec.split():
        lo, _, hi = item.partition("-")
        chars.update(map(chr, range(int(lo, 16), int(hi or lo, 16) + 1)))
    return frozenset(chars)


_HF_KEEP_SET = _codepoint_set(_HF_KEEPS)
_HF_NO_SPLIT_SET = _codepoint_set(_HF_NO_SPLIT)
# tokenizer-side data layout of FastBertNormalizer (tensorflow_text fast_bert_normalizer.h)
_DIFFERENT = 0x40000000
_LEN_BITS = 6


def hf_normalize_char(char: str, lowercase: bool = True) -> str:
    """One codepoint through HF `BertNormalizer(clean_text, strip_accents=lowercase, lowercase)`.

    Order as in HF: drop NUL, U+FFFD and other-category characters (C*) except tab/newline/CR,
    map whitespace to ' ', then NFD and drop non-spacing marks (Mn; HF keeps Mc and Me), then
    lower-case. Unassigned (Cn) codepoints are left as they are: Python's Unicode tables may be
    older than HF's, and a newly assigned emoji must not vanish. CJK characters get their own
    tokens in the word-piece pre-tokenizer, so no spacing is added here.
    """
    category = unicodedata.category(char)
    if category == "Cn":
        return char
    if char in _HF_SPECIAL and (lowercase or char != "\u1734"):  # U+1734: dropped as an accent
        return _HF_SPECIAL[char]
    if char in _HF_NO_SPLIT_SET:
        return "\ue000"
    if char in _HF_KEEP_SET or (ord(char) > 0xFFFF and category == "Co"):
        return char  # 131k supplementary private-use codepoints would bloat the table (HF drops them)
    if char not in "\t\n\r" and (char in "\x00\ufffd" or category[0] == "C"):
        return ""
    if char in _WHITESPACE:
        return " "
    if lowercase:
        decomposed = unicodedata.normalize("NFD", char)
        char = "".join(c for c in decomposed if unicodedata.category(c) != "Mn" or c in _HF_KEEP_SET)
        char = char.lower()
    return char


def _darts_trie(keys: dict[bytes, int]) -> np.ndarray:
    """A darts-clone double-array trie (the layout tensorflow-text reads) mapping keys to values.

    Keys are UTF-8 codepoints, so no key is a prefix of another. An inner node with base b
    keeps its child for byte c at slot b ^ c (first b that fits, scanning forward);
    a key node keeps its value in a free slot that is also its base. All bases differ, so a
    slot whose label matches the byte looked up can only be a child of the node traversed.
    """
    inner = sorted({k[:i] for k in keys for i in range(len(k))}, key=lambda p: (len(p), p))
    children: dict[bytes, list[int]] = {p: [] for p in inner}
    for node in inner[1:] + list(keys):
        children[node[:-1]].append(node[-1])
    size = (len(inner) + 2) * 256 + len(keys)  # upper bound: one block per inner node
    units = np.zeros(size, np.uint32)
    used = np.zeros(size, bool)
    used[0] = True  # the root's own unit
    pos, base = {b"": 0}, 256
    for node in inner:
        labels = np.asarray(children[node] + [0])  # slot b ^ 0 = b is reserved: b is a base
        # First fit at or after the previous base (siblings come in order), 4096 candidates at a time.
        while True:
            window = np.arange(base, base + 4096)[:, None] ^ labels[None, :]  # (4096, children)
            fits = np.flatnonzero(~used[np.minimum(window, size - 1)].any(axis=1) & (window < size).all(1))
            if fits.size:
                base += int(fits[0])
                break
            base += 4096
        used[base ^ labels] = True
        for byte in children[node]:
            pos[node + bytes([byte])] = base ^ byte
        units[pos[node]] = ((pos[node] ^ base) << 10) | (node[-1] if node else 0)
    at = np.array([pos[k] for k in keys], np.uint32)  # (n_keys,) each key node's slot
    slots = np.flatnonzero(~used)[: len(keys)].astype(np.uint32)  # its value slot = its base
    units[at] = ((at ^ slots) << 10) | 0x100 | np.array([k[-1] for k in keys], np.uint32)  # 0x100: has a value
    units[slots] = np.array(list(keys.values()), np.uint32) | 0x80000000  # top bit: value unit, never a label
    units = units[: max(int(slots.max(initial=0)), int(np.flatnonzero(used).max())) + 1]
    assert len(units) < (1 << 21), "offsets must fit 21 bits"
    return units


@functools.lru_cache(maxsize=2)
def hf_normalizer_model(lowercase: bool = True) -> bytes:
    """FastBertNormalizer flatbuffer whose per-codepoint table is `hf_normalize_char`."""
    table = {}
    # Planes 4-13 are unassigned and 15-16 private use: hf_normalize_char leaves both alone.
    for cp in (*range(0x40000), *range(0xE0000, 0xF0000)):
        if 0xD800 <= cp <= 0xDFFF:
            continue  # surrogates cannot occur in UTF-8
        norm = hf_normalize_char(chr(cp), lowercase)
        if norm != chr(cp):
            table[cp] = norm
    return normalizer_model(table, lowercase)


def normalizer_model(table: dict[int, str], lowercase: bool = False) -> bytes:
    """A FastBertNormalizer flatbuffer that replaces each codepoint in `table` by its string
    ("" drops it) and leaves every other codepoint alone. The op has a TFLite kernel, so any
    per-codepoint normalization written this way runs inside a .tflite file."""
    import flatbuffers

    keys: dict[bytes, int] = {}
    pool = bytearray()
    offsets: dict[str, int] = {}
    zero_data = 0
    for cp, norm in sorted(table.items()):
        data = _DIFFERENT
        if norm:
            if norm not in offsets:
                offsets[norm] = len(pool)
                pool += norm.encode("utf-8")
            data |= len(norm.encode("utf-8")) | (offsets[norm] << _LEN_BITS)
        if cp == 0:
            zero_data = data  # a trie cannot hold the empty key
        else:
            keys[chr(cp).encode("utf-8")] = data
    trie = _darts_trie(keys)
    builder = flatbuffers.Builder(trie.nbytes + len(pool) + 1024)
    pool_vec = builder.CreateNumpyVector(np.frombuffer(bytes(pool) or b" ", np.uint8))
    trie_vec = builder.CreateNumpyVector(trie)
    builder.StartObject(4)  # table FastBertNormalizerModel (fast_bert_normalizer_model.fbs)
    builder.PrependBoolSlot(0, lowercase, False)
    builder.PrependUOffsetTRelativeSlot(1, trie_vec, 0)
    builder.PrependInt32Slot(2, zero_data, 0)
    builder.PrependUOffsetTRelativeSlot(3, pool_vec, 0)
    builder.Finish(builder.EndObject())
    return bytes(builder.Output())


class Tokenizer(tf.Module):
    """Raw strings -> {"token_ids", "padding_mask", "segment_ids"} padded to the batch's longest.

    Args:
      vocab: WordPiece vocabulary (list of tokens, index = id).
      lowercase: lower-case and strip accents (uncased BERT models); either way text is
        cleaned as HF's BertNormalizer does (control/format characters dropped).
    """

    def __init__(self, vocab: list[str], lowercase: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.vocab = list(vocab)
        self.lowercase = lowercase
        # HF BertNormalizer rules (see module docstring); cased vocabularies still get cleaned.
        self.normalizer = tft.FastBertNormalizer(model_buffer=hf_normalizer_model(bool(lowercase)))
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
    def from_file(cls, path: str | Path, lowercase: bool = True) -> Tokenizer:
        return cls(read_vocab(path), lowercase=lowercase)

    # What a retriever puts before each tower's texts (e5: "query: " / "passage: "). They live on
    # the tokenizer so training, evaluation and every export pass raw text through `tower`.
    query_prefix = ""
    doc_prefix = ""

    def set_prefixes(self, query: str | None = None, doc: str | None = None) -> Tokenizer:
        """Overrides the per-tower prefixes; None keeps the one the tokenizer came with."""
        if query is not None:
            self.query_prefix = query
        if doc is not None:
            self.doc_prefix = doc
        return self

    def tower_prefix(self, tower: str) -> str:
        """What goes before `tower`'s texts ("query" or "doc")."""
        return self.query_prefix if tower == "query" else self.doc_prefix

    def tower(self, texts: tf.Tensor, max_length: int, tower: str, multiple: int = 1) -> dict[str, tf.Tensor]:
        """`__call__` on `tower`'s prefix + each text; tower is "query" or "doc"."""
        return self.framed(*self.tower_word_ids(texts, max_length - 2, tower), max_length, multiple)

    def tower_word_ids(self, texts: tf.Tensor, max_tokens: int, tower: str) -> tuple[tf.Tensor, tf.Tensor]:
        """`word_ids` of `tower`'s prefix + each text (one tower's input, or one half of a pair)."""
        prefix = self.tower_prefix(tower)
        texts = tf.reshape(tf.convert_to_tensor(texts, tf.string), [-1])
        return self.word_ids(tf.strings.join([prefix, texts]) if prefix else texts, max_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def word_ids(self, texts: tf.Tensor, max_tokens: int) -> tuple[tf.Tensor, tf.Tensor]:
        """Word pieces without special tokens, truncated: (ids (batch, n), lengths (batch,))."""
        texts = tf.reshape(tf.convert_to_tensor(texts, tf.string), [-1])
        texts = self.normalizer.normalize(texts)
        ragged = self.wordpiece.tokenize(texts)  # (batch, None)
        dense = ragged.to_tensor(default_value=self.pad_id, shape=[None, max_tokens])
        lengths = tf.minimum(tf.cast(ragged.row_lengths(), tf.int32), max_tokens)
        longest = tf.reduce_max(tf.concat([lengths, [0]], 0))
        return dense[:, :longest], lengths

    def __call__(self, texts: tf.Tensor, max_length: int = 128, multiple: int = 1) -> dict[str, tf.Tensor]:
        """`[CLS] text [SEP]`, truncated to max_length, padded to the batch's longest.

        `multiple` > 1 pads further, to the next multiple of it (at most max_length): see `widen`.
        """
        return self.framed(*self.word_ids(texts, max_length - 2), max_length, multiple)

    def framed(self, ids: tf.Tensor, lengths: tf.Tensor, max_length: int, multiple: int = 1) -> dict[str, tf.Tensor]:
        """Content ids (batch, n) with their lengths (batch,) -> `__call__`'s output: `[CLS] ids [SEP]`,
        the padding mask and segment ids, widened to `multiple`."""
        batch = tf.shape(ids)[0]
        cls = tf.fill([batch, 1], self.cls_id)
        pad = tf.fill([batch, 1], self.pad_id)
        ids = tf.concat([cls, ids, pad], axis=1)  # (batch, n + 2)
        positions = tf.range(tf.shape(ids)[1])[None, :]
        ids = tf.where(positions == (lengths + 1)[:, None], self.sep_id, ids)
        mask = positions < (lengths + 2)[:, None]
        out = {"token_ids": ids, "padding_mask": mask, "segment_ids": tf.zeros_like(ids)}
        return self.widen(out, multiple, max_length)

    def pairs(
        self, first: tf.Tensor, second: tf.Tensor, max_length: int = 256, multiple: int = 1
    ) -> dict[str, tf.Tensor]:
        """`[CLS] first [SEP] second [SEP]` with segment ids 0/1 (cross-encoder input); first and
        second carry the query and document prefixes (e5: `query: ` / `passage: `).

        The first text keeps at most a quarter of the budget if the pair is too long
        (queries are short, documents carry the content); the second gets the rest.
        `multiple` > 1 pads to the next multiple of it (at most max_length): see `widen`.
        """
        budget = max_length - 3
        a, la = self.tower_word_ids(first, max(budget // 4, 1), "query")
        b, lb = self.tower_word_ids(second, budget, "doc")
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
        return self.widen({"token_ids": ids, "padding_mask": mask, "segment_ids": segments}, multiple, max_length)

    def widen(self, ids: dict[str, tf.Tensor], multiple: int, max_length: int) -> dict[str, tf.Tensor]:
        """Pads a tokenized batch (batch, width) to the next multiple of `multiple`, at most max_length.

        Under XLA (`train.jit_compile`) every new input shape compiles the step again (tens of
        seconds for a BERT); padding to multiples of 64 leaves a handful of widths. Padded
        positions are masked, so the model's outputs do not change.
        """
        if multiple <= 1:
            return ids
        width = tf.shape(ids["token_ids"])[1]
        target = tf.minimum(-(-width // multiple) * multiple, tf.maximum(width, max_length))
        extra = [[0, 0], [0, target - width]]
        return {
            "token_ids": tf.pad(ids["token_ids"], extra, constant_values=self.pad_id),
            "padding_mask": tf.pad(ids["padding_mask"], extra, constant_values=False),
            "segment_ids": tf.pad(ids["segment_ids"], extra),
        }

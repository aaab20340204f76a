"""Lexical analyzers: hand-written expected terms for mixed-script strings, the default's
per-corpus decision, and BM25 over a tiny Chinese collection."""

import pytest

from deepseek_tf.errors import UserError
from deepseek_tf.text.analyzer import Analyzer, cjk_share

MIXED = [
    # (text, mixed terms, cjk terms = mixed + Latin/digit character 1-2-grams)
    (
        "iphone 15 手机壳",
        ["iphon", "15", "手", "机", "壳", "手机", "机壳"],
        [
            "iphon",
            "15",
            "i",
            "p",
            "h",
            "o",
            "n",
            "e",
            "ip",
            "ph",
            "ho",
            "on",
            "ne",
            "1",
            "5",
            "15",
            "手",
            "机",
            "壳",
            "手机",
            "机壳",
        ],
    ),
    (
        "轻便笔记本",
        ["轻", "便", "笔", "记", "本", "轻便", "便笔", "笔记", "记本"],
        ["轻", "便", "笔", "记", "本", "轻便", "便笔", "笔记", "记本"],
    ),
    (
        "summer dress 夏季连衣裙",
        ["summer", "dress", "夏", "季", "连", "衣", "裙", "夏季", "季连", "连衣", "衣裙"],
        None,
    ),
    (
        "galaxya7报价",
        ["galaxya7", "报", "价", "报价"],
        [
            "galaxya7",
            "g",
            "a",
            "l",
            "a",
            "x",
            "y",
            "a",
            "7",
            "ga",
            "al",
            "la",
            "ax",
            "xy",
            "ya",
            "a7",
            "报",
            "价",
            "报价",
        ],
    ),
    # stop words ('the', 'of') go, 'a' is too short, stems as Snowball: flows -> flow, wings -> wing
    ("the flows of a wings，机翼", ["flow", "wing", "机", "翼", "机翼"], None),
    # kana and Hangul are CJK runs too; the full-width comma splits runs
    ("カメラ、카메라", ["カ", "メ", "ラ", "カメ", "メラ", "카", "메", "라", "카메", "메라"], None),
    ("", [], []),
]


@pytest.mark.parametrize("text,mixed,cjk", MIXED)
def test_mixed_script_terms(text, mixed, cjk):
    assert Analyzer("mixed").terms(text) == mixed
    if cjk is not None:
        assert Analyzer("cjk").terms(text) == cjk


def test_mixed_is_the_english_pipeline_on_english_text():
    import bm25s
    import Stemmer

    texts = [
        "What similarity laws must be obeyed when constructing aeroelastic models of heated aircraft?",
        "Café naïve façade — 3.5 kg, 20% off!",
        "boundary-layer transition at Mach 2",
    ]
    want = bm25s.tokenize(
        texts, stopwords="en", stemmer=Stemmer.Stemmer("english"), return_ids=False, show_progress=False
    )
    assert Analyzer("mixed")(texts) == want == Analyzer("english")(texts)


def test_default_decides_on_the_corpus():
    # "iphone 15 手机壳": 3 CJK of 11 letters and digits = 0.2727 (< 0.3: mixed);
    # "轻便笔记本 x1": 5 of 7 = 0.714 (cjk)
    assert cjk_share(["iphone 15 手机壳"]) == pytest.approx(3 / 11)
    assert Analyzer("default").resolved(["iphone 15 手机壳"]).name == "mixed"
    assert Analyzer("default").resolved(["轻便笔记本 x1"]).name == "cjk"
    assert Analyzer("english").resolved(["轻便笔记本"]).name == "english"
    with pytest.raises(ValueError):
        Analyzer("default").terms("x")  # undecided
    with pytest.raises(UserError, match="not one of"):
        Analyzer("snowball")


def test_jieba_segments_words():
    pytest.importorskip("jieba")
    terms = Analyzer("jieba").terms("轻便笔记本电脑")
    assert "笔记本" in terms and "电脑" in terms and "便笔" not in terms


def test_bm25_ranks_chinese_titles():
    from deepseek_tf.retrieval.bm25 import BM25Index

    docs = {"a": "苹果手机壳 防摔 iphone15", "b": "轻便笔记本电脑 长续航", "c": "夏季碎花连衣裙 纯棉"}
    index = BM25Index().index(list(docs), list(docs.values()))
    assert index.config()["analyzer"] == "cjk" and index.config()["analyzer_setting"] == "default"
    assert index.search(["笔记本"], k=3)[0][0][0] == "b"
    assert index.search(["iphone 15 手机壳"], k=3)[0][0][0] == "a"
    assert index.search(["连衣裙"], k=3)[0][0][0] == "c"
    english = BM25Index(analyzer="english").index(list(docs), list(docs.values()))
    assert english.search(["笔记本"], k=3) == [[]]  # one giant word per title: nothing matches

import math

import pytest
from conftest import CRANFIELD

from deepseek_tf.retrieval.bm25 import BM25Index, bm25_run, ranked, reciprocal_rank_fusion

DOCS = {"d1": "wing flutter", "d2": "wing lift wing", "d3": "nozzle heat"}


def test_lucene_bm25_score_by_hand():
    index = BM25Index().index(list(DOCS), list(DOCS.values()))
    hits = index.search(["wing"], k=10)[0]
    # N = 3, df(wing) = 2: idf = ln(1 + (3 - 2 + 0.5) / (2 + 0.5)) = ln(1.6) = 0.470004
    # |d1| = 2, |d2| = 3, avgdl = 7/3; k1 = 1.5, b = 0.75
    # d1: tf 1 -> 1 / (1 + 1.5 * (0.25 + 0.75 * 2 / (7/3))) = 0.427481 -> 0.200918
    # d2: tf 2 -> 2 / (2 + 1.5 * (0.25 + 0.75 * 3 / (7/3))) = 0.523364 -> 0.245983
    idf = math.log(1.6)
    assert [d for d, _ in hits] == ["d2", "d1"]  # d3 shares no term: left out, not padded with score 0
    assert hits[0][1] == pytest.approx(idf * 2 / (2 + 1.5 * (0.25 + 0.75 * 3 / (7 / 3))), rel=1e-5)
    assert hits[1][1] == pytest.approx(idf * 1 / (1 + 1.5 * (0.25 + 0.75 * 2 / (7 / 3))), rel=1e-5)


def test_stemming_and_stop_words():
    index = BM25Index().index(list(DOCS), list(DOCS.values()))
    wing, wings, stop, unknown = index.search(["wing", "the wings", "the of and", "zebra"], k=10)
    assert wings == wing  # "wings" stems to "wing"; "the" is a stop word
    assert stop == [] and unknown == []  # nothing left to match: no arbitrary results


def test_rrf_by_hand():
    a = {"q": {"x": 0.9, "y": 0.5}}
    b = {"q": {"y": 3.0, "z": 1.0}}
    fused = reciprocal_rank_fusion([a, b], k=60)["q"]
    # y: 1/(60+2) + 1/(60+1); x: 1/(60+1); z: 1/(60+2)
    assert fused["y"] == pytest.approx(1 / 62 + 1 / 61)
    assert fused["x"] == pytest.approx(1 / 61) and fused["z"] == pytest.approx(1 / 62)
    assert ranked(fused) == ["y", "x", "z"]
    assert list(reciprocal_rank_fusion([a, b], k=60, top_k=2)["q"]) == ["y", "x"]


def test_ties_rank_as_trec_eval():
    # trec_eval breaks score ties by doc id, descending
    assert ranked({"a": 1.0, "c": 1.0, "b": 2.0}) == ["b", "c", "a"]


def test_bm25_on_cranfield_matches_reference():
    if not CRANFIELD.is_dir():
        pytest.skip(f"{CRANFIELD} not found")
    from deepseek_tf.data import load_beir
    from deepseek_tf.evaluate.metrics import trec_metrics

    ds = load_beir(CRANFIELD, "test", unknown_ids="drop")
    run, stats = bm25_run(ds, top_k=100)
    means, _ = trec_metrics(ds.qrels, run)
    assert means["queries"] == 75
    assert means["ndcg@10"] == pytest.approx(0.383, abs=0.002)  # SPEC's reference (trec_eval); we get 0.3832
    assert stats["bm25"] == {
        "k1": 1.5,
        "b": 0.75,
        "method": "lucene",
        "analyzer": "mixed",
        "analyzer_setting": "default",
    }


def test_bm25s_debug_lines_stay_quiet():
    """bm25s sets its own logger to DEBUG; with a root handler installed (TensorBoard installs
    one during training) its "Building index" lines reached the terminal between soup members."""
    import logging

    from deepseek_tf.retrieval.bm25 import BM25Index

    BM25Index().index(["a", "b"], ["wing flow", "heat transfer"])
    assert not logging.getLogger("bm25s").isEnabledFor(logging.DEBUG)


def test_tied_scores_are_cut_in_the_one_order_and_every_k_is_a_prefix():
    """Documents tied at the k-th score are chosen by id (ranking.ranking), not by bm25s's pick, so
    `search`, the server and `evaluate` agree at every depth."""
    ids = [f"d{i:02d}" for i in range(20)] + ["long", "other"]
    texts = ["red dress"] * 20 + ["red dress with long sleeves", "blue shirt"]
    index = BM25Index().index(ids, texts)
    full = index.search(["dress"], 22)[0]
    assert [d for d, _ in full] == [f"d{i:02d}" for i in range(19, -1, -1)] + ["long"]
    for k in range(1, 22):
        assert index.search(["dress"], k)[0] == full[:k]

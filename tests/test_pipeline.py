"""The one query flow (`retrieval/pipeline.py`): retrieve (dense | bm25 | hybrid) -> rerank ->
fusion, in the one ranking order, and serve's /search answering exactly what it ranks. (Its
agreement with `evaluate` and `search --json` on a real model: test_cross_encoder.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from serve_fakes import FakeIndex

from deepseek_tf.errors import UserError
from deepseek_tf.retrieval.bm25 import reciprocal_rank_fusion
from deepseek_tf.retrieval.pipeline import Hit, SearchPipeline, exact_dense, fuse
from deepseek_tf.retrieval.ranking import ranked, ranking

QUERIES = ["heat transfer", "wing boundary layer", "jet noise on a plate", "the of and"]  # the last: stop words


class OverlapScorer:
    """A cross-encoder stand-in: words shared with the query, minus a length tie-break."""

    name = "overlap"

    def score(self, query: str, docs: list[str]) -> np.ndarray:
        words = set(query.split())
        return np.array([len(words & set(d.split())) - 0.01 * len(d.split()) for d in docs], np.float32)


def pipeline_over(index: FakeIndex, **options) -> SearchPipeline:
    return SearchPipeline.over_index(index, index.embedder(), reranker=OverlapScorer(), **options)


def test_one_ranking_order_score_then_id_descending():
    docs = {"a": 1.0, "c": 1.0, "b": 2.0, "d": 0.5}
    assert ranking(docs) == [("b", 2.0), ("c", 1.0), ("a", 1.0), ("d", 0.5)]  # as trec_eval ranks a run
    assert ranking(docs, 2) == [("b", 2.0), ("c", 1.0)] and ranked(docs) == ["b", "c", "a", "d"]


def test_each_stage_by_hand():
    index = FakeIndex()
    p = pipeline_over(index, hybrid_depth=6, rerank_depth=5)
    vectors = index.embedder().vectors(QUERIES)
    for query, vec in zip(QUERIES, vectors):
        dense = index.search_dense(vec[None], 8)[0]
        bm25 = index.search_bm25([query], 8)[0]
        assert p.retrieve(query, "dense", 3) == ranking(dict(dense), 3)
        assert p.retrieve(query, "bm25", 3) == ranking(dict(bm25), 3)
        # hybrid: each retriever max(depth, hybrid_depth) = 6 deep, fused by reciprocal rank, cut to 3
        runs = [{query: dict(dense[:6])}, {query: dict(bm25[:6])}]
        assert p.retrieve(query, "hybrid", 3) == ranking(reciprocal_rank_fusion(runs, 60, 3).get(query, {}))
        for mode in ("dense", "bm25", "hybrid"):
            first = p.retrieve(query, mode, 5)  # rerank_depth 5 >= k 2
            reranked = {
                d: float(s) for (d, _), s in zip(first, OverlapScorer().score(query, [index.text(d) for d, _ in first]))
            }
            want = [Hit(d, s, dict(first)[d], reranked[d]) for d, s in ranking(reranked, 2)]
            assert p.search(query, 2, mode, rerank=True) == want
            fused = fuse({query: dict(first)}, {query: reranked}, 0.3)[query]
            assert [(h.id, h.score) for h in p.search(query, 2, mode, rerank=True, fusion=0.3)] == ranking(fused, 2)
            # W = 1: the cross-encoder's order (its scores standardised)
            assert [h.id for h in p.search(query, 2, mode, rerank=True, fusion=1.0)] == [h.id for h in want]
    assert p.search("the of and", 3, "bm25") == []  # nothing shares a term: no hit, no error


def test_exact_dense_is_the_index_dense_search():
    index = FakeIndex()
    dense = exact_dense(index.matrix, index.ids)
    vectors = index.embedder().vectors(QUERIES)
    for got, want in zip(dense(vectors, 4), index.search_dense(vectors, 4)):
        assert [d for d, _ in got] == [d for d, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-6)


def test_check_refuses_what_the_pipeline_cannot_answer():
    lexical = SearchPipeline(bm25=FakeIndex().search_bm25)
    lexical.check("bm25")
    for mode, rerank, fusion, message in (
        ("semantic", False, None, "mode 'semantic' is not one of dense, bm25, hybrid"),
        ("hybrid", False, None, "mode hybrid: no dense retriever"),
        ("bm25", True, None, "rerank needs a cross-encoder"),
    ):
        with pytest.raises(UserError, match=message):
            lexical.check(mode, rerank, fusion)
    full = pipeline_over(FakeIndex())
    with pytest.raises(UserError, match="fusion needs rerank"):
        full.check("dense", False, 0.5)
    with pytest.raises(UserError, match=r"--rerank-fusion must be in \[0, 1\], got 1.5"):
        full.check("dense", True, 1.5)


def test_serve_answers_what_the_pipeline_ranks():
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from deepseek_tf.serve.app import create_app
    from deepseek_tf.serve.service import SearchService, ServiceOptions

    index = FakeIndex()
    options = ServiceOptions(max_wait_ms=1.0, cache_size=0, rerank_depth=5, hybrid_depth=6)
    service = SearchService(index, OverlapScorer(), options)
    p = pipeline_over(index, rerank_depth=5, hybrid_depth=6)
    with TestClient(create_app(service)) as client:
        for query in QUERIES:
            for mode in ("dense", "bm25", "hybrid"):
                for rerank, fusion in ((False, None), (True, None), (True, 0.3)):
                    body = {"query": query, "k": 3, "mode": mode, "rerank": rerank}
                    r = client.post("/search", json={**body, "rerank_fusion": fusion} if fusion is not None else body)
                    assert r.status_code == 200, r.text
                    got = [(h["id"], h["score"]) for h in r.json()["results"]]
                    want = [(h.id, h.score) for h in p.search(query, 3, mode, rerank, fusion)]
                    assert [d for d, _ in got] == [d for d, _ in want], (query, mode, rerank, fusion)
                    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-6)
    service.close()

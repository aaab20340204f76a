import numpy as np
import pytest

from deepseek_tf.errors import UserError
from deepseek_tf.evaluate.metrics import trec_metrics
from deepseek_tf.retrieval.knn import exact_search


def test_trec_metrics_three_documents_by_hand():
    qrels = {"q1": {"d1": 2, "d2": 0, "d3": 1}}
    run = {"q1": {"d2": 0.9, "d3": 0.8, "d1": 0.7}}
    means, per_query = trec_metrics(qrels, run)
    # DCG = 0/log2(2) + 1/log2(3) + 2/log2(4) = 1.63093; IDCG = 2/1 + 1/log2(3) = 2.63093
    assert means["ndcg@10"] == pytest.approx(1.63093 / 2.63093, abs=1e-5)
    assert means["mrr@10"] == pytest.approx(0.5)  # first relevant at rank 2
    assert means["p@10"] == pytest.approx(0.2)  # 2 relevant / 10
    assert means["recall@10"] == pytest.approx(1.0)
    assert means["map"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert per_query["q1"]["ndcg@10"] == means["ndcg@10"] and means["queries"] == 1


def test_mrr_is_cut_at_ten():
    qrels = {"q": {"rel": 1}}
    run = {"q": {**{f"x{i}": 1.0 - i / 100 for i in range(10)}, "rel": 0.5}}  # relevant at rank 11
    means, _ = trec_metrics(qrels, run)
    assert means["mrr@10"] == 0.0 and means["recall@100"] == 1.0


def test_exact_search_matches_brute_force_in_chunks():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(1000, 16)).astype(np.float32)
    queries = rng.normal(size=(37, 16)).astype(np.float32)
    scores, idx = exact_search(queries, docs, k=10, chunk_size=128, query_batch=8)
    brute = np.argsort(-(queries @ docs.T), axis=1)[:, :10]
    np.testing.assert_array_equal(idx, brute)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ docs.T, brute, 1), rtol=1e-5)


# ---------------------------------------------------------------------------- trec_eval parity
def test_trec_metrics_match_pytrec_eval_on_multi_query_run():
    import pytrec_eval

    qrels = {
        "q1": {"a": 2, "b": 1, "c": 0, "z": 1},  # z is never retrieved
        "q2": {"d": 1},
        "q3": {"e": 3, "f": 1},
        "q4": {"g": 1},
    }  # absent from the run: scores 0 (pytrec_eval alone would leave it out)
    run = {
        "q1": {"c": 0.9, "a": 0.8, "x": 0.7, "b": 0.6},
        "q2": {**{f"n{i}": 1.0 - i / 100 for i in range(12)}, "d": 0.5},  # relevant at rank 13
        "q3": {"f": 0.9, "y": 0.8, "e": 0.7},
        "q9": {"a": 1.0},
    }  # not judged: not scored
    means, per_query = trec_metrics(qrels, run)
    ref = pytrec_eval.RelevanceEvaluator(
        qrels, {"ndcg_cut.10", "recall.10", "recall.100", "P.10", "map", "recip_rank"}
    ).evaluate(run)
    names = {
        "ndcg@10": "ndcg_cut_10",
        "recall@10": "recall_10",
        "recall@100": "recall_100",
        "p@10": "P_10",
        "map": "map",
    }
    assert set(per_query) == {"q1", "q2", "q3", "q4"} and means["queries"] == 4
    for q in ("q1", "q2", "q3"):
        for ours, theirs in names.items():
            assert per_query[q][ours] == pytest.approx(ref[q][theirs], abs=1e-12), (q, ours)
    # recip_rank is not cut by trec_eval; ours is MRR@10: equal where the first relevant is in the top 10
    assert per_query["q1"]["mrr@10"] == ref["q1"]["recip_rank"] == 0.5
    assert per_query["q3"]["mrr@10"] == ref["q3"]["recip_rank"] == 1.0
    assert ref["q2"]["recip_rank"] == pytest.approx(1 / 13) and per_query["q2"]["mrr@10"] == 0.0
    assert all(v == 0.0 for v in per_query["q4"].values())
    for k in names:
        assert means[k] == pytest.approx(sum(per_query[q][k] for q in per_query) / 4)
    # q1 by hand: ranks c(0) a(2) x b(1); DCG = 2/log2(3) + 1/log2(5) = 1.69255;
    # IDCG = 2 + 1/log2(3) + 1/log2(4) = 3.13093; recall@10 = 2/3 (z missed)
    assert per_query["q1"]["ndcg@10"] == pytest.approx(1.69255 / 3.13093, abs=1e-5)
    assert per_query["q1"]["recall@10"] == pytest.approx(2 / 3)


def test_mrr_cut_breaks_ties_as_trec_eval():
    # 11 documents tie; trec_eval orders ties by doc id descending, so "rel" (> "a...") comes first
    # and the top-10 cut must keep it: MRR@10 = 1
    qrels = {"q": {"rel": 1}}
    run = {"q": {**{f"a{i:02d}": 1.0 for i in range(10)}, "rel": 1.0}}
    means, _ = trec_metrics(qrels, run)
    assert means["mrr@10"] == 1.0 and means["p@10"] == pytest.approx(0.1)


def test_recall_curve_matches_cut_metrics():
    from deepseek_tf.evaluate.metrics import recall_curve

    qrels = {"q1": {"a": 1, "b": 1}, "q2": {"c": 1}}
    run = {"q1": {"a": 0.9, "x": 0.8, "b": 0.7}, "q2": {"y": 0.5}}
    curve = recall_curve(qrels, run)
    # q1: R@1 = 1/2, R@3 = 1; q2: 0 throughout -> means 0.25, 0.25, 0.5, 0.5, ...
    assert len(curve) == 100 and curve[:4] == [0.25, 0.25, 0.5, 0.5] and curve[-1] == 0.5


# ---------------------------------------------------------------------------- exact search and faiss
def test_exact_search_never_scores_more_than_one_block(monkeypatch):
    import deepseek_tf.retrieval.knn as index_mod

    shapes = []
    real = index_mod._chunk_topk()  # the compiled block kernel

    def spy(q, chunk, k):
        shapes.append((int(q.shape[0]), int(chunk.shape[0])))
        return real(q, chunk, k)

    monkeypatch.setattr(index_mod, "_chunk_topk", lambda: spy)
    rng = np.random.default_rng(1)
    docs, queries = rng.normal(size=(1000, 8)).astype(np.float32), rng.normal(size=(50, 8)).astype(np.float32)
    _, idx = index_mod.exact_search(queries, docs, k=5, chunk_size=300, query_batch=20)
    # 3 query batches (20, 20, 10) x 4 chunks (300, 300, 300, 100): at most a 20 x 300 score block
    assert len(shapes) == 12 and max(q for q, _ in shapes) == 20 and max(c for _, c in shapes) == 300
    np.testing.assert_array_equal(idx, np.argsort(-(queries @ docs.T), axis=1)[:, :5])


def _unit(rng, n, dim):
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_exact_top10_equals_faiss_flat_ip():
    faiss = pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    docs, queries = _unit(rng, 20000, 64), _unit(rng, 200, 64)
    scores, idx = exact_search(queries, docs, k=10, chunk_size=4096)
    flat = faiss.IndexFlatIP(64)
    flat.add(docs)
    f_scores, f_idx = flat.search(queries, 10)
    np.testing.assert_allclose(scores, f_scores, atol=1e-5)
    differ = idx != f_idx
    # equal row for row; a swap is only tolerated between documents whose scores tie to float32 rounding
    assert differ.sum() <= 2, differ.sum()
    rows = np.nonzero(differ.any(axis=1))[0]
    for r in rows:
        assert set(idx[r]) == set(f_idx[r]) or abs(scores[r, -1] - f_scores[r, -1]) < 1e-6


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq", "hnsw"])
def test_faiss_kinds_find_each_document_itself(kind):
    pytest.importorskip("faiss")
    from deepseek_tf.retrieval.knn import EF_CONSTRUCTION, fill_faiss, new_faiss_index, set_search_params

    rng = np.random.default_rng(2)
    docs = _unit(rng, 2000, 16)
    index = fill_faiss(new_faiss_index(kind, 16, len(docs), pq_m=4), docs, block=300)  # 7 blocks
    assert index.ntotal == 2000
    if kind in ("ivf", "ivfpq"):
        assert index.nlist == 51  # min(4·sqrt(2000) = 178, 2000 // 39 = 51)
        set_search_params(index, nprobe=index.nlist)
    if kind == "hnsw":
        assert index.hnsw.efConstruction == EF_CONSTRUCTION == 200
        set_search_params(index, ef_search=64)
    scores, rows = index.search(docs[:5], 3)  # each document's best match is itself (unit vectors, score 1)
    assert rows[:, 0].tolist() == [0, 1, 2, 3, 4]
    if kind != "ivfpq":  # PQ codes approximate the vectors: scores near 1, not 1
        np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


def test_ivf_cells_rule():
    from deepseek_tf.retrieval.knn import ivf_cells

    # 4·sqrt(n) cells, at most n/39 (faiss wants 39 training points per cell), at least 1
    assert [ivf_cells(n) for n in (1, 38, 390, 10_000, 1_000_000)] == [1, 1, 10, 256, 4000]
    assert ivf_cells(10_000, nlist=50) == 50 and ivf_cells(100, nlist=50) == 2


def test_faiss_missing_is_one_line(monkeypatch):
    import sys

    from deepseek_tf.retrieval.knn import faiss_module

    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss raises ImportError
    with pytest.raises(UserError, match=r"faiss is not installed: pip install 'deepseek_tf\[faiss\]'"):
        faiss_module()


def test_queries_without_a_relevant_document_are_left_out_and_counted():
    from deepseek_tf.evaluate.metrics import trec_metrics

    # q1: its one relevant doc ranked first -> nDCG@10 1.0; q2: judged, nothing relevant -> left out
    # (trec_eval would average in a 0 and report 0.5); q3: never judged -> not scored.
    qrels = {"q1": {"d1": 1, "d2": 0}, "q2": {"d2": 0}}
    run = {"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d2": 1.0}, "q3": {"d1": 1.0}}
    means, rows = trec_metrics(qrels, run)
    assert means["ndcg@10"] == 1.0 and means["queries"] == 1 and means["queries_without_relevant"] == 1
    assert set(rows) == {"q1"}

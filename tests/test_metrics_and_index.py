import numpy as np
import pytest

from deepseek_tf.index import ExactIndex, exact_search
from deepseek_tf.errors import UserError
from deepseek_tf.evaluate import trec_metrics


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


def test_index_save_load_refuses_other_model(tmp_path):
    index = ExactIndex(np.eye(3, dtype=np.float32), ["a", "b", "c"], fingerprint="abc")
    index.save(tmp_path)
    again = ExactIndex.load(tmp_path, fingerprint="abc")
    assert again.search(np.array([[0, 1, 0]], np.float32), k=2)[0][0] == ("b", 1.0)
    with pytest.raises(UserError, match="built with another model"):
        ExactIndex.load(tmp_path, fingerprint="zzz")

"""`deepseek-tf bench-ann --data clustered`: the embedding-like vectors and the per-query HNSW study."""

from __future__ import annotations

import numpy as np

from deepseek_tf.bench.ann import bench, clustered_unit_vectors, make_data, random_unit_vectors


def _nearest_cosine(x: np.ndarray) -> float:
    sims = x @ x.T
    np.fill_diagonal(sims, -1)
    return float(np.median(sims.max(axis=1)))


def test_clustered_vectors_are_unit_deterministic_and_clustered():
    x = clustered_unit_vectors(2000, 64, seed=3, centres=20)
    assert x.shape == (2000, 64) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(x, clustered_unit_vectors(2000, 64, seed=3, centres=20))
    # a point's nearest neighbour shares its cluster: cos ~ (1 + spread^2 cos_sub) / (1 + spread^2 + noise^2)
    # well above 0.5 (0.88 here); on the uniform sphere in 64-d the best of 2000 is about 0.41
    assert _nearest_cosine(x) > 0.75 > 0.5 > _nearest_cosine(random_unit_vectors(2000, 64, 3))
    docs, queries = make_data("clustered", 500, 20, 64, centres=20)
    assert docs.shape == (500, 64) and queries.shape == (20, 64)
    assert not (np.abs(docs @ queries.T) > 1 - 1e-6).any()  # queries are held out, never an indexed point


def test_hnsw_study_picks_the_smallest_ef_search_reaching_the_target():
    out = bench(
        n=3000,
        dim=32,
        queries=40,
        k=10,
        faiss_kinds=("hnsw",),
        data="clustered",
        centres=30,
        hnsw_m=16,
        ef_construction=40,
        ef_search=(10, 400),
        target_recall=0.0,
        flat=False,
    )
    rows = out["hnsw"]["ef_search"]
    assert [r["efSearch"] for r in rows] == [10, 400]
    assert out["hnsw"]["picked"]["efSearch"] == 10  # every efSearch reaches recall 0
    assert (
        rows[1]["recall@10"] >= rows[0]["recall@10"] and rows[1]["recall@10"] > 0.95
    )  # ef 400 of 3,000: near exhaustive
    assert out["hnsw"]["index_bytes"] > 3000 * 32 * 4  # the vectors and the links
    assert rows[0]["latency_ms_p50"] <= rows[0]["latency_ms_p95"]
    strict = bench(
        n=500,
        dim=16,
        queries=10,
        faiss_kinds=("hnsw",),
        data="clustered",
        centres=5,
        ef_search=(16,),
        target_recall=1.01,
        flat=False,
    )
    assert strict["hnsw"]["picked"] is None

"""The exact-search section of `make bench`: queries/s of ours against faiss on the same vectors."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def bench_search(queries: np.ndarray, docs: np.ndarray, k: int = 10, min_seconds: float = 1.0) -> dict:
    """Queries/s of our exact_search and faiss.IndexFlatIP on the same vectors (best of repeats)."""
    import faiss

    from deepseek_tf.retrieval.knn import exact_search

    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(np.ascontiguousarray(docs, np.float32))
    q = np.ascontiguousarray(queries, np.float32)

    def rate(fn: Callable[[], tuple]) -> tuple[float, tuple]:
        result = fn()  # warm-up (traces the TF function)
        best, spent = float("inf"), 0.0
        while spent < min_seconds:
            start = time.perf_counter()
            result = fn()
            took = time.perf_counter() - start
            best, spent = min(best, took), spent + took
        return len(q) / best, result

    ours, (_, i_ours) = rate(lambda: exact_search(q, docs, k))
    peer, (_, i_peer) = rate(lambda: index.search(q, k))
    return {
        "queries": len(q),
        "docs": len(docs),
        "k": k,
        "ours_qps": ours,
        "peer_qps": peer,
        "same_top_k": float(np.mean(np.all(i_ours == i_peer, axis=1))),
    }

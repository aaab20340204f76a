"""The search kernel under every dense search: exact inner-product top-k in TensorFlow (in corpus
chunks, so memory stays bounded) and the construction of faiss inner-product indexes (extra
`faiss`). Index files, manifests and checks live in `deepseek_tf.index`; this module holds only
what `index`, `evaluate`, `train` and `bench` share, so each rule is written once.

faiss kinds: `flat` (exact), `ivf` (IVF-Flat), `ivfpq` (IVF-PQ) and `hnsw` (HNSW-Flat).
- HNSW is built with efConstruction EF_CONSTRUCTION (200): faiss's own default, 40, builds a graph
  that clustered data cannot be searched well in (on 1M clustered 384-d vectors recall@10 was 0.84
  at efSearch 128 with it, 0.999 with 200; docs/results.md).
- IVF kinds get `ivf_cells(n)` cells and are trained on at most TRAIN_SAMPLE rows.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from deepseek_tf.errors import UserError

FAISS_KINDS = ("flat", "ivf", "ivfpq", "hnsw")
EF_CONSTRUCTION = 200
TRAIN_SAMPLE = 100_000
ADD_BLOCK = 50_000


@functools.cache
def _chunk_topk():
    # built on first use: importing this module (for its constants) must not load TensorFlow
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def chunk_topk(queries, chunk, k):
        scores = tf.matmul(queries, chunk, transpose_b=True)  # (q, chunk)
        return tf.math.top_k(scores, k=k)

    return chunk_topk


def exact_search(
    queries: np.ndarray, docs: Any, k: int, chunk_size: int = 65536, query_batch: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by dot product: (scores (q, k), indices (q, k)), best first.

    `docs` is an (n, dim) array or anything with `shape` and contiguous slices (the index's
    memory-mapped shards). Scores at most query_batch × chunk_size at once, merging running top-k
    lists, so a 1M-document corpus never yields a 1M × Q score matrix (at the defaults the largest
    score block is 1024 × 65536 float32 = 256 MiB).
    """
    import tensorflow as tf

    n = docs.shape[0]
    k = min(k, n)
    all_scores = np.zeros((len(queries), k), np.float32)
    all_idx = np.zeros((len(queries), k), np.int64)
    for qs in range(0, len(queries), query_batch):
        q = tf.constant(queries[qs : qs + query_batch], tf.float32)  # (qb, dim)
        best_s = tf.fill([tf.shape(q)[0], 0], 0.0)
        best_i = tf.zeros([tf.shape(q)[0], 0], tf.int64)
        for start in range(0, n, chunk_size):
            chunk = tf.constant(docs[start : start + chunk_size], tf.float32)  # (chunk, dim)
            s, i = _chunk_topk()(q, chunk, tf.constant(min(k, chunk.shape[0])))
            merged_s = tf.concat([best_s, s], axis=1)  # (qb, <= 2k)
            merged_i = tf.concat([best_i, tf.cast(i, tf.int64) + start], axis=1)
            top = tf.math.top_k(merged_s, k=min(k, merged_s.shape[1]))
            best_s = top.values
            best_i = tf.gather(merged_i, top.indices, batch_dims=1)
        all_scores[qs : qs + query_batch] = best_s.numpy()
        all_idx[qs : qs + query_batch] = best_i.numpy()
    return all_scores, all_idx


def faiss_module():
    """The faiss module; a one-line UserError when the extra is not installed."""
    try:
        import faiss
    except ImportError:
        raise UserError("faiss is not installed: pip install 'deepseek_tf[faiss]' (or use the exact backend)") from None
    return faiss


def ivf_cells(n: int, nlist: int | None = None) -> int:
    """IVF cells for n vectors: `nlist` or 4·sqrt(n), at most n/39 (faiss wants 39 training points
    per cell) and at least 1."""
    return min(nlist or int(4 * np.sqrt(n)), max(1, n // 39))


def new_faiss_index(
    kind: str,
    dim: int,
    n: int,
    hnsw_m: int = 32,
    ef_construction: int = EF_CONSTRUCTION,
    nlist: int | None = None,
    pq_m: int = 8,
    pq_bits: int = 8,
):
    """An empty (untrained) faiss inner-product index of KIND for n vectors of size dim."""
    faiss = faiss_module()
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        return index
    if kind == "ivf":
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, ivf_cells(n, nlist), faiss.METRIC_INNER_PRODUCT)
    if kind == "ivfpq":
        return faiss.IndexIVFPQ(
            faiss.IndexFlatIP(dim), dim, ivf_cells(n, nlist), pq_m, pq_bits, faiss.METRIC_INNER_PRODUCT
        )
    raise UserError(f"faiss index kind {kind!r} is not one of {', '.join(FAISS_KINDS)}")


def fill_faiss(index, vectors: Any, block: int = ADD_BLOCK, blocks=lambda starts: starts):
    """Trains INDEX where it needs training (on a fixed sample of at most TRAIN_SAMPLE rows, sorted so
    memory-mapped shards are read in order) and adds VECTORS `block` rows at a time; returns it.

    `vectors`: an (n, dim) array or anything with `shape`, contiguous slices and row gathers by an
    index array. `blocks` wraps the block starts (a progress bar)."""
    n = vectors.shape[0]
    if not index.is_trained:
        sample = np.sort(np.random.default_rng(0).choice(n, min(n, TRAIN_SAMPLE), replace=False))
        index.train(np.ascontiguousarray(vectors[sample], np.float32))
    for start in blocks(range(0, n, block)):
        index.add(np.ascontiguousarray(vectors[start : start + block], np.float32))
    return index


def set_search_params(index, nprobe: int | None = None, ef_search: int | None = None) -> None:
    """Search-time settings: IVF cells probed per query, HNSW candidate list size."""
    if nprobe is not None:
        index.nprobe = nprobe
    if ef_search is not None:
        index.hnsw.efSearch = ef_search

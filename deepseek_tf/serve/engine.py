"""One loaded index with what serves it (`Engine`): how one is built and warmed up, how its
micro-batcher runs a batch of dense queries, and the document count a service reports.

With batching on, one batch worker gathers concurrent dense requests, encodes the queries not in
the cache in one `encode_queries` call and searches all of them in one `search_dense` call at the
deepest k asked for (each request keeps its own top k), so the model and the search run once per
batch instead of once per request.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np

from deepseek_tf.errors import UserError
from deepseek_tf.retrieval.pipeline import SearchPipeline
from deepseek_tf.serve.batcher import MicroBatcher
from deepseek_tf.serve.metrics import ServiceMetrics
from deepseek_tf.serve.options import ServiceOptions

# One dense request in a batch: (query, its vector or None, k or None) -> (vector, top-k hits or None).
DenseItem = tuple[str, np.ndarray | None, int | None]


class Engine:
    """One loaded index with its query encoder, batcher and query pipeline, counted while requests use it."""

    def __init__(
        self,
        index,
        embedder,
        batcher: MicroBatcher | None,
        generation: int,
        fingerprint: str,
        pipeline: SearchPipeline | None = None,
    ):
        self.index, self.embedder, self.batcher, self.pipeline = index, embedder, batcher, pipeline
        self.generation, self.fingerprint = generation, fingerprint
        self.in_flight, self.retired = 0, False


def make_engine(
    index,
    generation: int,
    options: ServiceOptions,
    metrics: ServiceMetrics,
    reranker=None,
    models: Mapping[str, object] | None = None,
) -> Engine:
    """The engine that serves INDEX, ready for its first request: its query encoder (the one in
    MODELS for the index's model fingerprint, else the index's own, loaded now), its micro-batcher
    (with `options.batching`) and its query pipeline. Raises UserError for an index whose model
    does not match its vectors; an index that cannot search fails here, not in a request."""
    fingerprint = index_fingerprint(index)
    embedder = (models or {}).get(fingerprint) if fingerprint else None
    if embedder is None:
        embedder = index.embedder()
        # The first call traces the encoder graph: do it now, not in the first request.
        vec = np.asarray(embedder.encode_queries(["warm-up"]))
        dim = index.manifest.get("dim")
        if dim is not None and vec.shape[-1] != int(dim):
            raise UserError(f"{index.path}: the model gives {vec.shape[-1]}-d vectors, the index holds {dim}-d")
    index.search_dense(np.asarray(embedder.encode_queries(["warm-up"])), 1)
    index.search_bm25(["warm-up"], 1)
    batcher = None
    if options.batching:
        batcher = MicroBatcher(
            lambda items: dense_batch(index, embedder, metrics, items),
            options.max_batch,
            options.max_wait_ms,
            name="dense",
            dedupe=False,
            workers=options.batch_workers,
        )
    pipeline = SearchPipeline.over_index(
        index,
        embedder,
        reranker=reranker,
        rerank_depth=options.rerank_depth,
        hybrid_depth=options.hybrid_depth,
        rrf_k=options.rrf_k,
    )
    return Engine(index, embedder, batcher, generation, fingerprint or f"embedder-{id(embedder)}", pipeline)


def dense_batch(index, embedder, metrics: ServiceMetrics, items: list[DenseItem]) -> list:
    """A batch of (query, its vector or None, k or None) -> (vector, top-k hits or None) each: the
    queries without a vector encoded in one call, those with a k searched in one call."""
    todo = list(dict.fromkeys(t for t, v, _ in items if v is None))  # a repeated query is encoded once
    encoded = {}
    if todo:
        start = time.perf_counter()
        rows = np.asarray(embedder.encode_queries(todo, batch_size=len(todo)))
        # copies: a cached row must not keep its whole batch's array alive
        encoded = {t: row.copy() for t, row in zip(todo, rows)}
        metrics.observe_batch(len(todo), time.perf_counter() - start)
    vectors = [encoded[t] if v is None else v for t, v, _ in items]
    hits: list = [None] * len(items)
    wanted = [i for i, (_, _, k) in enumerate(items) if k is not None]
    if wanted:
        found = index.search_dense(np.stack([vectors[i] for i in wanted]), max(items[i][2] for i in wanted))
        metrics.observe_search_batch(len(wanted), 0.0)
        for i, h in zip(wanted, found):
            hits[i] = h[: items[i][2]]
    return list(zip(vectors, hits))


def index_fingerprint(index) -> str:
    """What names an index's query model: two indexes with one fingerprint share a loaded encoder."""
    m = index.manifest
    return str(m.get("model_fingerprint") or m.get("model") or "")


def doc_count(index) -> int:
    """Documents an index serves now (a live index counts its writes)."""
    count = getattr(index, "count", None)
    return int(count) if count is not None else len(index.ids)

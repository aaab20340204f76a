"""`ServiceOptions`: how a `SearchService` batches, caches and ranks, the one place their defaults live."""

from __future__ import annotations

from dataclasses import dataclass

from deepseek_tf.retrieval.pipeline import SearchPipeline


@dataclass(frozen=True)
class ServiceOptions:
    """A service's settings, fixed while it runs (`serve`'s command-line options set them)."""

    batching: bool = True  # off: each request calls the query encoder on its own
    max_batch: int = 16  # two batch workers run two batches side by side, each on one core
    max_wait_ms: float = 2.0
    cache_size: int = 10000  # entries in each LRU cache (query embeddings, results); 0 turns both off
    # The pipeline's depths unless the operator asks otherwise: a request ranks as `deepseek-tf search` does.
    rerank_depth: int = SearchPipeline.rerank_depth  # candidates rescored per query when a request asks for rerank
    hybrid_depth: int = SearchPipeline.hybrid_depth  # depth of the dense and BM25 runs that RRF merges
    rrf_k: int = SearchPipeline.rrf_k
    workers: int = 8  # threads for search, BM25, reranking and (without batching) the encoder
    batch_workers: int = 2  # micro-batch workers: one batch is gathered while another is in the model

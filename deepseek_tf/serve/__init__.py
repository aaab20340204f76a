"""`deepseek-tf serve`: an HTTP search service over a built index (FastAPI + uvicorn).

`SearchService` answers dense, BM25 and hybrid queries (optionally reranked) with query
micro-batching (`MicroBatcher`), LRU caches of query embeddings and results, and atomic index
reloads; `create_app` puts the HTTP API on it; `run_server` serves it."""

from __future__ import annotations

from deepseek_tf.serve.batcher import MicroBatcher
from deepseek_tf.serve.cache import LRUCache
from deepseek_tf.serve.service import SearchService, ServiceError, ServiceOptions

__all__ = ["LRUCache", "MicroBatcher", "SearchService", "ServiceError", "ServiceOptions", "create_app", "run_server"]


def __getattr__(name: str):
    # the HTTP layer imports FastAPI, an optional extra: only when asked for
    if name == "create_app":
        from deepseek_tf.serve.app import create_app

        return create_app
    if name == "run_server":
        from deepseek_tf.serve.server import run_server

        return run_server
    raise AttributeError(name)

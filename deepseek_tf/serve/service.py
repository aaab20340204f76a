"""The search service behind the HTTP API, usable without HTTP.

It serves one built index at a time. Each request holds the `Engine` it started on (index,
query encoder, micro-batchers) until it finishes; `reload` loads a new index completely, then
swaps one reference, so in-flight requests finish on the old index and later ones see the new
one. An engine that was swapped out closes its batchers once its last request is done.

With batching on, dense requests go through the engine's micro-batcher (`engine.py`), so the
model and the search run once per batch of concurrent requests instead of once per request.

A request's ranking is the one query flow's (`retrieval/pipeline.py`, as `search` and `evaluate`
run it): this service only fetches the first-stage hits its own way (dense through the batcher
and the caches, BM25 in a worker thread, both at once for hybrid) and hands them to the engine's
pipeline for fusion, reranking and score fusion.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from deepseek_tf.answer.prompt import Passage, index_passages
from deepseek_tf.errors import UserError
from deepseek_tf.index.updates import IndexBusy
from deepseek_tf.retrieval.pipeline import MODES
from deepseek_tf.serve.batcher import BatcherClosed
from deepseek_tf.serve.cache import MISSING, LRUCache
from deepseek_tf.serve.engine import Engine, doc_count, make_engine
from deepseek_tf.serve.errors import ERRORS, ServiceError, error_body, public_name
from deepseek_tf.serve.metrics import ServiceMetrics
from deepseek_tf.serve.options import ServiceOptions

__all__ = ["ERRORS", "SearchService", "ServiceError", "ServiceOptions", "error_body", "public_name"]
TOWERS = ("query", "doc")
log = logging.getLogger("deepseek_tf.serve")


class SearchService:
    """Search, embed, rerank and write requests over the one index it serves now, which `reload` swaps."""

    def __init__(
        self,
        index,
        reranker=None,
        options: ServiceOptions | None = None,
        metrics: ServiceMetrics | None = None,
        loader=None,
    ):
        self.options = options or ServiceOptions()
        self.metrics = metrics or ServiceMetrics()
        self.reranker = reranker
        self.embedding_cache = LRUCache(self.options.cache_size)
        self.results_cache = LRUCache(self.options.cache_size)
        self.answer_cache = LRUCache(self.options.cache_size)
        self.answerer = None  # what POST /answer asks (`answer.Answerer`): `serve --generator-url`
        self._loader = loader
        # Called (in a worker thread) once a replaced index is no longer used by any request and
        # its references are dropped: the server collects it there and freezes the heap again.
        self.on_retired = None
        self._executor = ThreadPoolExecutor(self.options.workers, thread_name_prefix="serve")
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._generation = 0
        self.path = Path(index.path) if getattr(index, "path", None) is not None else None
        # Query encoders loaded, by model fingerprint: the one serving and the one before it. A reload
        # back to the previous index's model reuses it: loading a Keras model again leaks memory
        # inside TensorFlow (RSS grew 15-25 MB a reload alternating all-MiniLM-L6-v2 and
        # multilingual-e5-small indexes), and alternating two indexes is the common reload.
        self._models: dict[str, object] = {}
        self._engine = self._make_engine(index)
        self._keep_models(self._engine)
        self.metrics.gauges.set(doc_count(index))

    @classmethod
    def open(cls, path: str | Path, rerank: str | None = None, options: ServiceOptions | None = None) -> SearchService:
        """Loads the built index at PATH (the manifest names its model) with the writes in its update
        log (`index.live`), and the optional cross-encoder."""
        from deepseek_tf.index.live import LiveIndex

        load_built_index = LiveIndex.open

        reranker = None
        if rerank is not None:
            from deepseek_tf.retrieval.rerank import Reranker

            reranker = Reranker.load(rerank)
        return cls(load_built_index(path), reranker, options, loader=load_built_index)

    # ------------------------------------------------------------------ engines
    def _keep_models(self, *engines: Engine) -> None:
        self._models = {e.fingerprint: e.embedder for e in engines if e.embedder is not None}

    def _make_engine(self, index) -> Engine:
        engine = make_engine(index, self._generation + 1, self.options, self.metrics, self.reranker, self._models)
        self._generation = engine.generation
        return engine

    def _acquire(self) -> Engine:
        with self._lock:
            engine = self._engine
            engine.in_flight += 1
            return engine

    def _release(self, engine: Engine) -> None:
        with self._lock:
            engine.in_flight -= 1
            done = engine.retired and engine.in_flight == 0
        if done:  # the last request on a replaced index: let it go, off the event loop (it joins threads)
            self._executor.submit(self._retire, engine)

    def _close_engine(self, engine: Engine, wait: bool) -> None:
        if engine.batcher is not None:
            engine.batcher.close(wait=wait)

    def _retire(self, engine: Engine) -> None:
        """Stops a replaced engine and drops what it holds, so its index can be freed now: its
        batcher's threads are joined (their closure holds the index) and its references cut (an
        Engine object kept by a finished request's frame would otherwise keep the index alive)."""
        self._close_engine(engine, wait=True)
        engine.index = engine.embedder = engine.batcher = engine.pipeline = None  # the pipeline holds the index too
        del engine
        if self.on_retired is not None:
            self.on_retired()

    def reload(self, path: str | Path | None = None) -> dict:
        """Loads the index at PATH (default: the one being served, re-read from disk) and swaps it in.

        Blocking (loading a model takes seconds): call it from a thread. On any failure the
        index being served stays, and the error is raised."""
        with self._reload_lock:
            target = Path(path) if path is not None else self.path
            if target is None or self._loader is None:
                raise UserError("this service was not opened from an index directory: nothing to reload")
            try:
                engine = self._make_engine(self._loader(target))
            except Exception:
                self.metrics.reloads.inc(outcome="failed")
                raise
            with self._lock:
                old, self._engine = self._engine, engine
                self.path = target
                old.retired = True
                idle = old.in_flight == 0
            self._keep_models(old, engine)
            self.results_cache.clear()  # results are keyed by generation: the old ones can never hit
            if old.fingerprint != engine.fingerprint:
                self.embedding_cache.clear()  # vectors of a model no longer served
            self.metrics.reloads.inc(outcome="ok")
            self.metrics.gauges.set(doc_count(engine.index))
            log.warning("serving %s (generation %d, %d documents)", target, engine.generation, doc_count(engine.index))
            if idle:  # else the last request still on it retires it (`_release`)
                self._retire(old)
            del old
            return self.describe()

    @property
    def engine(self) -> str:
        """What runs the query encoder (engine and precision), for the operator's console."""
        return str(getattr(self._engine.embedder, "engine", "unknown engine"))

    def describe(self) -> dict:
        """What the index being served is (names, counts, settings): GET /health and a reload's answer."""
        engine = self._engine
        m = engine.index.manifest
        return {
            # names, not server paths: a client learns nothing about the server's file system
            "index": public_name(self.path),
            "generation": engine.generation,
            "documents": doc_count(engine.index),
            "model": public_name(m.get("model")),
            "backend": m.get("backend"),
            "analyzer": m.get("analyzer"),
            "dim": m.get("dim"),
            "rerank": public_name(getattr(self.reranker, "name", None)),
            "batching": engine.batcher is not None,
            "cache_size": self.options.cache_size,
        }

    def close(self) -> None:
        """Finishes every queued encoder call, then stops the worker threads."""
        with self._lock:
            engine = self._engine
        self._close_engine(engine, wait=True)
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------ requests
    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _encode_alone(self, engine: Engine, text: str) -> np.ndarray:
        start = time.perf_counter()
        vec = np.asarray(engine.embedder.encode_queries([text]))[0]
        self.metrics.observe_batch(1, time.perf_counter() - start)
        return vec

    async def _batched(self, engine: Engine, text: str, vec: np.ndarray | None, depth: int | None):
        try:
            return await asyncio.wrap_future(engine.batcher.submit((text, vec, depth)))
        except BatcherClosed:
            raise ServiceError("shutting_down", "the service is shutting down") from None

    async def query_vector(self, engine: Engine, text: str) -> np.ndarray:
        """TEXT's query vector under ENGINE's model: from the cache, else encoded (batched when batching is on)."""
        key = (engine.fingerprint, text)
        vec = self.embedding_cache.get(key)
        if vec is not MISSING:
            return vec
        if engine.batcher is not None:
            vec, _ = await self._batched(engine, text, None, None)
        else:
            vec = await self._run(self._encode_alone, engine, text)
        self.embedding_cache.put(key, vec)
        return vec

    async def _dense(self, engine: Engine, query: str, depth: int, mask=None) -> list[tuple[str, float]]:
        if mask is not None:  # a filtered search is its own: the batch searches the whole index
            vec = await self.query_vector(engine, query)
            return (await self._run(engine.index.search_dense, vec[None, :], depth, mask))[0]
        if engine.batcher is None:
            vec = await self.query_vector(engine, query)
            return (await self._run(engine.index.search_dense, vec[None, :], depth))[0]
        key = (engine.fingerprint, query)
        cached = self.embedding_cache.get(key)
        vec, hits = await self._batched(engine, query, None if cached is MISSING else cached, depth)
        if cached is MISSING:
            self.embedding_cache.put(key, vec)
        return hits

    async def _bm25(self, engine: Engine, query: str, depth: int, mask=None) -> list[tuple[str, float]]:
        extra = () if mask is None else (mask,)  # an index without filters takes no mask
        return (await self._run(engine.index.search_bm25, [query], depth, *extra))[0]

    async def _retrieve(self, engine: Engine, query: str, depth: int, mode: str, mask=None) -> list[tuple[str, float]]:
        """The pipeline's first stage, its retrievers' hits fetched here (hybrid: both at once),
        among the rows MASK keeps."""
        n = engine.pipeline.run_depth(mode, depth)
        if mode == "dense":
            dense, bm25 = await self._dense(engine, query, n, mask), None
        elif mode == "bm25":
            dense, bm25 = None, await self._bm25(engine, query, n, mask)
        else:
            dense, bm25 = await asyncio.gather(self._dense(engine, query, n, mask), self._bm25(engine, query, n, mask))
        return engine.pipeline.first_stage(mode, depth, dense, bm25)

    def _need_reranker(self) -> None:
        if self.reranker is None:
            raise ServiceError(
                "rerank_unavailable", "rerank needs a cross-encoder: start the server with --rerank MODEL"
            )

    @staticmethod
    def _mask(engine: Engine, spec: dict | None):
        if not spec:
            return None
        try:
            return engine.index.filter_mask(spec)
        except UserError as e:
            raise ServiceError("invalid_request", str(e)) from None

    @staticmethod
    def _with_fields(engine: Engine, doc_id: str, score: float, fields: list[str] | None) -> dict:
        hit = {"id": doc_id, "score": score}
        if fields != [] and engine.index.manifest.get("fields"):
            stored = engine.index.fields(doc_id)
            hit["fields"] = stored if fields is None else {f: stored[f] for f in fields if f in stored}
        return hit

    async def search(
        self,
        query: str,
        k: int = 10,
        mode: str = "dense",
        rerank: bool = False,
        fusion: float | None = None,
        filter: dict | None = None,
        fields: list[str] | None = None,
    ) -> dict:
        """{"results": [{"id", "score", "fields"}] best first, "cached": bool}; `query` already
        validated. `fusion` W (with `rerank`): ordered by W·z(cross-encoder) + (1 − W)·z(retriever).
        `filter` (`index.filters`): only documents it selects, exactly the best k of them when k pass.
        `fields`: the stored fields each result carries (None: all; []: none)."""
        if mode not in MODES:
            raise ServiceError("invalid_request", f"mode must be one of {', '.join(MODES)}")
        if rerank:
            self._need_reranker()
        if fusion is not None and not (rerank and 0.0 <= fusion <= 1.0):
            raise ServiceError("invalid_request", "rerank_fusion: a number in [0, 1], with rerank true")
        engine = self._acquire()
        try:
            chosen = None if fields is None else tuple(fields)
            seq = getattr(engine.index, "seq", 0)  # a write changes what a search finds
            key = (engine.generation, seq, query, k, mode, rerank, fusion, json.dumps(filter, sort_keys=True), chosen)
            results = self.results_cache.get(key)
            if results is not MISSING:
                return {"results": results, "cached": True}
            pipeline = engine.pipeline
            mask = self._mask(engine, filter)
            hits = await self._retrieve(engine, query, pipeline.depth(k, rerank), mode, mask)
            if rerank:  # the cross-encoder's work, off the event loop
                best = await self._run(pipeline.finish, query, hits, k, rerank, fusion)
            else:
                best = pipeline.finish(query, hits, k)
            results = [self._with_fields(engine, h.id, float(h.score), fields) for h in best]
            self.results_cache.put(key, results)
            return {"results": results, "cached": False}
        finally:
            self._release(engine)

    async def passages(self, query: str, k: int, mode: str = "dense", rerank: bool = False) -> list[Passage]:
        """/answer's retrieval: /search's best k for QUERY (through its cache), best first, with
        the text the index holds and the stored title."""
        ids = [r["id"] for r in (await self.search(query, k, mode, rerank, fields=[]))["results"]]
        engine = self._acquire()
        try:
            return await self._run(index_passages, engine.index, ids)
        finally:
            self._release(engine)

    async def write(self, op: str, payload: list) -> dict:
        """op "upsert" (documents) or "delete" (ids) on the index being served (`LiveIndex`):
        searchable and durable when this returns. A reload replays the update log, so a write
        waits for one in progress and then goes to the index it loaded."""

        def work() -> dict:
            with self._reload_lock:
                index = self._engine.index
                if not hasattr(index, op):
                    raise ServiceError("invalid_request", "this service's index takes no writes")
                try:
                    out = getattr(index, op)(payload)
                except IndexBusy as e:
                    raise ServiceError("index_busy", str(e)) from None
                except UserError as e:
                    raise ServiceError("invalid_request", str(e)) from None
                self.metrics.gauges.set(doc_count(index))
                return {**out, "documents": doc_count(index)}

        return await self._run(work)

    async def embed(self, texts: list[str], tower: str = "query") -> np.ndarray:
        """(len(texts), dim): query texts go through the cache and the batcher, documents in one call."""
        if tower not in TOWERS:
            raise ServiceError("invalid_request", f"tower must be one of {', '.join(TOWERS)}")
        engine = self._acquire()
        try:
            if tower == "query":
                return np.stack(await asyncio.gather(*(self.query_vector(engine, t) for t in texts)))
            if getattr(engine.embedder, "image_dim", None) is not None:  # it needs an image vector per text
                raise ServiceError("invalid_request", "tower doc: this index's model reads documents with images")
            return np.asarray(await self._run(engine.embedder.encode_docs, texts))
        finally:
            self._release(engine)

    async def rerank(self, query: str, texts: list[str]) -> np.ndarray:
        """The cross-encoder's raw score of (query, text) for each text, in order; `query` and
        `texts` already validated. Scored in a worker thread, as /search's reranking is."""
        self._need_reranker()
        return np.asarray(await self._run(self.reranker.score, query, texts), np.float32)

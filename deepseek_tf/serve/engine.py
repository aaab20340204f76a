"""One loaded index with what serves it (`Engine`), and the document count a service reports."""

from __future__ import annotations

from deepseek_tf.retrieval.pipeline import SearchPipeline
from deepseek_tf.serve.batcher import MicroBatcher


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


def index_fingerprint(index) -> str:
    m = index.manifest
    return str(m.get("model_fingerprint") or m.get("model") or "")


def doc_count(index) -> int:
    """Documents an index serves now (a live index counts its writes)."""
    count = getattr(index, "count", None)
    return int(count) if count is not None else len(index.ids)

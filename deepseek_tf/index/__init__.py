"""Built indexes of large corpora: `build_index` streams a corpus shard by shard through an
embedder into checksummed embedding shards (resumable after a crash), then builds the dense
backend (exact, faiss HNSW or IVF-PQ), a BM25 index with its analyzer and a document-text store,
and writes the manifest last. `load_built_index` opens one for search.

The same encode step runs as an Apache Beam pipeline (`deepseek_tf.index.beam`)."""

from __future__ import annotations

from deepseek_tf import lazy_exports

__all__ = ["BuiltIndex", "build_index", "load_built_index"]
__getattr__ = lazy_exports(
    __name__,
    {
        "build_index": "deepseek_tf.index.build",
        "BuiltIndex": "deepseek_tf.index.built",
        "load_built_index": "deepseek_tf.index.built",
    },
)

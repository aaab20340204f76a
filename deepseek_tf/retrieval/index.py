"""Vector indexes: exact inner-product search in TensorFlow (default, in corpus chunks so
memory stays bounded) and optional faiss-cpu indexes (flat, IVF, HNSW; extra `faiss`).

Every index is saved with the fingerprint of the model that made its vectors, and loading it
with another model's fingerprint is refused. `deepseek-tf bench-ann --bench` measures
exact search at 1M x 384 against faiss.IndexFlatIP.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from deepseek_tf.errors import UserError

KINDS = ("exact", "flat", "ivf", "hnsw")


@tf.function(reduce_retracing=True)
def _chunk_topk(queries, chunk, k):
    scores = tf.matmul(queries, chunk, transpose_b=True)  # (q, chunk)
    return tf.math.top_k(scores, k=k)


def exact_search(
    queries: np.ndarray, docs: np.ndarray, k: int, chunk_size: int = 65536, query_batch: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by dot product: (scores (q, k), indices (q, k)), best first.

    Scores at most query_batch × chunk_size at once, merging running top-k lists,
    so a 1M-document corpus never yields a 1M × Q score matrix (at the defaults the
    largest score block is 1024 × 65536 float32 = 256 MiB).
    """
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
            s, i = _chunk_topk(q, chunk, tf.constant(min(k, chunk.shape[0])))
            merged_s = tf.concat([best_s, s], axis=1)  # (qb, <= 2k)
            merged_i = tf.concat([best_i, tf.cast(i, tf.int64) + start], axis=1)
            top = tf.math.top_k(merged_s, k=min(k, merged_s.shape[1]))
            best_s = top.values
            best_i = tf.gather(merged_i, top.indices, batch_dims=1)
        all_scores[qs : qs + query_batch] = best_s.numpy()
        all_idx[qs : qs + query_batch] = best_i.numpy()
    return all_scores, all_idx


def _write_dir(directory: Path, files: dict) -> None:
    """Writes {name: writer(path)} into DIRECTORY; index.json goes last, so a crash mid-way
    leaves no index.json (an unusable index is never mistaken for a complete one)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "index.json").unlink(missing_ok=True)
    for name, write in files.items():
        tmp = directory / f".{name}.tmp"
        write(tmp)
        tmp.replace(directory / name)


class ExactIndex:
    """Document vectors + ids, saved with the fingerprint of the model that made them."""

    kind = "exact"

    def __init__(self, vectors: np.ndarray, ids: list[str], fingerprint: str = "", meta: dict | None = None):
        self.vectors, self.ids, self.fingerprint = vectors.astype(np.float32), list(ids), fingerprint
        self.meta = dict(meta or {})  # e.g. the corpus hash, checked by the search CLI

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[tuple[str, float]]]:
        scores, idx = exact_search(queries, self.vectors, k)
        return [[(self.ids[j], float(s)) for s, j in zip(row_s, row_i)] for row_s, row_i in zip(scores, idx)]

    def _meta(self) -> dict:
        return {
            "kind": self.kind,
            "ids": self.ids,
            "fingerprint": self.fingerprint,
            "dim": int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0,
            **self.meta,
        }

    def save(self, directory: str | Path) -> None:
        def save_npy(path: Path) -> None:
            with path.open("wb") as f:  # np.save on a path would append ".npy"
                np.save(f, self.vectors)

        _write_dir(
            Path(directory), {"vectors.npy": save_npy, "index.json": lambda p: p.write_text(json.dumps(self._meta()))}
        )

    @classmethod
    def load(cls, directory: str | Path, fingerprint: str | None = None) -> ExactIndex:
        meta = _read_meta(Path(directory), fingerprint)
        return cls(np.load(Path(directory) / "vectors.npy"), meta["ids"], meta["fingerprint"], _extra(meta))


class FaissIndex:
    """faiss-cpu inner-product index: "flat" (exact), "ivf" (IVF-Flat) or "hnsw" (HNSW-Flat).

    ivf: nlist cells (default 4·sqrt(n)), nprobe cells searched per query (default 16);
    hnsw: M links per node (default 32), efSearch (default 128). Approximate kinds trade
    recall for speed; `deepseek-tf bench-ann --bench --faiss ivf hnsw` measures it.
    """

    def __init__(
        self,
        kind: str,
        index,
        ids: list[str],
        fingerprint: str = "",
        params: dict | None = None,
        meta: dict | None = None,
    ):
        self.kind, self.index, self.ids, self.fingerprint = kind, index, list(ids), fingerprint
        self.params, self.meta = dict(params or {}), dict(meta or {})

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        ids: list[str],
        kind: str = "flat",
        fingerprint: str = "",
        nlist: int | None = None,
        nprobe: int = 16,
        hnsw_m: int = 32,
        ef_search: int = 128,
        meta: dict | None = None,
    ) -> FaissIndex:
        faiss = _faiss()
        vectors = np.ascontiguousarray(vectors, np.float32)  # (n, dim)
        n, dim = vectors.shape
        if kind == "flat":
            index, params = faiss.IndexFlatIP(dim), {}
        elif kind == "ivf":
            nlist = nlist or max(1, min(int(4 * np.sqrt(n)), n // 39))  # faiss wants >= 39 points per cell
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
            index.nprobe, params = min(nprobe, nlist), {"nlist": nlist, "nprobe": min(nprobe, nlist)}
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch, params = ef_search, {"M": hnsw_m, "efSearch": ef_search}
        else:
            raise UserError(f"index kind {kind!r} is not one of {', '.join(KINDS)}")
        index.add(vectors)
        return cls(kind, index, ids, fingerprint, params, meta)

    def search_arrays(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(np.ascontiguousarray(queries, np.float32), min(k, len(self.ids)))

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[tuple[str, float]]]:
        scores, idx = self.search_arrays(queries, k)
        return [[(self.ids[j], float(s)) for s, j in zip(row_s, row_i) if j >= 0] for row_s, row_i in zip(scores, idx)]

    def save(self, directory: str | Path) -> None:
        faiss = _faiss()

        meta = {
            "kind": self.kind,
            "ids": self.ids,
            "dim": self.index.d,
            "fingerprint": self.fingerprint,
            "params": self.params,
            **self.meta,
        }
        _write_dir(
            Path(directory),
            {
                "index.faiss": lambda p: faiss.write_index(self.index, str(p)),
                "index.json": lambda p: p.write_text(json.dumps(meta)),
            },
        )

    @classmethod
    def load(cls, directory: str | Path, fingerprint: str | None = None) -> FaissIndex:
        faiss = _faiss()
        meta = _read_meta(Path(directory), fingerprint)
        index = faiss.read_index(str(Path(directory) / "index.faiss"))
        params = meta.get("params", {})
        if "nprobe" in params:
            index.nprobe = params["nprobe"]
        if "efSearch" in params:
            index.hnsw.efSearch = params["efSearch"]
        return cls(meta["kind"], index, meta["ids"], meta["fingerprint"], params, _extra(meta))


def _faiss():
    try:
        import faiss
    except ImportError:
        raise UserError(
            "faiss is not installed: pip install 'deepseek_tf[faiss]' (or use --index-type exact)"
        ) from None
    return faiss


def _extra(meta: dict) -> dict:
    return {k: v for k, v in meta.items() if k not in ("kind", "ids", "fingerprint", "dim", "params")}


def _read_meta(directory: Path, fingerprint: str | None) -> dict:
    meta_path = directory / "index.json"
    if not meta_path.is_file():
        raise UserError(f"no index in {directory}")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{meta_path}: corrupt index metadata; rebuild the index") from None
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        raise UserError(
            f"{directory}: index was built with another model "
            f"(fingerprint {meta.get('fingerprint')} != {fingerprint}); rebuild it"
        )
    return meta


def build_index(
    vectors: np.ndarray, ids: list[str], kind: str = "exact", fingerprint: str = "", meta: dict | None = None, **params
) -> ExactIndex | FaissIndex:
    if len(ids) != len(vectors):
        raise UserError(f"{len(ids)} ids for {len(vectors)} vectors")
    if kind == "exact":
        return ExactIndex(vectors, ids, fingerprint, meta)
    return FaissIndex.build(vectors, ids, kind, fingerprint, meta=meta, **params)


def load_index(directory: str | Path, fingerprint: str | None = None) -> ExactIndex | FaissIndex:
    """Loads whichever kind was saved in DIRECTORY; refuses another model's index."""
    kind = _read_meta(Path(directory), fingerprint).get("kind", "exact")
    return ExactIndex.load(directory, fingerprint) if kind == "exact" else FaissIndex.load(directory, fingerprint)

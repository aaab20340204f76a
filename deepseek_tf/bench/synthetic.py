"""A synthetic index for the serving benchmark at catalogue scale: N random unit vectors (384-d)
in a faiss HNSW graph, served behind the real query encoder, so a request pays for what it would
pay on a real index of that size (encode, then an HNSW search over N vectors) without encoding N
documents first. Its BM25 side is empty: only dense requests are meaningful.

`python -m deepseek_tf.bench.synthetic --ann FILE --model MODEL [serve flags]` serves one; the
benchmark builds FILE with `build_hnsw` (cached: a second run reuses it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HNSW = {"M": 32, "ef_construction": 80, "ef_search": 128}


def random_vectors(n: int, dim: int, seed: int, start: int = 0) -> np.ndarray:
    """Rows start..start+n of the seeded stream of unit vectors (generated block by block)."""
    rng = np.random.default_rng([seed, start])
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build_hnsw(n: int, dim: int, path: str | Path, seed: int = 0, block: int = 100_000, log=print) -> dict:
    """Builds (or reuses) the HNSW graph of n random vectors at PATH; returns what was built and how long it took."""
    import faiss

    path = Path(path)
    meta = {"n": n, "dim": dim, "seed": seed, **HNSW}
    record = path.with_suffix(".json")  # what was built and how long it took, for later runs that reuse it
    if path.is_file():
        index = faiss.read_index(str(path))
        if index.ntotal == n and index.d == dim:
            before = json.loads(record.read_text()) if record.is_file() else {}
            return {**meta, "build_s": before.get("build_s"), "reused": str(path)}
    path.parent.mkdir(parents=True, exist_ok=True)
    index = faiss.IndexHNSWFlat(dim, HNSW["M"], faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW["ef_construction"]
    start = time.perf_counter()
    for s in range(0, n, block):
        index.add(random_vectors(min(block, n - s), dim, seed, s))
        log(f"HNSW: {s + min(block, n - s)}/{n} vectors added ({time.perf_counter() - start:.0f} s)")
    took = time.perf_counter() - start
    tmp = path.with_suffix(".tmp")
    faiss.write_index(index, str(tmp))
    tmp.replace(path)
    record.write_text(json.dumps({**meta, "build_s": round(took, 1)}))
    return {**meta, "build_s": took, "reused": None}


def hnsw_recall(
    path: str | Path, n: int, dim: int, seed: int = 0, queries: int = 200, k: int = 10, block: int = 100_000
) -> dict:
    """How well the graph finds neighbours, for queries made by perturbing indexed vectors:
    `planted_at_1`, how often its best hit is the vector the query was made from, and
    `recall_at_k` against exact inner-product search. Random unit vectors in 384-d are all
    about equally far from each other, so past the planted one the exact top-k is a near-tie
    and recall@k says little; the planted neighbour is the meaningful check on such data."""
    import faiss

    index = faiss.read_index(str(path))
    index.hnsw.efSearch = HNSW["ef_search"]
    rng = np.random.default_rng(seed + 1)
    planted = rng.integers(0, min(block, n), queries)  # rows of the first block
    q = random_vectors(queries, dim, seed + 7) * 0.3 + random_vectors(min(block, n), dim, seed)[planted]
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    exact = faiss.IndexFlatIP(dim)
    for s in range(0, n, block):
        exact.add(random_vectors(min(block, n - s), dim, seed, s))
    _, truth = exact.search(q, k)
    _, got = index.search(q, k)
    return {
        "recall_at_10": round(float(np.mean([len(set(a) & set(b)) / k for a, b in zip(truth, got)])), 4),
        "planted_at_1": round(float(np.mean(got[:, 0] == planted)), 4),
        "exact_planted_at_1": round(float(np.mean(truth[:, 0] == planted)), 4),
        "queries": queries,
    }


class _Ids:
    """ "s0".."s{n-1}" without a million-string list."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> str:
        return f"s{i}"


class SyntheticIndex:
    """The `BuiltIndex` API over a faiss HNSW file of random vectors and a real query encoder."""

    def __init__(self, ann: str | Path, model: str):
        import faiss

        faiss.omp_set_num_threads(1)  # one query per call: OpenMP would only add hand-off cost
        self.path = Path(ann)
        self._ann = faiss.read_index(str(ann))
        self._ann.hnsw.efSearch = HNSW["ef_search"]
        self._model = model
        self.ids = _Ids(self._ann.ntotal)
        self.manifest = {
            "format": "synthetic",
            "model": model,
            "model_fingerprint": model,
            "dim": self._ann.d,
            "backend": "faiss-hnsw",
            "backend_params": dict(HNSW),
            "count": self._ann.ntotal,
            "analyzer": None,
        }

    def embedder(self):
        from deepseek_tf.retrieval.artifacts import load_embedder

        return load_embedder(self._model)

    def text(self, doc_id: str) -> str:
        return f"synthetic document {doc_id}"

    def search_dense(self, query_vectors: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        scores, rows = self._ann.search(np.ascontiguousarray(query_vectors, np.float32), k)
        return [[(f"s{i}", float(s)) for i, s in zip(r, sc) if i >= 0] for r, sc in zip(rows, scores)]

    def search_bm25(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        return [[] for _ in queries]


def main(argv: list[str] | None = None) -> int:
    from deepseek_tf.serve.server import configure_threads, run_server
    from deepseek_tf.serve.service import SearchService, ServiceOptions

    p = argparse.ArgumentParser(
        prog="python -m deepseek_tf.bench.synthetic", description="Serve a synthetic HNSW index (benchmark only)."
    )
    p.add_argument("--ann", required=True)
    p.add_argument("--model", default="all-MiniLM-L6-v2")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--intra-op-threads", type=int, default=1)
    p.add_argument("--no-batching", action="store_true")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--max-wait-ms", type=float, default=2.0)
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `deepseek-tf serve` does, before faiss runs
    configure_threads(args.threads, args.intra_op_threads)
    options = ServiceOptions(
        batching=not args.no_batching,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        cache_size=0 if args.no_cache else 10000,
    )
    service = SearchService(SyntheticIndex(args.ann, args.model), None, options)
    return run_server(service, "127.0.0.1", args.port)


if __name__ == "__main__":
    sys.exit(main())

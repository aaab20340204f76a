"""Dense backends over the embedding shards.

- `exact`: the shards themselves, memory-mapped (read into one array when they total at most
  IN_MEMORY_BYTES), searched with `retrieval.index.exact_search`.
- `faiss-hnsw`: faiss IndexHNSWFlat (inner product), filled shard by shard. Parameters: `hnsw_m`
  links per node (32), `ef_construction` (200), `ef_search` (128). faiss's own efConstruction
  default, 40, builds a graph that clustered data cannot be searched well in: on 1M clustered
  384-d vectors recall@10 was 0.84 at efSearch 128 with it, 0.999 with 200 (docs/results.md).
- `faiss-ivfpq`: faiss IndexIVFPQ, trained on a sample of at most TRAIN_SAMPLE vectors, filled
  shard by shard. Parameters: `nlist` cells (4·sqrt(n), at most n/39), `nprobe` (16), `pq_m`
  sub-quantizers (dim/8, a divisor of dim), `pq_bits` (8; fewer on corpora too small to train
  256 centroids), `refine` (4): the top refine·k candidates are rescored exactly against the
  memory-mapped shards, so scores are true dot products and recall recovers PQ's coarse ranking.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepseek_tf.errors import UserError
from deepseek_tf.retrieval.index import _faiss, exact_search

BACKENDS = ("exact", "faiss-hnsw", "faiss-ivfpq")
PARAMS = {
    "exact": {},
    "faiss-hnsw": {"hnsw_m": 32, "ef_construction": 200, "ef_search": 128},
    "faiss-ivfpq": {"nlist": None, "nprobe": 16, "pq_m": None, "pq_bits": 8, "refine": 4},
}
IN_MEMORY_BYTES = 1 << 30
TRAIN_SAMPLE = 100_000
FAISS_FILE = "dense.faiss"


class ShardedVectors:
    """The shards as one (n, dim) float32 matrix: `shape`, slices and row gathers, without
    concatenating them (exact_search only slices its `docs`)."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.starts = np.cumsum([0] + [len(p) for p in parts])  # (shards + 1,)
        self.shape = (int(self.starts[-1]), int(parts[0].shape[1]) if parts else 0)

    @classmethod
    def open(cls, files: list[Path], in_memory: bool | None = None) -> ShardedVectors:
        parts = [np.load(f, mmap_mode="r") for f in files]
        total = sum(p.nbytes for p in parts)
        if in_memory if in_memory is not None else total <= IN_MEMORY_BYTES:
            parts = [np.ascontiguousarray(np.concatenate(parts) if len(parts) > 1 else parts[0])]
        return cls(parts)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, item: slice) -> np.ndarray:
        start, stop, step = item.indices(self.shape[0])
        if step != 1:
            raise IndexError("ShardedVectors takes contiguous slices only")
        pieces = []
        for p, (lo, hi) in enumerate(zip(self.starts[:-1], self.starts[1:])):
            if hi > start and lo < stop:
                pieces.append(self.parts[p][max(start - lo, 0) : min(stop, hi) - lo])
        if not pieces:
            return np.zeros((0, self.shape[1]), np.float32)
        return np.asarray(pieces[0]) if len(pieces) == 1 else np.concatenate(pieces)

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """Rows at `indices` (any shape), as (*indices.shape, dim)."""
        flat = np.asarray(indices).reshape(-1)
        out = np.empty((len(flat), self.shape[1]), np.float32)
        part = np.searchsorted(self.starts, flat, side="right") - 1
        for p in np.unique(part):
            sel = part == p
            out[sel] = self.parts[p][flat[sel] - self.starts[p]]
        return out.reshape(*np.shape(indices), self.shape[1])


def resolve_params(backend: str, given: dict, n: int, dim: int) -> dict:
    """The backend's parameters with defaults filled in for this corpus; unknown names refused."""
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}")
    allowed = PARAMS[backend]
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise UserError(
            f"--backend {backend} has no parameter {', '.join(unknown)} "
            f"(its parameters: {', '.join(allowed) or 'none'})"
        )
    params = {**allowed, **{k: int(v) for k, v in given.items()}}
    if any(v is not None and v < 1 for v in params.values()):
        raise UserError(f"--backend {backend}: parameters must be >= 1")
    if backend == "faiss-ivfpq":
        params["nlist"] = min(params["nlist"] or int(4 * np.sqrt(n)), max(1, n // 39))  # faiss wants 39 points per cell
        params["pq_m"] = params["pq_m"] or max(d for d in range(1, max(dim // 8, 1) + 1) if dim % d == 0)
        if dim % params["pq_m"]:
            raise UserError(f"--param pq_m={params['pq_m']} must divide the dimension {dim}")
        params["pq_bits"] = max(1, min(params["pq_bits"], int(np.log2(max(n, 2)))))  # 2^bits centroids need n points
        params["nprobe"] = min(params["nprobe"], params["nlist"])
    return params


def build_dense(backend: str, vectors: ShardedVectors, output: Path, params: dict, block: int = 50_000) -> None:
    """Writes the backend's file into OUTPUT (exact needs none: the shards are its data)."""
    if backend == "exact":
        return
    faiss = _faiss()
    n, dim = vectors.shape
    if backend == "faiss-hnsw":
        index = faiss.IndexHNSWFlat(dim, params["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = params["ef_construction"]
    else:
        index = faiss.IndexIVFPQ(
            faiss.IndexFlatIP(dim), dim, params["nlist"], params["pq_m"], params["pq_bits"], faiss.METRIC_INNER_PRODUCT
        )
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(n, min(n, TRAIN_SAMPLE), replace=False))
        index.train(np.ascontiguousarray(vectors.rows(sample)))
    for start in range(0, n, block):
        index.add(np.ascontiguousarray(vectors[start : start + block], np.float32))
    tmp = Path(output) / f".{FAISS_FILE}.tmp"
    faiss.write_index(index, str(tmp))
    tmp.replace(Path(output) / FAISS_FILE)


class DenseSearcher:
    """search(queries (q, dim), k) -> (scores (q, k), rows (q, k)), best first; rows -1 pad."""

    def __init__(self, backend: str, vectors: ShardedVectors, output: Path, params: dict):
        self.backend, self.vectors, self.params, self.index = backend, vectors, params, None
        if backend == "exact":
            return
        faiss = _faiss()
        path = Path(output) / FAISS_FILE
        if not path.is_file():
            raise UserError(f"{path}: missing {backend} index file; build the index again")
        try:
            self.index = faiss.read_index(str(path))
        except RuntimeError:
            raise UserError(f"{path}: corrupt {backend} index file; build the index again") from None
        if self.index.ntotal != vectors.shape[0] or self.index.d != vectors.shape[1]:
            raise UserError(
                f"{path}: holds {self.index.ntotal} x {self.index.d} vectors, the shards "
                f"{vectors.shape[0]} x {vectors.shape[1]}; build the index again"
            )
        if backend == "faiss-hnsw":
            self.index.hnsw.efSearch = params["ef_search"]
        else:
            self.index.nprobe = params["nprobe"]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, np.float32)  # (q, dim)
        k = min(k, self.vectors.shape[0])
        if self.index is None:
            return exact_search(queries, self.vectors, k)
        if self.backend == "faiss-hnsw":
            return self.index.search(queries, k)
        depth = min(k * self.params["refine"], self.vectors.shape[0])
        _, cand = self.index.search(queries, depth)  # (q, depth), PQ-approximate order
        safe = np.where(cand >= 0, cand, 0)
        exact = np.einsum("qd,qcd->qc", queries, self.vectors.rows(safe))  # (q, depth) true dot products
        exact = np.where(cand >= 0, exact, -np.inf)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(exact, order, 1), np.take_along_axis(cand, order, 1)

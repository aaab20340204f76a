"""Dense backends over the embedding shards.

- `exact`: the shards themselves, memory-mapped (read into one array when they total at most
  IN_MEMORY_BYTES), searched with `retrieval.knn.exact_search`.
- `faiss-hnsw`: faiss IndexHNSWFlat (inner product), filled shard by shard. Parameters: `hnsw_m`
  links per node (32), `ef_construction` (knn.EF_CONSTRUCTION, 200: why in retrieval/knn.py),
  `ef_search` (128).
- `faiss-ivfpq`: faiss IndexIVFPQ, trained on a sample of at most knn.TRAIN_SAMPLE vectors, filled
  shard by shard. Parameters: `nlist` cells (knn.ivf_cells: 4·sqrt(n), at most n/39), `nprobe` (16), `pq_m`
  sub-quantizers (dim/8, a divisor of dim), `pq_bits` (8; fewer on corpora too small to train
  256 centroids), `refine` (4): the top refine·k candidates are rescored exactly against the
  memory-mapped shards, so scores are true dot products and recall recovers PQ's coarse ranking.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepseek_tf.errors import UserError
from deepseek_tf.retrieval.knn import (
    EF_CONSTRUCTION,
    exact_search,
    faiss_module,
    fill_faiss,
    ivf_cells,
    new_faiss_index,
    set_search_params,
)

BACKENDS = ("exact", "faiss-hnsw", "faiss-ivfpq")
PARAMS = {
    "exact": {},
    "faiss-hnsw": {"hnsw_m": 32, "ef_construction": EF_CONSTRUCTION, "ef_search": 128},
    "faiss-ivfpq": {"nlist": None, "nprobe": 16, "pq_m": None, "pq_bits": 8, "refine": 4},
}
IN_MEMORY_BYTES = 1 << 30
# Filtered dense search: how each backend runs it (`filtered_plan`), chosen by the plans measured
# side by side on 1M clustered 384-d vectors (`python -m deepseek_tf.bench.filtered --tune`,
# bench/filtered_tune.md). A faiss backend scores the passing rows exactly when they are at most
# GATHER_ROWS (on 100K vectors 1,000 were gathered in 0.25 ms, where HNSW took 8 ms; 2,000 took
# 8 ms, HNSW 4 ms) or at most GATHER_SHARE of the index (on 1M: at 0.5% gathering took 9 ms, HNSW
# 27 ms; at 1%, 17 against 15 ms; at 2%, 40 against 8 ms; and under 24 / MAX_EF, about 0.6%, the
# beam below could not be wide enough); above, faiss filters inside its search. The exact backend
# gathers the passing rows up to SCAN_SHARE of the index and above it scores every row, the others
# masked out: a gathered row costs 6-8 times a scanned one (10%: 151 ms against 242 ms; 20%: 296
# ms against 243 ms).
GATHER_ROWS, GATHER_SHARE, SCAN_SHARE = 1_000, 0.01, 0.1
MAX_EF = 4096  # the widest HNSW beam a filtered search asks for
# A filtered HNSW beam of efSearch nodes holds about efSearch·share passing ones: recall@10 reached
# 0.96 with some 20-25 of them (0.5%: efSearch 4000; 1%: 2000; 2%: 1000), so the beam is widened to
# hold BEAM_PASSING, and never narrower than ef_search / sqrt(share) (which 5% and above need).
BEAM_PASSING = 24
# Filtered IVF probes cells holding about PROBE_PASSING passing rows (recall@10 0.96 from 0.5% to
# 2% with 800, against 0.86-0.93 at nprobe / sqrt(share)), and refines a candidate list widened
# by 1 / sqrt(share), as the passing top 10 sit further down the PQ ranking.
PROBE_PASSING = 800
FAISS_FILE = "dense.faiss"


class ShardedVectors:
    """The shards as one (n, dim) float32 matrix: `shape`, slices and row gathers, without
    concatenating them (the knn kernel only slices and gathers)."""

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

    def __getitem__(self, item: slice | np.ndarray) -> np.ndarray:
        if not isinstance(item, slice):
            return self.rows(item)
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


def check_backend(backend: str, given: dict) -> None:
    """Refuses an unknown backend or parameter name, and a faiss backend without faiss installed,
    before anything is encoded."""
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend!r} is not one of {', '.join(BACKENDS)}")
    unknown = sorted(set(given) - set(PARAMS[backend]))
    if unknown:
        raise UserError(
            f"--backend {backend} has no parameter {', '.join(unknown)} "
            f"(its parameters: {', '.join(PARAMS[backend]) or 'none'})"
        )
    if backend != "exact":
        faiss_module()


def resolve_params(backend: str, given: dict, n: int, dim: int) -> dict:
    """The backend's parameters with defaults filled in for this corpus; unknown names refused."""
    check_backend(backend, given)
    params = {**PARAMS[backend], **{k: int(v) for k, v in given.items()}}
    if any(v is not None and v < 1 for v in params.values()):
        raise UserError(f"--backend {backend}: parameters must be >= 1")
    if backend == "faiss-ivfpq":
        params["nlist"] = ivf_cells(n, params["nlist"])
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
    n, dim = vectors.shape
    if backend == "faiss-hnsw":
        index = new_faiss_index("hnsw", dim, n, hnsw_m=params["hnsw_m"], ef_construction=params["ef_construction"])
    else:
        index = new_faiss_index("ivfpq", dim, n, nlist=params["nlist"], pq_m=params["pq_m"], pq_bits=params["pq_bits"])
    fill_faiss(index, vectors, block)
    tmp = Path(output) / f".{FAISS_FILE}.tmp"
    faiss_module().write_index(index, str(tmp))
    tmp.replace(Path(output) / FAISS_FILE)


class DenseSearcher:
    """search(queries (q, dim), k) -> (scores (q, k), rows (q, k)), best first; rows -1 pad."""

    def __init__(self, backend: str, vectors: ShardedVectors, output: Path, params: dict):
        self.backend, self.vectors, self.params, self.index = backend, vectors, params, None
        if backend == "exact":
            return
        faiss = faiss_module()
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
        set_search_params(self.index, nprobe=params.get("nprobe"), ef_search=params.get("ef_search"))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, np.float32)  # (q, dim)
        k = min(k, self.vectors.shape[0])
        if self.index is None:
            return exact_search(queries, self.vectors, k)
        if self.backend == "faiss-hnsw":
            return self.index.search(queries, k)
        depth = min(k * self.params["refine"], self.vectors.shape[0])
        _, cand = self.index.search(queries, depth)  # (q, depth), PQ-approximate order
        return self._refine(queries, cand, k)

    def _refine(self, queries: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """IVF-PQ's candidates (q, depth) rescored exactly; the best k by true dot product."""
        safe = np.where(cand >= 0, cand, 0)
        exact = np.einsum("qd,qcd->qc", queries, self.vectors.rows(safe))  # (q, depth) true dot products
        exact = np.where(cand >= 0, exact, -np.inf)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(exact, order, 1), np.take_along_axis(cand, order, 1)

    def search_filtered(self, queries: np.ndarray, k: int, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`search` over the rows MASK ((n,) bool) keeps: exactly the best min(k, passing) of them
        when scored exactly (the exact backend, or few enough rows: `filtered_plan`), else faiss
        with the mask as its ID selector; a query it answers with fewer than k rows while k pass
        is scored exactly."""
        queries = np.ascontiguousarray(queries, np.float32)  # (q, dim)
        rows = np.flatnonzero(mask)
        k = min(k, len(rows))
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        plan = filtered_plan(self.backend, len(rows), self.vectors.shape[0])
        if plan == "scan":
            return masked_topk(queries, self.vectors, k, mask=mask)
        if plan == "gather":
            return masked_topk(queries, self.vectors, k, rows=rows)
        scores, found = self._faiss_filtered(queries, k, mask)
        short = np.flatnonzero((found < 0).any(axis=1))
        if len(short):  # the graph or the probed cells held fewer than k passing rows
            scores[short], found[short] = masked_topk(queries[short], self.vectors, k, rows=rows)
        return scores, found

    def _faiss_filtered(self, queries: np.ndarray, k: int, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        faiss = faiss_module()
        bits = np.packbits(mask, bitorder="little")  # bit i of the bitmap is row i
        selector = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
        passing = int(mask.sum())
        share = max(passing / len(mask), 1e-9)
        if self.backend == "faiss-hnsw":
            params = faiss.SearchParametersHNSW()
            # the graph walk meets passing rows at the filter's rate: widen the beam to match
            ef = max(max(self.params["ef_search"], k) / share**0.5, BEAM_PASSING / share)
            params.efSearch = int(min(ef, MAX_EF))
            params.sel = selector
            return self.index.search(queries, k, params=params)
        params = faiss.SearchParametersIVF()
        per_cell = len(mask) / self.params["nlist"]  # rows in a cell, on average
        nprobe = max(self.params["nprobe"] / share**0.5, PROBE_PASSING / (per_cell * share))
        params.nprobe = int(min(nprobe, self.params["nlist"]))
        params.sel = selector
        depth = int(min(k * self.params["refine"] / share**0.5, passing))
        _, cand = self.index.search(queries, depth, params=params)
        scores, found = self._refine(queries, cand, k)
        return scores, np.where(np.isfinite(scores), found, -1)


def filtered_plan(backend: str, passing: int, n: int) -> str:
    """How a filtered dense search runs: "gather" (score the passing rows exactly, gathered),
    "scan" (the exact backend over every row, the rest masked out) or "faiss" (the ANN index with
    the mask as ID selector). The thresholds: GATHER_ROWS, GATHER_SHARE, SCAN_SHARE."""
    if backend == "exact":
        return "gather" if passing <= SCAN_SHARE * n else "scan"
    if passing <= GATHER_ROWS or passing <= GATHER_SHARE * n:
        return "gather"
    return "faiss"


def masked_topk(
    queries: np.ndarray,
    vectors,
    k: int,
    rows: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    block: int = 32768,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by dot product over ROWS (gathered block by block) or over every row with
    MASK's out of play: (scores (q, k), rows (q, k)), best first."""
    q = len(queries)
    best_s, best_r = np.full((q, 0), -np.inf, np.float32), np.zeros((q, 0), np.int64)
    total = len(rows) if rows is not None else vectors.shape[0]
    for start in range(0, total, block):
        if rows is not None:
            ids = rows[start : start + block]
            scores = queries @ vectors.rows(ids).T  # (q, block)
        else:
            ids = np.arange(start, min(start + block, total))
            scores = queries @ np.asarray(vectors[start : start + block]).T
            scores[:, ~mask[start : start + block]] = -np.inf
        all_s = np.concatenate([best_s, scores], axis=1)
        all_r = np.concatenate([best_r, np.broadcast_to(ids, scores.shape)], axis=1)
        top = np.argpartition(-all_s, min(k, all_s.shape[1]) - 1, axis=1)[:, :k]
        best_s, best_r = np.take_along_axis(all_s, top, 1), np.take_along_axis(all_r, top, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_r, order, 1)

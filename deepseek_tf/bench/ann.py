"""Exact TensorFlow search against faiss (flat, IVF, HNSW) on random unit vectors: `deepseek-tf bench ann`."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from deepseek_tf.console import command_parser
from deepseek_tf.errors import UserError, cli_entry
from deepseek_tf.retrieval.index import FaissIndex, _faiss, exact_search


def random_unit_vectors(n: int, dim: int, seed: int, block: int = 100_000) -> np.ndarray:
    """(n, dim) float32 rows uniform on the unit sphere, made in blocks (no float64 copy)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, block):
        x = rng.standard_normal((min(block, n - s), dim), dtype=np.float32)
        out[s:s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench(n: int = 1_000_000, dim: int = 384, queries: int = 1000, k: int = 10,
          faiss_kinds: tuple[str, ...] = (), chunk_size: int = 65536) -> dict:
    """Exact TF search vs faiss.IndexFlatIP (and optional IVF/HNSW) on random unit vectors."""
    docs, q = random_unit_vectors(n, dim, 0), random_unit_vectors(queries, dim, 1)
    out = {"n": n, "dim": dim, "queries": queries, "k": k, "chunk_size": chunk_size,
           "rss_mb_after_data": _rss_mb()}
    exact_search(q[:2], docs[:chunk_size], k)  # trace once, outside the timing
    t0 = time.perf_counter()
    s_tf, i_tf = exact_search(q, docs, k, chunk_size=chunk_size)
    out["exact_tf_s"] = time.perf_counter() - t0
    out["peak_rss_mb_after_exact"] = _rss_mb()
    out["exact_largest_score_block_mb"] = min(queries, 1024) * min(n, chunk_size) * 4 / 2**20
    for kind in ("flat",) + tuple(faiss_kinds):
        t0 = time.perf_counter()
        index = FaissIndex.build(docs, [str(i) for i in range(n)], kind)
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        s_f, i_f = index.search_arrays(q, k)
        out[kind] = {"build_s": built, "search_s": time.perf_counter() - t0,
                     "rows_equal_to_exact": float(np.mean(np.all(i_f == i_tf, axis=1))),
                     "recall@10_vs_exact": float(np.mean([len(set(a) & set(b)) / k for a, b in zip(i_f, i_tf)])),
                     "max_abs_score_diff": float(np.max(np.abs(s_f - s_tf))), **index.params}
        del index
    out["peak_rss_mb"] = _rss_mb()
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser("bench-ann", "Benchmark exact TensorFlow search against faiss on random unit vectors.",
                       ['deepseek-tf bench-ann --bench --n 100000 --faiss hnsw'])
    p.add_argument("--bench", action="store_true", required=True, help="run the benchmark")
    p.add_argument("--n", type=int, default=1_000_000, help="documents (default: 1,000,000)")
    p.add_argument("--dim", type=int, default=384, help="dimension (default: 384)")
    p.add_argument("--queries", type=int, default=1000, help="queries (default: 1000)")
    p.add_argument("--k", type=int, default=10, help="neighbours per query (default: 10)")
    p.add_argument("--chunk-size", type=int, default=65536, help="corpus rows scored at once (default: 65536)")
    p.add_argument("--faiss", nargs="*", default=[], choices=["ivf", "hnsw"], help="also time these faiss kinds")
    p.add_argument("--output", help="write the figures as JSON here")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if min(args.n, args.dim, args.queries, args.k, args.chunk_size) < 1:
        raise UserError("--n, --dim, --queries, --k and --chunk-size must be >= 1")
    _faiss()
    result = bench(args.n, args.dim, args.queries, args.k, tuple(args.faiss), args.chunk_size)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        tmp = Path(args.output).with_name(Path(args.output).name + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.output)
    return 0

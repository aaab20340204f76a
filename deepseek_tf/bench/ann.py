"""Exact TensorFlow search against faiss (flat, IVF, HNSW): `deepseek-tf bench-ann`.

`--data uniform` (default) draws vectors uniformly on the unit sphere: no structure, the worst
case of any ANN index. `--data clustered` draws them the way text embeddings sit: around a few
thousand centres, each cluster spread along its own low-dimensional subspace (plus a little
isotropic noise), unit-normalised; queries are held-out draws from the same mixture, so they are
near indexed points but never one of them. With `--faiss hnsw` the HNSW row also measures what a
service sees: one query per call, p50/p95 latency and recall@10 for each `--ef-search`, the
smallest efSearch reaching `--target-recall` picked on a tuning query set separate from the
reported one.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from deepseek_tf.console import command_parser, progress
from deepseek_tf.errors import UserError, cli_entry
from deepseek_tf.retrieval.knn import (
    EF_CONSTRUCTION,
    exact_search,
    faiss_module,
    fill_faiss,
    new_faiss_index,
    set_search_params,
)

DATA = ("uniform", "clustered")


def random_unit_vectors(n: int, dim: int, seed: int, block: int = 100_000) -> np.ndarray:
    """(n, dim) float32 rows uniform on the unit sphere, made in blocks (no float64 copy)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, block):
        x = rng.standard_normal((min(block, n - s), dim), dtype=np.float32)
        out[s : s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def clustered_unit_vectors(
    n: int, dim: int, seed: int, centres: int = 4096, rank: int = 16, spread: float = 0.6, noise: float = 0.2
) -> np.ndarray:
    """(n, dim) float32 unit rows from a Gaussian mixture of low intrinsic dimension.

    Row = normalise(c + spread·B z + noise·e): c a random unit centre, B (dim, rank) an orthonormal
    basis of the cluster's own subspace, z ~ N(0, I/rank), e ~ N(0, I/dim); so |spread·B z| ≈ spread
    and |noise·e| ≈ noise. Cluster sizes are multinomial with Zipf-like weights (catalogues have
    big and small categories). Rows come out in random order: HNSW inserted cluster by cluster
    builds a worse graph than in any real ingest order.
    """
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, centres + 1) ** 0.5
    counts = rng.multinomial(n, weights / weights.sum())
    rows = rng.permutation(n)  # row slots, handed out cluster by cluster
    out = np.empty((n, dim), np.float32)
    start = 0
    for c in range(centres):
        m = int(counts[c])
        centre = rng.standard_normal(dim).astype(np.float32)
        centre /= np.linalg.norm(centre)
        basis, _ = np.linalg.qr(rng.standard_normal((dim, rank)).astype(np.float32))  # (dim, rank)
        if m:
            z = rng.standard_normal((m, rank), dtype=np.float32) * (spread / np.sqrt(rank))
            e = rng.standard_normal((m, dim), dtype=np.float32) * (noise / np.sqrt(dim))
            x = centre + z @ basis.T + e  # (m, dim)
            out[rows[start : start + m]] = x / np.linalg.norm(x, axis=1, keepdims=True)
        start += m
    return out


def make_data(kind: str, n: int, queries: int, dim: int, centres: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(docs (n, dim), queries (queries, dim)); clustered queries are held out of one draw."""
    if kind == "uniform":
        return random_unit_vectors(n, dim, 0), random_unit_vectors(queries, dim, 1)
    if kind != "clustered":
        raise UserError(f"--data {kind!r} is not one of {', '.join(DATA)}")
    both = clustered_unit_vectors(n + queries, dim, 0, centres)
    return both[:n], both[n:]  # rows are in random order, so the tail is a random held-out sample


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mb() -> float:
    """Resident memory now (ru_maxrss is only the peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found, truth)]))


def hnsw_study(
    docs: np.ndarray,
    tune_q: np.ndarray,
    tune_truth: np.ndarray,
    report_q: np.ndarray,
    report_truth: np.ndarray,
    k: int,
    hnsw_m: int,
    ef_construction: int,
    ef_search: tuple[int, ...],
    target_recall: float,
) -> dict:
    """faiss HNSW-Flat as a service uses it: build figures, then per efSearch the recall@k on both
    query sets and the single-query latency on the reported set; efSearch is picked on the tuning set."""
    faiss = faiss_module()
    rss_before = _current_rss_mb()
    t0 = time.perf_counter()
    index = new_faiss_index("hnsw", docs.shape[1], len(docs), hnsw_m=hnsw_m, ef_construction=ef_construction)
    fill_faiss(index, docs, blocks=lambda starts: progress(starts, "hnsw add", unit="block"))
    out: dict = {
        "M": hnsw_m,
        "efConstruction": ef_construction,
        "build_s": time.perf_counter() - t0,
        "rss_mb_added_by_index": _current_rss_mb() - rss_before,
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "hnsw.faiss")
        faiss.write_index(index, path)
        out["index_bytes"] = os.path.getsize(path)
    out["index_bytes_per_vector"] = out["index_bytes"] / len(docs)
    rows = []
    for ef in ef_search:
        index.hnsw.efSearch = ef
        _, tune_i = index.search(tune_q, k)
        lat, found = [], np.zeros((len(report_q), k), np.int64)
        for j in range(len(report_q)):  # one query per call, as a service sends them
            t = time.perf_counter()
            _, i = index.search(report_q[j : j + 1], k)
            lat.append((time.perf_counter() - t) * 1000)
            found[j] = i[0]
        rows.append(
            {
                "efSearch": ef,
                "recall@10_tune": _recall(tune_i, tune_truth, k),
                "recall@10": _recall(found, report_truth, k),
                "latency_ms_p50": float(np.percentile(lat, 50)),
                "latency_ms_p95": float(np.percentile(lat, 95)),
            }
        )
    out["ef_search"] = rows
    ok = [r for r in rows if r["recall@10_tune"] >= target_recall]
    out["picked"] = min(ok, key=lambda r: r["efSearch"]) if ok else None
    out["target_recall"] = target_recall
    return out


def bench(
    n: int = 1_000_000,
    dim: int = 384,
    queries: int = 1000,
    k: int = 10,
    faiss_kinds: tuple[str, ...] = (),
    chunk_size: int = 65536,
    data: str = "uniform",
    centres: int = 4096,
    hnsw_m: int = 32,
    ef_construction: int = EF_CONSTRUCTION,
    ef_search: tuple[int, ...] = (128,),
    target_recall: float = 0.95,
    flat: bool = True,
) -> dict:
    """Exact TF search vs faiss.IndexFlatIP (and optional IVF/HNSW) on `data` vectors.

    For clustered data an equal-sized tuning query set is drawn too (HNSW's efSearch is picked
    on it); every other figure uses the reported `queries`."""
    tune = queries if "hnsw" in faiss_kinds else 0
    docs, all_q = make_data(data, n, queries + tune, dim, centres)
    q, tune_q = all_q[:queries], all_q[queries:]
    out = {
        "data": data,
        "n": n,
        "dim": dim,
        "queries": queries,
        "k": k,
        "chunk_size": chunk_size,
        "rss_mb_after_data": _rss_mb(),
    }
    if data == "clustered":
        out["centres"] = centres
    exact_search(q[:2], docs[:chunk_size], k)  # trace once, outside the timing
    t0 = time.perf_counter()
    s_tf, i_tf = exact_search(q, docs, k, chunk_size=chunk_size)
    out["exact_tf_s"] = time.perf_counter() - t0
    out["peak_rss_mb_after_exact"] = _rss_mb()
    out["exact_largest_score_block_mb"] = min(queries, 1024) * min(n, chunk_size) * 4 / 2**20
    for kind in (("flat",) if flat else ()) + tuple(kk for kk in faiss_kinds if kk != "hnsw"):
        t0 = time.perf_counter()
        index = fill_faiss(new_faiss_index(kind, dim, n), docs)
        params = {"nlist": index.nlist, "nprobe": min(16, index.nlist)} if kind == "ivf" else {}
        set_search_params(index, nprobe=params.get("nprobe"))
        built = time.perf_counter() - t0
        t0 = time.perf_counter()
        s_f, i_f = index.search(np.ascontiguousarray(q, np.float32), min(k, n))
        out[kind] = {
            "build_s": built,
            "search_s": time.perf_counter() - t0,
            "rows_equal_to_exact": float(np.mean(np.all(i_f == i_tf, axis=1))),
            "recall@10_vs_exact": _recall(i_f, i_tf, k),
            "max_abs_score_diff": float(np.max(np.abs(s_f - s_tf))),
            **params,
        }
        del index
    if "hnsw" in faiss_kinds:
        _, tune_truth = exact_search(tune_q, docs, k, chunk_size=chunk_size)
        out["hnsw"] = hnsw_study(
            docs, tune_q, tune_truth, q, i_tf, k, hnsw_m, ef_construction, ef_search, target_recall
        )
    out["peak_rss_mb"] = _rss_mb()
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser(
        "bench-ann",
        "Benchmark exact TensorFlow search against faiss on synthetic unit vectors.",
        [
            "deepseek-tf bench-ann --bench --n 100000 --faiss hnsw",
            "deepseek-tf bench-ann --bench --data clustered --faiss hnsw --ef-search 32 64 128 --no-flat",
        ],
    )
    p.add_argument("--bench", action="store_true", required=True, help="run the benchmark")
    p.add_argument(
        "--data",
        choices=DATA,
        default="uniform",
        help="uniform on the sphere (default; every ANN index's worst case) or clustered "
        "(Gaussian mixture of low intrinsic dimension, like text embeddings)",
    )
    p.add_argument("--centres", type=int, default=4096, help="clusters of --data clustered (default: 4096)")
    p.add_argument("--n", type=int, default=1_000_000, help="documents (default: 1,000,000)")
    p.add_argument("--dim", type=int, default=384, help="dimension (default: 384)")
    p.add_argument(
        "--queries",
        type=int,
        default=1000,
        help="reported queries (default: 1000; --faiss hnsw draws as many more to pick efSearch on)",
    )
    p.add_argument("--k", type=int, default=10, help="neighbours per query (default: 10)")
    p.add_argument("--chunk-size", type=int, default=65536, help="corpus rows scored at once (default: 65536)")
    p.add_argument("--faiss", nargs="*", default=[], choices=["ivf", "hnsw"], help="also time these faiss kinds")
    p.add_argument(
        "--no-flat", action="store_true", help="skip faiss.IndexFlatIP (exact search is the reference anyway)"
    )
    p.add_argument("--hnsw-m", type=int, default=32, help="HNSW links per node (default: 32)")
    p.add_argument(
        "--ef-construction",
        type=int,
        default=EF_CONSTRUCTION,
        help=f"HNSW efConstruction (default: {EF_CONSTRUCTION}; faiss's own 40 builds a graph clustered data defeats)",
    )
    p.add_argument(
        "--ef-search", type=int, nargs="+", default=[128], help="HNSW efSearch values to measure (default: 128)"
    )
    p.add_argument(
        "--target-recall",
        type=float,
        default=0.95,
        help="pick the smallest efSearch reaching this recall@10 on the tuning queries (default: 0.95)",
    )
    p.add_argument("--output", help="write the figures as JSON here")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (
        min(
            args.n,
            args.dim,
            args.queries,
            args.k,
            args.chunk_size,
            args.centres,
            args.hnsw_m,
            args.ef_construction,
            *args.ef_search,
        )
        < 1
    ):
        raise UserError(
            "--n, --dim, --queries, --k, --chunk-size, --centres, --hnsw-m, --ef-construction "
            "and --ef-search must be >= 1"
        )
    faiss_module()
    result = bench(
        args.n,
        args.dim,
        args.queries,
        args.k,
        tuple(args.faiss),
        args.chunk_size,
        args.data,
        args.centres,
        args.hnsw_m,
        args.ef_construction,
        tuple(sorted(set(args.ef_search))),
        args.target_recall,
        not args.no_flat,
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        tmp = Path(args.output).with_name(Path(args.output).name + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.output)
    return 0

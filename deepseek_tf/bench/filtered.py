"""Filtered dense search at catalogue scale: `python -m deepseek_tf.bench.filtered`.

The corpus is bench.ann's `--data clustered` one (1,000,000 × 384 unit vectors from a mixture of
4,096 Zipf-sized clusters of low intrinsic dimension; queries are held-out draws of the same
mixture), since uniform random vectors defeat every ANN index before any filter does. A keyword
column `tag` gives each selectivity its own value held by a random subset of exactly that share of
the rows; the filter `{"tag": value}` goes through `index.filters.evaluate` as a request's would.

For each backend and selectivity, `DenseSearcher.search_filtered` answers one query per call (as
the server calls it) and is scored against brute force over the passing rows: recall@10, p50 and
p95 latency, and the plan `filtered_plan` chose. The vectors and the faiss files are cached under
--cache (building HNSW over 1M vectors takes the better part of an hour on 2 cores), so a second
run measures only. Writes bench/filtered.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from deepseek_tf.bench.ann import make_data
from deepseek_tf.index import dense
from deepseek_tf.index.dense import DenseSearcher, ShardedVectors, build_dense, filtered_plan, resolve_params
from deepseek_tf.index.filters import Columns, evaluate

SHARES = (0.001, 0.01, 0.1, 0.5)
BACKENDS = ("exact", "faiss-hnsw", "faiss-ivfpq")
# Held-out queries drawn with the corpus: the first --queries are reported, the last TUNE_QUERIES
# are the ones `--tune` measures on, so constants picked on them are not picked on the table's.
QUERY_POOL, TUNE_QUERIES = 1000, 500
TARGET_RECALL = 0.95


def log(message: str) -> None:
    print(f"[filtered] {message}", file=sys.stderr, flush=True)


def corpus(n: int, dim: int, centres: int, cache: Path) -> tuple[ShardedVectors, np.ndarray]:
    """(vectors, query pool (QUERY_POOL, dim)), drawn once and kept in CACHE as .npy files: the
    vectors memory-mapped afterwards, as a served index's shards are past dense.IN_MEMORY_BYTES."""
    cache.mkdir(parents=True, exist_ok=True)
    vectors, queries = cache / "vectors.npy", cache / "queries.npy"
    if not (vectors.is_file() and queries.is_file()):
        t0 = time.perf_counter()
        docs, pool = make_data("clustered", n, QUERY_POOL, dim, centres)
        for path, array in ((queries, pool), (vectors, docs)):  # vectors last: their presence marks a whole draw
            tmp = path.with_name(path.name + ".tmp")
            with open(tmp, "wb") as f:
                np.save(f, array)
            tmp.replace(path)
        log(f"drew {n} x {dim} clustered vectors in {time.perf_counter() - t0:.0f} s -> {cache}")
        del docs
    return ShardedVectors.open([vectors]), np.load(queries)


def open_searcher(backend: str, vectors: ShardedVectors, cache: Path) -> tuple[DenseSearcher, dict]:
    """The backend's searcher at its default parameters, its faiss file built into CACHE/BACKEND
    the first time; returns it and {params, build_s (None when reused)}."""
    n, dim = vectors.shape
    params = resolve_params(backend, {}, n, dim)
    where = cache / backend
    record = where / "build.json"
    built = None
    if backend != "exact" and not (where / dense.FAISS_FILE).is_file():
        where.mkdir(parents=True, exist_ok=True)
        log(f"building {backend} over {n} vectors ({params}) ...")
        t0 = time.perf_counter()
        build_dense(backend, vectors, where, params)
        built = round(time.perf_counter() - t0, 1)
        record.write_text(json.dumps({"params": params, "build_s": built}))
        log(f"built {backend} in {built} s")
    elif record.is_file():
        built = json.loads(record.read_text()).get("build_s")
    return DenseSearcher(backend, vectors, where, params), {"params": params, "build_s": built}


def tag_columns(n: int, shares: tuple[float, ...], seed: int = 0) -> tuple[Columns, dict[float, str]]:
    """A keyword column `tag` in which value `s<share>` is held by a random round(share·n) rows,
    drawn independently per share (a row may hold several values); returns it and {share: value}."""
    rng = np.random.default_rng(seed)
    values = {share: f"s{share:g}" for share in shares}
    terms = sorted(values.values())
    rows, codes = [], []
    for share, value in values.items():
        picked = np.sort(rng.choice(n, max(1, round(share * n)), replace=False))
        rows.append(picked)
        codes.append(np.full(len(picked), terms.index(value), np.int64))
    return Columns(n, {"tag": ("keyword", (np.concatenate(rows), np.concatenate(codes), terms))}), values


def brute_force(
    queries: np.ndarray, vectors: ShardedVectors, rows: np.ndarray, k: int, block: int = 65536
) -> np.ndarray:
    """The exact filtered answer: the k best of ROWS by dot product, (q, k) row ids best first
    (written apart from dense.masked_topk, which is under test)."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(rows), block):
        ids = rows[start : start + block]
        scores = np.concatenate([best_s, queries @ vectors.rows(ids).T], axis=1)  # (q, <= k + block)
        pool = np.concatenate([best_i, np.broadcast_to(ids, (len(queries), len(ids)))], axis=1)
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(scores, top, 1), np.take_along_axis(pool, top, 1)
    return best_i


def measure(searcher: DenseSearcher, queries: np.ndarray, mask: np.ndarray, truth: np.ndarray, k: int) -> dict:
    """One query per `search_filtered` call: recall@k against TRUTH, latency percentiles, and
    how many answers came back short of k passing rows or held a row the filter drops."""
    searcher.search_filtered(queries[:1], k, mask)  # first touch (page faults, faiss buffers) off the clock
    lat, hits, leaks, short = [], 0, 0, 0
    for j in range(len(queries)):
        t = time.perf_counter()
        _, found = searcher.search_filtered(queries[j : j + 1], k, mask)
        lat.append((time.perf_counter() - t) * 1000)
        got = found[0][found[0] >= 0]
        short += len(got) < min(k, truth.shape[1])
        leaks += int((~mask[got]).sum())
        hits += len(set(got.tolist()) & set(truth[j].tolist()))
    return {
        "recall_at_10": round(hits / truth.size, 4),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 3),
        "latency_ms_p95": round(float(np.percentile(lat, 95)), 3),
        "short_answers": short,
        "rows_outside_filter": leaks,
    }


def cpu_info() -> dict:
    """lscpu's model name, the SIMD flags faiss and BLAS may use, and the thread counts."""
    info: dict = {"machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    info["model"] = fields.get("Model name", "").strip() or platform.processor()
    flags = set(fields.get("Flags", "").split())
    info["flags"] = {f: f in flags for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile", "amx_int8")}
    try:
        import faiss

        info["faiss_threads"] = faiss.omp_get_max_threads()
        info["faiss_version"] = faiss.__version__
    except ImportError:
        pass
    info["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    return info


def bench(
    n: int = 1_000_000,
    dim: int = 384,
    centres: int = 4096,
    queries: int = 300,
    k: int = 10,
    backends: tuple[str, ...] = BACKENDS,
    shares: tuple[float, ...] = SHARES,
    cache: Path = Path("runs/filtered"),
    tune: bool = False,
) -> dict:
    """The table's rows: one per (backend, selectivity)."""
    if queries + TUNE_QUERIES > QUERY_POOL and not tune:
        raise ValueError(f"--queries must be at most {QUERY_POOL - TUNE_QUERIES}")
    where = cache / f"clustered_n{n}_d{dim}_c{centres}"
    vectors, pool = corpus(n, dim, centres, where)
    q = pool[QUERY_POOL - TUNE_QUERIES :] if tune else pool[:queries]
    columns, values = tag_columns(n, shares)
    masks = {share: evaluate({"tag": values[share]}, columns) for share in shares}
    log(f"exact filtered answers of {len(q)} queries ...")
    truth = {share: brute_force(q, vectors, np.flatnonzero(m), k) for share, m in masks.items()}
    out = {
        "n": n,
        "dim": dim,
        "centres": centres,
        "queries": len(q),
        "query_set": "tune" if tune else "report",
        "k": k,
        "constants": {"GATHER_ROWS": dense.GATHER_ROWS, "GATHER_SHARE": dense.GATHER_SHARE, "MAX_EF": dense.MAX_EF},
        "cpu": cpu_info(),
        "backends": {},
        "rows": [],
    }
    for backend in backends:
        searcher, built = open_searcher(backend, vectors, where)
        out["backends"][backend] = built
        for share in shares:
            mask = masks[share]
            passing = int(mask.sum())
            row = {
                "backend": backend,
                "selectivity": share,
                "passing": passing,
                "plan": filtered_plan(backend, passing, n),
                **measure(searcher, q, mask, truth[share], k),
            }
            log(json.dumps(row))
            out["rows"].append(row)
        del searcher
    out["cpu"]["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    out["passed"] = all(r["recall_at_10"] >= TARGET_RECALL for r in out["rows"])
    return out


def markdown(result: dict, command: str) -> str:
    cpu = result["cpu"]
    flags = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in cpu["flags"].items())
    lines = [
        "# Filtered dense search",
        "",
        f"{result['n']:,} × {result['dim']} clustered unit vectors (bench.ann's `--data clustered`, "
        f"{result['centres']:,} clusters), {result['queries']} held-out queries, k {result['k']}; a random "
        'keyword column gives each selectivity the filter `{"tag": value}`, evaluated by '
        "`index.filters.evaluate`. `DenseSearcher.search_filtered` answers one query per call; recall@10 is "
        "against brute force over the passing rows. Plans (`index.dense.filtered_plan`): gather = the passing "
        "rows scored exactly, scan = every row scored with the rest masked out, faiss = the ANN index with "
        "the filter as ID selector (a widened efSearch / nprobe).",
        "",
        "```bash",
        command,
        "```",
        "",
        f"CPU: {cpu['model']} ({cpu['machine']}), {cpu['cpus']} cores; {flags}; faiss "
        f"{cpu.get('faiss_version', '?')} on {cpu.get('faiss_threads', '?')} OpenMP threads, numpy's BLAS at its "
        f"default; load average {cpu['load_avg'][0]} before, {cpu['load_avg_after'][0]} after (a shared machine). "
        f"GATHER_ROWS {result['constants']['GATHER_ROWS']:,}, GATHER_SHARE {result['constants']['GATHER_SHARE']}, "
        f"MAX_EF {result['constants']['MAX_EF']}.",
        "",
        "| backend | selectivity | passing rows | plan | recall@10 | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['backend']} | {r['selectivity'] * 100:g}% | {r['passing']:,} | {r['plan']} | "
            f"{r['recall_at_10']:.4f} | {r['latency_ms_p50']:.2f} | {r['latency_ms_p95']:.2f} |"
        )
    lines += ["", "Indexes (default parameters; build time on this machine, when built by this run or cached):", ""]
    for backend, b in result["backends"].items():
        took = f"{b['build_s']} s" if b["build_s"] is not None else "no file"
        lines.append(f"- {backend}: {json.dumps(b['params'])}, build {took}")
    verdict = "every row reaches" if result["passed"] else "NOT every row reaches"
    lines += ["", f"Target: recall@10 ≥ {TARGET_RECALL} at every selectivity for every backend; {verdict} it.", ""]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m deepseek_tf.bench.filtered", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="vectors (default: 1,000,000)")
    p.add_argument("--dim", type=int, default=384, help="dimension (default: 384)")
    p.add_argument("--centres", type=int, default=4096, help="clusters of the corpus (default: 4096)")
    p.add_argument(
        "--queries", type=int, default=300, help=f"reported queries (default: 300; at most {QUERY_POOL - TUNE_QUERIES})"
    )
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument(
        "--shares",
        nargs="+",
        type=float,
        default=list(SHARES),
        help="filter selectivities (default: 0.001 0.01 0.1 0.5)",
    )
    p.add_argument(
        "--cache", default="runs/filtered", help="where the vectors and faiss files are kept (default: runs/filtered)"
    )
    p.add_argument(
        "--tune", action="store_true", help="measure on the tuning queries instead; writes nothing unless --output-dir"
    )
    p.add_argument(
        "--output-dir", default=None, help="write filtered.md / filtered.json here (default: bench, none with --tune)"
    )
    args = p.parse_args(argv)
    if min(args.n, args.dim, args.centres, args.queries) < 1 or not all(0 < s <= 1 for s in args.shares):
        p.error("--n, --dim, --centres and --queries must be >= 1, --shares in (0, 1]")
    if args.output_dir is None and not args.tune:
        args.output_dir = "bench"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = bench(
        n=args.n,
        dim=args.dim,
        centres=args.centres,
        queries=args.queries,
        backends=tuple(args.backends),
        shares=tuple(args.shares),
        cache=Path(args.cache),
        tune=args.tune,
    )
    command = "python -m deepseek_tf.bench.filtered " + " ".join(argv if argv is not None else sys.argv[1:])
    result["command"] = command.strip()
    if args.output_dir:
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "filtered.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "filtered.md").write_text(markdown(result, result["command"]))
        log(f"wrote {out / 'filtered.md'}")
    print(json.dumps(result["rows"], indent=1))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())

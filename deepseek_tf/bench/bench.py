"""Benchmarks: `python -m deepseek_tf.bench --dataset DIR [--output-dir bench/] [--threads N]`.

Measures in one process, on the same texts (the corpus of a BEIR directory), max length,
batch size and thread count: encode throughput of our Keras model (graph and XLA), our
SavedModel and TFLite (float32, dynamic int8) against sentence-transformers' `encode`
(PyTorch float32); the float32 matmul rate of the machine and each system's share of it;
training throughput against sentence-transformers' `fit` with MultipleNegativesRankingLoss;
exact-search queries/s against `faiss.IndexFlatIP`. Ratios are ours / peer within the run.
Writes OUTPUT_DIR/results.{md,json} and the table between the README's bench markers.
Peers come from the `bench` extra (`make bench` installs it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from deepseek_tf.bench.encoders import bench_encoders
from deepseek_tf.bench.machine import log, matmul_rate, set_threads
from deepseek_tf.bench.report import (
    TARGETS,
    cpu_model,
    flops_per_token,
    package_versions,
    render_markdown,
    replace_between_markers,
    system_load,
    write_results,
)
from deepseek_tf.bench.search_rate import bench_search
from deepseek_tf.console import command_parser
from deepseek_tf.errors import UserError, cli_entry

MINILM = {"layers": 6, "hidden": 384, "intermediate": 1536}  # the shape flops_per_token counts on


def load_texts(dataset: Path) -> tuple[list[str], list[str]]:
    """(corpus texts sorted by doc id, query texts) of the BEIR directory `dataset`."""
    from deepseek_tf.data import load_beir

    if not (dataset / "corpus.jsonl").is_file():
        raise UserError(
            f"--dataset {dataset}: no corpus.jsonl there (the benchmark needs a BEIR directory, "
            "e.g. ../shared/data/cranfield)"
        )
    beir = load_beir(dataset, "train", unknown_ids="drop")
    return [beir.doc_text(d) for d in sorted(beir.corpus, key=str)], list(beir.queries.values())


def run(args: argparse.Namespace) -> dict:
    """Every measurement in one process; returns the results dict (also written to disk)."""
    set_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    docs, queries = load_texts(Path(args.dataset))
    if args.quick:
        docs, queries = docs[:64], queries[:32]
    elif args.docs:
        docs = docs[: args.docs]
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_model(),
        "threads": args.threads,
        "quick": bool(args.quick),
        "dataset": str(args.dataset),
        "versions": package_versions(),
        "targets": TARGETS,
        "load_before": system_load(),
    }
    log("matmul rate ...")
    results["matmul"] = matmul_rate(1024 if args.quick else 2048, rounds=2 if args.quick else 3)
    with tempfile.TemporaryDirectory(prefix="deepseek_bench_") as tmp:
        log("encode ...")
        rows, stats, doc_vecs, keras_emb = bench_encoders(docs, args, Path(tmp), results["matmul"])
        stats["flops_per_token"] = flops_per_token(**MINILM, length=stats["token_weighted_length"])
        stats["flops_per_token_at_128"] = flops_per_token(**MINILM, length=128)
        for row in rows:
            if row.get("measured"):
                row["matmul_share"] = row["tokens_per_s"] * stats["flops_per_token"] / results["matmul"]["tf_flops"]
        results["encode"], results["encode_stats"] = rows, stats
        if args.train_steps != 0:
            log("training ...")
            train_batch = args.train_batch_size or (8 if args.quick else args.batch_size)
            from deepseek_tf.bench.train import bench_training

            results["training"] = bench_training(
                Path(args.dataset), train_batch, 1 if args.quick else args.train_steps, args.max_length, Path(tmp), log
            )
    log("search ...")
    from deepseek_tf.bench.ann import random_unit_vectors

    query_vecs = keras_emb.encode(queries, "query", args.batch_size)
    results["search"] = {"cranfield": bench_search(query_vecs, doc_vecs)}
    n = 10_000 if args.quick else 100_000
    results["search"]["random"] = bench_search(random_unit_vectors(1000, 384, 1), random_unit_vectors(n, 384, 0))
    if args.rerank_queries:
        log("rerank ...")
        from deepseek_tf.bench.rerank import bench_reranking

        with tempfile.TemporaryDirectory(prefix="deepseek_bench_") as tmp:
            results["rerank"] = bench_reranking(
                Path(args.dataset),
                2 if args.quick else args.rerank_queries,
                args.batch_size,
                args.max_length,
                args.threads,
                Path(tmp),
                log,
            )
    if args.peers_docs:
        log("encode peers ...")
        from deepseek_tf.bench.encode_peers import bench_encode_peers

        with tempfile.TemporaryDirectory(prefix="deepseek_bench_") as tmp:
            results["encode_peers"] = bench_encode_peers(
                Path(args.dataset),
                Path(args.peers_qbqtc) if args.peers_qbqtc else None,
                args.threads,
                args.batch_size,
                args.max_length,
                args.peers_docs,
                args.peers_calibration,
                args.quick or args.peers_quick,
                Path(tmp),
                log,
            )
    results["load_after"] = system_load()
    log("done")
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of `python -m deepseek_tf.bench`, --threads resolved to a number."""
    p = command_parser(
        "bench",
        __doc__.split("\n\n")[0],
        [
            "deepseek-tf bench --dataset ../shared/data/cranfield --output-dir bench",
            "deepseek-tf bench --dataset ../shared/data/cranfield --quick",
        ],
    )
    p.add_argument("--dataset", required=True, help="BEIR directory (e.g. ../shared/data/cranfield)")
    p.add_argument("--output-dir", default="bench", help="where results.md / results.json go (default: bench)")
    p.add_argument(
        "--readme",
        default="docs/results.md",
        help="Markdown file whose <!-- bench:start/end --> part gets the table (default: docs/results.md; '' to skip)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for TF, PyTorch, faiss, TFLite (default: the CPUs this process may use)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="encode batch size (default: 32)")
    p.add_argument("--max-length", type=int, default=256, help="max tokens per text (default: 256)")
    p.add_argument("--docs", type=int, default=0, help="encode only the first N corpus texts (0: all)")
    p.add_argument(
        "--train-steps",
        type=int,
        default=-1,
        help="timed training steps per system (default -1: one epoch of the train pairs; 0: skip)",
    )
    p.add_argument("--train-batch-size", type=int, default=0, help="training batch size (default: --batch-size)")
    p.add_argument("--rounds", type=int, default=4, help="interleaved rounds the encode texts are split into")
    p.add_argument(
        "--rerank-queries",
        type=int,
        default=8,
        help="test queries whose BM25 top-100 the cross-encoders rerank (default: 8; 0: skip)",
    )
    p.add_argument(
        "--xla",
        action="store_true",
        help="add a Keras + XLA encode row (slower than the plain graph on CPU; see docs/results.md)",
    )
    p.add_argument(
        "--peers-docs",
        type=int,
        default=512,
        help="encode peers: time the first N corpus texts through every sentence-transformers runtime and ours "
        "(default: 512; 0: skip)",
    )
    p.add_argument(
        "--peers-calibration",
        type=int,
        default=300,
        help="encode peers: corpus texts after those N that calibrate OpenVINO static int8 (default: 300)",
    )
    p.add_argument("--peers-qbqtc", metavar="DIR", help="encode peers: QBQTC BEIR dir for nDCG@10 on its dev split")
    p.add_argument("--peers-quick", action="store_true", help="encode peers on tiny subsets (--quick implies it)")
    p.add_argument("--quick", action="store_true", help="smoke run: 64 texts, 1 training step of 8, small search")
    args = p.parse_args(argv)
    if args.threads is None:  # imported after parsing: TensorFlow loads with it, and --help should not wait
        from deepseek_tf.retrieval.engines import default_threads

        args.threads = default_threads()
    return args


@cli_entry
def main(argv: list[str] | None = None) -> int:
    """Checks the arguments, runs every section, writes the results and the README's table."""
    args = parse_args(argv)
    if min(args.threads, args.batch_size, args.max_length) < 1 or args.max_length < 8 or args.rerank_queries < 0:
        raise UserError("--threads and --batch-size must be >= 1, --max-length >= 8, --rerank-queries >= 0")
    if args.peers_docs < 0 or args.peers_calibration < 1:
        raise UserError("--peers-docs must be >= 0 and --peers-calibration >= 1")
    if args.peers_qbqtc and not (Path(args.peers_qbqtc) / "corpus.jsonl").is_file():
        raise UserError(f"--peers-qbqtc {args.peers_qbqtc}: no corpus.jsonl there (pass e.g. ../shared/data/qbqtc)")
    if not Path(args.dataset).is_dir():
        raise UserError(
            f"--dataset {args.dataset}: directory not found (pass a BEIR directory, "
            "e.g. --dataset ../shared/data/cranfield)"
        )
    results = run(args)
    table = render_markdown(results)
    print(table)
    write_results(results, table, Path(args.output_dir))
    if args.readme and not args.quick:
        readme = Path(args.readme)
        if readme.is_file():
            text = replace_between_markers(readme.read_text(encoding="utf-8"), table)
            tmp = readme.with_name(readme.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(readme)
    print(f"wrote {Path(args.output_dir) / 'results.md'} and results.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

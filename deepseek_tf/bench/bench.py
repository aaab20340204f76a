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

import numpy as np

from deepseek_tf.bench.peers import PRESET, sentence_transformer
from deepseek_tf.bench.report import (
    TARGETS,
    cpu_model,
    encode_row,
    flops_per_token,
    package_versions,
    render_markdown,
    replace_between_markers,
    system_load,
    token_weighted_length,
    write_results,
)
from deepseek_tf.console import command_parser
from deepseek_tf.errors import UserError, cli_entry

MINILM = {"layers": 6, "hidden": 384, "intermediate": 1536}


_START = time.perf_counter()


def log(message: str) -> None:
    """Progress on stderr with wall and process CPU seconds (CPU ÷ threads ≈ wall on an idle machine)."""
    print(
        f"[{time.perf_counter() - _START:6.0f}s wall {time.process_time():6.0f}s cpu] {message}",
        file=sys.stderr,
        flush=True,
    )


def set_threads(n: int) -> None:
    """Same N for TF (intra- and inter-op pools) and PyTorch; must run before TF starts its runtime."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
        torch.set_num_interop_threads(n)
    except ImportError:
        pass


def matmul_rate(n: int = 2048, repeats: int = 5, rounds: int = 3) -> dict:
    """Best-of-`rounds` FLOP/s of `repeats` float32 (n, n) @ (n, n) products (2n³ FLOPs each),
    in TensorFlow (the reference) and, when installed, PyTorch."""
    import tensorflow as tf

    def best_rate(matmul) -> float:
        matmul()  # warm-up: oneDNN primitive creation
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(repeats):
                matmul()
            best = min(best, (time.perf_counter() - start) / repeats)
        return 2 * n**3 / best

    a, b = tf.random.normal([n, n], seed=1), tf.random.normal([n, n], seed=2)
    out = {"n": n, "tf_flops": best_rate(lambda: tf.linalg.matmul(a, b).numpy())}
    try:
        import torch

        x, y = torch.randn(n, n), torch.randn(n, n)
        out["torch_flops"] = best_rate(lambda: x @ y)
    except ImportError:
        pass
    return out


# ------------------------------------------------------------------------ encoders
def xla_embedder(model, tokenizer, max_length: int, batch_size: int, bucket: int = 32):
    """Our Keras doc tower with the transformer under XLA (`jit_compile=True`).

    The tokenizer (tensorflow-text) has no XLA kernels, so it runs in a plain graph; ids are
    padded to `batch_size` rows and a multiple of `bucket` columns (pads are masked out), so
    XLA compiles max_length / bucket shapes instead of one per batch shape. `warm_up()`
    compiles them all before timing.
    """
    import tensorflow as tf

    from deepseek_tf.retrieval.embedders import Embedder

    tower = model.doc_tower
    tokenize = tf.function(lambda t: tokenizer(t, max_length), input_signature=[tf.TensorSpec([None], tf.string)])
    encode = tf.function(lambda ids: tower(ids, training=False), jit_compile=True)
    widths = sorted({min(w, max_length) for w in range(bucket, max_length + bucket, bucket)})

    class XlaEmbedder(Embedder):
        name = "keras-xla"

        def _encode(self, texts: list[str], tower_name: str) -> np.ndarray:
            ids = tokenize(tf.constant(texts))
            rows, width = len(texts), int(ids["token_ids"].shape[1])
            target = next(w for w in widths if w >= width)
            ids = {k: tf.pad(v, [[0, batch_size - rows], [0, target - width]]) for k, v in ids.items()}
            return encode(ids).numpy()[:rows]  # (rows, dim)

        def warm_up(self) -> None:
            for w in widths:
                encode(
                    {
                        "token_ids": tf.ones([batch_size, w], tf.int32),
                        "padding_mask": tf.ones([batch_size, w], tf.bool),
                        "segment_ids": tf.zeros([batch_size, w], tf.int32),
                    }
                )

    return XlaEmbedder()


def encoders(args, workdir: Path) -> tuple[list[tuple[str, str, object]], list[dict], object]:
    """(system, kind, fn(texts) -> (N, D)) for every encoder, and rows for those that could not
    be built (with the reason). Exports (SavedModel, TFLite) happen here, outside the timing."""
    from deepseek_tf.export.saved_model import export_saved_model
    from deepseek_tf.retrieval.artifacts import load_embedder
    from deepseek_tf.retrieval.embedders import SavedModelEmbedder

    bs, L = args.batch_size, args.max_length
    keras_emb = load_embedder(PRESET, engine="keras")  # the Keras rows; the default engine is in encode_peers
    st = sentence_transformer(L)
    systems = [
        (
            "sentence-transformers (PyTorch fp32)",
            "peer",
            lambda t: st.encode(t, batch_size=bs, convert_to_numpy=True, show_progress_bar=False),
        ),
        ("deepseek_tf Keras (graph)", "keras", lambda t: keras_emb.encode(t, "doc", bs)),
    ]
    if args.xla:
        xla = xla_embedder(keras_emb.model, keras_emb.tokenizer, L, bs)
        log("  compiling the XLA shapes ...")
        xla.warm_up()
        systems.append(("deepseek_tf Keras + XLA", "keras_xla", lambda t: xla.encode(t, "doc", bs)))
    failed = []
    saved = workdir / "saved_model"
    log("  exporting the SavedModel ...")
    export_saved_model(PRESET, saved)
    sm = SavedModelEmbedder(saved)
    systems.append(("deepseek_tf SavedModel", "saved_model", lambda t: sm.encode(t, "doc", bs)))
    for quantize, kind, label in (
        ("none", "tflite_fp32", "deepseek_tf TFLite float32"),
        ("dynamic", "tflite_dynamic", "deepseek_tf TFLite dynamic int8"),
    ):
        try:
            from deepseek_tf.export.tflite import convert
            from deepseek_tf.retrieval.tflite import TFLiteEmbedder

            log(f"  converting TFLite ({quantize}) ...")
            path = workdir / f"doc-{quantize}.tflite"
            path.write_bytes(convert(saved, "encode_doc", quantize))  # the doc tower only: it is what we time
            emb = TFLiteEmbedder(path, num_threads=args.threads)
        except (ImportError, UserError) as e:
            failed.append({"system": label, "kind": kind, "measured": False, "note": f"not measured: {e}"})
            continue
        systems.append((label, kind, lambda t, e=emb: e.encode(t, "doc", bs)))
    return systems, failed, keras_emb


def bench_encoders(texts: list[str], args, workdir: Path, matmul: dict) -> tuple[list[dict], dict, np.ndarray, object]:
    """Encode throughput of every system over all `texts`.

    The texts are cut into `args.rounds` strided slices (same length mix in each) and every
    round runs every system on its slice in turn, so a burst of load from other processes
    hits all systems alike instead of whichever ran at that moment. The matmul rate is measured
    again each round and `matmul` keeps the best seen (a conservative share). Each system first
    encodes the widest batch once, untimed (graph tracing, buffer allocation).
    """
    import tensorflow as tf

    bs, L = args.batch_size, args.max_length
    systems, failed, keras_emb = encoders(args, workdir)
    lengths = np.sum(np.asarray(keras_emb.tokenizer(tf.constant(texts), L)["padding_mask"]), axis=1)  # (N,)
    n_tokens = int(lengths.sum())  # non-pad tokens, [CLS]/[SEP] included: what every system computes on
    warm = sorted(texts, key=len)[-bs:]
    for _, _, fn in systems:
        fn(warm)
    rounds = max(1, min(args.rounds, len(texts) // bs))
    seconds = {kind: [] for _, kind, _ in systems}
    vecs = {kind: np.zeros((len(texts), 0), np.float32) for _, kind, _ in systems}
    for r in range(rounds):
        again = matmul_rate(matmul["n"], repeats=2, rounds=1)
        matmul.setdefault("round_tf_flops", []).append(again["tf_flops"])
        for key in ("tf_flops", "torch_flops"):
            if key in again:
                matmul[key] = max(matmul.get(key, 0.0), again[key])
        idx = np.arange(r, len(texts), rounds)
        part = [texts[i] for i in idx]
        for system, kind, fn in systems if r % 2 == 0 else systems[::-1]:  # no system always goes first
            log(f"  encode round {r + 1}/{rounds}: {system} ...")
            start = time.perf_counter()
            out = np.asarray(fn(part), np.float32)  # (len(part), dim)
            seconds[kind].append(time.perf_counter() - start)
            if vecs[kind].shape[1] == 0:
                vecs[kind] = np.zeros((len(texts), out.shape[1]), np.float32)
            vecs[kind][idx] = out
    rows = []
    for system, kind, _ in systems:
        row = encode_row(system, kind, len(texts), n_tokens, sum(seconds[kind]), vecs[kind], vecs["peer"])
        row["round_seconds"] = seconds[kind]
        rows.append(row)
    stats = {
        "texts": len(texts),
        "tokens": n_tokens,
        "mean_tokens": n_tokens / len(texts),
        "token_weighted_length": token_weighted_length(lengths),
        "max_length": L,
        "batch_size": bs,
        "rounds": rounds,
    }
    return rows + failed, stats, vecs["keras"], keras_emb


# ------------------------------------------------------------------------ search
def bench_search(queries: np.ndarray, docs: np.ndarray, k: int = 10, min_seconds: float = 1.0) -> dict:
    """Queries/s of our exact_search and faiss.IndexFlatIP on the same vectors (best of repeats)."""
    import faiss

    from deepseek_tf.retrieval.knn import exact_search

    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(np.ascontiguousarray(docs, np.float32))
    q = np.ascontiguousarray(queries, np.float32)

    def rate(fn) -> tuple[float, np.ndarray]:
        result = fn()  # warm-up (traces the TF function)
        best, spent = float("inf"), 0.0
        while spent < min_seconds:
            start = time.perf_counter()
            result = fn()
            took = time.perf_counter() - start
            best, spent = min(best, took), spent + took
        return len(q) / best, result

    ours, (_, i_ours) = rate(lambda: exact_search(q, docs, k))
    peer, (_, i_peer) = rate(lambda: index.search(q, k))
    return {
        "queries": len(q),
        "docs": len(docs),
        "k": k,
        "ours_qps": ours,
        "peer_qps": peer,
        "same_top_k": float(np.mean(np.all(i_ours == i_peer, axis=1))),
    }


# ------------------------------------------------------------------------ driver
def load_texts(dataset: Path) -> tuple[list[str], list[str]]:
    from deepseek_tf.data import load_beir

    if not (dataset / "corpus.jsonl").is_file():
        raise UserError(
            f"--dataset {dataset}: no corpus.jsonl there (the benchmark needs a BEIR directory, "
            "e.g. ../shared/data/cranfield)"
        )
    beir = load_beir(dataset, "train", unknown_ids="drop")
    return [beir.doc_text(d) for d in sorted(beir.corpus, key=str)], list(beir.queries.values())


def run(args) -> dict:
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

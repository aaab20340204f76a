"""`deepseek-tf serve --index DIR`: the HTTP search service over a built index."""

from __future__ import annotations

import argparse
import os
import sys

from deepseek_tf.answer.flags import add_generator_arguments, generator_settings
from deepseek_tf.answer.prompt import load_template
from deepseek_tf.console import command_parser
from deepseek_tf.errors import UserError, cli_entry
from deepseek_tf.export.serving import DEFAULT_RERANK_RUNTIME, RERANK_RUNTIMES
from deepseek_tf.retrieval.engines import add_engine_argument
from deepseek_tf.serve.auth import API_KEY_ENV, load_api_key
from deepseek_tf.serve.limits import ConnectionLimits, Limits, is_loopback

LIMITS, CONNECTIONS = Limits(), ConnectionLimits()  # the defaults, declared once (serve.limits)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = command_parser(
        "serve",
        "HTTP search service over an index built by `deepseek-tf index` (its manifest names the model): "
        "POST /search, POST /embed, GET /health, GET /metrics (Prometheus), POST /admin/reload; "
        "OpenAI's POST /v1/embeddings and GET /v1/models, text-embeddings-inference's POST /rerank; "
        "with --generator-url, POST /answer (answers with numbered sources from an OpenAI-compatible "
        "chat-completions server). "
        "SIGHUP re-reads the index being served; SIGTERM finishes in-flight requests, then exits.",
        [
            "deepseek-tf serve --index runs/cranfield_built --port 8000",
            "deepseek-tf serve --index runs/qbqtc_built --rerank runs/cross_encoder_minilm/model --max-batch 32",
            'curl -s localhost:8000/search -H \'Content-Type: application/json\' -d \'{"query": "heat transfer", "k": 5, "mode": "hybrid"}\'',  # noqa: E501 (a command to copy whole)
            "deepseek-tf serve --index runs/cranfield_built --generator-url http://127.0.0.1:8080 --generator-model m",
            'curl -s localhost:8000/answer -H \'Content-Type: application/json\' -d \'{"question": "what causes flutter?", "k": 5}\'',  # noqa: E501 (a command to copy whole)
        ],
    )
    p.add_argument("--index", required=True, help="built index directory (deepseek-tf index --output DIR)")
    p.add_argument(
        "--rerank",
        metavar="MODEL",
        help='cross-encoder (trained model/ dir, SavedModel or .tflite) for requests with "rerank": true',
    )
    p.add_argument(
        "--rerank-runtime",
        choices=list(RERANK_RUNTIMES),
        default=DEFAULT_RERANK_RUNTIME,
        help="how --rerank serves a trained model/ dir: "
        + "; ".join(f"{k}: {v}" for k, v in RERANK_RUNTIMES.items())
        + f" (default: {DEFAULT_RERANK_RUNTIME}: within 0.001 nDCG@10 of Keras on QBQTC dev, 2.5x faster)",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; any other needs an API key unless --no-admin)",
    )
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument(
        "--max-batch",
        type=int,
        default=16,
        help="most queries per encoder call (default: 16; with --batch-workers 2, two batches run side by side)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=2.0,
        help="how long a query waits for others to join its batch (default: 2.0)",
    )
    p.add_argument(
        "--batch-workers",
        type=int,
        default=2,
        help="threads that run batches, so one is gathered while another is in the model (default: 2)",
    )
    p.add_argument("--no-batching", action="store_true", help="encode each query in its own model call")
    p.add_argument(
        "--cache-size",
        type=int,
        default=10000,
        help="entries in each LRU cache, query embeddings and results (default: 10000; 0 = off)",
    )
    p.add_argument("--no-cache", action="store_true", help="same as --cache-size 0")
    p.add_argument("--rerank-depth", type=int, default=100, help="candidates the cross-encoder rescores (default: 100)")
    p.add_argument(
        "--hybrid-depth",
        type=int,
        default=100,
        help="depth of the dense and BM25 runs fused in hybrid mode (default: 100)",
    )
    p.add_argument(
        "--max-k", type=int, default=LIMITS.max_k, help=f"largest k a request may ask for (default: {LIMITS.max_k})"
    )
    p.add_argument(
        "--max-query-chars",
        type=int,
        default=LIMITS.max_query_chars,
        help=f"longest query accepted (default: {LIMITS.max_query_chars})",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=LIMITS.max_body_bytes,
        help=f"largest request body (default: {LIMITS.max_body_bytes})",
    )
    p.add_argument(
        "--max-embed-chars",
        type=int,
        default=None,
        help="most characters, all texts together, in one /embed request (default: a quarter of --max-body-bytes)",
    )
    p.add_argument(
        "--read-timeout",
        type=float,
        default=CONNECTIONS.read_timeout,
        help="seconds a client has to send a whole request, from its first byte, and a new connection "
        f"its first request (default: {CONNECTIONS.read_timeout:g}; then 408 and closed)",
    )
    p.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=CONNECTIONS.keep_alive,
        help=f"seconds an idle keep-alive connection stays open (default: {CONNECTIONS.keep_alive:g})",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=CONNECTIONS.max_connections,
        help="open connections at most; past it the one idle longest is closed (default: "
        f"{CONNECTIONS.max_connections}, lowered to fit ulimit -n)",
    )
    p.add_argument(
        "--workers", type=int, default=8, help="threads for search, BM25, reranking and unbatched encoding (default: 8)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="model calls that run at once (TensorFlow inter-op threads, OpenVINO streams; default: one per core)",
    )
    p.add_argument(
        "--intra-op-threads",
        type=int,
        default=1,
        help="threads per TensorFlow op or OpenVINO call (default: 1: concurrent calls keep the cores busy; 0 = all)",
    )
    add_engine_argument(p)
    p.add_argument(
        "--drain-timeout", type=float, default=30.0, help="seconds SIGTERM waits for in-flight requests (default: 30)"
    )
    p.add_argument(
        "--no-admin",
        action="store_true",
        help="no POST /admin/reload and no writes (POST/DELETE /documents); SIGHUP still reloads",
    )
    p.add_argument(
        "--api-key-file",
        metavar="F",
        help="file whose first line is the API key that admin endpoints ask for (Authorization: Bearer KEY); "
        f"else the {API_KEY_ENV} environment variable; required with --host beyond loopback unless --no-admin",
    )
    p.add_argument(
        "--index-root",
        metavar="DIR",
        help="the directory under which /admin/reload may load indexes (default: the one holding --index)",
    )
    p.add_argument("--access-log", action="store_true", help="log every request (off: it costs throughput)")
    add_generator_arguments(p, required=False, concurrency=True)
    return p.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    positive = {
        "--max-batch": args.max_batch,
        "--max-k": args.max_k,
        "--max-query-chars": args.max_query_chars,
        "--max-body-bytes": args.max_body_bytes,
        "--max-connections": args.max_connections,
        "--workers": args.workers,
        "--rerank-depth": args.rerank_depth,
        "--hybrid-depth": args.hybrid_depth,
        "--batch-workers": args.batch_workers,
    }
    if args.max_embed_chars is not None:
        positive["--max-embed-chars"] = args.max_embed_chars
    for flag, value in positive.items():
        if value < 1:
            raise UserError(f"{flag} must be >= 1, not {value}", exit_code=2)
    for flag, value in {
        "--max-wait-ms": args.max_wait_ms,
        "--cache-size": args.cache_size,
        "--threads": args.threads,
        "--intra-op-threads": args.intra_op_threads,
        "--drain-timeout": args.drain_timeout,
    }.items():
        if value < 0:
            raise UserError(f"{flag} must be >= 0, not {value}", exit_code=2)
    for flag, value in {"--read-timeout": args.read_timeout, "--keep-alive-timeout": args.keep_alive_timeout}.items():
        if not value > 0 or value == float("inf"):
            raise UserError(f"{flag} must be a number of seconds > 0, not {value}", exit_code=2)
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be in 0..65535, not {args.port}", exit_code=2)


def check_exposure(host: str, admin: bool, api_key: str | None) -> None:
    """Beyond loopback, anyone who can reach the port can call the service: refuses to start with
    admin endpoints open to them (no API key), and warns that the traffic is not encrypted."""
    if is_loopback(host):
        return
    if admin and api_key is None:
        raise UserError(
            f"--host {host} reaches beyond this machine: give --api-key-file F (or set {API_KEY_ENV}) "
            "to protect /admin/reload and /documents (writes), or pass --no-admin",
            exit_code=2,
        )
    print(
        f"warning: listening on {host}, beyond this machine, over plain HTTP: put a TLS reverse proxy in front "
        "(docs/serving.md#security)",
        file=sys.stderr,
    )


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_args(args)
    generator = generator_settings(args)  # None: no /answer
    template = load_template(args.prompt_template) if generator is not None else None
    api_key = load_api_key(args.api_key_file)
    check_exposure(args.host, not args.no_admin, api_key)
    if args.index_root is not None and not os.path.isdir(args.index_root):
        raise UserError(f"--index-root {args.index_root}: no such directory", exit_code=2)
    # faiss's OpenMP workers spin while idle by default; in a server they would take the cores the
    # event loop and the encoder need. Read once, when faiss first runs: set before any index loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError("the HTTP service needs FastAPI and uvicorn: pip install 'deepseek_tf[serve]'") from None
    from deepseek_tf.serve.server import bind, configure_threads, run_server
    from deepseek_tf.serve.service import SearchService, ServiceOptions

    bind(args.host, args.port).close()  # a busy port fails now, before a model loads for seconds
    configure_threads(args.threads, args.intra_op_threads, args.engine)
    options = ServiceOptions(
        batching=not args.no_batching,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        cache_size=0 if args.no_cache else args.cache_size,
        rerank_depth=args.rerank_depth,
        hybrid_depth=args.hybrid_depth,
        workers=args.workers,
        batch_workers=args.batch_workers,
    )
    rerank = args.rerank
    if rerank is not None:
        from deepseek_tf.export.serving import serving_reranker

        rerank = serving_reranker(rerank, args.rerank_runtime, say=lambda line: print(line, file=sys.stderr))
    service = SearchService.open(args.index, rerank, options)
    if generator is not None:
        from deepseek_tf.answer.flow import Answerer

        service.answerer = Answerer(generator, template, on_call=service.metrics.observe_generator)
    limits = Limits(
        max_k=args.max_k,
        max_query_chars=args.max_query_chars,
        max_body_bytes=args.max_body_bytes,
        max_embed_chars=args.max_embed_chars or 0,
    )
    connections = ConnectionLimits(
        read_timeout=args.read_timeout, keep_alive=args.keep_alive_timeout, max_connections=args.max_connections
    )
    return run_server(
        service,
        args.host,
        args.port,
        limits,
        admin=not args.no_admin,
        drain_timeout=args.drain_timeout,
        access_log=args.access_log,
        connections=connections,
        api_key=api_key,
        index_root=args.index_root,
    )

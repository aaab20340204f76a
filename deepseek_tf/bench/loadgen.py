"""A closed-loop HTTP load generator: C clients, each sending its next request as soon as the
last one is answered, until a request count or a time limit is reached.

Two clients: `httpx` (an asyncio httpx.AsyncClient, the default) and `raw` (HTTP/1.1 written on
asyncio streams, for when the generator shares the server's cores: httpx spends several times
the server's CPU per request, and on a small machine that caps what can be measured). Both
keep connections alive, as a real caller would. Client-side latency is measured per request;
QPS is answered requests over the wall time of the row. Any non-200 answer or transport error
counts as an error. The generator's own CPU time per request is reported with each row.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import numpy as np


def zipf_stream(items: list, n: int, s: float = 1.1, seed: int = 0, draw: int = 0) -> list:
    """n items drawn with P(rank r) ∝ 1/r^s over a seeded shuffle of `items`: a few queries repeat
    very often and most rarely, as in a search log. Same `seed`, other `draw`: the same popular
    queries, a fresh sample of the stream."""
    order = np.random.default_rng(seed).permutation(len(items))
    weights = 1.0 / np.arange(1, len(items) + 1) ** s
    picks = np.random.default_rng([seed, draw]).choice(len(items), size=n, p=weights / weights.sum())
    return [items[order[i]] for i in picks]


def unique_stream(items: list, n: int, seed: int = 0, offset: int = 0) -> list:
    """n items without repeats, from position `offset` of a seeded shuffle (cycled only past the end)."""
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[order[(offset + i) % len(items)]] for i in range(n)]


def summarize(latencies_s: list[float], errors: int, seconds: float, statuses: Counter) -> dict:
    ms = np.asarray(latencies_s) * 1000.0
    pct = (lambda p: round(float(np.percentile(ms, p)), 2)) if len(ms) else (lambda p: None)
    return {
        "requests": len(latencies_s) + errors,
        "ok": len(latencies_s),
        "errors": errors,
        "seconds": round(seconds, 2),
        "qps": round(len(latencies_s) / max(seconds, 1e-9), 1),
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "mean_ms": round(float(ms.mean()), 2) if len(ms) else None,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


class RawConnection:
    """One keep-alive HTTP/1.1 connection: POST a JSON body, read the status and the whole body."""

    def __init__(self, host: str, port: int, timeout: float):
        self.host, self.port, self.timeout = host, port, timeout
        self.reader = self.writer = None

    async def connect(self) -> None:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(self, path: str, body: bytes) -> int:
        await self.connect()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        try:
            self.writer.write(head + body)
            await self.writer.drain()
            header = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), self.timeout)
            status = int(header[9:12])
            length = 0
            for line in header.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await self.reader.readexactly(length)
            if b"connection: close" in header.lower():
                self.close()
            return status
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _load(
    url: str,
    path: str,
    bodies: list[dict],
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    timeout: float,
    client: str = "httpx",
) -> dict:
    import json
    from urllib.parse import urlsplit

    import httpx

    latencies: list[float] = []
    statuses: Counter = Counter()
    errors = 0
    sent = 0
    cpu0 = time.process_time()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as pool:
        where = urlsplit(url)
        encoded = [json.dumps(b).encode() for b in bodies] if client == "raw" else None
        conns = [
            RawConnection(where.hostname, where.port, timeout) if client == "raw" else None for _ in range(concurrency)
        ]
        # connected before the clock starts: a row times requests, not 32 simultaneous TCP handshakes
        await asyncio.gather(*(c.connect() for c in conns if c is not None))
        start = time.perf_counter()
        deadline = start + max_seconds

        async def client_loop(conn: RawConnection | None) -> None:
            nonlocal sent, errors
            while sent < max_requests and time.perf_counter() < deadline:
                i = sent % len(bodies)
                sent += 1
                t0 = time.perf_counter()
                try:
                    if conn is not None:
                        status = await conn.post(path, encoded[i])
                    else:
                        status = (await pool.post(path, json=bodies[i])).status_code
                except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
                    status = type(e).__name__
                statuses[status] += 1
                if status == 200:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1
            if conn is not None:
                conn.close()

        await asyncio.gather(*(client_loop(c) for c in conns))
        seconds = time.perf_counter() - start
    out = summarize(latencies, errors, seconds, statuses)
    out["client_cpu_ms_per_request"] = round((time.process_time() - cpu0) * 1000 / max(1, out["requests"]), 3)
    return out


def run_load(
    url: str,
    bodies: list[dict],
    concurrency: int,
    max_requests: int = 2000,
    max_seconds: float = 20.0,
    path: str = "/search",
    timeout: float = 60.0,
    client: str = "httpx",
) -> dict:
    """One row: {concurrency, client, requests, ok, errors, seconds, qps, p50_ms, p95_ms, p99_ms, mean_ms,
    statuses, client_cpu_ms_per_request}."""
    if client not in ("httpx", "raw"):
        raise ValueError(f"client must be httpx or raw, not {client!r}")
    try:
        import uvloop  # the generator's own event loop costs less CPU on uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    out = runner(_load(url, path, bodies, concurrency, max_requests, max_seconds, timeout, client))
    return {"concurrency": concurrency, "client": client, **out}

"""A bounded loopback burst against a running service: CLIENTS keep-alive connections for SECONDS,
good requests mixed with hostile ones (deep JSON, lone surrogates, duplicate keys, malformed
request lines, oversized /embed work, clients hanging up mid-body, clients trickling bytes).

It passes when every good request is answered exactly as it is answered alone, no answer is a
5xx and every hostile request gets the 4xx it should; it reports the server's RSS growth.

    python -m deepseek_tf.serve.soak --index DIR [--clients 64] [--seconds 20] [--output soak.json]

starts `deepseek-tf serve --index DIR` on a free loopback port and drives it (`make soak`).
`run_burst` drives a server that is already running (the test suite's, in-process).

The client is a plain socket, not the benchmark's load generator (`bench.loadgen`, which sits
above this package and sends only well-formed requests): a hostile client sends any bytes."""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import select
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

HOST = "127.0.0.1"


def request(
    method: str, path: str, body: bytes | str | dict | None = None, headers: dict | None = None, chunked: bool = False
) -> bytes:
    """The bytes of one HTTP/1.1 request (a dict body as JSON, Content-Type application/json)."""
    if isinstance(body, dict):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode("utf-8", "surrogatepass")
    head = {"Host": HOST}
    if body is not None:
        head["Content-Type"] = "application/json"
        if chunked:
            head["Transfer-Encoding"] = "chunked"
        else:
            head["Content-Length"] = str(len(body))
    head.update(headers or {})
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in head.items()), "", ""]
    data = "\r\n".join(lines).encode("latin-1")
    if body is not None and chunked:
        body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:7], body[7:]) if part) + b"0\r\n\r\n"
    return data + (body or b"")


class RawHTTP:
    """One keep-alive connection on which any bytes can be sent and the answers read back."""

    def __init__(self, port: int, timeout: float = 30.0, host: str = HOST):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read_more(self) -> bytes:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return chunk

    def response(self, head: bool = False) -> tuple[int, dict, bytes]:
        """(status, headers with lower-case names, body) of the next answer; `head`: no body follows."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._read_more():
                raise ConnectionError("the server closed the connection without an answer")
        header, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        length = 0 if head else int(headers.get("content-length", 0))
        while len(self.buffer) < length:
            if not self._read_more():
                raise ConnectionError("the server closed the connection in the middle of an answer")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def exchange(self, data: bytes, head: bool = False) -> tuple[int, dict, bytes]:
        self.send(data)
        return self.response(head)

    def closed_by_server(self, wait: float = 5.0) -> bool:
        """True when the server closes the connection within WAIT seconds (nothing else is sent)."""
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionError:
            return True

    def close(self) -> None:
        self.sock.close()


DEEP = 10_000
# (what, request, status, error code, the server closes the connection after answering)
HOSTILE = [
    ("arrays 10,000 deep", request("POST", "/search", "[" * DEEP + "]" * DEEP), 400, "invalid_json", False),
    ("objects 10,000 deep", request("POST", "/search", '{"a":' * DEEP + "1" + "}" * DEEP), 400, "invalid_json", False),
    (
        "k as arrays 10,000 deep",
        request("POST", "/search", '{"query": "heat", "k": ' + "[" * DEEP + "]" * DEEP + "}"),
        400,
        "invalid_json",
        False,
    ),
    ("lone surrogate, dense", request("POST", "/search", r'{"query": "heat \ud800"}'), 422, "invalid_request", False),
    (
        "lone surrogate, hybrid",
        request("POST", "/search", r'{"query": "\ud800", "mode": "hybrid"}'),
        422,
        "invalid_request",
        False,
    ),
    ("lone surrogate, /embed", request("POST", "/embed", r'{"texts": ["a\udfff"]}'), 422, "invalid_request", False),
    ("duplicate key", request("POST", "/search", '{"query": "heat", "k": "ten", "k": 2}'), 400, "invalid_json", False),
    ("malformed request line", b"GARBAGE\r\n\r\n", 400, "bad_request", True),
    (
        "Content-Length: -1",
        b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n",
        400,
        "bad_request",
        True,
    ),
    (
        "/embed: 60 documents of 1,000 characters",
        request("POST", "/embed", {"texts": ["flow " * 200] * 60, "tower": "doc"}),
        422,
        "invalid_request",
        False,
    ),
    ("unknown path", request("POST", "/query", {"query": "heat"}), 404, "not_found", True),
]


def rss_mb(pid: int) -> float:
    """Resident memory of process PID in MiB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def run_burst(
    port: int,
    good: list[tuple[bytes, object]],
    clients: int = 64,
    seconds: float = 20.0,
    hostile_every: int = 3,
    slow_clients: int = 4,
    server_pid: int | None = None,
) -> dict:
    """Drives the server on PORT. GOOD: (request, a check of its parsed JSON answer) pairs, as
    `expectations` makes them. One request in HOSTILE_EVERY is hostile (or a client hanging up
    mid-body); SLOW_CLIENTS more connections trickle a byte a second until the server closes them."""
    deadline = time.monotonic() + seconds
    counts: Counter = Counter()
    problems: list[str] = []
    lock = threading.Lock()
    before = rss_mb(server_pid) if server_pid else None

    def note(key: str, problem: str | None = None) -> None:
        with lock:
            counts[key] += 1
            if problem and len(problems) < 20:
                problems.append(problem)

    def client(i: int) -> None:
        rng = random.Random(i)
        conn = None
        n = 0
        while time.monotonic() < deadline:
            n += 1
            try:
                conn = conn or RawHTTP(port)
                if n % hostile_every == 0:
                    choice = rng.randrange(len(HOSTILE) + 1)
                    if choice == len(HOSTILE):  # a client hanging up mid-body
                        conn.send(request("POST", "/search", {"query": "heat transfer"})[:-5])
                        conn.close()
                        conn = None
                        note("hung_up")
                        continue
                    what, data, status, code, closes = HOSTILE[choice]
                    got, headers, body = conn.exchange(data)
                    note("hostile")
                    if got >= 500:
                        note("5xx", f"{what}: {got}")
                    ok = got == status and json.loads(body)["error"]["code"] == code
                    if not ok:
                        note("hostile_wrong", f"{what}: {got} {body[:100]!r}")
                    if headers.get("connection", "").lower() == "close":
                        conn.close()
                        conn = None
                    continue
                data, expect = good[rng.randrange(len(good))]
                note("good")
                got, headers, body = conn.exchange(data, head=data.startswith(b"HEAD"))
                if got >= 500:
                    note("5xx", f"good request: {got}")
                if got == 200 and expect(json.loads(body) if body else None):
                    note("good_ok")
                else:
                    note("good_wrong", f"good request: {got} {body[:100]!r}")
                if headers.get("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, ValueError) as e:  # ConnectionError, timeouts, a body that is not JSON
                note("client_errors", f"client {i}: {e.__class__.__name__}: {e}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def slow(i: int) -> None:
        data = request("POST", "/search", {"query": "heat"})
        while time.monotonic() < deadline:
            conn = None
            try:
                conn = RawHTTP(port)
                for byte in data:
                    if time.monotonic() > deadline:
                        break
                    conn.send(bytes([byte]))
                    if select.select([conn.sock], [], [], 1.0)[0]:  # a 408 or the end: the read deadline at work
                        note("slow_closed")
                        break
            except OSError:
                note("slow_closed")
            finally:
                if conn is not None:
                    conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    threads += [threading.Thread(target=slow, args=(i,), daemon=True) for i in range(slow_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    after = rss_mb(server_pid) if server_pid else None
    good_n = counts["good"]
    return {
        "clients": clients,
        "seconds": seconds,
        "good": good_n,
        "good_answered_pct": round(100.0 * counts["good_ok"] / good_n, 3) if good_n else 0.0,
        "hostile": counts["hostile"],
        "hostile_as_expected": counts["hostile"] - counts["hostile_wrong"],
        "hung_up": counts["hung_up"],
        "slow_closed": counts["slow_closed"],
        "status_5xx": counts["5xx"],
        "client_errors": counts["client_errors"],
        "rss_mb_before": round(before, 1) if before else None,
        "rss_mb_after": round(after, 1) if after else None,
        "rss_growth_mb": round(after - before, 1) if before else None,
        "problems": problems,
    }


def passed(report: dict) -> bool:
    return (
        report["good"] > 0
        and report["good_answered_pct"] == 100.0
        and report["status_5xx"] == 0
        and report["hostile_as_expected"] == report["hostile"]
    )


def _close(a: list[float], b: list[float], tol: float = 1e-5) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


def same_results(alone: dict) -> Callable[[dict], bool]:
    """A check that an answer holds the documents of ALONE in its order, scores to 1e-5 (a query
    encoded in a batch gets its lone vector to 1e-7)."""
    ids, scores = [h["id"] for h in alone["results"]], [h["score"] for h in alone["results"]]

    def check(body: dict) -> bool:
        return [h["id"] for h in body["results"]] == ids and _close([h["score"] for h in body["results"]], scores)

    return check


def same_embeddings(alone: dict) -> Callable[[dict], bool]:
    rows = alone["embeddings"]
    return lambda body: len(body["embeddings"]) == len(rows) and all(map(_close, body["embeddings"], rows))


def expectations(port: int, queries: list[str]) -> list[tuple[bytes, object]]:
    """Good requests, each with a check that its answer is the one it gets alone (asked now)."""
    good = []
    conn = RawHTTP(port)
    for q in queries:
        for mode in ("dense", "bm25", "hybrid"):
            data = request("POST", "/search", {"query": q, "k": 5, "mode": mode})
            good.append((data, same_results(json.loads(conn.exchange(data)[2]))))
        data = request("POST", "/embed", {"texts": [q]})
        good.append((data, same_embeddings(json.loads(conn.exchange(data)[2]))))
    good.append((request("GET", "/health"), lambda body: body["status"] == "ok"))
    good.append((request("HEAD", "/health"), lambda body: body is None))
    conn.close()
    return good


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deepseek_tf.serve.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--index", required=True, help="built index directory to serve")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--read-timeout", type=float, default=2.0, help="the server's --read-timeout (default: 2)")
    p.add_argument("--output", help="write the report here as JSON")
    args = p.parse_args(argv)
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepseek_tf.cli", "serve", "--index", args.index, "--port", "0"]
        + ["--read-timeout", str(args.read_timeout)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = None
        for line in proc.stderr:
            sys.stderr.write(line)
            m = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        if port is None:
            print("error: the server did not start", file=sys.stderr)
            return 1
        log: list[str] = []
        drain = threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True)  # keeps its pipe drained
        drain.start()
        queries = ["heat transfer", "boundary layer transition", "supersonic jet noise", "buckling of shells"]
        good = expectations(port, queries)
        report = run_burst(port, good, args.clients, args.seconds, server_pid=proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
    drain.join(10)
    # the server's log: a hostile request is a one-line warning at most, never a traceback
    report["server_log_lines"] = len(log)
    report["server_tracebacks"] = sum("Traceback" in line for line in log)
    report["server_errors"] = sum(line.startswith("ERROR") for line in log)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    return 0 if passed(report) and report["server_tracebacks"] == report["server_errors"] == 0 else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())

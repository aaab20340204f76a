"""The serving benchmark's parts: query streams, the load generator against a live server on
127.0.0.1 (a fake index in a thread), and the report's batching ratio and table."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter

import pytest
from serve_fakes import FakeIndex

pytest.importorskip("fastapi")

from deepseek_tf.bench.loadgen import run_load, unique_stream, zipf_stream  # noqa: E402
from deepseek_tf.bench.serve_report import batching_ratio, render_serve_markdown  # noqa: E402


def test_zipf_stream_repeats_popular_items_and_unique_stream_does_not():
    items = [f"q{i}" for i in range(1000)]
    stream = zipf_stream(items, 5000, s=1.1, seed=0, draw=1)
    counts = Counter(stream)
    top, n = counts.most_common(1)[0]
    assert top == items[int(__import__("numpy").random.default_rng(0).permutation(1000)[0])]  # rank 1 of the shuffle
    # P(rank 1) = 1 / H(1000, 1.1) with H = sum r^-1.1 ≈ 5.28 (hand sum): about 947 of 5000
    assert 850 < n < 1050
    assert zipf_stream(items, 5000, seed=0, draw=1) == stream and zipf_stream(items, 5000, seed=0, draw=2) != stream
    assert Counter(zipf_stream(items, 5000, seed=0, draw=2)).most_common(1)[0][0] == top  # same popular query
    first, second = unique_stream(items, 600, offset=0), unique_stream(items, 400, offset=600)
    assert len(set(first + second)) == 1000  # disjoint slices of one shuffle


@pytest.fixture(scope="module")
def live_server():
    import uvicorn

    from deepseek_tf.serve.app import create_app
    from deepseek_tf.serve.service import SearchService, ServiceOptions

    service = SearchService(FakeIndex(), None, ServiceOptions(max_wait_ms=1))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", service
    server.should_exit = True
    thread.join(10)
    service.close()


def test_load_generator_counts_requests_and_errors(live_server):
    url, service = live_server
    bodies = [{"query": "heat transfer", "k": 3}, {"query": "wing flutter", "k": 3}]
    for client in ("httpx", "raw"):
        row = run_load(url, bodies, concurrency=4, max_requests=40, max_seconds=60, client=client)
        assert (row["concurrency"], row["requests"], row["ok"], row["errors"]) == (4, 40, 40, 0)
        assert row["statuses"] == {"200": 40} and row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
        bad = run_load(
            url,
            [{"query": ""}, {"query": "heat", "k": 3}],
            concurrency=2,
            max_requests=10,
            max_seconds=60,
            client=client,
        )
        assert (bad["ok"], bad["errors"], bad["statuses"]) == (5, 5, {"200": 5, "422": 5})
    hits = service.results_cache.hits
    assert run_load(url, bodies, concurrency=1, max_requests=2, max_seconds=60, client="raw")["ok"] == 2
    assert service.results_cache.hits == hits + 2  # the raw client's requests reached the service


def _results(on_32: float, off_32: float) -> dict:
    row = lambda c, qps: {
        "concurrency": c,
        "qps": qps,
        "p50_ms": 1.0,
        "p95_ms": 2.0,
        "p99_ms": 3.0,  # noqa: E731
        "errors": 0,
        "requests": 100,
        "mean_batch": 1.0,
        "results_cache_hit_rate": None,
        "server_cpu_ms_per_request": 1000.0 / qps,
    }
    return {
        "command": "python -m deepseek_tf.bench.serve --quick",
        "cpu": "cpu",
        "threads": 2,
        "requests_per_row": 100,
        "seconds_per_row": 5,
        "load_before": {"cpus": 2, "load_avg_1m": 1.0},
        "qbqtc": {
            "index": "/tmp/i",
            "documents": 10,
            "model": "m",
            "backend": "exact",
            "sections": [
                {"config": "batching off, cache off", "stream": "unique", "rows": [row(1, 50.0), row(32, off_32)]},
                {"config": "batching on, cache off", "stream": "unique", "rows": [row(1, 48.0), row(32, on_32)]},
                {"config": "batching on, cache off", "stream": "zipf", "rows": [row(32, 999.0)]},
            ],
        },
    }


def test_batching_ratio_reads_the_distinct_stream_rows_at_32():
    assert batching_ratio(_results(300.0, 80.0)) == 3.75  # 300 / 80, not the Zipf row's 999
    assert batching_ratio(_results(300.0, 80.0), key="server_cpu_ms_per_request") == 3.75  # 12.5 / 3.33 ms
    text = render_serve_markdown(_results(300.0, 80.0))
    assert "**3.75×**" in text and "| batching on, cache off | distinct | httpx | 32 | 300.0 |" in text

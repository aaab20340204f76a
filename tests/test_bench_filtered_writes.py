"""The filtered-search bench (small corpus, exact backend) and the writes-under-load part of the
serving bench against a fake index that takes upserts."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from serve_fakes import FakeIndex, serving

from deepseek_tf.bench import filtered


def test_filtered_bench_scores_every_selectivity_and_writes_its_table(tmp_path):
    columns, values = filtered.tag_columns(2000, (0.01, 0.5))
    from deepseek_tf.index.filters import evaluate

    assert [int(evaluate({"tag": values[s]}, columns).sum()) for s in (0.01, 0.5)] == [20, 1000]
    code = filtered.main(
        ["--n", "2000", "--centres", "16", "--queries", "20", "--backends", "exact", "--shares", "0.01", "0.5"]
        + ["--cache", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "out")]
    )
    result = json.loads((tmp_path / "out" / "filtered.json").read_text())
    assert code == 0 and result["passed"]
    assert [(r["selectivity"], r["plan"], r["recall_at_10"]) for r in result["rows"]] == [
        (0.01, "gather", 1.0),
        (0.5, "scan", 1.0),  # over SCAN_SHARE of the rows
    ]
    assert all(r["rows_outside_filter"] == 0 and r["short_answers"] == 0 for r in result["rows"])
    text = (tmp_path / "out" / "filtered.md").read_text()
    assert "| exact | 50% | 1,000 | scan | 1.0000 |" in text and "python -m deepseek_tf.bench.filtered --n 2000" in text


def test_brute_force_is_the_top_k_of_the_passing_rows():
    from deepseek_tf.index.dense import ShardedVectors

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    q = rng.standard_normal((3, 8)).astype(np.float32)
    rows = np.sort(rng.choice(300, 120, replace=False))
    got = filtered.brute_force(q, ShardedVectors([x[:100], x[100:]]), rows, 5, block=7)
    want = rows[np.argsort(-(q @ x[rows].T), axis=1)[:, :5]]
    np.testing.assert_array_equal(got, want)


class WritableIndex(FakeIndex):
    """A fake index whose upserts only count (the service calls `upsert` in a worker thread)."""

    def __init__(self):
        super().__init__()
        self.upserted: list[str] = []

    def upsert(self, docs: list[dict]) -> dict:
        self.upserted += [d["_id"] for d in docs]
        return {"upserted": len(docs), "seq": len(self.upserted)}


def test_writes_under_load_counts_writes_and_stops_the_queries_with_them():
    pytest.importorskip("fastapi")
    from deepseek_tf.bench.serve_report import render_serve_markdown
    from deepseek_tf.bench.serve_writes import _writes_under_load, write_bodies
    from deepseek_tf.serve.app import create_app
    from deepseek_tf.serve.service import SearchService, ServiceOptions

    bodies = write_bodies([f"text {i}" for i in range(10)], 4, "new-")
    assert [len(b["documents"]) for b in bodies] == [4, 4, 2] and bodies[2]["documents"][-1]["_id"] == "new-9"
    index = WritableIndex()
    service = SearchService(index, None, ServiceOptions(max_wait_ms=1))
    try:
        with serving(create_app(service)) as port:
            url = f"http://127.0.0.1:{port}"
            queries = [{"query": "heat transfer", "k": 3}]
            queried, written, finished = asyncio.run(_writes_under_load(url, queries, bodies, 2, timeout=30))
    finally:
        service.close()
    assert index.upserted == [f"new-{i}" for i in range(10)]
    assert (written["ok"], written["errors"], len(finished)) == (3, 0, 3) and finished == sorted(finished)
    assert queried["errors"] == 0 and queried["ok"] >= 1 and queried["seconds"] == written["seconds"]
    row = {
        "documents_per_request": 4,
        "write_requests": 3,
        "write_errors": 0,
        "upserted": 10,
        "upserts_per_s": 5.0,
        "upserts_per_s_first_quarter": None,
        "upserts_per_s_last_quarter": None,
        "write_p50_ms": written["p50_ms"],
        "write_p99_ms": written["p99_ms"],
        "delta_documents": 11,
        "queries_without_writes": {**queried, "qps": 123.0},
        "queries_during_writes": queried,
    }
    writes = {
        "command": "python -m deepseek_tf.bench.serve --skip qbqtc --update",
        "index": "/tmp/i",
        "cpu": "cpu",
        "threads": 2,
        "concurrency": 8,
        "documents_per_row": 10,
        "seconds_without_writes": 5,
        "load_before": {"cpus": 2, "load_avg_1m": 1.0},
        "rows": [row],
    }
    text = render_serve_markdown(
        {"command": "c", "cpu": "cpu", "threads": 2, "requests_per_row": 1, "seconds_per_row": 1, "writes": writes}
    )
    assert "## POST /documents while /search is served at concurrency 8" in text
    assert "| 4 | **5.0** | — | — | 11 |" in text and "| 123.0 |" in text

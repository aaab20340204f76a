"""Writes to a served index: upserts found at once (dense and BM25), deletes never seen again,
filters over written documents, the update log surviving SIGKILL, torn tails and restarts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_catalogue import build, records

NEW = {"_id": "n1", "title": "zorblax quantum phone", "text": "zorblax phone", "brand": "acme"}
NEW.update({"category": "phone", "price": 1500.0, "in_stock": True, "tags": ["phone"]})


@pytest.fixture(scope="module")
def base_index(tiny_run, tmp_path_factory) -> Path:
    corpus = tmp_path_factory.mktemp("live_shop") / "products.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records()))
    out = tmp_path_factory.mktemp("live_index") / "index"
    build(tiny_run, corpus, out)
    return out


@pytest.fixture
def shop(base_index, tmp_path) -> Path:
    """A fresh copy of the catalogue index for each test: the tests write to it."""
    return Path(shutil.copytree(base_index, tmp_path / "index"))


def all_ids(index, k: int = 50) -> dict[str, set[str]]:
    q = index.embedder().encode_queries(["phone"])
    return {
        "dense": {d for d, _ in index.search_dense(q, k)[0]},
        "bm25": {d for d, _ in index.search_bm25(["phone case dress shoes laptop zorblax iphone"], k)[0]},
    }


def test_an_upserted_product_is_found_at_once_by_dense_and_bm25(shop):
    from deepseek_tf.index.live import LiveIndex

    index = LiveIndex.open(shop)
    before = index.count
    out = index.upsert([NEW])
    assert out == {"upserted": 1, "seq": 1} and index.count == before + 1
    assert [d for d, _ in index.search_bm25(["zorblax"], 3)[0]] == ["n1"]  # a term only it has
    own = index.embedder().encode_docs([index.text("n1")])  # (1, dim): its own vector as the query
    assert index.search_dense(own, 1)[0][0][0] == "n1"
    assert index.fields("n1") == {k: v for k, v in NEW.items() if k != "_id"}
    assert np.allclose(own[0] @ own[0], index.search_dense(own, 1)[0][0][1], atol=1e-5)


def test_a_changed_product_replaces_the_old_one_everywhere(shop):
    from deepseek_tf.index.live import LiveIndex

    index = LiveIndex.open(shop)
    n = index.count
    index.upsert([{"_id": "p9", "title": "zorblax trail shoes", "brand": "nike", "price": 99.0, "in_stock": True}])
    assert index.count == n  # replaced, not added
    assert index.fields("p9")["price"] == 99.0 and "zorblax" in index.text("p9")
    hits = index.search_bm25(["trail zorblax"], 20)[0]
    assert [d for d, _ in hits].count("p9") == 1  # the base row is hidden, the new one found
    cheap = index.filter_mask({"price": {"lt": 100}})
    q = index.embedder().encode_queries(["shoes"])
    assert {d for d, _ in index.search_dense(q, 20, cheap)[0]} == {"p0", "p3", "p10", "p9"}


def test_a_deleted_product_never_appears(shop):
    from deepseek_tf.index.live import LiveIndex

    index = LiveIndex.open(shop)
    n = index.count
    assert index.delete(["p3", "nope"])["deleted"] == ["p3"] and index.count == n - 1
    for mode, ids in all_ids(index).items():
        assert "p3" not in ids and len(ids) >= 5, mode
    q = index.embedder().encode_queries(["galaxy phone case shockproof"])
    assert "p3" not in {d for d, _ in index.search_dense(q, 20, index.filter_mask({"brand": "samsung"}))[0]}
    with pytest.raises(KeyError):
        index.text("p3")
    assert index.delete(["p3"])["deleted"] == []
    index.upsert([{"_id": "p3", "title": "galaxy case again"}])  # back, with its new text
    assert index.text("p3") == "galaxy case again" and index.count == n


def test_filters_see_written_documents(shop):
    from deepseek_tf.index.live import LiveIndex

    index = LiveIndex.open(shop)
    index.upsert([NEW])
    q = index.embedder().encode_queries(["phone"])
    got = index.search_dense(q, 10, index.filter_mask({"brand": "acme"}))[0]
    assert [d for d, _ in got] == ["n1"]
    got = index.search_dense(q, 10, index.filter_mask({"brand": "apple", "category": "phone"}))[0]
    assert {d for d, _ in got} == {"p1", "p2"}
    with pytest.raises(Exception, match="price"):
        index.upsert([{"_id": "bad", "title": "x", "price": "cheap"}])
    assert index.seq == 1 and "bad" not in index  # refused whole, nothing logged


def test_delta_bm25_scores_match_a_rebuilt_index(shop):
    """A written document's BM25 score is the one an index built over base + it would give
    (Lucene's formula with the collection's statistics), within the average-length difference."""
    from deepseek_tf.index.live import LiveIndex
    from deepseek_tf.retrieval.bm25 import BM25Index

    index = LiveIndex.open(shop)
    index.upsert([{"_id": "c7", "title": "summer dress floral cotton", "text": "summer dress floral cotton by zara"}])
    query = "floral summer dress"
    got = dict(index.search_bm25([query], 20)[0])
    ids = [r["_id"] for r in records()] + ["c7"]
    texts = [index.text(i) for i in ids]
    rebuilt = BM25Index(analyzer=index.manifest["analyzer"]).index(ids, texts)
    want = dict(rebuilt.search([query], 20)[0])
    assert got["c7"] == pytest.approx(want["c7"], rel=0.03)


def test_writes_survive_a_restart_and_a_torn_tail(shop):
    from deepseek_tf.index.live import LiveIndex
    from deepseek_tf.index.updates import log_path

    index = LiveIndex.open(shop)
    index.upsert([NEW])
    index.delete(["p0"])
    with log_path(shop).open("ab") as f:  # a crash in the middle of the next append
        f.write(b'{"seq": 3, "upsert": [{"id": "half')
    again = LiveIndex.open(shop)
    assert "n1" in again and "p0" not in again and again.seq == 2
    again.upsert([{"_id": "n2", "title": "another zorblax"}])  # cuts the torn tail off first
    lines = log_path(shop).read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3]
    assert "n2" in LiveIndex.open(shop)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_acknowledged_upsert_survives_sigkill(shop):
    """deepseek-tf serve answers 200 to POST /documents, is killed with SIGKILL at once, and the
    product is in the index a new process opens."""
    from deepseek_tf.index.live import LiveIndex

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepseek_tf.cli", "serve", "--index", str(shop), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        r = httpx.post(f"{url}/documents", json={"documents": [NEW]}, timeout=60)
        assert r.status_code == 200, r.text
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    index = LiveIndex.open(shop)
    assert "n1" in index and index.fields("n1")["brand"] == "acme"


@pytest.fixture
def client(shop):
    from deepseek_tf.serve.app import create_app
    from deepseek_tf.serve.service import SearchService, ServiceOptions

    service = SearchService.open(shop, options=ServiceOptions(max_wait_ms=1))
    with TestClient(create_app(service, api_key="sekret")) as c:
        yield c


def test_http_writes_are_searchable_at_once_and_need_the_key(client):
    key = {"Authorization": "Bearer sekret"}
    body = {"query": "zorblax", "k": 3, "mode": "bm25"}
    assert client.post("/search", json=body).json()["results"] == []  # cached now
    assert client.post("/documents", json={"documents": [NEW]}).status_code == 401
    r = client.post("/documents", json={"documents": [NEW]}, headers=key)
    assert r.status_code == 200 and r.json()["upserted"] == 1, r.text
    hits = client.post("/search", json=body).json()["results"]
    assert [h["id"] for h in hits] == ["n1"] and hits[0]["fields"]["brand"] == "acme"
    filtered = client.post("/search", json={"query": "phone", "k": 10, "filter": {"brand": "acme"}}).json()
    assert [h["id"] for h in filtered["results"]] == ["n1"]
    assert client.delete("/documents/n1", headers=key).status_code == 200
    assert client.post("/search", json=body).json()["results"] == []
    assert client.delete("/documents/n1", headers=key).status_code == 404
    bad = client.post("/documents", json={"documents": [{"_id": "x", "title": "t", "price": "cheap"}]}, headers=key)
    assert bad.status_code == 422 and "price" in bad.json()["error"]["message"]
    assert client.get("/health").json()["documents"] == len(records())


def test_index_update_and_compact_from_the_command_line(shop, tmp_path):
    """`index --update` writes a corpus into the log; `index --compact` folds it into a new base
    that answers as the log did; a writer that opened the index before the compaction keeps
    writing, and its write is in the compacted index after a restart."""
    from deepseek_tf.index.cli import main
    from deepseek_tf.index.live import LiveIndex
    from deepseek_tf.index.updates import log_path

    new = tmp_path / "new.jsonl"
    rows = [NEW, {"_id": "p1", "title": "iphone 15 zorblax edition", "brand": "apple", "price": 6999.0}]
    new.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["--update", str(shop), "--corpus", str(new), "--quiet"]) == 0
    live = LiveIndex.open(shop)
    live.delete(["p5"])
    assert live.seq == 2 and "n1" in live and live.fields("p1")["price"] == 6999.0
    q = live.embedder().encode_queries(["zorblax phone", "laptop"])
    before = [[d for d, _ in h] for h in live.search_dense(q, 8)]
    writer = LiveIndex.open(shop)  # a server that loaded the index before the compaction

    mine = shop.with_name(shop.name + ".compact.tmp")
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    assert main(["--compact", str(shop), "--quiet"]) != 0  # refused: not a compaction's leftovers
    assert (mine / "notes.txt").read_text() == "the user's"
    shutil.rmtree(mine)
    assert main(["--compact", str(shop), "--quiet"]) == 0
    compacted = LiveIndex.open(shop)
    assert compacted.delta.docs == {} and not compacted.delta.hidden and not log_path(shop).exists()
    assert compacted.count == live.count and set(compacted.ids) == set(live.ids)
    assert [[d for d, _ in h] for h in compacted.search_dense(q, 8)] == before
    assert compacted.fields("p1")["price"] == 6999.0 and "p5" not in compacted
    acme = compacted.filter_mask({"brand": "acme"})
    assert {compacted.ids[r] for r in np.flatnonzero(acme.base)} == {"n1"}
    assert not list(shop.parent.glob("*.compact*"))  # the old index is gone, nothing half-written left
    # the writer, like a server, answers from the files it loaded: its first text read comes after the swap
    assert {d: (writer.text(d), writer.fields(d)) for d in writer.ids} == {
        d: (compacted.text(d), compacted.fields(d)) for d in compacted.ids
    }

    writer.upsert([{"_id": "n2", "title": "after the compaction"}])
    restarted = LiveIndex.open(shop)
    assert "n2" in restarted and "n1" in restarted and restarted.seq == 3


def test_update_reads_a_corpus_as_the_build_does_with_chosen_fields(tiny_run, tmp_path):
    """`index --update` on an index that stores only some fields: the model reads title + text as a
    build would (not the title twice), and only the chosen fields are kept."""
    from deepseek_tf.index import build_index
    from deepseek_tf.index.compact import update_index
    from deepseek_tf.index.live import LiveIndex

    corpus, new = tmp_path / "base.jsonl", tmp_path / "new.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records()))
    new.write_text(json.dumps(NEW) + "\n")
    build_index(str(tiny_run / "model"), corpus, tmp_path / "idx", verbose=False, fields=["title", "brand"])
    update_index(tmp_path / "idx", new, verbose=False)
    index = LiveIndex.open(tmp_path / "idx")
    assert index.text("n1") == "zorblax quantum phone zorblax phone"
    assert index.fields("n1") == {"title": "zorblax quantum phone", "brand": "acme"}
    assert index.fields("p0") == {"title": "iphone 15 pro case", "brand": "apple"}

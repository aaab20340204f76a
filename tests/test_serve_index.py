"""`deepseek-tf serve` over a real built index (`deepseek_tf.index.build_index` with the tiny
trained model): answers equal the library's search, and the command itself starts, reloads on
SIGHUP, drains on SIGTERM and refuses bad input in one line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

QUERIES = ["summer dress", "lightweight laptop battery", "手机壳 防摔", "coffee grinder"]


@pytest.fixture(scope="module")
def built(tiny_index):
    """tiny_beir's corpus indexed by the tiny model (conftest: built once, shared with test_answer)."""
    return tiny_index


@pytest.fixture(scope="module")
def client(built):
    from deepseek_tf.serve.app import create_app
    from deepseek_tf.serve.service import SearchService, ServiceOptions

    service = SearchService.open(built, options=ServiceOptions(max_wait_ms=1))
    with TestClient(create_app(service)) as c:
        yield c, service
    service.close()


def _search(client, query, k, mode):
    r = client.post("/search", json={"query": query, "k": k, "mode": mode})
    assert r.status_code == 200, r.text
    return [(h["id"], h["score"]) for h in r.json()["results"]]


def _by_score(hits):  # BM25 ties may come in either order
    return sorted(((d, round(s, 4)) for d, s in hits), key=lambda x: (-x[1], x[0]))


def test_answers_equal_the_librarys_search(client, tiny_run, tiny_beir):
    from deepseek_tf.index.corpus import iter_documents
    from deepseek_tf.index.search import search
    from deepseek_tf.retrieval.bm25 import BM25Index, ranked, reciprocal_rank_fusion

    c, service = client
    model, corpus = str(tiny_run / "model"), tiny_beir / "corpus.jsonl"
    ids, texts = map(list, zip(*iter_documents(corpus)))
    bm25 = BM25Index(analyzer=service.describe()["analyzer"]).index(ids, texts)
    library = search(model, corpus, QUERIES, top_k=len(ids), verbose=False)  # exact search, in memory
    for q, lib in zip(QUERIES, library):
        dense = [(h["id"], h["score"]) for h in lib["hits"]]
        got = _search(c, q, 5, "dense")
        assert [d for d, _ in got] == [d for d, _ in dense[:5]]
        assert [s for _, s in got] == pytest.approx([s for _, s in dense[:5]], abs=1e-5)
        lexical = bm25.search([q], len(ids))[0]
        assert _by_score(_search(c, q, len(ids), "bm25")) == _by_score(lexical)
        fused = reciprocal_rank_fusion([{q: dict(dense)}, {q: dict(lexical)}], 60, 5)[q]
        hybrid = _search(c, q, 5, "hybrid")
        assert [d for d, _ in hybrid] == ranked(fused)
        assert [s for _, s in hybrid] == pytest.approx([fused[d] for d in ranked(fused)], abs=1e-9)


def test_embed_equals_the_models_vectors(client, tiny_run):
    import numpy as np

    from deepseek_tf.retrieval.artifacts import load_embedder

    emb = load_embedder(str(tiny_run / "model"))
    for tower, encode in (("query", emb.encode_queries), ("doc", emb.encode_docs)):
        r = client[0].post("/embed", json={"texts": QUERIES, "tower": tower})
        np.testing.assert_allclose(r.json()["embeddings"], encode(QUERIES), atol=1e-5)


def _start(argv, timeout=300):
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepseek_tf.cli", "serve", *argv],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines, url = [], []

    def read():
        for line in proc.stderr:
            lines.append(line)
            m = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
            if m:
                url.append(m.group(1))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not url and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert url, "".join(lines)
    return proc, url[0], lines


def test_the_command_serves_reloads_on_sighup_and_drains_on_sigterm(built):
    import httpx

    proc, url, lines = _start(["--index", str(built), "--port", "0", "--max-wait-ms", "5"])
    try:
        first = httpx.post(url + "/search", json={"query": "summer dress", "k": 3}, timeout=60).json()
        assert first["results"][0]["id"].startswith("dress-")
        assert httpx.get(url + "/health", timeout=60).json()["generation"] == 1
        proc.send_signal(signal.SIGHUP)  # re-reads the index being served; the same answers after the swap
        for _ in range(600):
            if httpx.get(url + "/health", timeout=60).json()["generation"] == 2:
                break
            time.sleep(0.1)
        assert (
            httpx.post(url + "/search", json={"query": "summer dress", "k": 3}, timeout=60).json()["results"]
            == first["results"]
        )

        results: list = []

        def ask(q):
            try:
                results.append(httpx.post(url + "/search", json={"query": q, "k": 3, "mode": "hybrid"}, timeout=60))
            except httpx.HTTPError as e:
                results.append(e)

        threads = [threading.Thread(target=ask, args=(f"{q} {i}",)) for i in range(6) for q in QUERIES]
        [t.start() for t in threads]
        # SIGTERM once the server is answering this burst (on a loaded machine a fixed short sleep
        # could signal before any request arrived, leaving nothing in flight to drain)
        for _ in range(600):
            if results:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        [t.join(60) for t in threads]
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    # requests sent before SIGTERM are answered; ones arriving after the listener closed may be refused
    answered = [r for r in results if not isinstance(r, Exception)]
    assert answered and all(r.status_code == 200 for r in answered)
    assert "Traceback" not in "".join(lines)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--index", "{missing}"], "{missing}"),
        (["--index", "{built}", "--max-batch", "0"], "--max-batch must be >= 1"),
        (["--index", "{built}", "--max-wait-ms", "-1"], "--max-wait-ms must be >= 0"),
        (["--index", "{built}", "--intra-op-threads", "-1"], "--intra-op-threads must be >= 0"),
        (["--index", "{built}", "--port", "70000"], "--port must be in 0..65535"),
        (["--index", "{built}", "--rerank", "{missing}"], "--rerank"),
        (["--index", "{built}", "--port", "{busy}"], "cannot listen on 127.0.0.1:{busy}"),
        (["--index", "{built}", "--read-timeout", "0"], "--read-timeout must be a number of seconds > 0"),
        (["--index", "{built}", "--max-connections", "0"], "--max-connections must be >= 1"),
        (["--index", "{built}", "--max-embed-chars", "0"], "--max-embed-chars must be >= 1"),
        (["--index", "{built}", "--index-root", "{missing}"], "--index-root {missing}: no such directory"),
        (["--index", "{built}", "--host", "0.0.0.0"], "--host 0.0.0.0 reaches beyond this machine"),
    ],
)
def test_bad_command_lines_fail_in_one_line(built, tmp_path, capsys, monkeypatch, argv, message):
    import socket

    from deepseek_tf.serve.auth import API_KEY_ENV
    from deepseek_tf.serve.cli import main

    monkeypatch.delenv(API_KEY_ENV, raising=False)  # no key: --host beyond loopback is refused

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        fill = lambda s: s.format(missing=tmp_path / "nope", built=built, busy=port)  # noqa: E731
        code = main([fill(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (1, 2) and len(err) == 1 and err[0].startswith("error:") and fill(message) in err[0], err

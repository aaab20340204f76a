"""`deepseek-tf serve`'s HTTP API in-process (FastAPI's TestClient): every kind of bad request
gets a 4xx JSON error and the service answers the next good request correctly; good answers
equal the library's dense / BM25 / hybrid / reranked search; caches and errors show on /metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from serve_fakes import DOCS, FakeIndex, HashEmbedder

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from deepseek_tf.retrieval.bm25 import ranked, reciprocal_rank_fusion  # noqa: E402
from deepseek_tf.serve.app import Limits, create_app  # noqa: E402
from deepseek_tf.serve.service import SearchService, ServiceOptions  # noqa: E402

LIMITS = Limits(max_k=20, max_query_chars=50, max_body_bytes=2000, max_embed_texts=4, max_text_chars=100)
JSON = {"content-type": "application/json"}
GOOD = {"query": "heat transfer", "k": 3}
RERANK = {**GOOD, "rerank": True}


def word_overlap_reranker():
    """A library Reranker whose scores are hand-checkable: shared words, minus a length tie-break."""
    from deepseek_tf.retrieval.rerank import Reranker

    def score(queries, docs):
        out = []
        for q, d in zip(queries.numpy(), docs.numpy()):
            qw, dw = set(q.decode().split()), d.decode().split()
            out.append(len(qw & set(dw)) - 0.01 * len(dw))
        return np.array(out, np.float32)

    return Reranker(score, "overlap")


def expected_dense(index: FakeIndex, query: str, k: int) -> list[dict]:
    return [
        {"id": d, "score": pytest.approx(s, abs=1e-6)}
        for d, s in index.search_dense(index.embedder().vectors([query]), k)[0]
    ]


@pytest.fixture(scope="module")
def fake():
    index = FakeIndex()
    service = SearchService(index, word_overlap_reranker(), ServiceOptions(max_wait_ms=1.0, cache_size=0))
    with TestClient(create_app(service, LIMITS), raise_server_exceptions=False) as client:
        yield index, service, client
    service.close()


def post(client, path, body, headers=JSON):
    return client.post(path, content=body if isinstance(body, (bytes, str)) else json.dumps(body), headers=headers)


def chunks(total: int):
    for _ in range(total // 500):
        yield b" " * 500


# (what, method, path, body or None, headers, status, code)
BAD = [
    ("malformed JSON", "POST", "/search", b'{"query": "heat', JSON, 400, "invalid_json"),
    ("not UTF-8", "POST", "/search", b'{"query": "\xff\xfe"}', JSON, 400, "invalid_json"),
    ("NaN in JSON", "POST", "/search", b'{"query": "heat", "k": NaN}', JSON, 400, "invalid_json"),
    ("a number out of range", "POST", "/search", b'{"query": "heat", "k": 1e400}', JSON, 400, "invalid_json"),
    ("empty body", "POST", "/search", b"", JSON, 400, "invalid_json"),
    ("body is a list", "POST", "/search", [GOOD], JSON, 422, "invalid_request"),
    ("body is null", "POST", "/search", b"null", JSON, 422, "invalid_request"),
    ("missing query", "POST", "/search", {"k": 3}, JSON, 422, "invalid_request"),
    ("query not a string", "POST", "/search", {"query": 42}, JSON, 422, "invalid_request"),
    ("empty query", "POST", "/search", {"query": ""}, JSON, 422, "invalid_request"),
    ("whitespace query", "POST", "/search", {"query": " \t\n "}, JSON, 422, "invalid_request"),
    ("control characters only", "POST", "/search", {"query": "\x00\x01\x07\x1b"}, JSON, 422, "invalid_request"),
    (
        "hybrid: control characters",
        "POST",
        "/search",
        {"query": "\x00\x08", "mode": "hybrid"},
        JSON,
        422,
        "invalid_request",
    ),
    ("embed: control characters", "POST", "/embed", {"texts": ["heat", "\x00\x02"]}, JSON, 422, "invalid_request"),
    ("oversized query", "POST", "/search", {"query": "heat " * 20}, JSON, 422, "invalid_request"),
    ("k zero", "POST", "/search", {**GOOD, "k": 0}, JSON, 422, "invalid_request"),
    ("k negative", "POST", "/search", {**GOOD, "k": -5}, JSON, 422, "invalid_request"),
    ("k over the limit", "POST", "/search", {**GOOD, "k": 21}, JSON, 422, "invalid_request"),
    ("k huge", "POST", "/search", {**GOOD, "k": 10**30}, JSON, 422, "invalid_request"),
    ("k a string", "POST", "/search", {**GOOD, "k": "3"}, JSON, 422, "invalid_request"),
    ("k a float", "POST", "/search", {**GOOD, "k": 2.5}, JSON, 422, "invalid_request"),
    ("k a bool", "POST", "/search", {**GOOD, "k": True}, JSON, 422, "invalid_request"),
    ("unknown mode", "POST", "/search", {**GOOD, "mode": "semantic"}, JSON, 422, "invalid_request"),
    ("mode not a string", "POST", "/search", {**GOOD, "mode": 1}, JSON, 422, "invalid_request"),
    ("rerank not a bool", "POST", "/search", {**GOOD, "rerank": "yes"}, JSON, 422, "invalid_request"),
    ("fusion over 1", "POST", "/search", {**RERANK, "rerank_fusion": 1.5}, JSON, 422, "invalid_request"),
    ("fusion negative", "POST", "/search", {**RERANK, "rerank_fusion": -0.1}, JSON, 422, "invalid_request"),
    ("fusion a string", "POST", "/search", {**RERANK, "rerank_fusion": "0.5"}, JSON, 422, "invalid_request"),
    ("fusion without rerank", "POST", "/search", {**GOOD, "rerank_fusion": 0.5}, JSON, 422, "invalid_request"),
    ("unknown field", "POST", "/search", {**GOOD, "topk": 3}, JSON, 422, "invalid_request"),
    ("body over the size limit", "POST", "/search", {"query": "x" * 3000}, JSON, 413, "body_too_large"),
    ("chunked body over the limit", "POST", "/search", "chunked", JSON, 413, "body_too_large"),
    (
        "text/plain content type",
        "POST",
        "/search",
        json.dumps(GOOD),
        {"content-type": "text/plain"},
        415,
        "unsupported_media_type",
    ),
    (
        "form content type",
        "POST",
        "/search",
        b"query=heat",
        {"content-type": "application/x-www-form-urlencoded"},
        415,
        "unsupported_media_type",
    ),
    ("GET on /search", "GET", "/search", None, {}, 405, "method_not_allowed"),
    ("DELETE on /health", "DELETE", "/health", None, {}, 405, "method_not_allowed"),
    ("unknown path", "POST", "/query", GOOD, JSON, 404, "not_found"),
    ("embed: no texts", "POST", "/embed", {"texts": []}, JSON, 422, "invalid_request"),
    ("embed: texts not a list", "POST", "/embed", {"texts": "heat"}, JSON, 422, "invalid_request"),
    ("embed: a text not a string", "POST", "/embed", {"texts": ["heat", 3]}, JSON, 422, "invalid_request"),
    ("embed: too many texts", "POST", "/embed", {"texts": ["a"] * 5}, JSON, 422, "invalid_request"),
    ("embed: an empty text", "POST", "/embed", {"texts": ["heat", "  "]}, JSON, 422, "invalid_request"),
    ("embed: unknown tower", "POST", "/embed", {"texts": ["heat"], "tower": "title"}, JSON, 422, "invalid_request"),
    ("reload: index not a string", "POST", "/admin/reload", {"index": 3}, JSON, 422, "invalid_request"),
    ("reload: missing index", "POST", "/admin/reload", {"index": "no-such-index"}, JSON, 400, "reload_failed"),
    ("reload: outside the index root", "POST", "/admin/reload", {"index": "/no/such/index"}, JSON, 403, "forbidden"),
]


@pytest.mark.parametrize("what,method,path,body,headers,status,code", BAD, ids=[b[0] for b in BAD])
def test_bad_request_is_a_json_4xx_and_the_next_request_is_answered(
    fake, what, method, path, body, headers, status, code
):
    index, _, client = fake
    if body == "chunked":
        r = client.post(path, content=chunks(3000), headers=headers)
    elif body is None:
        r = client.request(method, path, headers=headers)
    else:
        r = client.request(
            method, path, content=body if isinstance(body, (bytes, str)) else json.dumps(body), headers=headers
        )
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"code", "message"} and err["code"] == code
    assert isinstance(err["message"], str) and err["message"] and "Traceback" not in r.text
    good = post(client, "/search", GOOD)
    assert good.status_code == 200
    assert good.json()["results"] == expected_dense(index, "heat transfer", 3)


def test_rerank_without_a_reranker_is_refused(tiny_fake_no_rerank):
    r = post(tiny_fake_no_rerank, "/search", {**GOOD, "rerank": True})
    assert r.status_code == 400 and r.json()["error"]["code"] == "rerank_unavailable"
    assert post(tiny_fake_no_rerank, "/search", GOOD).status_code == 200


@pytest.fixture
def tiny_fake_no_rerank():
    service = SearchService(FakeIndex(), None, ServiceOptions(batching=False))
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        yield client
    service.close()


def test_rerank_orders_the_retrieved_candidates_by_the_cross_encoder(fake):
    from deepseek_tf.retrieval.rerank import rerank_query

    index, service, client = fake
    r = post(client, "/search", {"query": "heat flux on a blunt body", "k": 2, "mode": "bm25", "rerank": True})
    assert r.status_code == 200
    candidates = index.search_bm25(["heat flux on a blunt body"], 100)[0]  # --rerank-depth 100
    scores = rerank_query(service.reranker, "heat flux on a blunt body", candidates, [DOCS[d] for d, _ in candidates])
    want = sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:2]
    assert [(h["id"], pytest.approx(h["score"], abs=1e-5)) for h in r.json()["results"]] == want
    assert want[0] == ("heat-2", pytest.approx(6 - 0.06, abs=1e-5))  # all 6 words shared, 6 words long


def test_embed_returns_each_towers_vectors(fake):
    index, _, client = fake
    texts = ["heat transfer", "wing flutter"]
    for tower in ("query", "doc"):
        r = post(client, "/embed", {"texts": texts, "tower": tower})
        assert r.status_code == 200 and r.json()["dim"] == 32 and r.json()["tower"] == tower
        np.testing.assert_allclose(r.json()["embeddings"], index.embedder().vectors(texts), atol=1e-6)


def test_health_describes_the_index(fake):
    r = fake[2].get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["documents"] == len(DOCS) and body["rerank"] == "overlap"


def metric(text: str, line_start: str) -> float:
    lines = [ln for ln in text.splitlines() if ln.startswith(line_start + " ")]
    assert len(lines) == 1, (line_start, text)
    return float(lines[0].split()[-1])


def test_cache_hits_show_on_metrics():
    index = FakeIndex()
    service = SearchService(index, None, ServiceOptions(cache_size=100, max_wait_ms=0))
    with TestClient(create_app(service)) as client:
        first = post(client, "/search", GOOD).json()
        again = post(client, "/search", GOOD).json()
        other_k = post(client, "/search", {**GOOD, "k": 2}).json()  # new results, cached embedding
        assert (first["cached"], again["cached"], other_k["cached"]) == (False, True, False)
        assert again["results"] == first["results"] == expected_dense(index, "heat transfer", 3)
        assert other_k["results"] == first["results"][:2]
        post(client, "/search", {"query": ""})
        text = client.get("/metrics").text
    service.close()
    assert metric(text, 'deepseek_cache_hits_total{cache="results"}') == 1
    assert metric(text, 'deepseek_cache_misses_total{cache="results"}') == 2
    assert metric(text, 'deepseek_cache_hits_total{cache="embedding"}') == 1
    assert metric(text, 'deepseek_cache_misses_total{cache="embedding"}') == 1
    assert metric(text, 'deepseek_requests_total{endpoint="/search",status="200"}') == 3
    assert metric(text, 'deepseek_requests_total{endpoint="/search",status="422"}') == 1
    assert metric(text, 'deepseek_request_duration_seconds_count{endpoint="/search"}') == 4
    assert metric(text, "deepseek_model_batch_size_count") == 1  # one encoder call for three requests
    assert metric(text, 'deepseek_model_batch_size_bucket{le="1"}') == 1
    assert "# TYPE deepseek_request_duration_seconds histogram" in text


def test_an_internal_error_is_a_json_500_without_traceback():
    embedder = HashEmbedder()
    service = SearchService(FakeIndex(embedder=embedder), None, ServiceOptions(cache_size=0))
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        embedder.fail = True  # after start-up: the model breaks while serving
        for path, body in (("/search", GOOD), ("/search", {**GOOD, "mode": "hybrid"}), ("/embed", {"texts": ["a"]})):
            r = post(client, path, body)
            assert r.status_code == 500, r.text
            assert r.json() == {
                "error": {"code": "internal_error", "message": "internal error (details in the server log)"}
            }
            assert "secret-internal-detail" not in r.text and "Traceback" not in r.text
        ok = post(client, "/search", {**GOOD, "mode": "bm25"})  # BM25 needs no model: still served
        assert ok.status_code == 200 and ok.json()["results"][0]["id"] == "heat-1"
        embedder.fail = False
        assert post(client, "/search", GOOD).json()["results"] == expected_dense(FakeIndex(), "heat transfer", 3)
        text = client.get("/metrics").text
    service.close()
    assert metric(text, 'deepseek_requests_total{endpoint="/search",status="500"}') == 2


def test_hybrid_is_reciprocal_rank_fusion_of_dense_and_bm25(fake):
    index, _, client = fake
    q = "supersonic jet flow"
    r = post(client, "/search", {"query": q, "k": 5, "mode": "hybrid"})
    dense = dict(index.search_dense(index.embedder().vectors([q]), 100)[0])
    bm25 = dict(index.search_bm25([q], 100)[0])
    fused = reciprocal_rank_fusion([{q: dense}, {q: bm25}], 60, 5)[q]
    assert [h["id"] for h in r.json()["results"]] == ranked(fused)
    assert r.json()["results"][0]["score"] == pytest.approx(fused[ranked(fused)[0]])

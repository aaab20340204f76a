"""The serve micro-batcher and index reloads: concurrent queries share model calls and get the
answers they would get alone; a reload under load fails no request; closing drains the queue."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest
from serve_fakes import FakeIndex, HashEmbedder

pytest.importorskip("fastapi")
import httpx  # noqa: E402

from deepseek_tf.errors import UserError  # noqa: E402
from deepseek_tf.serve.app import create_app  # noqa: E402
from deepseek_tf.serve.batcher import BatcherClosed, MicroBatcher  # noqa: E402
from deepseek_tf.serve.service import SearchService, ServiceOptions  # noqa: E402

QUERIES = [
    f"query number {i} about {w}"
    for i, w in enumerate(
        ["heat", "wings", "jets", "shells", "flutter", "noise", "plates", "layers", "flux", "speed", "bodies", "load"]
    )
]


class GatedModel:
    """The first call blocks until released, so everything submitted meanwhile is queued."""

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls: list[list[str]] = []
        self.embedder = HashEmbedder()

    def __call__(self, texts):
        self.calls.append(list(texts))
        self.entered.set()
        self.release.wait(10)
        return self.embedder.vectors(texts)


def queued_behind_first(max_batch: int, texts: list[str] = QUERIES):
    """(model, batcher, futures): texts[0] is inside a held model call, the rest wait in the queue."""
    model = GatedModel()
    batcher = MicroBatcher(model, max_batch=max_batch, max_wait_ms=0)
    futures = [batcher.submit(texts[0])]
    assert model.entered.wait(10)
    return model, batcher, futures + [batcher.submit(t) for t in texts[1:]]


def test_queued_texts_share_one_model_call_and_keep_their_own_rows():
    model, batcher, futures = queued_behind_first(64, QUERIES + [QUERIES[3]])  # one repeated text
    model.release.set()
    results = [f.result(10) for f in futures]
    assert model.calls == [[QUERIES[0]], QUERIES[1:]]  # 13 requests, 2 calls; the repeat encoded once
    for text, vec in zip(QUERIES + [QUERIES[3]], results):
        np.testing.assert_array_equal(vec, model.embedder.vectors([text])[0])
    batcher.close()


def test_max_batch_splits_a_long_queue():
    model, batcher, futures = queued_behind_first(5)
    model.release.set()
    [f.result(10) for f in futures]
    assert [len(c) for c in model.calls] == [1, 5, 5, 1]
    batcher.close()


def test_two_workers_run_two_batches_at_once_and_close_drains_both():
    model = GatedModel()
    batcher = MicroBatcher(model, max_batch=64, max_wait_ms=0, workers=2)
    futures = [batcher.submit(QUERIES[0])]
    assert model.entered.wait(10)  # worker 1 holds the first text in its call
    futures.append(batcher.submit(QUERIES[1]))
    for _ in range(1000):  # worker 2 takes the next text into a call of its own
        if len(model.calls) == 2:
            break
        threading.Event().wait(0.01)
    futures += [batcher.submit(q) for q in QUERIES[2:]]
    closer = threading.Thread(target=batcher.close)
    closer.start()
    model.release.set()
    closer.join(10)
    assert model.calls[:2] == [[QUERIES[0]], [QUERIES[1]]]
    assert sorted(t for c in model.calls for t in c) == sorted(QUERIES)  # everything answered, once
    assert all(f.done() and not f.exception() for f in futures)


def test_a_lone_request_does_not_wait_for_company():
    batcher = MicroBatcher(lambda texts: [len(t) for t in texts], max_batch=8, max_wait_ms=600_000)
    assert batcher.submit("abc").result(timeout=60) == 3  # answered without the 10-minute wait
    assert batcher.submit("abcd").result(timeout=60) == 4
    batcher.close()


def test_a_failing_call_fails_its_requests_and_the_worker_goes_on():
    calls = []

    def flaky(texts):
        calls.append(texts)
        if len(calls) == 1:
            raise ValueError("bad batch")
        return np.ones((len(texts), 2))

    batcher = MicroBatcher(flaky, max_batch=8, max_wait_ms=0)
    with pytest.raises(ValueError, match="bad batch"):
        batcher.submit("a").result(10)
    np.testing.assert_array_equal(batcher.submit("b").result(10), [1, 1])
    batcher.close()


def test_close_answers_everything_queued_then_refuses():
    model, batcher, futures = queued_behind_first(4)
    closer = threading.Thread(target=batcher.close)
    closer.start()  # waits for the worker while 11 texts are still queued
    model.release.set()
    closer.join(10)
    assert not closer.is_alive()
    assert all(f.done() and not f.exception() for f in futures)
    assert sum(len(c) for c in model.calls) == len(QUERIES)
    with pytest.raises(BatcherClosed):
        batcher.submit("late")


async def _search_all(app, bodies):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
        return await asyncio.gather(*(client.post("/search", json=b) for b in bodies))


def test_concurrent_requests_are_batched_and_answered_as_alone():
    embedder = HashEmbedder(delay=0.05)
    index = FakeIndex(embedder=embedder)
    service = SearchService(index, None, ServiceOptions(max_batch=32, max_wait_ms=20, cache_size=0))
    embedder.calls.clear()
    index.dense_calls.clear()
    bodies = [{"query": q, "k": 4 if i % 2 else 2} for i, q in enumerate(QUERIES)]
    responses = asyncio.run(_search_all(create_app(service), bodies))
    service.close()
    assert all(r.status_code == 200 for r in responses)
    assert sum(len(c) for c in embedder.calls) == len(QUERIES)
    assert len(embedder.calls) < len(QUERIES)  # fewer model calls than requests
    assert sum(index.dense_calls) == len(QUERIES) and len(index.dense_calls) < len(QUERIES)  # and searches
    for q, b, r in zip(QUERIES, bodies, responses):  # each answer is the one the query gets alone, at its k
        alone = index.search_dense(embedder.vectors([q]), b["k"])[0]
        assert len(alone) == b["k"]
        assert [(h["id"], pytest.approx(h["score"], abs=1e-6)) for h in r.json()["results"]] == alone


def test_reload_swaps_the_index_under_load_and_no_request_fails(tmp_path):
    a_docs = {f"a-{i}": f"document {i} about heat and wings" for i in range(6)}
    b_docs = {f"b-{i}": f"document {i} about jets and shells" for i in range(6)}
    indexes = {
        "A": FakeIndex(a_docs, HashEmbedder(delay=0.02), "A"),
        "B": FakeIndex(b_docs, HashEmbedder(delay=0.02, salt=1), "B"),
    }

    def loader(path):  # the service passes the path resolved under the index root (the working directory)
        if Path(path).name not in indexes:
            raise UserError(f"{path}: not a built index")
        return indexes[Path(path).name]

    service = SearchService(indexes["A"], None, ServiceOptions(max_batch=4, max_wait_ms=1, cache_size=0), loader=loader)
    old_batcher = service._engine.batcher
    swaps = []
    service.on_retired = lambda: swaps.append(service.describe()["index"])  # the server collects the heap here
    app = create_app(service)

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as client:
            before = [asyncio.ensure_future(client.post("/search", json={"query": q, "k": 3})) for q in QUERIES]
            await asyncio.sleep(0.03)  # some are inside the model when the swap happens
            reload = await client.post("/admin/reload", json={"index": "B"})
            after = await asyncio.gather(*(client.post("/search", json={"query": q, "k": 3}) for q in QUERIES))
            failed = await client.post("/admin/reload", json={"index": "missing"})
            still = await client.post("/search", json={"query": QUERIES[0], "k": 3})
            return await asyncio.gather(*before), reload, after, failed, still

    before, reload, after, failed, still = asyncio.run(scenario())
    assert reload.status_code == 200 and reload.json()["index"] == "B" and reload.json()["generation"] == 2
    assert all(r.status_code == 200 for r in before + after)
    old_ids = [r for r in before if r.json()["results"][0]["id"].startswith("a-")]
    assert old_ids, "no request finished on the old index: the swap was not under load"
    assert all(h["id"].startswith("b-") for r in after for h in r.json()["results"])
    assert failed.status_code == 400 and failed.json()["error"]["code"] == "reload_failed"
    assert still.status_code == 200 and still.json()["results"][0]["id"].startswith("b-")
    for _ in range(500):  # the old engine retires in a worker thread once its last request is done
        if swaps:
            break
        threading.Event().wait(0.01)
    assert swaps == ["B"]  # once, after the swap that succeeded
    assert old_batcher.closed  # the old engine's worker stopped once its requests were done
    service.close()
    assert service._engine.batcher.closed

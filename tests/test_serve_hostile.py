"""Hostile clients against the service under uvicorn on 127.0.0.1, with the protocol and limits
`deepseek-tf serve` runs (a fake index: fast). Each hostile request gets its JSON error, and the
next request on the same keep-alive connection is answered, or the answer says
`Connection: close` and the server closes; slow clients are timed out and cannot crowd out good
ones; a replaced index is let go at once; admin endpoints need the API key and stay inside the
index root; a burst of good and hostile clients gets every good request answered."""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
import time
import weakref

import pytest
from serve_fakes import FakeIndex, HashEmbedder, serving

pytest.importorskip("fastapi")

from deepseek_tf.errors import UserError  # noqa: E402
from deepseek_tf.serve.app import Limits, create_app  # noqa: E402
from deepseek_tf.serve.limits import ConnectionLimits  # noqa: E402
from deepseek_tf.serve.service import SearchService, ServiceOptions  # noqa: E402
from deepseek_tf.serve.soak import HOSTILE, RawHTTP, expectations, passed, request, run_burst  # noqa: E402

KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
GOOD = request("POST", "/search", {"query": "heat transfer", "k": 3})
GOOD_IDS = [d for d, _ in FakeIndex().search_dense(HashEmbedder().vectors(["heat transfer"]), 3)[0]]
OUTSIDE = "index: must name a directory under the server's index root"


def plant_manifest(directory):
    """An index directory whose manifest names a file outside it."""
    from deepseek_tf.index.finish import FORMAT, MANIFEST, VERSION

    directory.mkdir()
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "model": "hash",
        "model_fingerprint": "hash-32-0",
        "analyzer": "english",
        "backend": "exact",
        "backend_params": {},
        "dim": 32,
        "count": 1,
        "shards": [{"file": "../../../../../../../../etc/passwd", "count": 1, "docs": "../../../../etc/passwd"}],
        "corpus": "x",
        "corpus_sha256": "0",
        "files": {"ids": "../../../../etc/passwd", "offsets": "x", "bm25": "x"},
        "build": {},
    }
    (directory / MANIFEST).write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """(port, service, index root): indexes "a" and "b" (fakes, the same documents) under the root,
    and "planted", a real index loader's input with a manifest naming /etc/passwd."""
    from deepseek_tf.index import load_built_index

    root = tmp_path_factory.mktemp("indexes")
    plant_manifest(root / "planted")

    def loader(path):
        return FakeIndex(path=path) if path.name in ("a", "b") else load_built_index(path)

    service = SearchService(loader(root / "a"), None, ServiceOptions(max_wait_ms=1), loader=loader)
    app = create_app(service, Limits(), api_key=KEY, index_root=root)
    with serving(app, ConnectionLimits(read_timeout=1.0, keep_alive=5.0, max_connections=100)) as port:
        yield port, service, root
    service.close()


def reload_to(index: str, headers: dict | None = AUTH, chunked: bool = False) -> bytes:
    return request("POST", "/admin/reload", {"index": index}, headers, chunked=chunked)


def health_without_paths(body: dict) -> bool:
    return body["status"] == "ok" and body["index"] in ("a", "b") and "/" not in json.dumps(body)


# (what, request (or a function of the index root giving it), status, error code or a check of the
# 2xx answer, whether the server closes the connection after answering)
ROWS = (
    HOSTILE
    + [
        ("HEAD /health", request("HEAD", "/health"), 200, lambda body: body is None, False),
        ("/health names the index, no server path", request("GET", "/health"), 200, health_without_paths, False),
        (
            "chunked /admin/reload body",
            reload_to("b", chunked=True),
            200,
            lambda body: body["index"] == "b" and body["generation"] > 1,
            False,
        ),
        ("/admin/reload without the key", reload_to("a", headers=None), 401, "unauthorized", True),
        (
            "/admin/reload with a wrong key",
            reload_to("a", {"Authorization": "Bearer x" * 25}),
            401,
            "unauthorized",
            True,
        ),
        ("/admin/reload outside the root, existing", reload_to("../../../../../../../../etc"), 403, "forbidden", False),
        ("/admin/reload outside the root, missing", reload_to("/no/such/dir"), 403, "forbidden", False),
        ("/admin/reload a NUL byte", reload_to("a\u0000b"), 403, "forbidden", False),
        (
            "/admin/reload a manifest naming /etc/passwd",
            lambda root: reload_to(str(root / "planted")),  # the absolute path, as an attacker would give it
            400,
            "reload_failed",
            False,
        ),
        ("/admin/reload of the index served", reload_to("a"), 200, lambda body: body["index"] == "a", False),
        ("headers trickled past --read-timeout", b"POST /search HTTP/1.1\r\nHost: x\r\n", 408, "request_timeout", True),
        (
            "body trickled past --read-timeout",
            request("POST", "/search", '{"query": "heat transfer",       "k": 3}')[:-20],
            408,
            "request_timeout",
            True,
        ),
    ]
)


@pytest.mark.parametrize("what,data,status,expect,closes", ROWS, ids=[r[0] for r in ROWS])
def test_a_hostile_request_gets_its_json_answer_and_the_connection_goes_on(live, what, data, status, expect, closes):
    port, service, root = live
    data = data(root) if callable(data) else data
    conn = RawHTTP(port, timeout=10)
    try:
        got, headers, body = conn.exchange(data, head=data.startswith(b"HEAD"))
        assert got == status, body
        assert headers["content-type"] == "application/json"
        assert b"Traceback" not in body and str(root).encode() not in body and b"root:" not in body
        if callable(expect):
            assert expect(json.loads(body) if body else None), body
        else:
            err = json.loads(body)["error"]
            assert set(err) == {"code", "message"} and err["code"] == expect and err["message"], body
            if expect == "forbidden":  # the same answer whether the path exists or not
                assert err["message"] == OUTSIDE
        if closes:
            assert headers.get("connection") == "close" and conn.closed_by_server()
            conn.close()
            conn = RawHTTP(port, timeout=10)
        else:
            assert headers.get("connection") != "close"
        got, _, body = conn.exchange(GOOD)  # the next request on the same keep-alive connection
        assert got == 200 and [h["id"] for h in json.loads(body)["results"]] == GOOD_IDS
    finally:
        conn.close()


def test_a_client_hanging_up_mid_body_is_one_log_line(live, caplog):
    port = live[0]
    caplog.set_level(logging.INFO)
    conn = RawHTTP(port)
    conn.send(GOOD[:-10])
    time.sleep(0.2)  # the app is reading the body
    conn.close()
    for _ in range(100):
        if any("hung up" in r.getMessage() for r in caplog.records):
            break
        time.sleep(0.02)
    served = [r for r in caplog.records if r.name.startswith(("deepseek_tf.serve", "uvicorn"))]
    assert [r.getMessage() for r in served if "hung up" in r.getMessage()], [r.getMessage() for r in served]
    assert all(r.exc_info is None and r.levelno < logging.ERROR for r in served), [r.getMessage() for r in served]
    assert RawHTTP(port).exchange(GOOD)[0] == 200


def test_slow_clients_are_closed_and_cannot_crowd_out_good_ones():
    service = SearchService(FakeIndex(), None, ServiceOptions(max_wait_ms=1))
    limits = ConnectionLimits(read_timeout=3.0, max_connections=8)
    with serving(create_app(service), limits) as port:
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        for s in slow:
            s.sendall(b"P")  # a request begun, a byte at a time
        start = time.monotonic()
        for _ in range(3):  # good clients get in past the cap: the slow connections waiting longest make room
            assert RawHTTP(port, timeout=2).exchange(GOOD)[0] == 200
        assert time.monotonic() - start < 2.0

        def closed(s: socket.socket, wait: float) -> bool:
            s.settimeout(wait)
            try:
                return s.recv(4096) is not None  # a 408, or end of stream
            except TimeoutError:
                return False
            except ConnectionError:
                return True

        assert sum(closed(s, 0.2) for s in slow) >= 12  # closed at once to keep 8 open
        assert all(closed(s, limits.read_timeout + 2) for s in slow)  # and the rest at the read deadline
        for s in slow:
            s.close()
    service.close()


def test_a_replaced_index_is_let_go_at_once():
    from deepseek_tf.serve.server import collect_and_freeze

    loads = []

    def loader(path):
        index = FakeIndex({f"{path}-{i}": f"document {i} about heat" for i in range(200)}, HashEmbedder(), path)
        loads.append(weakref.ref(index))
        return index

    service = SearchService(loader("a"), None, ServiceOptions(max_wait_ms=1), loader=loader)
    service.on_retired = collect_and_freeze
    gc.collect()
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        for i in range(10):
            service.reload("b" if i % 2 == 0 else "a")
            assert [ref() is not None for ref in loads] == [False] * (len(loads) - 1) + [True]
        assert gc.get_freeze_count() < frozen * 1.1 + 10_000  # the heap frozen again does not grow

        engine = service._acquire()  # a request still on the index being replaced
        service.reload("b")
        assert loads[-2]() is not None  # kept while in use
        service._release(engine)
        del engine
        for _ in range(200):  # retired by a worker thread once the request is done
            if loads[-2]() is None:
                break
            time.sleep(0.01)
        assert loads[-2]() is None
    finally:
        service.close()  # first: its worker threads may still be freezing the heap
        gc.unfreeze()


def test_reloads_between_two_models_load_each_model_once():
    loaded = []

    class CountedIndex(FakeIndex):
        def embedder(self):
            loaded.append(self.manifest["model_fingerprint"])
            return super().embedder()

    def loader(path):  # indexes, each with its own model
        return CountedIndex(embedder=HashEmbedder(salt="abc".index(str(path))), path=path)

    service = SearchService(loader("a"), None, ServiceOptions(max_wait_ms=1), loader=loader)
    for i in range(10):
        service.reload("b" if i % 2 == 0 else "a")
        assert service._engine.embedder.salt == (1 if i % 2 == 0 else 0)  # each index with its own model
    assert loaded == ["hash-32-0", "hash-32-1"]  # loaded once each: a reload back reuses the one kept
    service.reload("c")  # a third model: the one two reloads back ("b"'s) is let go
    assert loaded == ["hash-32-0", "hash-32-1", "hash-32-2"] and sorted(service._models) == ["hash-32-0", "hash-32-2"]
    service.close()


def test_beyond_loopback_admin_needs_a_key(tmp_path, capsys, monkeypatch):
    from deepseek_tf.serve.auth import API_KEY_ENV, bearer_matches, load_api_key
    from deepseek_tf.serve.cli import check_exposure, main

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert main(["--index", str(tmp_path), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --host 0.0.0.0") and "--api-key-file" in err[0], err

    (tmp_path / "short").write_text("abc\n")
    assert main(["--index", str(tmp_path), "--api-key-file", str(tmp_path / "short")]) == 2
    assert "at least 16 characters" in capsys.readouterr().err

    check_exposure("127.0.0.1", True, None)  # loopback: no key needed, nothing said
    check_exposure("::1", True, None)
    assert capsys.readouterr().err == ""
    check_exposure("0.0.0.0", True, KEY)
    check_exposure("10.1.2.3", False, None)
    assert capsys.readouterr().err.count("warning: listening on") == 2
    with pytest.raises(UserError):
        check_exposure("myhost.example", True, None)

    (tmp_path / "key").write_text(KEY + "\n")
    assert load_api_key(tmp_path / "key") == KEY and load_api_key(None, {API_KEY_ENV: KEY}) == KEY
    assert load_api_key(None, {}) is None
    assert bearer_matches(f"Bearer {KEY}", KEY) and bearer_matches(f"bearer  {KEY} ", KEY)
    assert not bearer_matches(KEY, KEY) and not bearer_matches(None, KEY) and not bearer_matches("Bearer \udcff", KEY)


def test_docs_and_openapi_are_served(live):
    conn = RawHTTP(live[0])
    status, _, body = conn.exchange(request("GET", "/openapi.json"))
    paths = json.loads(body)["paths"]
    assert status == 200 and {"/search", "/embed", "/health", "/admin/reload"} <= set(paths)
    schema = paths["/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"query", "k", "mode", "rerank", "rerank_fusion", "filter", "fields"}
    status, headers, body = conn.exchange(request("GET", "/docs"))
    assert status == 200 and headers["content-type"].startswith("text/html") and b"swagger" in body.lower()


def test_a_burst_of_good_and_hostile_clients(live):
    """64 clients for a few seconds (`make soak` runs the full one against the real command)."""
    port = live[0]
    report = run_burst(port, expectations(port, ["heat transfer", "wing flutter"]), 64, 3.0, server_pid=os.getpid())
    print("burst:", json.dumps({k: v for k, v in report.items() if k != "problems"}))
    assert passed(report), report
    assert report["hostile"] > 0 and report["hung_up"] > 0 and report["slow_closed"] > 0


def test_under_a_low_file_limit_slow_clients_do_not_starve_good_ones():
    """150 connections that each send a byte against a server allowed 128 open files: it fits its
    connection cap to the limit, so accept() never fails and good requests are answered."""
    import re
    import subprocess
    import sys

    from conftest import ROOT

    proc = subprocess.Popen(
        ["bash", "-c", f"ulimit -n 128 && exec {sys.executable} tests/serve_fakes.py 30"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"},
    )
    slow = []
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if m := re.search(r"on http://127\.0\.0\.1:(\d+)", line):
                port = int(m.group(1))
                break
        else:
            pytest.fail("".join(lines))
        assert "at most 46 connections" in "".join(lines)  # (128 - 64) * 8 // 11
        for _ in range(150):
            slow.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            slow[-1].sendall(b"P")
        for _ in range(10):  # answered, not starved until the client gives up
            assert RawHTTP(port, timeout=10).exchange(GOOD)[0] == 200
    finally:
        for s in slow:
            s.close()
        proc.terminate()
        log = proc.communicate(timeout=30)[1]
    assert "out of system resource" not in log and "Traceback" not in log, log[-2000:]

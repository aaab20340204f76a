"""Light stand-ins for a built index in the serve tests: no TensorFlow, deterministic vectors,
the same API as `deepseek_tf.index.BuiltIndex`."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path

import numpy as np

DOCS = {
    "wing-1": "wing flutter at transonic speed",
    "wing-2": "swept wing boundary layer transition",
    "heat-1": "heat transfer in hypersonic flow",
    "heat-2": "heat flux on a blunt body",
    "shell-1": "buckling of thin cylindrical shells",
    "shell-2": "shell vibration under axial load",
    "jet-1": "jet noise and mixing layers",
    "jet-2": "supersonic jet impinging on a plate",
}


class HashEmbedder:
    """Bag-of-characters vectors (unit length); records each call's texts. `delay` seconds per
    call stand in for a model's cost; `fail` makes every call raise."""

    name = "hash"

    def __init__(self, dim: int = 32, delay: float = 0.0, fail: bool = False, salt: int = 0):
        self.dim, self.delay, self.fail, self.salt = dim, delay, fail, salt
        self.fingerprint = f"hash-{dim}-{salt}"
        self.calls: list[list[str]] = []
        self._lock = threading.Lock()

    def vectors(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            t.encode("utf-8")  # as a model's string tensor does: a lone surrogate fails here
            for j, ch in enumerate(t):
                out[i, (ord(ch) * 7 + j % 3 + self.salt) % self.dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)

    def encode_queries(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        with self._lock:
            self.calls.append(list(texts))
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("secret-internal-detail: model exploded")
        return self.vectors(texts)

    encode_docs = encode_queries


class FakeIndex:
    def __init__(
        self, docs: dict[str, str] | None = None, embedder: HashEmbedder | None = None, path: str | Path = "fake-index"
    ):
        from deepseek_tf.retrieval.bm25 import BM25Index

        self.path = Path(path)
        self._texts = dict(docs or DOCS)
        self.ids = list(self._texts)
        self.dense_calls: list[int] = []  # queries per search_dense call
        self._embedder = embedder or HashEmbedder()
        self.matrix = self._embedder.vectors(list(self._texts.values()))
        self.manifest = {
            "format": "fake",
            "model": "hash",
            "model_fingerprint": self._embedder.fingerprint,
            "dim": self._embedder.dim,
            "backend": "exact",
            "analyzer": "english",
            "count": len(self.ids),
        }
        self._bm25 = BM25Index(analyzer="english").index(self.ids, list(self._texts.values()))

    def embedder(self) -> HashEmbedder:
        return self._embedder

    def text(self, doc_id: str) -> str:
        return self._texts[doc_id]

    def search_dense(self, query_vectors: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        self.dense_calls.append(len(query_vectors))
        scores = np.asarray(query_vectors) @ self.matrix.T
        out = []
        for row in scores:
            order = sorted(range(len(row)), key=lambda i: (-row[i], self.ids[i]))[:k]
            out.append([(self.ids[i], float(row[i])) for i in order])
        return out

    def search_bm25(self, queries: list[str], k: int) -> list[list[tuple[str, float]]]:
        return self._bm25.search(queries, k)


@contextlib.contextmanager
def serving(app, connections=None):
    """APP under uvicorn as `deepseek-tf serve` runs it (connections guarded), in a thread, on a
    free 127.0.0.1 port; yields the port."""
    from deepseek_tf.serve.server import uvicorn_server

    server = uvicorn_server(app, connections)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(400):
        if server.started:
            break
        time.sleep(0.025)
    assert server.started, "the server did not start"
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


if __name__ == "__main__":
    # `python tests/serve_fakes.py [serve flags]`: `deepseek-tf serve`'s server over a fake index
    # (no model to load), for tests that need a process of its own, e.g. under a lower `ulimit -n`.
    import sys

    from deepseek_tf.serve.cli import CONNECTIONS
    from deepseek_tf.serve.limits import ConnectionLimits
    from deepseek_tf.serve.server import run_server
    from deepseek_tf.serve.service import SearchService, ServiceOptions

    timeout = float(sys.argv[1]) if len(sys.argv) > 1 else CONNECTIONS.read_timeout
    service = SearchService(FakeIndex(), None, ServiceOptions(max_wait_ms=1))
    sys.exit(run_server(service, port=0, connections=ConnectionLimits(read_timeout=timeout)))

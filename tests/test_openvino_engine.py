"""The OpenVINO engine that encodes for Keras models: same vectors as Keras, chosen by default,
refused or fallen back from as `--engine` says, and wired into the commands that encode."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

pytest.importorskip("openvino")

TEXTS = [
    "supersonic flow over a flat plate",
    "boundary layer",
    "heat transfer to a cylinder at high mach number with a long tail of words " * 4,
    "轻便笔记本",
    "x",
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


@pytest.fixture(scope="module")
def embedders(tiny_run):
    from deepseek_tf.retrieval.artifacts import load_embedder

    model = str(tiny_run / "model")
    return load_embedder(model, engine="keras"), load_embedder(model, engine="auto")


def test_default_engine_is_openvino_and_matches_keras(embedders):
    keras, ov = embedders
    assert keras.engine.startswith("Keras float32")
    assert ov.engine.startswith("OpenVINO "), ov.engine
    for tower in ("query", "doc"):
        # one text per call (padded graph) and a batch of uneven texts (packed graph)
        single = np.concatenate([ov.encode([t], tower) for t in TEXTS])
        batch = ov.encode(TEXTS, tower, batch_size=len(TEXTS))
        want = keras.encode(TEXTS, tower, batch_size=len(TEXTS))
        assert single.shape == want.shape == batch.shape
        assert cosines(single, want).min() >= 0.999
        assert cosines(batch, want).min() >= 0.999


def test_packed_batches_run_the_packed_graph(embedders):
    _, ov = embedders
    ov.encode(TEXTS, "query", batch_size=len(TEXTS))
    assert "query" in ov._packed  # noqa: SLF001 (which graph ran is not public)


def test_kernels_are_jit_not_reference(embedders):
    _, ov = embedders
    kernels = ov._padded["doc"].kernels()  # noqa: SLF001
    matmuls = {k: v for k, v in kernels.items() if k in ("FullyConnected", "MatMul")}
    assert matmuls, kernels
    assert all("ref" not in v for v in matmuls.values()), matmuls


def test_a_tower_that_differs_from_keras_is_refused(embedders, monkeypatch):
    """The probe check compares against Keras: a broken conversion must not serve."""
    from deepseek_tf.errors import UserError
    from deepseek_tf.retrieval import openvino

    keras, _ = embedders
    real = openvino.Compiled.__call__
    monkeypatch.setattr(openvino.Compiled, "__call__", lambda self, feeds: -real(self, feeds))
    with pytest.raises(UserError, match="differs from Keras"):
        openvino.OpenVINOEmbedder(keras)
    assert openvino.openvino_embedder(keras, "auto") is keras  # auto falls back


def test_engine_keras_and_missing_openvino(embedders, monkeypatch):
    from deepseek_tf.errors import UserError
    from deepseek_tf.retrieval import openvino

    keras, _ = embedders
    assert openvino.openvino_embedder(keras, "keras") is keras
    monkeypatch.setattr(openvino, "available", lambda: False)
    assert openvino.openvino_embedder(keras, "auto") is keras
    with pytest.raises(UserError, match="not installed"):
        openvino.openvino_embedder(keras, "openvino")


def test_index_engine_flag_wins_over_the_variable(tiny_run, tiny_beir, tmp_path):
    """The suite runs with DEEPSEEK_TF_ENGINE=keras (conftest); `--engine auto` overrides it.
    (The default with nothing set is OpenVINO: test_import_order.py.)"""
    done = run_cli(
        "deepseek_tf.cli",
        "index",
        *("--model", str(tiny_run / "model"), "--corpus", str(tiny_beir / "corpus.jsonl")),
        *("--output", str(tmp_path / "idx"), "--engine", "auto"),
    )
    assert done.returncode == 0, done.stderr
    assert "(OpenVINO " in done.stderr, done.stderr


def test_serve_runs_the_query_encoder_on_openvino_one_call_per_thread(tiny_run, tiny_beir, tmp_path, monkeypatch):
    """`serve --threads 2 --intra-op-threads 1` (server.configure_threads) gives the served
    encoder two calls at once of one thread each, and answers as the Keras-encoded index does."""
    from fastapi.testclient import TestClient

    from deepseek_tf.index import build_index
    from deepseek_tf.index.search import search
    from deepseek_tf.retrieval import engines
    from deepseek_tf.serve.app import create_app
    from deepseek_tf.serve.server import configure_threads
    from deepseek_tf.serve.service import SearchService, ServiceOptions

    built = tmp_path / "index"
    model = str(tiny_run / "model")
    build_index(model, tiny_beir / "corpus.jsonl", built, verbose=False)  # Keras (conftest)
    want = search(model, tiny_beir / "corpus.jsonl", TEXTS, top_k=3, index_dir=built, verbose=False)  # Keras
    monkeypatch.setattr(engines, "_engine", engines.current_engine())  # restored after the test
    monkeypatch.setattr(engines, "_settings", engines.current_settings())
    configure_threads(2, 1, "auto")
    service = SearchService.open(built, options=ServiceOptions(max_wait_ms=1))
    try:
        assert service.engine.startswith("OpenVINO") and "2 calls at once, 1 thread each" in service.engine
        with TestClient(create_app(service)) as client:
            for query, keras in zip(TEXTS, want):
                got = client.post("/search", json={"query": query, "k": 3, "mode": "dense"}).json()["results"]
                assert [h["id"] for h in got] == [h["id"] for h in keras["hits"]], query
                assert [h["score"] for h in got] == pytest.approx([h["score"] for h in keras["hits"]], abs=1e-2)
    finally:
        service.close()


def test_layer_norms_convert_to_single_kernels(embedders):
    """The traced layer normalization is the form OpenVINO fuses: one MVN kernel each."""
    _, ov = embedders
    kernels = ov._padded["doc"].kernels()  # noqa: SLF001
    assert "MVN" in kernels, kernels

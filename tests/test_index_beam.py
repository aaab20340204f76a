"""The Beam encode step (DirectRunner) writes the shards the local build writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("apache_beam")

from deepseek_tf.index import build_index, load_built_index  # noqa: E402
from deepseek_tf.index.beam import build_index_beam  # noqa: E402


def test_direct_runner_shards_equal_the_local_encoders(tiny_run, tiny_beir, tmp_path):
    model, corpus = str(tiny_run / "model"), tiny_beir / "corpus.jsonl"
    local = build_index(model, corpus, tmp_path / "local", shard_size=10, verbose=False)
    beam = build_index_beam(
        model, corpus, tmp_path / "beam", runner="DirectRunner", shard_size=10, batch_size=4, verbose=False
    )
    assert beam["build"]["runner"] == "DirectRunner" and beam["count"] == local["count"] == 24
    assert [s["count"] for s in beam["shards"]] == [10, 10, 4]
    for entry in local["shards"]:
        a, b = np.load(tmp_path / "local" / entry["file"]), np.load(tmp_path / "beam" / entry["file"])
        assert a.shape == b.shape and np.abs(a - b).max() <= 1e-5
        assert (tmp_path / "local" / entry["docs"]).read_bytes() == (tmp_path / "beam" / entry["docs"]).read_bytes()
    same = ("model_fingerprint", "analyzer", "backend", "dim", "count", "corpus_sha256")
    assert {k: beam[k] for k in same} == {k: local[k] for k in same}
    index, reference = load_built_index(tmp_path / "beam"), load_built_index(tmp_path / "local")
    q = index.embedder().encode_queries(["espresso coffee machine"])
    assert [d for d, _ in index.search_dense(q, 5)[0]] == [d for d, _ in reference.search_dense(q, 5)[0]]
    # a rerun finds every shard finished and rewrites nothing
    record = tmp_path / "beam" / "shards" / "00000.json"
    before = record.stat().st_mtime_ns
    (tmp_path / "beam" / "manifest.json").unlink()
    again = build_index_beam(model, corpus, tmp_path / "beam", runner="DirectRunner", shard_size=10, verbose=False)
    assert record.stat().st_mtime_ns == before and json.loads(record.read_text())["count"] == 10
    assert again["shards"] == beam["shards"]

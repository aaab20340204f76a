"""`deepseek-tf search`: in memory, or through the one index format `deepseek-tf index` builds
(searched as is, built when --index is missing or empty, refused with one line otherwise)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from deepseek_tf.data.beir import Dropped
from deepseek_tf.index import load_built_index
from deepseek_tf.index.cli import main as index_main
from deepseek_tf.index.corpus import iter_documents
from deepseek_tf.index.search import main, search


def _files(root: Path) -> dict[str, str]:
    """sha256 of every file under ROOT: what a refused command must leave as it was."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def _queries(tiny_beir: Path) -> list[str]:
    return [json.loads(line)["text"] for line in (tiny_beir / "queries.jsonl").read_text().splitlines()]


def test_corpus_is_read_as_index_reads_it(tmp_path):
    path = tmp_path / "corpus.jsonl"
    rows = [
        {"_id": "a", "title": "Wing", "text": "flutter"},
        {"_id": "a", "text": "dup"},
        {"_id": "b", "title": "", "text": " "},
        {"_id": 3, "title": "heat", "text": "heat transfer"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dropped = Dropped()
    assert list(iter_documents(path, dropped)) == [("a", "Wing flutter"), ("3", "heat heat transfer")]  # as BEIR
    assert dropped == {"duplicate doc ids": 1, "empty docs": 1}
    txt = tmp_path / "docs.txt"
    txt.write_text("first doc\n\nthird doc\n")
    assert list(iter_documents(txt)) == [("1", "first doc"), ("3", "third doc")]


def test_index_is_built_by_the_index_builder_then_reused(tiny_run, tiny_beir, tmp_path, capsys):
    model, corpus, ix = str(tiny_run / "model"), tiny_beir / "corpus.jsonl", tmp_path / "ix"
    first = search(model, corpus, ["summer dress"], top_k=5, index_dir=ix)
    assert "indexed 24 documents" in capsys.readouterr().err
    manifest = load_built_index(ix).manifest  # the `deepseek-tf index` format
    assert manifest["backend"] == "exact" and manifest["count"] == 24 and not (ix / "index.json").exists()
    before = _files(ix)
    again = search(model, corpus, ["summer dress"], top_k=5, index_dir=ix)
    assert "reusing exact index" in capsys.readouterr().err and _files(ix) == before
    assert first == [{**again[0], "latency_ms": first[0]["latency_ms"]}]
    scores = [h["score"] for h in first[0]["hits"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    # an empty directory gets an index too
    (tmp_path / "empty").mkdir()
    search(model, corpus, ["summer dress"], top_k=5, index_dir=tmp_path / "empty", verbose=False)
    assert (tmp_path / "empty" / "manifest.json").is_file()


def test_an_index_built_by_deepseek_tf_index_is_searched_as_is(tiny_run, tiny_beir, tmp_path, capsys):
    model, corpus, ix = str(tiny_run / "model"), tiny_beir / "corpus.jsonl", tmp_path / "built"
    assert index_main(["--model", model, "--corpus", str(corpus), "--output", str(ix), "--quiet"]) == 0
    before = _files(ix)
    assert main(["--model", model, "--corpus", str(corpus), "--index", str(ix), "--query", "espresso machine"]) == 0
    out = capsys.readouterr()
    assert f"reusing exact index {ix} (24 documents)" in out.err and _files(ix) == before
    lines = out.out.splitlines()
    assert lines[0].startswith("query: espresso machine") and len(lines) == 11 and "coffee-0" in out.out


def test_same_top_k_through_the_index_the_index_loader_and_in_memory(tiny_run, tiny_beir, tmp_path):
    """Search results are those of before (exact search over the model's vectors) with or without
    --index, and equal to the index loader's own dense search."""
    model, corpus, ix = str(tiny_run / "model"), tiny_beir / "corpus.jsonl", tmp_path / "ix"
    queries = _queries(tiny_beir)
    via_index = search(model, corpus, queries, top_k=10, index_dir=ix, verbose=False)
    in_memory = search(model, corpus, queries, top_k=10, verbose=False)
    loaded = load_built_index(ix)
    direct = loaded.search_dense(loaded.embedder().encode_queries(queries), 10)
    for a, b, c in zip(via_index, in_memory, direct):
        assert [h["id"] for h in a["hits"]] == [h["id"] for h in b["hits"]] == [d for d, _ in c]
        np.testing.assert_allclose([h["score"] for h in a["hits"]], [h["score"] for h in b["hits"]], atol=1e-5)
        assert all(h["text"] == loaded.text(h["id"]) for h in a["hits"])


def test_bm25_and_hybrid_modes_in_memory_and_through_the_index(tiny_run, tiny_beir, tmp_path, capsys):
    """--mode bm25|hybrid rank alike with or without --index (BM25 over the same texts, the same analyzer)."""
    model, corpus, ix = str(tiny_run / "model"), tiny_beir / "corpus.jsonl", tmp_path / "ix"
    queries = _queries(tiny_beir)
    for mode in ("bm25", "hybrid"):
        via_index = search(model, corpus, queries, top_k=5, index_dir=ix, verbose=False, mode=mode)
        in_memory = search(model, corpus, queries, top_k=5, verbose=False, mode=mode)
        for a, b in zip(via_index, in_memory):
            assert [h["id"] for h in a["hits"]] == [h["id"] for h in b["hits"]], (mode, a["query"])
            np.testing.assert_allclose([h["score"] for h in a["hits"]], [h["score"] for h in b["hits"]], atol=1e-5)
    assert any(len(r["hits"]) < 5 for r in search(model, corpus, queries, top_k=5, verbose=False, mode="bm25"))
    with pytest.raises(SystemExit) as bad:
        main(["--model", model, "--corpus", str(corpus), "--query", "tent", "--mode", "sparse"])
    assert bad.value.code == 2
    assert "invalid choice: 'sparse'" in capsys.readouterr().err


def _old_format_index(directory: Path) -> None:
    """What `search --index` wrote before: vectors.npy, then index.json."""
    directory.mkdir()
    with (directory / "vectors.npy").open("wb") as f:
        np.save(f, np.eye(3, dtype=np.float32))
    meta = {"kind": "exact", "ids": ["a", "b", "c"], "fingerprint": "f", "dim": 3, "corpus_sha256": "c"}
    (directory / "index.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("case", ["foreign directory", "old index.json format", "a file"])
def test_cli_refuses_what_is_not_our_index_touching_nothing(tiny_run, tiny_beir, tmp_path, capsys, case):
    model, corpus, ix = str(tiny_run / "model"), tiny_beir / "corpus.jsonl", tmp_path / "ix"
    if case == "foreign directory":  # the user's own files
        ix.mkdir()
        (ix / "vectors.npy").write_bytes(b"my own vectors")
        (ix / "notes.txt").write_text("mine\n")
        message = f"error: --index {ix} is a non-empty directory that holds no deepseek_tf index; choose another"
    elif case == "old index.json format":
        _old_format_index(ix)
        message = (
            f"error: --index {ix} holds an index in the old index.json format, which is no longer read; build one with "
            f"`deepseek-tf index --model {model} --corpus {corpus} --output NEW_DIR` and search --index NEW_DIR"
        )
    else:
        ix.write_text("not a directory\n")
        message = f"error: --index {ix} is a file, not an index directory"
    before = _files(tmp_path)
    assert main(["--model", model, "--corpus", str(corpus), "--index", str(ix), "--query", "summer dress"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(message), err
    assert _files(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["ix"]


def test_cli_refuses_an_index_of_another_model_or_corpus_naming_it(tiny_run, tiny_beir, tmp_path, capsys):
    model, corpus, ix = str(tiny_run / "model"), tiny_beir / "corpus.jsonl", tmp_path / "ix"
    search(model, corpus, ["summer dress"], index_dir=ix, verbose=False)
    args = ["--model", model, "--index", str(ix), "--query", "espresso machine"]
    manifest = json.loads((ix / "manifest.json").read_text())
    fingerprint, corpus_sha = manifest["model_fingerprint"], manifest["corpus_sha256"]
    # another corpus file
    other = tmp_path / "other.jsonl"
    other.write_text(corpus.read_text() + json.dumps({"_id": "new", "text": "a new document"}) + "\n")
    other_sha = hashlib.sha256(other.read_bytes()).hexdigest()
    before = _files(tmp_path)
    assert main(args + ["--corpus", str(other)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: --index {ix} was built with corpus {corpus.resolve()} (sha256 {corpus_sha[:16]}), "
        f"not --corpus {other} ({other_sha[:16]}); choose another --index"
    ]
    assert _files(tmp_path) == before
    # another model (as seen by its fingerprint)
    (ix / "manifest.json").write_text(json.dumps({**manifest, "model_fingerprint": "0123456789abcdef"}))
    before = _files(tmp_path)
    assert main(args + ["--corpus", str(corpus)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: --index {ix} was built with model {manifest['model']} (fingerprint 0123456789abcdef), "
        f"not --model {model} ({fingerprint}); choose another --index"
    ]
    assert _files(tmp_path) == before


def test_another_backend_is_refused_or_rebuilt_from_the_same_shards(tiny_run, tiny_beir, tmp_path, capsys):
    pytest.importorskip("faiss")
    model, corpus, ix = str(tiny_run / "model"), tiny_beir / "corpus.jsonl", tmp_path / "ix"
    exact = search(model, corpus, ["trail running shoes"], index_dir=ix, verbose=False)
    shards = _files(ix / "shards")
    before = _files(ix)
    args = ["--model", model, "--corpus", str(corpus), "--index", str(ix), "--query", "trail running shoes"]
    assert main(args + ["--backend", "faiss-hnsw"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: --index {ix} was built with the exact backend, not faiss-hnsw; pass --rebuild to rebuild its "
        "dense backend (the encoded documents are reused)"
    ]
    assert _files(ix) == before
    hnsw = search(model, corpus, ["trail running shoes"], index_dir=ix, backend="faiss-hnsw", rebuild=True)
    assert load_built_index(ix).manifest["backend"] == "faiss-hnsw" and _files(ix / "shards") == shards
    assert [h["id"] for h in hnsw[0]["hits"]] == [h["id"] for h in exact[0]["hits"]]  # 24 documents: exhaustive


def test_python_m_search_is_the_same_command():
    from conftest import run_cli

    done = run_cli("deepseek_tf.search", "--help")
    assert done.returncode == 0 and "deepseek-tf search" in done.stdout
    assert all(flag in done.stdout for flag in ("--index", "--backend", "--rebuild", "--rerank-fusion"))

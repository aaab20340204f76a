import json

import numpy as np
import pytest

from deepseek_tf.errors import UserError
from deepseek_tf.retrieval.cli import search_main as main
from deepseek_tf.retrieval.search import read_corpus, search


def test_read_corpus_counts_what_it_drops(tmp_path):
    path = tmp_path / "corpus.jsonl"
    rows = [
        {"_id": "a", "title": "Wing", "text": "flutter"},
        {"_id": "a", "text": "dup"},
        {"_id": "b", "title": "", "text": " "},
        {"_id": 3, "title": "heat", "text": "heat transfer"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ids, texts, dropped = read_corpus(path)
    assert ids == ["a", "3"] and texts == ["Wing flutter", "heat heat transfer"]  # title + text, as BEIR
    assert dropped == {"duplicate doc ids": 1, "empty docs": 1}
    txt = tmp_path / "docs.txt"
    txt.write_text("first doc\n\nthird doc\n")
    assert read_corpus(txt)[:2] == (["1", "3"], ["first doc", "third doc"])
    with pytest.raises(UserError, match="missing corpus file"):
        read_corpus(tmp_path / "nope.jsonl")


def test_saved_index_is_reused_and_refused_when_stale(tiny_run, tiny_beir, tmp_path, capsys):
    model, corpus, ix = str(tiny_run / "model"), tiny_beir / "corpus.jsonl", tmp_path / "ix"
    first = search(model, corpus, ["summer dress"], top_k=5, index_dir=str(ix))
    assert "saved exact index" in capsys.readouterr().err
    again = search(model, corpus, ["summer dress"], top_k=5, index_dir=str(ix))
    assert "reusing exact index" in capsys.readouterr().err
    assert [h["id"] for h in first[0]["hits"]] == [h["id"] for h in again[0]["hits"]]
    scores = [h["score"] for h in first[0]["hits"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    # the saved vectors are the model's document embeddings
    from deepseek_tf.retrieval.artifacts import load_embedder

    emb = load_embedder(model)
    ids, texts, _ = read_corpus(corpus)
    np.testing.assert_allclose(np.load(ix / "vectors.npy"), emb.encode_docs(texts), atol=1e-5)

    meta = json.loads((ix / "index.json").read_text())
    (ix / "index.json").write_text(json.dumps({**meta, "fingerprint": "another-model"}))
    with pytest.raises(UserError, match="built with another model"):
        search(model, corpus, ["summer dress"], index_dir=str(ix))
    (ix / "index.json").write_text(json.dumps(meta))
    other = tmp_path / "other.jsonl"
    other.write_text(corpus.read_text() + json.dumps({"_id": "new", "text": "a new document"}) + "\n")
    with pytest.raises(UserError, match="another corpus"):
        search(model, other, ["summer dress"], index_dir=str(ix))
    rebuilt = search(model, other, ["a new document"], top_k=30, index_dir=str(ix), rebuild=True)
    assert len(rebuilt[0]["hits"]) == 25  # 24 + 1 documents


def test_cli_answers_and_refuses_another_model(tiny_run, tiny_beir, tmp_path, capsys):
    ix = tmp_path / "ix"
    args = [
        "--model",
        str(tiny_run / "model"),
        "--corpus",
        str(tiny_beir / "corpus.jsonl"),
        "--index",
        str(ix),
        "--query",
        "espresso machine",
        "--top-k",
        "3",
    ]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("query: espresso machine") and [l.split()[0] for l in lines[1:]] == ["1.", "2.", "3."]
    # an index saved by another model (another fingerprint) is refused: one line, exit 1
    meta = json.loads((ix / "index.json").read_text())
    (ix / "index.json").write_text(json.dumps({**meta, "fingerprint": "0123456789abcdef"}))
    assert main(args) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: {ix}: index was built with another model (fingerprint 0123456789abcdef != {meta['fingerprint']}); "
        "rebuild it"
    ]

"""`deepseek-tf index` / deepseek_tf.index: sharded build, resume after SIGKILL, refusal of damaged
shards, the stored analyzer, and the loaded index's searches against references."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from deepseek_tf.errors import UserError
from deepseek_tf.index import build_index, load_built_index
from deepseek_tf.index.build import KILL_AFTER_ENV
from deepseek_tf.index.cli import main
from deepseek_tf.index.corpus import iter_documents


@pytest.fixture(scope="module")
def built(tiny_run, tiny_beir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("idx") / "exact"
    build_index(str(tiny_run / "model"), tiny_beir / "corpus.jsonl", out, shard_size=5, verbose=False)
    return out


def _corpus(tiny_beir) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in (tiny_beir / "corpus.jsonl").read_text().splitlines()]
    return [r["_id"] for r in rows], [f"{r['title']} {r['text']}" for r in rows]


def file_digests(root: Path) -> dict[str, str]:
    """sha256 of every file; the manifest without its `build` timings."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "manifest.json":
                data = json.dumps({k: v for k, v in json.loads(data).items() if k != "build"}).encode()
            out[str(p.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return out


def test_dense_search_equals_exact_search_over_the_models_own_vectors(built, tiny_run, tiny_beir):
    from deepseek_tf.retrieval.artifacts import load_embedder

    index = load_built_index(built)
    ids, texts = _corpus(tiny_beir)
    m = index.manifest
    assert (m["format"], m["version"], m["backend"], m["count"], m["dim"]) == ("deepseek_tf-index", 2, "exact", 24, 32)
    assert [s["count"] for s in m["shards"]] == [5, 5, 5, 5, 4] and index.ids == ids
    assert (
        m["model"] == str((tiny_run / "model").resolve())
        and m["corpus_sha256"] == hashlib.sha256((tiny_beir / "corpus.jsonl").read_bytes()).hexdigest()
    )
    emb = load_embedder(str(tiny_run / "model"))
    docs = emb.encode_docs(texts)  # (24, dim)
    q = emb.encode_queries(["summer dress", "espresso machine", "手机壳 防摔"])
    scores = q @ docs.T  # (3, 24) the reference: every dot product
    for row, hits in zip(scores, index.search_dense(q, 5)):
        best = np.argsort(-row)[:5]
        assert [d for d, _ in hits] == [ids[j] for j in best]
        np.testing.assert_allclose([s for _, s in hits], row[best], atol=1e-5)
    assert index.embedder().fingerprint == m["model_fingerprint"]
    assert index.text("phone-2") == texts[ids.index("phone-2")]
    with pytest.raises(UserError, match="32-d"):
        index.search_dense(np.zeros((1, 7), np.float32), 3)


@pytest.mark.parametrize("backend", ["faiss-hnsw", "faiss-ivfpq"])
def test_faiss_backends_reuse_the_shards_and_find_the_exact_top_10(built, tiny_run, tiny_beir, tmp_path, backend):
    out = tmp_path / "ann"
    shutil.copytree(built, out)
    manifest = build_index(
        str(tiny_run / "model"), tiny_beir / "corpus.jsonl", out, backend=backend, shard_size=5, verbose=False
    )
    assert manifest["build"]["encode_seconds"] == 0  # every shard verified and reused
    assert manifest["build"]["ann_recall_at_10"] == 1.0  # 24 documents: ANN search is exhaustive
    exact, ann = load_built_index(built), load_built_index(out)
    q = exact.embedder().encode_queries(["lightweight laptop", "trail running shoes"])
    for a, b in zip(exact.search_dense(q, 10), ann.search_dense(q, 10)):
        assert [d for d, _ in a] == [d for d, _ in b]
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-5)


def test_killed_build_resumes_to_the_same_bytes(tiny_run, tiny_beir, tmp_path):
    args = ["--model", str(tiny_run / "model"), "--corpus", str(tiny_beir / "corpus.jsonl"), "--shard-size", "2"]
    killed = subprocess.run(
        [sys.executable, "-m", "deepseek_tf.cli", "index", *args, "--output", str(tmp_path / "a")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), KILL_AFTER_ENV: "3"},
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    shards = sorted(p.name for p in (tmp_path / "a" / "shards").iterdir())
    assert [p for p in shards if p.endswith(".json")] == ["00000.json", "00001.json", "00002.json"]
    assert not (tmp_path / "a" / "manifest.json").exists()
    with pytest.raises(UserError, match="no manifest.json"):
        load_built_index(tmp_path / "a")
    (tmp_path / "a" / "shards" / "00003.docs.jsonl").write_text("the unfinished tail\n")  # killed mid-shard
    finished = [(tmp_path / "a" / "shards" / f"0000{i}.npy").stat().st_mtime_ns for i in range(3)]
    build_index(str(tiny_run / "model"), tiny_beir / "corpus.jsonl", tmp_path / "a", shard_size=2, verbose=False)
    build_index(str(tiny_run / "model"), tiny_beir / "corpus.jsonl", tmp_path / "b", shard_size=2, verbose=False)
    resumed, whole = file_digests(tmp_path / "a"), file_digests(tmp_path / "b")
    assert len(whole) == 12 * 3 + 3 + len(list((tmp_path / "b" / "bm25").iterdir()))
    assert resumed == whole
    assert [(tmp_path / "a" / "shards" / f"0000{i}.npy").stat().st_mtime_ns for i in range(3)] == finished  # kept


def test_damaged_or_foreign_shards_are_refused_naming_the_file(built, tiny_run, tiny_beir, tmp_path):
    out = tmp_path / "idx"
    shutil.copytree(built, out)
    shard = out / "shards" / "00001.npy"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(UserError, match=f"{shard}: truncated") as e:
        load_built_index(out)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match=f"{shard}: truncated"):  # a rerun of the build refuses it too
        build_index(
            str(tiny_run / "model"), tiny_beir / "corpus.jsonl", out, backend="faiss-hnsw", shard_size=5, verbose=False
        )
    shutil.rmtree(out)
    shutil.copytree(built, out)
    vectors = np.load(out / "shards" / "00002.npy")
    vectors[0, 0] += 1
    np.save(out / "shards" / "00002.npy", vectors)  # same size, other bytes
    with pytest.raises(UserError, match="00002.npy: checksum mismatch"):
        load_built_index(out)
    record = out / "shards" / "00000.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "model_fingerprint": "another"}))
    (out / "manifest.json").unlink()
    with pytest.raises(UserError, match=f"{record}: shard was built from another model"):
        build_index(str(tiny_run / "model"), tiny_beir / "corpus.jsonl", out, shard_size=5, verbose=False)


def test_bm25_side_uses_the_analyzer_decided_at_build(tiny_run, tmp_path):
    from deepseek_tf.retrieval.bm25 import BM25Index

    docs = {"a": "苹果手机壳 防摔", "b": "华为手机", "c": "笔记本电脑包", "d": "跑步鞋 运动鞋"}
    corpus = tmp_path / "zh.jsonl"
    corpus.write_text(
        "".join(json.dumps({"_id": k, "text": v}, ensure_ascii=False) + "\n" for k, v in docs.items()), encoding="utf-8"
    )
    model = str(tiny_run / "model")
    build_index(model, corpus, tmp_path / "zh", verbose=False)
    index = load_built_index(tmp_path / "zh")
    assert index.manifest["analyzer"] == "cjk"  # all CJK: the default resolves to character 1-2-grams
    # terms of "机壳": 机, 壳, 机壳 ("a" holds all three, "b" only 机); "防摔" only "a" holds;
    # "手机" is in "a" (12 terms) and "b" (7 terms): the shorter ranks first
    assert [d for d, _ in index.search_bm25(["机壳"], 4)[0]] == ["a", "b"]
    assert [d for d, _ in index.search_bm25(["防摔"], 4)[0]] == ["a"]
    assert [d for d, _ in index.search_bm25(["手机"], 4)[0]] == ["b", "a"]
    reference = BM25Index().index(list(docs), list(docs.values()))
    for q in ("手机", "运动鞋", "电脑"):
        got, want = index.search_bm25([q], 4)[0], reference.search([q], 4)[0]
        assert [d for d, _ in got] == [d for d, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=1e-6)
    build_index(model, corpus, tmp_path / "en", analyzer="english", verbose=False)
    english = load_built_index(tmp_path / "en")
    assert english.manifest["analyzer"] == "english"
    assert english.search_bm25(["机壳"], 4) == [[]]  # whole CJK runs are single words: no bigram match


def test_csv_and_tsv_corpora_stream_with_drops_counted(tmp_path):
    from deepseek_tf.data.beir import Dropped

    csv_file = tmp_path / "c.csv"
    csv_file.write_text('id,title,text\n1,Wing,"flutter, at speed"\n1,dup,again\n2,,\n3,,heat  transfer\n')
    dropped = Dropped()
    assert list(iter_documents(csv_file, dropped)) == [("1", "Wing flutter, at speed"), ("3", "heat transfer")]
    assert dropped == {"duplicate doc ids": 1, "empty docs": 1}
    tsv_file = tmp_path / "c.tsv"
    tsv_file.write_text("doc_id\ttext\nx\tfirst\ny\tsecond\n")
    assert list(iter_documents(tsv_file)) == [("x", "first"), ("y", "second")]
    (tmp_path / "bad.csv").write_text("name,body\n1,x\n")
    with pytest.raises(UserError, match="needs a header with an id column"):
        list(iter_documents(tmp_path / "bad.csv"))


@pytest.mark.parametrize(
    "case,argv,message",
    [
        (
            "missing corpus",
            ["--corpus", "{t}/nope.jsonl", "--output", "{t}/out"],
            "missing corpus file: {t}/nope.jsonl",
        ),
        (
            "bad backend",
            ["--corpus", "{c}", "--output", "{t}/out", "--backend", "annoy"],
            "--backend 'annoy' is not one of",
        ),
        ("output is a file", ["--corpus", "{c}", "--output", "{t}/afile"], "--output {t}/afile is a file"),
        (
            "bad param",
            ["--corpus", "{c}", "--output", "{t}/out", "--backend", "faiss-hnsw", "--param", "nlist=4"],
            "has no parameter nlist",
        ),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(tiny_run, tiny_beir, tmp_path, capsys, case, argv, message):
    (tmp_path / "afile").write_text("mine\n")
    fill = lambda s: s.format(t=tmp_path, c=tiny_beir / "corpus.jsonl")
    code = main(["--model", str(tiny_run / "model"), *map(fill, argv)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and err[0].startswith("error: ") and fill(message) in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and (tmp_path / "afile").read_text() == "mine\n"

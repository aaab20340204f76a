"""Issue #47, "Nothing lost" (data_safety_rows.py), for what the commands read: a line past the
bound, a cross-encoder given as a retriever, configs (duplicate keys, alias bombs), ids and texts
of other JSON types, numeric flags out of range, judgments naming missing documents; and the one
corpus reader they all go through.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bad_input_rows import beir_with, eval_argv, user_file
from data_safety_rows import Case, Fx, check_nothing_lost, corpus_with, index_argv, mine_argv, write_jsonl


@pytest.fixture(scope="module")
def fx(tiny_beir, tiny_run, tiny_saved_model, tiny_ce_run, tiny_ce_tflite, tiny_sharded_index) -> Fx:
    return Fx(tiny_beir, tiny_run, tiny_saved_model, tiny_ce_run / "model", tiny_ce_tflite, tiny_sharded_index)


# ---------------------------------------------------------------------------- input builders
def _beir_corpus_with(fx: Fx, t: Path, line3: dict) -> Path:
    rows = fx.corpus.read_text().splitlines()
    rows[2] = json.dumps(line3)
    return beir_with(fx, t, {"corpus.jsonl": ("\n".join(rows) + "\n").encode()})


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")
)


# ---------------------------------------------------------------------------- the table
CASES = [
    # 6. one line is never held whole past a bound
    Case(
        "index-txt-line-over-the-bound",
        lambda fx, t: (
            index_argv(
                fx,
                fx.model,
                user_file(t / "big.txt", "short\n" + "word " * 60000 + "\nshort\n"),
                t / "out",
                "--max-line-mb",
                "0.1",
            ),
            f"{t / 'big.txt'}:2: line longer than 0.1 MB",
        ),
        ignore=("out",),
    ),
    Case(
        "index-jsonl-line-over-the-bound",
        lambda fx, t: (
            index_argv(
                fx,
                fx.model,
                corpus_with(fx, t, {"_id": "huge", "text": "word " * 60000}),
                t / "out",
                "--max-line-mb",
                "0.1",
            ),
            f"{t / 'corpus.jsonl'}:3: line longer than 0.1 MB",
        ),
        ignore=("out",),
    ),
    Case(
        "index-csv-line-over-the-bound",
        lambda fx, t: (
            index_argv(
                fx,
                fx.model,
                user_file(t / "c.csv", "id,text\n1,a\n2," + "word " * 60000 + "\n"),
                t / "out",
                "--max-line-mb",
                "0.1",
            ),
            f"{t / 'c.csv'}:3: line longer than 0.1 MB",
        ),
        ignore=("out",),
    ),
    # a cross-encoder given as a retriever
    Case(
        "index-cross-encoder-as-model",
        lambda fx, t: (
            index_argv(fx, fx.ce, fx.corpus, t / "out"),
            f"{fx.ce}: a cross-encoder (reranker), not a retriever",
        ),
    ),
    Case(
        "mine-cross-encoder-as-source",
        lambda fx, t: (mine_argv(fx.beir, t / "p.tsv", "--source", str(fx.ce)), f"{fx.ce}: a cross-encoder"),
    ),
    Case(
        "search-cross-encoder-as-model",
        lambda fx, t: (
            ["search", "--model", str(fx.ce), "--corpus", str(fx.corpus), "--query", "summer dress"],
            f"{fx.ce}: a cross-encoder",
        ),
    ),
    Case(
        "evaluate-cross-encoder-tflite-as-model",
        lambda fx, t: (eval_argv(fx, fx.ce_tflite), f"{fx.ce_tflite}: a cross-encoder"),
    ),
    # silently wrong before: configs
    Case(
        "train-yaml-two-train-blocks",
        lambda fx, t: (
            [
                "train",
                "--config",
                str(
                    user_file(
                        t / "dup.yaml", "train:\n  epochs: 1\nmodel:\n  kind: dual_encoder\ntrain:\n  epochs: 3\n"
                    )
                ),
            ],
            f"{t / 'dup.yaml'}:5:1: not valid YAML (duplicate key 'train' (first at line 1",
        ),
        code=2,
    ),
    Case(
        "train-yaml-alias-bomb",
        lambda fx, t: (["train", "--config", str(user_file(t / "bomb.yaml", ALIAS_BOMB))], f"{t / 'bomb.yaml'}:2:"),
        code=2,
    ),
    # silently wrong before: ids and texts of other JSON types
    *[
        Case(
            f"index-corpus-id-{name}",
            lambda fx, t, v=value: (
                index_argv(fx, fx.model, corpus_with(fx, t, {"_id": v, "text": "a document"}), t / "out"),
                f"{t / 'corpus.jsonl'}:3: '_id' is {json.dumps(v)}; ids must be strings or integers",
            ),
        )
        for name, value in (("null", None), ("true", True), ("float", 1.0))
    ],
    Case(
        "evaluate-corpus-id-null",
        lambda fx, t: (
            eval_argv(fx, fx.model, _beir_corpus_with(fx, t, {"_id": None, "text": "x"})),
            f"{t / 'data' / 'corpus.jsonl'}:3: '_id' is null",
        ),
    ),
    Case(
        "evaluate-queries-id-true",
        lambda fx, t: (
            eval_argv(fx, fx.model, beir_with(fx, t, {"queries.jsonl": b'{"_id": true, "text": "x"}\n'})),
            f"{t / 'data' / 'queries.jsonl'}:1: '_id' is true",
        ),
    ),
    Case(
        "index-corpus-text-object",
        lambda fx, t: (
            index_argv(fx, fx.model, corpus_with(fx, t, {"_id": "x", "text": {"a": 1}}), t / "out"),
            f"{t / 'corpus.jsonl'}:3: 'text' is {{\"a\": 1}}; text fields must be strings",
        ),
    ),
    Case(
        "evaluate-corpus-title-array",
        lambda fx, t: (
            eval_argv(fx, fx.model, _beir_corpus_with(fx, t, {"_id": "x", "title": ["a"], "text": "y"})),
            f"{t / 'data' / 'corpus.jsonl'}:3: 'title' is [\"a\"]",
        ),
    ),
    Case(
        "search-corpus-text-number",
        lambda fx, t: (
            [
                "search",
                "--model",
                str(fx.model),
                "--corpus",
                str(corpus_with(fx, t, {"_id": "x", "text": 5})),
                "--query",
                "dress",
            ],
            f"{t / 'corpus.jsonl'}:3: 'text' is 5",
        ),
    ),
    Case(
        "search-query-of-control-characters-only",
        lambda fx, t: (
            ["search", "--model", str(fx.model), "--corpus", str(fx.corpus), "--query", "\x01\x02\x07"],
            "--query must be a non-empty text",
        ),
    ),
    Case(
        "search-top-k-zero",
        lambda fx, t: (
            ["search", "--model", str(fx.model), "--corpus", str(fx.corpus), "--query", "dress", "--top-k", "0"],
            "--top-k: must be >= 1",
        ),
        code=2,
    ),
    Case(
        "search-rerank-fusion-nan",
        lambda fx, t: (
            ["search", "--model", str(fx.model), "--corpus", str(fx.corpus), "--query", "dress"]
            + ["--rerank-fusion", "nan"],
            "--rerank-fusion: expected a finite number",
        ),
        code=2,
    ),
    # numeric flags out of range
    Case(
        "mine-margin-nan",
        lambda fx, t: (mine_argv(fx.beir, t / "p.tsv", "--margin", "nan"), "--margin: expected a finite number"),
        code=2,
    ),
    Case(
        "mine-margin-negative",
        lambda fx, t: (mine_argv(fx.beir, t / "p.tsv", "--margin", "-3"), "--margin: must be >= 0"),
        code=2,
    ),
    Case(
        "evaluate-bm25-k1-negative",
        lambda fx, t: (
            ["evaluate", "--baseline", "bm25", "--dataset", str(fx.beir), "--bm25-k1", "-5"],
            "--bm25-k1: must be >= 0",
        ),
        code=2,
    ),
    Case(
        "evaluate-rerank-fusion-nan",
        lambda fx, t: (
            eval_argv(fx, fx.model, None, "--rerank", str(fx.ce), "--rerank-fusion", "0.3,nan"),
            "--rerank-fusion",
        ),
        code=2,
    ),
    Case(
        "index-shard-size-zero",
        lambda fx, t: (
            index_argv(fx, fx.model, fx.corpus, t / "out", "--shard-size", "0"),
            "--shard-size: must be >= 1",
        ),
        code=2,
    ),
    # silently dropped before: now counted and said
    Case(
        "mine-judgments-naming-missing-documents",
        lambda fx, t: (
            mine_argv(
                beir_with(
                    fx,
                    t,
                    {
                        "qrels/train.tsv": (fx.beir / "qrels" / "train.tsv").read_bytes()
                        + b"q-dress-0\tgone-1\t2\nq-dress-0\tgone-2\t1\n"
                    },
                ),
                t / "p.tsv",
            ),
            "warning: dropped 2 judgments with unknown ids",
        ),
        code=0,
        ignore=("p.tsv",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_nothing_lost(case: Case, fx: Fx, tmp_path: Path):
    check_nothing_lost(case, fx, tmp_path)


# ---------------------------------------------------------------------------- the one corpus reader
def test_one_corpus_reader_splits_lines_at_newline_only_and_reads_csv_headers(tmp_path: Path):
    from deepseek_tf.data.corpus import iter_documents, read_documents

    txt = user_file(tmp_path / "c.txt", "first\x0cstill first\nsecond\u2028still second\n\nfourth\n")
    assert list(iter_documents(txt)) == [("1", "first still first"), ("2", "second still second"), ("4", "fourth")]
    csv_file = user_file(tmp_path / "c.csv", 'id,title,text\n7,T,"a\nb"\n8,,c\n')
    assert read_documents(csv_file)[:2] == (["7", "8"], ["T a b", "c"])  # the header is no document
    jsonl = write_jsonl(
        tmp_path / "c.jsonl", [{"_id": 3, "text": "int ids are ids"}, {"_id": "x", "title": None, "text": "y"}]
    )
    assert read_documents(jsonl)[:2] == (["3", "x"], ["int ids are ids", "y"])

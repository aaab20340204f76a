"""Issue #47, "Nothing lost", through the real CLIs: what a hostile tester found, one row each.

A failing row must exit with its code and exactly one short `error:` line naming what and where
(flag and path, file:line, or the id), with no traceback, and leave every file in its directory
and in the shared fixtures byte-identical (nothing deleted, changed or half-written: no `*.tmp`).
A row with code 0 is bad input the command must survive: it names what it dropped on stderr.
Rows that need a full disk run under `ulimit -f` (RLIMIT_FSIZE, SIGXFSZ ignored so a write fails
with EFBIG instead of killing the process).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, run_cli_here
from test_bad_input import _beir, _copy, _file, _snapshot
from test_index import _tree

from deepseek_tf.errors import UserError


@dataclass
class Fx:
    """Shared read-only inputs; rows copy what they modify."""

    beir: Path
    run: Path  # a trained dual encoder's workdir
    saved_model: Path  # the same model exported: another --model for `index`
    ce: Path  # a trained cross-encoder's model/ dir
    ce_tflite: Path  # that cross-encoder as PREFIX.tflite
    index: Path  # a finished exact index of beir/corpus.jsonl by run/model, --shard-size 5

    @property
    def model(self) -> Path:
        return self.run / "model"

    @property
    def corpus(self) -> Path:
        return self.beir / "corpus.jsonl"


@pytest.fixture(scope="module")
def fx(tiny_beir, tiny_run, tiny_saved_model, tiny_ce_run, tmp_path_factory) -> Fx:
    from deepseek_tf.export.towers import export_tflite
    from deepseek_tf.index import build_index

    out = tmp_path_factory.mktemp("safety")
    ce_tflite = Path(export_tflite(tiny_ce_run / "model", out / "ce")["paths"]["score"])
    build_index(str(tiny_run / "model"), tiny_beir / "corpus.jsonl", out / "idx", shard_size=5, verbose=False)
    return Fx(tiny_beir, tiny_run, tiny_saved_model, tiny_ce_run / "model", ce_tflite, out / "idx")


def run(argv: list[str], fsize: int | None = None) -> subprocess.CompletedProcess:
    """`python -m deepseek_tf.cli ARGV`, in this process; with `fsize`, in a process of its own
    under `ulimit -f` of that many bytes."""
    if not fsize:
        return run_cli_here("deepseek_tf.cli", *argv)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(), as a shell with ulimit -f and trap
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run(
        [sys.executable, "-m", "deepseek_tf.cli", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"},
        preexec_fn=limit if fsize else None,
    )


# ---------------------------------------------------------------------------- input builders
def _index(fx: Fx, t: Path) -> Path:
    return _copy(fx.index, t / "idx")


def _index_argv(fx: Fx, model: Path | str, corpus: Path, output: Path, *more: str) -> list[str]:
    return ["index", "--model", str(model), "--corpus", str(corpus), "--output", str(output), "--quiet", *more]


def _rerun(fx: Fx, t: Path, *more: str, model: Path | None = None, corpus: Path | None = None) -> list[str]:
    """`index` again over a copy of the finished index, shard size 5 unless `more` says otherwise."""
    shard = [] if "--shard-size" in more else ["--shard-size", "5"]
    return _index_argv(fx, model or fx.model, corpus or fx.corpus, _index(fx, t), *shard, *more)


def _jsonl(path: Path, rows: list) -> Path:
    return _file(path, "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows))


def _corpus_with(fx: Fx, t: Path, line3: dict, name: str = "corpus.jsonl") -> Path:
    """The tiny corpus with its third line replaced by `line3`."""
    rows = fx.corpus.read_text().splitlines()
    rows[2] = json.dumps(line3)
    return _jsonl(t / name, rows)


def _beir_corpus_with(fx: Fx, t: Path, line3: dict) -> Path:
    rows = fx.corpus.read_text().splitlines()
    rows[2] = json.dumps(line3)
    return _beir(fx, t, {"corpus.jsonl": ("\n".join(rows) + "\n").encode()})


def _index_with_ids_swapped(fx: Fx, t: Path) -> Path:
    """A finished index whose ids.json was edited: two ids of one length swapped (same size)."""
    idx = _index(fx, t)
    ids = json.loads((idx / "ids.json").read_text())
    ids[0], ids[1] = ids[1], ids[0]
    (idx / "ids.json").write_text(json.dumps(ids, indent=1, ensure_ascii=False) + "\n")
    return idx


def _index_with_planted_manifest(fx: Fx, t: Path) -> Path:
    idx = _index(fx, t)
    manifest = json.loads((idx / "manifest.json").read_text())
    manifest["shards"][0]["file"] = "../../../../../../../../etc/passwd"
    (idx / "manifest.json").write_text(json.dumps(manifest))
    return idx


def _mine(dataset: Path, output: Path, *more: str) -> list[str]:
    return ["mine", "--dataset", str(dataset), "--output", str(output), *more]


def _export(model: Path, output: Path, fmt: str = "saved_model", *more: str) -> list[str]:
    return ["export", "--model", str(model), "--format", fmt, "--output", str(output), *more]


def _eval(fx: Fx, model: Path | str, dataset: Path | None = None, *more: str) -> list[str]:
    return ["evaluate", "--model", str(model), "--dataset", str(dataset or fx.beir), *more]


def _big_corpus(t: Path) -> Path:
    return _jsonl(t / "big.jsonl", [{"_id": f"d{i}", "text": f"document {i} on wings and heat"} for i in range(600)])


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi")
)


# ---------------------------------------------------------------------------- the table
@dataclass
class Case:
    id: str
    build: Callable[[Fx, Path], tuple[list[str], str]]  # -> (argv, text stderr must hold: the error names it)
    code: int = 1
    fsize: int | None = None  # run under `ulimit -f` of this many bytes
    after: Callable[[Fx, Path], None] | None = None  # what must still hold afterwards
    ignore: tuple[str, ...] = ()  # entries of the row's directory the command may create (its outputs)


def _still_loads(fx: Fx, t: Path) -> None:
    from deepseek_tf.index import load_built_index

    assert load_built_index(t / "idx", verify=True).manifest["count"] == 24


def _no_tmp(fx: Fx, t: Path) -> None:
    assert not list(t.rglob("*.tmp")), list(t.rglob("*"))


CASES = [
    # 1. a rerun over a finished index refuses before touching anything; the index still serves
    Case(
        "index-rerun-finished-with-another-model",
        lambda fx, t: (
            _rerun(fx, t, model=fx.saved_model),
            f"--output {t / 'idx'} holds a finished index built with another --model",
        ),
        after=_still_loads,
    ),
    Case(
        "index-rerun-finished-with-another-corpus",
        lambda fx, t: (
            _rerun(fx, t, corpus=_corpus_with(fx, t, {"_id": "new", "text": "another document"})),
            f"--output {t / 'idx'} holds a finished index built with another --corpus",
        ),
        after=_still_loads,
    ),
    Case(
        "index-rerun-finished-with-another-shard-size",
        lambda fx, t: (_rerun(fx, t, "--shard-size", "7"), "built with another --shard-size (shard_size 5 != 7)"),
        after=_still_loads,
    ),
    # 3. an output never aliases an input
    Case(
        "mine-output-is-its-own-qrels",
        lambda fx, t: (
            _mine(d := _copy(fx.beir, t / "data"), d / "qrels" / "train.tsv"),
            f"--output {t / 'data' / 'qrels' / 'train.tsv'} is --dataset",
        ),
    ),
    Case(
        "mine-output-is-the-corpus-through-dotdot",
        lambda fx, t: (
            _mine(d := _copy(fx.beir, t / "data"), d / "qrels" / ".." / "corpus.jsonl"),
            "is --dataset",
        ),
    ),
    Case(
        "mine-output-inside-the-source-model",
        lambda fx, t: (
            _mine(fx.beir, (m := _copy(fx.model, t / "model")) / "config.yaml", "--source", str(m)),
            f"--output {t / 'model' / 'config.yaml'} lies inside --source",
        ),
    ),
    # 4. export never deletes the model it exports
    Case(
        "export-output-is-the-model-overwrite",
        lambda fx, t: (
            _export(m := _copy(fx.model, t / "model"), m, "saved_model", "--overwrite"),
            f"--output {t / 'model'} is --model",
        ),
    ),
    Case(
        "export-output-inside-the-model",
        lambda fx, t: (
            _export(m := _copy(fx.model, t / "model"), m / "sm", "saved_model", "--overwrite"),
            f"--output {t / 'model' / 'sm'} lies inside --model",
        ),
    ),
    Case(
        "export-output-holds-the-model",
        lambda fx, t: (
            _export(_copy(fx.model, t / "out" / "model"), t / "out", "saved_model", "--overwrite"),
            f"--output {t / 'out'} holds --model",
        ),
    ),
    Case(
        "export-tflite-prefix-inside-the-model",
        lambda fx, t: (
            _export(m := _copy(fx.model, t / "model"), m / "x", "tflite", "--overwrite"),
            "lies inside --model",
        ),
    ),
    # 6. one line is never held whole past a bound
    Case(
        "index-txt-line-over-the-bound",
        lambda fx, t: (
            _index_argv(
                fx,
                fx.model,
                _file(t / "big.txt", "short\n" + "word " * 60000 + "\nshort\n"),
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
            _index_argv(
                fx,
                fx.model,
                _corpus_with(fx, t, {"_id": "huge", "text": "word " * 60000}),
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
            _index_argv(
                fx,
                fx.model,
                _file(t / "c.csv", "id,text\n1,a\n2," + "word " * 60000 + "\n"),
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
            _index_argv(fx, fx.ce, fx.corpus, t / "out"),
            f"{fx.ce}: a cross-encoder (reranker), not a retriever",
        ),
    ),
    Case(
        "mine-cross-encoder-as-source",
        lambda fx, t: (_mine(fx.beir, t / "p.tsv", "--source", str(fx.ce)), f"{fx.ce}: a cross-encoder"),
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
        lambda fx, t: (_eval(fx, fx.ce_tflite), f"{fx.ce_tflite}: a cross-encoder"),
    ),
    # a full disk (`ulimit -f`): one line naming the file, no temporary left
    Case(
        "export-saved_model-under-ulimit-f",
        lambda fx, t: (_export(fx.model, t / "sm"), f"{t / 'sm.tmp'}: cannot write the export"),
        fsize=64 << 10,
        after=_no_tmp,
    ),
    Case(
        "export-tflite-under-ulimit-f",
        lambda fx, t: (_export(fx.model, t / "tiny", "tflite"), ": cannot write"),
        fsize=64 << 10,
        after=_no_tmp,
    ),
    Case(
        "evaluate-output-under-ulimit-f",
        lambda fx, t: (
            ["evaluate", "--baseline", "bm25", "--dataset", str(fx.beir), "--output", str(t / "r.json")],
            f"{t / 'r.json'}: cannot write",
        ),
        fsize=2000,
        after=_no_tmp,
    ),
    Case(
        "index-under-ulimit-f",
        lambda fx, t: (
            _index_argv(fx, fx.model, _big_corpus(t), t / "out", "--shard-size", "600"),
            f"{t / 'out' / 'shards' / '00000.npy'}: cannot write (",
        ),
        fsize=64 << 10,  # the shard's texts fit (40 KB), its vectors (77 KB) do not
        after=_no_tmp,
        ignore=("out",),
    ),
    # evaluate checks its outputs up front
    Case(
        "evaluate-output-is-an-existing-dir",
        lambda fx, t: (
            _eval(fx, fx.model, None, "--output", str(_file(t / "r" / "keep.txt").parent)),
            f"--output {t / 'r'}: a directory",
        ),
    ),
    Case(
        "evaluate-output-is-the-qrels",
        lambda fx, t: (
            _eval(fx, fx.model, d := _copy(fx.beir, t / "data"), "--output", str(d / "qrels" / "test.tsv")),
            f"--output {t / 'data' / 'qrels' / 'test.tsv'} is --dataset",
        ),
    ),
    # silently wrong before: configs
    Case(
        "train-yaml-two-train-blocks",
        lambda fx, t: (
            [
                "train",
                "--config",
                str(_file(t / "dup.yaml", "train:\n  epochs: 1\nmodel:\n  kind: dual_encoder\ntrain:\n  epochs: 3\n")),
            ],
            f"{t / 'dup.yaml'}:5:1: not valid YAML (duplicate key 'train' (first at line 1",
        ),
        code=2,
    ),
    Case(
        "train-yaml-alias-bomb",
        lambda fx, t: (["train", "--config", str(_file(t / "bomb.yaml", ALIAS_BOMB))], f"{t / 'bomb.yaml'}:2:"),
        code=2,
    ),
    # silently wrong before: ids and texts of other JSON types
    *[
        Case(
            f"index-corpus-id-{name}",
            lambda fx, t, v=value: (
                _index_argv(fx, fx.model, _corpus_with(fx, t, {"_id": v, "text": "a document"}), t / "out"),
                f"{t / 'corpus.jsonl'}:3: '_id' is {json.dumps(v)}; ids must be strings or integers",
            ),
        )
        for name, value in (("null", None), ("true", True), ("float", 1.0))
    ],
    Case(
        "evaluate-corpus-id-null",
        lambda fx, t: (
            _eval(fx, fx.model, _beir_corpus_with(fx, t, {"_id": None, "text": "x"})),
            f"{t / 'data' / 'corpus.jsonl'}:3: '_id' is null",
        ),
    ),
    Case(
        "evaluate-queries-id-true",
        lambda fx, t: (
            _eval(fx, fx.model, _beir(fx, t, {"queries.jsonl": b'{"_id": true, "text": "x"}\n'})),
            f"{t / 'data' / 'queries.jsonl'}:1: '_id' is true",
        ),
    ),
    Case(
        "index-corpus-text-object",
        lambda fx, t: (
            _index_argv(fx, fx.model, _corpus_with(fx, t, {"_id": "x", "text": {"a": 1}}), t / "out"),
            f"{t / 'corpus.jsonl'}:3: 'text' is {{\"a\": 1}}; text fields must be strings",
        ),
    ),
    Case(
        "evaluate-corpus-title-array",
        lambda fx, t: (
            _eval(fx, fx.model, _beir_corpus_with(fx, t, {"_id": "x", "title": ["a"], "text": "y"})),
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
                str(_corpus_with(fx, t, {"_id": "x", "text": 5})),
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
        lambda fx, t: (_mine(fx.beir, t / "p.tsv", "--margin", "nan"), "--margin: expected a finite number"),
        code=2,
    ),
    Case(
        "mine-margin-negative",
        lambda fx, t: (_mine(fx.beir, t / "p.tsv", "--margin", "-3"), "--margin: must be >= 0"),
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
            _eval(fx, fx.model, None, "--rerank", str(fx.ce), "--rerank-fusion", "0.3,nan"),
            "--rerank-fusion",
        ),
        code=2,
    ),
    Case(
        "index-shard-size-zero",
        lambda fx, t: (
            _index_argv(fx, fx.model, fx.corpus, t / "out", "--shard-size", "0"),
            "--shard-size: must be >= 1",
        ),
        code=2,
    ),
    # silently dropped before: now counted and said
    Case(
        "mine-judgments-naming-missing-documents",
        lambda fx, t: (
            _mine(
                _beir(
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
    # an index edited after its build is refused when loaded (here by a rerun of `index`)
    Case(
        "index-rerun-over-edited-ids-json",
        lambda fx, t: (
            _index_argv(fx, fx.model, fx.corpus, _index_with_ids_swapped(fx, t), "--shard-size", "5"),
            f"{t / 'idx' / 'ids.json'}: checksum mismatch",
        ),
    ),
    Case(
        "index-rerun-over-planted-manifest",
        lambda fx, t: (
            _index_argv(fx, fx.model, fx.corpus, _index_with_planted_manifest(fx, t), "--shard-size", "5"),
            "shard file '../../../../../../../../etc/passwd' lies outside the index directory",
        ),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_nothing_lost(case: Case, fx: Fx, tmp_path: Path):
    argv, names = case.build(fx, tmp_path)
    shared = {p: _snapshot(p) for p in (fx.run, fx.beir, fx.index, fx.ce.parent, fx.saved_model)}
    mine = lambda: {k: v for k, v in _snapshot(tmp_path).items() if k.split("/")[0] not in case.ignore}
    before = mine()
    result = run(argv, case.fsize)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == case.code, (result.returncode, result.stderr[-2000:])
    if case.code:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
        assert names in lines[0], lines[0]
        assert len(lines[0]) < 400, lines[0][:400]  # one short line, whatever the input
        assert "root:" not in result.stderr  # nothing quoted from a file outside the input
    else:
        assert names in result.stderr, result.stderr[-2000:]
    assert mine() == before  # nothing deleted, changed or half-written
    assert {p: _snapshot(p) for p in shared} == shared
    if case.after:
        case.after(fx, tmp_path)


# ---------------------------------------------------------------------------- 5. resume after a kill in the BM25 save
KILL_IN_BM25_SAVE = """
import os, signal, sys
from pathlib import Path
from deepseek_tf.index.lexical import StoredBM25

def dies_midway(self, directory):
    Path(directory).mkdir(parents=True)
    (Path(directory) / "params.index.json").write_text("{")  # the first file, half written
    os.kill(os.getpid(), signal.SIGKILL)

StoredBM25.save = dies_midway
from deepseek_tf.index.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_build_killed_inside_the_bm25_save_resumes_to_the_same_bytes(fx: Fx, tmp_path: Path):
    argv = _index_argv(fx, fx.model, fx.corpus, tmp_path / "a", "--shard-size", "5")[1:]
    killed = subprocess.run(
        [sys.executable, "-c", KILL_IN_BM25_SAVE, *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (tmp_path / "a" / ".bm25.tmp").is_dir() and not (tmp_path / "a" / "manifest.json").exists()
    resumed = run(["index", *argv])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _tree(tmp_path / "a") == _tree(fx.index)  # as an uninterrupted build, byte for byte
    assert not (tmp_path / "a" / ".bm25.tmp").exists()


# ---------------------------------------------------------------------------- the one corpus reader
def test_one_corpus_reader_splits_lines_at_newline_only_and_reads_csv_headers(tmp_path: Path):
    from deepseek_tf.data.corpus import iter_documents, read_documents

    txt = _file(tmp_path / "c.txt", "first\x0cstill first\nsecond\u2028still second\n\nfourth\n")
    assert list(iter_documents(txt)) == [("1", "first still first"), ("2", "second still second"), ("4", "fourth")]
    csv_file = _file(tmp_path / "c.csv", 'id,title,text\n7,T,"a\nb"\n8,,c\n')
    assert read_documents(csv_file)[:2] == (["7", "8"], ["T a b", "c"])  # the header is no document
    jsonl = _jsonl(
        tmp_path / "c.jsonl", [{"_id": 3, "text": "int ids are ids"}, {"_id": "x", "title": None, "text": "y"}]
    )
    assert read_documents(jsonl)[:2] == (["3", "x"], ["int ids are ids", "y"])


def test_load_refuses_edited_offsets_and_bm25_files(fx: Fx, tmp_path: Path):
    from deepseek_tf.index import load_built_index

    for name in ("docs.offsets.npy", "bm25/params.index.json"):
        idx = _copy(fx.index, tmp_path / name.replace("/", "_"))
        data = bytearray((idx / name).read_bytes())
        data[-2] ^= 1  # same size, another byte
        (idx / name).write_bytes(bytes(data))
        with pytest.raises(UserError, match=f"{idx / name}: checksum mismatch"):
            load_built_index(idx)
        (idx / name).write_bytes(bytes(data) + b" ")
        with pytest.raises(UserError, match=f"{idx / name}: size differs"):
            load_built_index(idx, verify=False)  # past VERIFY_BYTES: sizes are still checked


SHORT_NPY_WRITE = """
import resource, signal, sys
import numpy as np
from pathlib import Path
from deepseek_tf.index.shards import save_npy
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
try:
    save_npy(Path(sys.argv[1]), np.zeros((24, 32), np.float32))  # 3,200 bytes
except OSError as e:
    print(e)
"""


def test_a_short_npy_write_is_an_error(tmp_path: Path):
    """numpy writes a small array with one fwrite and ignores a short one: without the check a
    truncated shard got a record vouching for it."""
    result = subprocess.run(
        [sys.executable, "-c", SHORT_NPY_WRITE, str(tmp_path / "v.npy")], capture_output=True, text=True, cwd=ROOT
    )
    assert "short write: 2000 of 3200 bytes" in result.stdout, result.stdout + result.stderr

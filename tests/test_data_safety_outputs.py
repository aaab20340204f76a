"""Issue #47, "Nothing lost" (data_safety_rows.py), for what the commands write: a rerun over a
finished index, an output that is or holds an input, a full disk (`ulimit -f`: RLIMIT_FSIZE, SIGXFSZ
ignored so a write fails with EFBIG instead of killing the process), an index edited after its
build, a build killed inside its BM25 save, and a short write of a shard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from bad_input_rows import copied, eval_argv, user_file
from conftest import ROOT
from data_safety_rows import Case, Fx, check_nothing_lost, corpus_with, index_argv, mine_argv, run, write_jsonl
from test_index import file_digests

from deepseek_tf.errors import UserError


@pytest.fixture(scope="module")
def fx(tiny_beir, tiny_run, tiny_saved_model, tiny_ce_run, tiny_ce_tflite, tiny_sharded_index) -> Fx:
    return Fx(tiny_beir, tiny_run, tiny_saved_model, tiny_ce_run / "model", tiny_ce_tflite, tiny_sharded_index)


# ---------------------------------------------------------------------------- input builders
def _index(fx: Fx, t: Path) -> Path:
    return copied(fx.index, t / "idx")


def _rerun(fx: Fx, t: Path, *more: str, model: Path | None = None, corpus: Path | None = None) -> list[str]:
    """`index` again over a copy of the finished index, shard size 5 unless `more` says otherwise."""
    shard = [] if "--shard-size" in more else ["--shard-size", "5"]
    return index_argv(fx, model or fx.model, corpus or fx.corpus, _index(fx, t), *shard, *more)


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


def _export(model: Path, output: Path, fmt: str = "saved_model", *more: str) -> list[str]:
    return ["export", "--model", str(model), "--format", fmt, "--output", str(output), *more]


def _big_corpus(t: Path) -> Path:
    return write_jsonl(
        t / "big.jsonl", [{"_id": f"d{i}", "text": f"document {i} on wings and heat"} for i in range(600)]
    )


# ---------------------------------------------------------------------------- the table
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
            _rerun(fx, t, corpus=corpus_with(fx, t, {"_id": "new", "text": "another document"})),
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
            mine_argv(d := copied(fx.beir, t / "data"), d / "qrels" / "train.tsv"),
            f"--output {t / 'data' / 'qrels' / 'train.tsv'} is --dataset",
        ),
    ),
    Case(
        "mine-output-is-the-corpus-through-dotdot",
        lambda fx, t: (
            mine_argv(d := copied(fx.beir, t / "data"), d / "qrels" / ".." / "corpus.jsonl"),
            "is --dataset",
        ),
    ),
    Case(
        "mine-output-inside-the-source-model",
        lambda fx, t: (
            mine_argv(fx.beir, (m := copied(fx.model, t / "model")) / "config.yaml", "--source", str(m)),
            f"--output {t / 'model' / 'config.yaml'} lies inside --source",
        ),
    ),
    # 4. export never deletes the model it exports
    Case(
        "export-output-is-the-model-overwrite",
        lambda fx, t: (
            _export(m := copied(fx.model, t / "model"), m, "saved_model", "--overwrite"),
            f"--output {t / 'model'} is --model",
        ),
    ),
    Case(
        "export-output-inside-the-model",
        lambda fx, t: (
            _export(m := copied(fx.model, t / "model"), m / "sm", "saved_model", "--overwrite"),
            f"--output {t / 'model' / 'sm'} lies inside --model",
        ),
    ),
    Case(
        "export-output-holds-the-model",
        lambda fx, t: (
            _export(copied(fx.model, t / "out" / "model"), t / "out", "saved_model", "--overwrite"),
            f"--output {t / 'out'} holds --model",
        ),
    ),
    Case(
        "export-tflite-prefix-inside-the-model",
        lambda fx, t: (
            _export(m := copied(fx.model, t / "model"), m / "x", "tflite", "--overwrite"),
            "lies inside --model",
        ),
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
            index_argv(fx, fx.model, _big_corpus(t), t / "out", "--shard-size", "600"),
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
            eval_argv(fx, fx.model, None, "--output", str(user_file(t / "r" / "keep.txt").parent)),
            f"--output {t / 'r'}: a directory",
        ),
    ),
    Case(
        "evaluate-output-is-the-qrels",
        lambda fx, t: (
            eval_argv(fx, fx.model, d := copied(fx.beir, t / "data"), "--output", str(d / "qrels" / "test.tsv")),
            f"--output {t / 'data' / 'qrels' / 'test.tsv'} is --dataset",
        ),
    ),
    # an index edited after its build is refused when loaded (here by a rerun of `index`)
    Case(
        "index-rerun-over-edited-ids-json",
        lambda fx, t: (
            index_argv(fx, fx.model, fx.corpus, _index_with_ids_swapped(fx, t), "--shard-size", "5"),
            f"{t / 'idx' / 'ids.json'}: checksum mismatch",
        ),
    ),
    Case(
        "index-rerun-over-planted-manifest",
        lambda fx, t: (
            index_argv(fx, fx.model, fx.corpus, _index_with_planted_manifest(fx, t), "--shard-size", "5"),
            "shard file '../../../../../../../../etc/passwd' lies outside the index directory",
        ),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_nothing_lost(case: Case, fx: Fx, tmp_path: Path):
    check_nothing_lost(case, fx, tmp_path)


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
    argv = index_argv(fx, fx.model, fx.corpus, tmp_path / "a", "--shard-size", "5")[1:]
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
    assert file_digests(tmp_path / "a") == file_digests(fx.index)  # as an uninterrupted build, byte for byte
    assert not (tmp_path / "a" / ".bm25.tmp").exists()


def test_load_refuses_edited_offsets_and_bm25_files(fx: Fx, tmp_path: Path):
    from deepseek_tf.index import load_built_index

    for name in ("docs.offsets.npy", "bm25/params.index.json"):
        idx = copied(fx.index, tmp_path / name.replace("/", "_"))
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

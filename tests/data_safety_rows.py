"""Nothing lost, through the real CLIs: what a hostile tester found, one row each, in
test_data_safety_outputs.py (what the commands write) and test_data_safety_inputs.py (what they
read). Here: their shared inputs (Fx), the CLI runner, the builders both use, the row type and
what every row must show (check_nothing_lost).

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

from bad_input_rows import snapshot, user_file
from conftest import ROOT, run_cli_here


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
def index_argv(fx: Fx, model: Path | str, corpus: Path, output: Path, *more: str) -> list[str]:
    return ["index", "--model", str(model), "--corpus", str(corpus), "--output", str(output), "--quiet", *more]


def write_jsonl(path: Path, rows: list) -> Path:
    return user_file(
        path, "".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows)
    )


def corpus_with(fx: Fx, t: Path, line3: dict, name: str = "corpus.jsonl") -> Path:
    """The tiny corpus with its third line replaced by `line3`."""
    rows = fx.corpus.read_text().splitlines()
    rows[2] = json.dumps(line3)
    return write_jsonl(t / name, rows)


def mine_argv(dataset: Path, output: Path, *more: str) -> list[str]:
    return ["mine", "--dataset", str(dataset), "--output", str(output), *more]


# ---------------------------------------------------------------------------- the table
@dataclass
class Case:
    id: str
    build: Callable[[Fx, Path], tuple[list[str], str]]  # -> (argv, text stderr must hold: the error names it)
    code: int = 1
    fsize: int | None = None  # run under `ulimit -f` of this many bytes
    after: Callable[[Fx, Path], None] | None = None  # what must still hold afterwards
    ignore: tuple[str, ...] = ()  # entries of the row's directory the command may create (its outputs)


def check_nothing_lost(case: Case, fx: Fx, tmp_path: Path) -> None:
    """What every row of the tables must show (see the module's docstring)."""
    argv, names = case.build(fx, tmp_path)
    shared = {p: snapshot(p) for p in (fx.run, fx.beir, fx.index, fx.ce.parent, fx.saved_model)}
    mine = lambda: {k: v for k, v in snapshot(tmp_path).items() if k.split("/")[0] not in case.ignore}
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
    assert {p: snapshot(p) for p in shared} == shared
    if case.after:
        case.after(fx, tmp_path)

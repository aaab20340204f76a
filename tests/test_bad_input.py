"""Bad input through the real CLIs: a one-line `error:`, a non-zero exit, and nothing lost or
half-written left looking valid.

One table, each row run as the CLI in this process (`run_cli_here`): each row builds its inputs in its own directory
from artifacts made once here (the shared `tiny_run` model, one SavedModel and one TFLite
export), so no row trains or exports. After the run, every file in the row's directory must be
exactly as before: nothing deleted or changed, nothing new (no `*.tmp`, no config.yaml rewritten).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, run_cli, run_cli_here


@dataclass
class Fx:
    """Shared read-only inputs; rows copy what they modify."""

    beir: Path
    run: Path  # a trained workdir (config.yaml, checkpoints/, model/)
    saved_model: Path  # a finished SavedModel export
    tflite: Path  # PREFIX.query.tflite of a finished TFLite export

    @property
    def model(self) -> Path:
        return self.run / "model"


@pytest.fixture(scope="module")
def fx(tiny_beir, tiny_run, tiny_saved_model, tmp_path_factory) -> Fx:
    from deepseek_tf.export.towers import export_tflite

    result = export_tflite(tiny_run / "model", tmp_path_factory.mktemp("exports") / "tiny")
    return Fx(tiny_beir, tiny_run, tiny_saved_model, Path(result["paths"]["query"]))


# ---------------------------------------------------------------------------- input builders
def _copy(src: Path, dst: Path) -> Path:
    (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return dst


def _file(path: Path, data: bytes | str = "mine, keep me\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def _beir(fx: Fx, t: Path, replace: dict[str, bytes]) -> Path:
    """A copy of the tiny BEIR set with some files replaced: {"qrels/test.tsv": b"..."}."""
    d = _copy(fx.beir, t / "data")
    for rel, data in replace.items():
        (d / rel).write_bytes(data)
    return d


def _latin1_at_line(path: Path, line: int) -> bytes:
    """The file's lines with a Latin-1 'é' (byte 0xE9, not UTF-8) put into line `line`."""
    lines = path.read_bytes().splitlines(keepends=True)
    lines[line - 1] = (
        lines[line - 1].replace(b'"text": "', b'"text": "caf\xe9 ', 1)
        if b'"text"' in lines[line - 1]
        else lines[line - 1][:-1] + b"\xe9\n"
    )
    return b"".join(lines)


def _truncated(path: Path, t: Path, name: str) -> Path:
    data = path.read_bytes()
    return _file(t / name, data[: len(data) // 3])


def _model_with_truncated_keras(fx: Fx, t: Path) -> Path:
    m = _copy(fx.model, t / "model")
    data = (m / "model.keras").read_bytes()
    (m / "model.keras").write_bytes(data[: len(data) // 2])  # a copy cut short (disk full, killed)
    return m


def _tflite_pair_doc_truncated(fx: Fx, t: Path) -> Path:
    """A finished tower pair (with its metadata) whose doc file was cut short afterwards."""
    query = _copy(fx.tflite, t / fx.tflite.name)
    _copy(fx.tflite.with_suffix(".json"), t / fx.tflite.with_suffix(".json").name)
    doc = fx.tflite.with_name(fx.tflite.name.replace(".query.", ".doc."))
    _truncated(doc, t, doc.name)
    return query


def _killed_export(fx: Fx, t: Path, name: str) -> Path:
    """A SavedModel dir as an export killed before its metadata: all but deepseek_export.json."""
    d = _copy(fx.saved_model, t / name)
    (d / "deepseek_export.json").unlink()
    return d


def _resume_workdir(fx: Fx, t: Path) -> Path:
    w = t / "run"
    shutil.copytree(fx.run, w)
    return w


TINY = str(ROOT / "configs" / "tiny.yaml")
PAIRS_LATIN1 = b"query,doc_content\nsummer dress,light summer dress\ncaf\xe9 beans,coffee beans\n"  # line 3


def _train(fx: Fx, t: Path, *more: str) -> list[str]:
    return ["train", "--config", TINY, "--set", f"data.dataset={fx.beir}", "--quiet", *more]


def _eval(fx: Fx, model: Path | str, dataset: Path | None = None, *more: str) -> list[str]:
    return ["evaluate", "--model", str(model), "--dataset", str(dataset or fx.beir), *more]


def _search(model: Path | str, corpus: Path, *more: str) -> list[str]:
    return ["search", "--model", str(model), "--corpus", str(corpus), "--query", "summer dress", *more]


# ---------------------------------------------------------------------------- the table
@dataclass
class Case:
    id: str
    build: Callable[[Fx, Path], tuple[list[str], str]]  # -> (argv for deepseek_tf.cli, text the error names)
    code: int = 1


def _export_into_user_dir(fx, t):
    _file(t / "out" / "notes.txt")
    _file(t / "out" / "sub" / "data.csv", "a,b\n")
    return [
        "export",
        "--model",
        str(fx.model),
        "--format",
        "saved_model",
        "--output",
        str(t / "out"),
    ], f"{t / 'out'}: directory is not empty and is not a previous export"


def _export_tflite_over_user_file(fx, t):
    _file(t / "mine.query.tflite", b"user bytes")
    return ["export", "--model", str(fx.model), "--format", "tflite", "--output", str(t / "mine")], str(
        t / "mine.query.tflite"
    )


def _resume_changed_model(fx, t):
    w = _resume_workdir(fx, t)
    return _train(
        fx, t, "--workdir", str(w), "--set", "model.hidden_dim=64", "--set", "model.num_heads=4"
    ), "model.hidden_dim (32 -> 64)"


CASES = [
    # 1. data loss
    Case("export-saved_model-into-non-empty-user-dir", _export_into_user_dir),
    Case("export-tflite-over-user-file", _export_tflite_over_user_file),
    Case(
        "export-output-is-existing-file",
        lambda fx, t: (
            ["export", "--model", str(fx.model), "--format", "saved_model", "--output", str(_file(t / "out"))],
            f"--output {t / 'out'}: an existing file",
        ),
    ),
    # 3. tracebacks -> one line
    Case(
        "export-saved_model-output-parent-is-file",
        lambda fx, t: (
            [
                "export",
                "--model",
                str(fx.model),
                "--format",
                "saved_model",
                "--output",
                str(_file(t / "afile") / "out"),
            ],
            f"{t / 'afile'} is a file",
        ),
    ),
    Case(
        "export-tflite-output-parent-is-file",
        lambda fx, t: (
            [
                "export",
                "--model",
                str(fx.model),
                "--format",
                "tflite",
                "--output",
                str(_file(t / "afile") / "deep" / "out"),
            ],
            f"{t / 'afile'} is a file",
        ),
    ),
    Case(
        "evaluate-truncated-tflite",
        lambda fx, t: (
            _eval(fx, _truncated(fx.tflite, t, "cut.query.tflite")),
            f"{t / 'cut.query.tflite'}: not a valid TFLite",
        ),
    ),
    Case(
        "evaluate-corrupt-tflite",
        lambda fx, t: (
            _eval(fx, _file(t / "corrupt.tflite", b"\x00garbage, not a flatbuffer" * 40)),
            f"{t / 'corrupt.tflite'}: not a valid TFLite",
        ),
    ),
    Case(
        "search-corrupt-tflite",
        lambda fx, t: (
            _search(_file(t / "corrupt.tflite", b"TFL3" * 100), fx.beir / "corpus.jsonl"),
            f"{t / 'corrupt.tflite'}: not a valid TFLite",
        ),
    ),
    Case(
        "evaluate-tflite-pair-with-truncated-doc-tower",
        lambda fx, t: (_eval(fx, _tflite_pair_doc_truncated(fx, t)), f"{t / 'tiny.doc.tflite'}: not a valid TFLite"),
    ),
    Case(
        "train-workdir-is-file",
        lambda fx, t: (_train(fx, t, "--workdir", str(_file(t / "wd"))), f"--workdir {t / 'wd'}"),
    ),
    Case(
        "train-workdir-under-file",
        lambda fx, t: (_train(fx, t, "--workdir", str(_file(t / "wd") / "run")), f"{t / 'wd'} is a file"),
    ),
    Case("train-resume-with-changed-hidden_dim", _resume_changed_model, code=2),
    # 4. silent wrong
    Case(
        "evaluate-truncated-model.keras",
        lambda fx, t: (_eval(fx, _model_with_truncated_keras(fx, t)), "model.keras: corrupt or truncated"),
    ),
    Case(
        "export-truncated-model.keras",
        lambda fx, t: (
            [
                "export",
                "--model",
                str(_model_with_truncated_keras(fx, t)),
                "--format",
                "saved_model",
                "--output",
                str(t / "out"),
            ],
            "model.keras: corrupt or truncated",
        ),
    ),
    Case(
        "evaluate-killed-export-tmp",
        lambda fx, t: (_eval(fx, _killed_export(fx, t, "sm.tmp")), f"{t / 'sm.tmp'}: an unfinished write"),
    ),
    Case(
        "evaluate-export-without-metadata",
        lambda fx, t: (_eval(fx, _killed_export(fx, t, "sm")), "has no deepseek_export.json"),
    ),
    Case(
        "search-killed-export-tmp",
        lambda fx, t: (_search(_killed_export(fx, t, "sm.tmp"), fx.beir / "corpus.jsonl"), "an unfinished write"),
    ),
    Case(
        "evaluate-finished-export-renamed-tmp",
        lambda fx, t: (_eval(fx, _copy(fx.saved_model, t / "sm.tmp")), "an unfinished write"),
    ),
    Case(
        "evaluate-rerank-killed-export",
        lambda fx, t: (
            _eval(fx, fx.model, None, "--rerank", str(_killed_export(fx, t, "ce.tmp"))),
            f"--rerank {t / 'ce.tmp'}: an unfinished write",
        ),
    ),
    Case(
        "export-from-unfinished-model-tmp",
        lambda fx, t: (
            [
                "export",
                "--model",
                str(_copy(fx.model, t / "model.tmp")),
                "--format",
                "saved_model",
                "--output",
                str(t / "out"),
            ],
            "model.tmp: an unfinished write",
        ),
    ),
    # 5. messages name where
    Case(
        "train-yaml-syntax-error",
        lambda fx, t: (
            [
                "train",
                "--config",
                str(_file(t / "bad.yaml", "model:\n  kind: dual_encoder\n  hidden_dim: [32\ntrain:\n  epochs: 1\n")),
            ],
            f"{t / 'bad.yaml'}:4:",
        ),
        code=2,
    ),
    Case(
        "train-yaml-tab-indent",
        lambda fx, t: (
            ["train", "--config", str(_file(t / "tab.yaml", "model:\n\tkind: dual_encoder\n"))],
            f"{t / 'tab.yaml'}:2:",
        ),
        code=2,
    ),
    Case(
        "train-yaml-not-utf8",
        lambda fx, t: (
            ["train", "--config", str(_file(t / "l1.yaml", b"# ok\nmodel:\n  kind: dual_encoder # caf\xe9\n"))],
            f"{t / 'l1.yaml'}:3: not UTF-8",
        ),
        code=2,
    ),
    Case(
        "train-yaml-not-a-mapping",
        lambda fx, t: (
            ["train", "--config", str(_file(t / "list.yaml", "- model\n- train\n"))],
            f"{t / 'list.yaml'}: expected a YAML mapping",
        ),
        code=2,
    ),
    Case(
        "evaluate-corpus-not-utf8",
        lambda fx, t: (
            _eval(fx, fx.model, _beir(fx, t, {"corpus.jsonl": _latin1_at_line(fx.beir / "corpus.jsonl", 3)})),
            f"{t / 'data' / 'corpus.jsonl'}:3: not UTF-8",
        ),
    ),
    Case(
        "evaluate-queries-not-utf8",
        lambda fx, t: (
            _eval(fx, fx.model, _beir(fx, t, {"queries.jsonl": _latin1_at_line(fx.beir / "queries.jsonl", 5)})),
            f"{t / 'data' / 'queries.jsonl'}:5: not UTF-8",
        ),
    ),
    Case(
        "evaluate-qrels-not-utf8",
        lambda fx, t: (
            _eval(fx, fx.model, _beir(fx, t, {"qrels/test.tsv": _latin1_at_line(fx.beir / "qrels" / "test.tsv", 4)})),
            f"{t / 'data' / 'qrels' / 'test.tsv'}:4: not UTF-8",
        ),
    ),
    Case(
        "train-pairs-csv-not-utf8",
        lambda fx, t: (
            _train(
                fx,
                t,
                "--set",
                "data.dataset=",
                "--set",
                f"data.pairs={_file(t / 'pairs.csv', PAIRS_LATIN1)}",
                "--workdir",
                str(t / "wd"),
            ),
            f"{t / 'pairs.csv'}:3: not UTF-8",
        ),
    ),
    Case(
        "search-corpus-not-utf8",
        lambda fx, t: (
            _search(fx.model, _file(t / "c.jsonl", _latin1_at_line(fx.beir / "corpus.jsonl", 2))),
            f"{t / 'c.jsonl'}:2: not UTF-8",
        ),
    ),
    Case(
        "mine-corpus-invalid-json",
        lambda fx, t: (
            [
                "mine",
                "--dataset",
                str(_beir(fx, t, {"corpus.jsonl": (fx.beir / "corpus.jsonl").read_bytes() + b"{oops\n"})),
                "--output",
                str(t / "pairs.tsv"),
            ],
            f"{t / 'data' / 'corpus.jsonl'}:25: invalid JSON",
        ),
    ),
    Case(
        "mine-output-parent-is-file",
        lambda fx, t: (
            ["mine", "--dataset", str(fx.beir), "--output", str(_file(t / "afile") / "pairs.tsv")],
            f"{t / 'afile'} is a file",
        ),
    ),
    Case(
        "mine-output-is-dir",
        lambda fx, t: (
            ["mine", "--dataset", str(fx.beir), "--output", str(_file(t / "out" / "keep.txt").parent)],
            f"--output {t / 'out'}: a directory",
        ),
    ),
    Case(
        "mine-qrels-bad-score",
        lambda fx, t: (
            [
                "mine",
                "--dataset",
                str(_beir(fx, t, {"qrels/train.tsv": b"query-id\tcorpus-id\tscore\nq\td\thigh\n"})),
                "--output",
                str(t / "p.tsv"),
            ],
            f"{t / 'data' / 'qrels' / 'train.tsv'}:2: score 'high'",
        ),
    ),
    # config values and plain missing things
    Case(
        "train-negative-learning-rate",
        lambda fx, t: (
            _train(fx, t, "--set", "train.learning_rate=-1", "--workdir", str(t / "wd")),
            "train.learning_rate",
        ),
        code=2,
    ),
    Case(
        "train-unknown-set-key",
        lambda fx, t: (_train(fx, t, "--set", "train.learning_rat=1e-3", "--workdir", str(t / "wd")), "learning_rat"),
        code=2,
    ),
    Case(
        "train-config-missing",
        lambda fx, t: (["train", "--config", str(t / "nope.yaml")], str(t / "nope.yaml")),
        code=2,
    ),
    Case("evaluate-model-missing", lambda fx, t: (_eval(fx, t / "nope"), str(t / "nope"))),
    Case("evaluate-dataset-missing", lambda fx, t: (_eval(fx, fx.model, t / "nope"), str(t / "nope"))),
    Case("search-corpus-missing", lambda fx, t: (_search(fx.model, t / "nope.jsonl"), str(t / "nope.jsonl"))),
    Case(
        "export-int8-without-dataset",
        lambda fx, t: (
            ["export", "--model", str(fx.model), "--format", "tflite", "--quantize", "int8", "--output", str(t / "q")],
            "--dataset",
        ),
    ),
]


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)) + ("/" if p.is_dir() else ""): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(root.rglob("*"))
    }


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_in_one_line_and_leaves_everything_as_it_was(case: Case, fx: Fx, tmp_path: Path):
    argv, names = case.build(fx, tmp_path)
    shared = {p: _snapshot(p) for p in (fx.run, fx.saved_model, fx.tflite.parent)}
    before = _snapshot(tmp_path)
    result = run_cli_here("deepseek_tf.cli", *argv)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == case.code, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert names in lines[0], lines[0]
    assert _snapshot(tmp_path) == before  # nothing deleted, changed, or half-written (no *.tmp)
    assert {p: _snapshot(p) for p in shared} == shared


def test_the_table_covers_every_command():
    assert len(CASES) >= 33
    assert {c.id.split("-")[0] for c in CASES} >= {"train", "evaluate", "export", "search", "mine"}


# ---------------------------------------------------------------------------- what still works
def test_exported_saved_model_evaluates_in_a_fresh_process(fx: Fx, tmp_path: Path):
    """A fresh process has not imported tensorflow_text: the loader must (FastBertNormalize)."""
    result = run_cli("deepseek_tf.cli", *_eval(fx, fx.saved_model, None, "--output", str(tmp_path / "r.json")))
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "r.json").read_text())
    meta = json.loads((fx.saved_model / "deepseek_export.json").read_text())
    assert "import tensorflow_text" in meta["load_note"]


def test_export_replaces_a_previous_export_and_overwrite_replaces_anything(fx: Fx, tmp_path: Path):
    from deepseek_tf.errors import UserError
    from deepseek_tf.export.saved_model import export_saved_model
    from deepseek_tf.export.towers import export_tflite

    previous = _copy(fx.saved_model, tmp_path / "sm")
    _file(previous / "stale.txt")  # a previous export of ours is replaced as a whole
    export_saved_model(fx.model, previous)
    assert (previous / "deepseek_export.json").is_file() and not (previous / "stale.txt").exists()
    user = _file(tmp_path / "user" / "notes.txt").parent
    with pytest.raises(UserError, match="not a previous export"):
        export_saved_model(fx.model, user)
    assert (user / "notes.txt").read_text() == "mine, keep me\n"
    export_saved_model(fx.model, user, overwrite=True)
    assert (user / "saved_model.pb").is_file() and not (user / "notes.txt").exists()
    mine = _file(tmp_path / "t.query.tflite", b"user bytes")
    with pytest.raises(UserError, match="not a previous export"):
        export_tflite(fx.model, tmp_path / "t")
    assert mine.read_bytes() == b"user bytes"
    export_tflite(fx.model, tmp_path / "t", overwrite=True)
    export_tflite(fx.model, tmp_path / "t")  # now ours: replaced without --overwrite
    assert not list(tmp_path.rglob("*.tmp"))


def test_duplicate_doc_ids_are_named(fx: Fx, tmp_path: Path):
    from deepseek_tf.data import describe_dropped, load_beir

    rows = (fx.beir / "corpus.jsonl").read_text().splitlines()
    d = _beir(fx, tmp_path, {"corpus.jsonl": ("\n".join(rows + rows[:7]) + "\n").encode()})
    ds = load_beir(d, "test")
    assert ds.dropped["duplicate doc ids"] == 7
    line = [x for x in describe_dropped(ds.dropped) if "duplicate doc ids" in x][0]
    assert line == "dropped 7 duplicate doc ids (first: 'dress-0', 'dress-1', 'dress-2', 'dress-3', 'laptop-0')"

"""Bad input through the real CLIs: a one-line `error:`, a non-zero exit, and nothing lost or
half-written left looking valid.

One table, each row run as the CLI in this process (`run_cli_here`): each row builds its inputs in its own directory
(bad_input_rows.py) from artifacts made once a session (conftest: the shared `tiny_run` model, its
SavedModel and TFLite exports), so no row trains or exports. After the run, every file in the row's directory must be
exactly as before: nothing deleted or changed, nothing new (no `*.tmp`, no config.yaml rewritten).
What still works beside the table is in test_bad_input_still_works.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from bad_input_rows import (
    PAIRS_LATIN1,
    Fx,
    beir_with,
    copied,
    eval_argv,
    killed_export,
    latin1_at_line,
    model_with_truncated_keras,
    resume_workdir,
    search_argv,
    snapshot,
    tflite_pair_doc_truncated,
    train_argv,
    truncated,
    user_file,
)
from conftest import run_cli_here


@pytest.fixture(scope="module")
def fx(tiny_beir, tiny_run, tiny_saved_model, tiny_tflite) -> Fx:
    return Fx(tiny_beir, tiny_run, tiny_saved_model, tiny_tflite)


# ---------------------------------------------------------------------------- the table
@dataclass
class Case:
    id: str
    build: Callable[[Fx, Path], tuple[list[str], str]]  # -> (argv for deepseek_tf.cli, text the error names)
    code: int = 1


def _export_into_user_dir(fx, t):
    user_file(t / "out" / "notes.txt")
    user_file(t / "out" / "sub" / "data.csv", "a,b\n")
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
    user_file(t / "mine.query.tflite", b"user bytes")
    return ["export", "--model", str(fx.model), "--format", "tflite", "--output", str(t / "mine")], str(
        t / "mine.query.tflite"
    )


def _resume_changed_model(fx, t):
    w = resume_workdir(fx, t)
    return train_argv(
        fx, t, "--workdir", str(w), "--set", "model.hidden_dim=64", "--set", "model.num_heads=4"
    ), "model.hidden_dim (32 -> 64)"


CASES = [
    # 1. data loss
    Case("export-saved_model-into-non-empty-user-dir", _export_into_user_dir),
    Case("export-tflite-over-user-file", _export_tflite_over_user_file),
    Case(
        "export-output-is-existing-file",
        lambda fx, t: (
            ["export", "--model", str(fx.model), "--format", "saved_model", "--output", str(user_file(t / "out"))],
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
                str(user_file(t / "afile") / "out"),
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
                str(user_file(t / "afile") / "deep" / "out"),
            ],
            f"{t / 'afile'} is a file",
        ),
    ),
    Case(
        "evaluate-truncated-tflite",
        lambda fx, t: (
            eval_argv(fx, truncated(fx.tflite, t, "cut.query.tflite")),
            f"{t / 'cut.query.tflite'}: not a valid TFLite",
        ),
    ),
    Case(
        "evaluate-corrupt-tflite",
        lambda fx, t: (
            eval_argv(fx, user_file(t / "corrupt.tflite", b"\x00garbage, not a flatbuffer" * 40)),
            f"{t / 'corrupt.tflite'}: not a valid TFLite",
        ),
    ),
    Case(
        "search-corrupt-tflite",
        lambda fx, t: (
            search_argv(user_file(t / "corrupt.tflite", b"TFL3" * 100), fx.beir / "corpus.jsonl"),
            f"{t / 'corrupt.tflite'}: not a valid TFLite",
        ),
    ),
    Case(
        "evaluate-tflite-pair-with-truncated-doc-tower",
        lambda fx, t: (eval_argv(fx, tflite_pair_doc_truncated(fx, t)), f"{t / 'tiny.doc.tflite'}: not a valid TFLite"),
    ),
    Case(
        "train-workdir-is-file",
        lambda fx, t: (train_argv(fx, t, "--workdir", str(user_file(t / "wd"))), f"--workdir {t / 'wd'}"),
    ),
    Case(
        "train-workdir-under-file",
        lambda fx, t: (train_argv(fx, t, "--workdir", str(user_file(t / "wd") / "run")), f"{t / 'wd'} is a file"),
    ),
    Case("train-resume-with-changed-hidden_dim", _resume_changed_model, code=2),
    # 4. silent wrong
    Case(
        "evaluate-truncated-model.keras",
        lambda fx, t: (eval_argv(fx, model_with_truncated_keras(fx, t)), "model.keras: corrupt or truncated"),
    ),
    Case(
        "export-truncated-model.keras",
        lambda fx, t: (
            [
                "export",
                "--model",
                str(model_with_truncated_keras(fx, t)),
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
        lambda fx, t: (eval_argv(fx, killed_export(fx, t, "sm.tmp")), f"{t / 'sm.tmp'}: an unfinished write"),
    ),
    Case(
        "evaluate-export-without-metadata",
        lambda fx, t: (eval_argv(fx, killed_export(fx, t, "sm")), "has no deepseek_export.json"),
    ),
    Case(
        "search-killed-export-tmp",
        lambda fx, t: (search_argv(killed_export(fx, t, "sm.tmp"), fx.beir / "corpus.jsonl"), "an unfinished write"),
    ),
    Case(
        "evaluate-finished-export-renamed-tmp",
        lambda fx, t: (eval_argv(fx, copied(fx.saved_model, t / "sm.tmp")), "an unfinished write"),
    ),
    Case(
        "evaluate-rerank-killed-export",
        lambda fx, t: (
            eval_argv(fx, fx.model, None, "--rerank", str(killed_export(fx, t, "ce.tmp"))),
            f"--rerank {t / 'ce.tmp'}: an unfinished write",
        ),
    ),
    Case(
        "export-from-unfinished-model-tmp",
        lambda fx, t: (
            [
                "export",
                "--model",
                str(copied(fx.model, t / "model.tmp")),
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
                str(
                    user_file(t / "bad.yaml", "model:\n  kind: dual_encoder\n  hidden_dim: [32\ntrain:\n  epochs: 1\n")
                ),
            ],
            f"{t / 'bad.yaml'}:4:",
        ),
        code=2,
    ),
    Case(
        "train-yaml-tab-indent",
        lambda fx, t: (
            ["train", "--config", str(user_file(t / "tab.yaml", "model:\n\tkind: dual_encoder\n"))],
            f"{t / 'tab.yaml'}:2:",
        ),
        code=2,
    ),
    Case(
        "train-yaml-not-utf8",
        lambda fx, t: (
            ["train", "--config", str(user_file(t / "l1.yaml", b"# ok\nmodel:\n  kind: dual_encoder # caf\xe9\n"))],
            f"{t / 'l1.yaml'}:3: not UTF-8",
        ),
        code=2,
    ),
    Case(
        "train-yaml-not-a-mapping",
        lambda fx, t: (
            ["train", "--config", str(user_file(t / "list.yaml", "- model\n- train\n"))],
            f"{t / 'list.yaml'}: expected a YAML mapping",
        ),
        code=2,
    ),
    Case(
        "evaluate-corpus-not-utf8",
        lambda fx, t: (
            eval_argv(fx, fx.model, beir_with(fx, t, {"corpus.jsonl": latin1_at_line(fx.beir / "corpus.jsonl", 3)})),
            f"{t / 'data' / 'corpus.jsonl'}:3: not UTF-8",
        ),
    ),
    Case(
        "evaluate-queries-not-utf8",
        lambda fx, t: (
            eval_argv(fx, fx.model, beir_with(fx, t, {"queries.jsonl": latin1_at_line(fx.beir / "queries.jsonl", 5)})),
            f"{t / 'data' / 'queries.jsonl'}:5: not UTF-8",
        ),
    ),
    Case(
        "evaluate-qrels-not-utf8",
        lambda fx, t: (
            eval_argv(
                fx, fx.model, beir_with(fx, t, {"qrels/test.tsv": latin1_at_line(fx.beir / "qrels" / "test.tsv", 4)})
            ),
            f"{t / 'data' / 'qrels' / 'test.tsv'}:4: not UTF-8",
        ),
    ),
    Case(
        "train-pairs-csv-not-utf8",
        lambda fx, t: (
            train_argv(
                fx,
                t,
                "--set",
                "data.dataset=",
                "--set",
                f"data.pairs={user_file(t / 'pairs.csv', PAIRS_LATIN1)}",
                "--workdir",
                str(t / "wd"),
            ),
            f"{t / 'pairs.csv'}:3: not UTF-8",
        ),
    ),
    Case(
        "search-corpus-not-utf8",
        lambda fx, t: (
            search_argv(fx.model, user_file(t / "c.jsonl", latin1_at_line(fx.beir / "corpus.jsonl", 2))),
            f"{t / 'c.jsonl'}:2: not UTF-8",
        ),
    ),
    Case(
        "mine-corpus-invalid-json",
        lambda fx, t: (
            [
                "mine",
                "--dataset",
                str(beir_with(fx, t, {"corpus.jsonl": (fx.beir / "corpus.jsonl").read_bytes() + b"{oops\n"})),
                "--output",
                str(t / "pairs.tsv"),
            ],
            f"{t / 'data' / 'corpus.jsonl'}:25: invalid JSON",
        ),
    ),
    Case(
        "mine-output-parent-is-file",
        lambda fx, t: (
            ["mine", "--dataset", str(fx.beir), "--output", str(user_file(t / "afile") / "pairs.tsv")],
            f"{t / 'afile'} is a file",
        ),
    ),
    Case(
        "mine-output-is-dir",
        lambda fx, t: (
            ["mine", "--dataset", str(fx.beir), "--output", str(user_file(t / "out" / "keep.txt").parent)],
            f"--output {t / 'out'}: a directory",
        ),
    ),
    Case(
        "mine-qrels-bad-score",
        lambda fx, t: (
            [
                "mine",
                "--dataset",
                str(beir_with(fx, t, {"qrels/train.tsv": b"query-id\tcorpus-id\tscore\nq\td\thigh\n"})),
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
            train_argv(fx, t, "--set", "train.learning_rate=-1", "--workdir", str(t / "wd")),
            "train.learning_rate",
        ),
        code=2,
    ),
    Case(
        "train-unknown-set-key",
        lambda fx, t: (
            train_argv(fx, t, "--set", "train.learning_rat=1e-3", "--workdir", str(t / "wd")),
            "learning_rat",
        ),
        code=2,
    ),
    Case(
        "train-config-missing",
        lambda fx, t: (["train", "--config", str(t / "nope.yaml")], str(t / "nope.yaml")),
        code=2,
    ),
    Case("evaluate-model-missing", lambda fx, t: (eval_argv(fx, t / "nope"), str(t / "nope"))),
    Case("evaluate-dataset-missing", lambda fx, t: (eval_argv(fx, fx.model, t / "nope"), str(t / "nope"))),
    Case("search-corpus-missing", lambda fx, t: (search_argv(fx.model, t / "nope.jsonl"), str(t / "nope.jsonl"))),
    Case(
        "export-int8-without-dataset",
        lambda fx, t: (
            ["export", "--model", str(fx.model), "--format", "tflite", "--quantize", "int8", "--output", str(t / "q")],
            "--dataset",
        ),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_in_one_line_and_leaves_everything_as_it_was(case: Case, fx: Fx, tmp_path: Path):
    argv, names = case.build(fx, tmp_path)
    shared = {p: snapshot(p) for p in (fx.run, fx.saved_model, fx.tflite.parent)}
    before = snapshot(tmp_path)
    result = run_cli_here("deepseek_tf.cli", *argv)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == case.code, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert names in lines[0], lines[0]
    assert snapshot(tmp_path) == before  # nothing deleted, changed, or half-written (no *.tmp)
    assert {p: snapshot(p) for p in shared} == shared


def test_the_table_covers_every_command():
    assert len(CASES) >= 33
    assert {c.id.split("-")[0] for c in CASES} >= {"train", "evaluate", "export", "search", "mine"}

"""What still works beside the bad-input table (test_bad_input.py): an exported SavedModel evaluates
in a fresh process, `export` replaces a previous export of its own (and with --overwrite anything),
and duplicate doc ids are dropped and named.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bad_input_rows import Fx, beir_with, copied, eval_argv, user_file
from conftest import run_cli


@pytest.fixture(scope="module")
def fx(tiny_beir, tiny_run, tiny_saved_model, tiny_tflite) -> Fx:
    return Fx(tiny_beir, tiny_run, tiny_saved_model, tiny_tflite)


def test_exported_saved_model_evaluates_in_a_fresh_process(fx: Fx, tmp_path: Path):
    """A fresh process has not imported tensorflow_text: the loader must (FastBertNormalize)."""
    result = run_cli("deepseek_tf.cli", *eval_argv(fx, fx.saved_model, None, "--output", str(tmp_path / "r.json")))
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "r.json").read_text())
    meta = json.loads((fx.saved_model / "deepseek_export.json").read_text())
    assert "import tensorflow_text" in meta["load_note"]


def test_export_replaces_a_previous_export_and_overwrite_replaces_anything(fx: Fx, tmp_path: Path):
    from deepseek_tf.errors import UserError
    from deepseek_tf.export.saved_model import export_saved_model
    from deepseek_tf.export.towers import export_tflite

    previous = copied(fx.saved_model, tmp_path / "sm")
    user_file(previous / "stale.txt")  # a previous export of ours is replaced as a whole
    export_saved_model(fx.model, previous)
    assert (previous / "deepseek_export.json").is_file() and not (previous / "stale.txt").exists()
    user = user_file(tmp_path / "user" / "notes.txt").parent
    with pytest.raises(UserError, match="not a previous export"):
        export_saved_model(fx.model, user)
    assert (user / "notes.txt").read_text() == "mine, keep me\n"
    export_saved_model(fx.model, user, overwrite=True)
    assert (user / "saved_model.pb").is_file() and not (user / "notes.txt").exists()
    mine = user_file(tmp_path / "t.query.tflite", b"user bytes")
    with pytest.raises(UserError, match="not a previous export"):
        export_tflite(fx.model, tmp_path / "t")
    assert mine.read_bytes() == b"user bytes"
    export_tflite(fx.model, tmp_path / "t", overwrite=True)
    export_tflite(fx.model, tmp_path / "t")  # now ours: replaced without --overwrite
    assert not list(tmp_path.rglob("*.tmp"))


def test_duplicate_doc_ids_are_named(fx: Fx, tmp_path: Path):
    from deepseek_tf.data import describe_dropped, load_beir

    rows = (fx.beir / "corpus.jsonl").read_text().splitlines()
    d = beir_with(fx, tmp_path, {"corpus.jsonl": ("\n".join(rows + rows[:7]) + "\n").encode()})
    ds = load_beir(d, "test")
    assert ds.dropped["duplicate doc ids"] == 7
    line = [x for x in describe_dropped(ds.dropped) if "duplicate doc ids" in x][0]
    assert line == "dropped 7 duplicate doc ids (first: 'dress-0', 'dress-1', 'dress-2', 'dress-3', 'laptop-0')"

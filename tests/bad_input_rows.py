"""What the rows of the bad-input table (test_bad_input.py) are built from: the shared inputs (Fx)
and the builders that make a row's bad input in its own directory; test_data_safety_*.py build
on them too (beir_with, copied, user_file, snapshot).
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from conftest import ROOT


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


# ---------------------------------------------------------------------------- input builders
def copied(src: Path, dst: Path) -> Path:
    (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    return dst


def user_file(path: Path, data: bytes | str = "mine, keep me\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return path


def beir_with(fx: Fx, t: Path, replace: dict[str, bytes]) -> Path:
    """A copy of the tiny BEIR set with some files replaced: {"qrels/test.tsv": b"..."}."""
    d = copied(fx.beir, t / "data")
    for rel, data in replace.items():
        (d / rel).write_bytes(data)
    return d


def latin1_at_line(path: Path, line: int) -> bytes:
    """The file's lines with a Latin-1 'é' (byte 0xE9, not UTF-8) put into line `line`."""
    lines = path.read_bytes().splitlines(keepends=True)
    lines[line - 1] = (
        lines[line - 1].replace(b'"text": "', b'"text": "caf\xe9 ', 1)
        if b'"text"' in lines[line - 1]
        else lines[line - 1][:-1] + b"\xe9\n"
    )
    return b"".join(lines)


def truncated(path: Path, t: Path, name: str) -> Path:
    data = path.read_bytes()
    return user_file(t / name, data[: len(data) // 3])


def model_with_truncated_keras(fx: Fx, t: Path) -> Path:
    m = copied(fx.model, t / "model")
    data = (m / "model.keras").read_bytes()
    (m / "model.keras").write_bytes(data[: len(data) // 2])  # a copy cut short (disk full, killed)
    return m


def tflite_pair_doc_truncated(fx: Fx, t: Path) -> Path:
    """A finished tower pair (with its metadata) whose doc file was cut short afterwards."""
    query = copied(fx.tflite, t / fx.tflite.name)
    copied(fx.tflite.with_suffix(".json"), t / fx.tflite.with_suffix(".json").name)
    doc = fx.tflite.with_name(fx.tflite.name.replace(".query.", ".doc."))
    truncated(doc, t, doc.name)
    return query


def killed_export(fx: Fx, t: Path, name: str) -> Path:
    """A SavedModel dir as an export killed before its metadata: all but deepseek_export.json."""
    d = copied(fx.saved_model, t / name)
    (d / "deepseek_export.json").unlink()
    return d


def resume_workdir(fx: Fx, t: Path) -> Path:
    w = t / "run"
    shutil.copytree(fx.run, w)
    return w


TINY = str(ROOT / "configs" / "tiny.yaml")
PAIRS_LATIN1 = b"query,doc_content\nsummer dress,light summer dress\ncaf\xe9 beans,coffee beans\n"  # line 3


def train_argv(fx: Fx, t: Path, *more: str) -> list[str]:
    return ["train", "--config", TINY, "--set", f"data.dataset={fx.beir}", "--quiet", *more]


def eval_argv(fx: Fx, model: Path | str, dataset: Path | None = None, *more: str) -> list[str]:
    return ["evaluate", "--model", str(model), "--dataset", str(dataset or fx.beir), *more]


def search_argv(model: Path | str, corpus: Path, *more: str) -> list[str]:
    return ["search", "--model", str(model), "--corpus", str(corpus), "--query", "summer dress", *more]


def snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)) + ("/" if p.is_dir() else ""): hashlib.sha256(p.read_bytes()).hexdigest()
        if p.is_file()
        else "dir"
        for p in sorted(root.rglob("*"))
    }

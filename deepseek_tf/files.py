"""Writing files whole or not at all: the one atomic-write helper every command uses."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from deepseek_tf.errors import UserError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp) then rename over PATH: a reader never sees half a file, and a failed or killed
    write leaves the previous file (or none) in place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())  # the rename must not reach the disk before the data
        tmp.replace(path)
    except OSError as e:  # a full disk or `ulimit -f` ("File too large") names no file by itself
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path}: cannot write ({e.strerror or e}); nothing of it kept") from None


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: Path, data: dict | list, indent: int = 1) -> None:
    write_text(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")

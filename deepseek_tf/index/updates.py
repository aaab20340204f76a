"""The update log of a built index: upserts and deletes since the index was built or compacted.

`DIR/updates/log.jsonl` holds one JSON object per acknowledged write, in order:

    {"seq": 7, "upsert": [{"id": "p9", "text": "...", "fields": {...}, "vector": "<base64 float32>"}]}
    {"seq": 8, "delete": ["p3"]}

A write is appended, flushed and fsynced before it is acknowledged, so an acknowledged write
survives a crash or SIGKILL; a crash in the middle of an append leaves a torn last line, which
was never acknowledged: `read` ignores it and `append` cuts it off first. Writers take an
exclusive `flock` on `DIR/updates/lock` for each append (a server and `deepseek-tf index --update`
or `--compact` never interleave). The vectors ride in the log, so replaying it encodes nothing.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from deepseek_tf.errors import UserError

UPDATES_DIR = "updates"
LOG_FILE = "log.jsonl"
LOCK_FILE = "lock"
LOCK_TIMEOUT_S = 10.0  # a writer waits this long for another (a compaction holds it for minutes)


class IndexBusy(UserError):
    """Another process holds the index's writer lock longer than a writer waits."""


def log_path(index_dir: str | Path) -> Path:
    return Path(index_dir) / UPDATES_DIR / LOG_FILE


def log_size(index_dir: str | Path) -> int:
    try:
        return log_path(index_dir).stat().st_size
    except FileNotFoundError:
        return 0


def encode_vector(vector: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(vector, "<f4").tobytes()).decode("ascii")


def decode_vector(text: str, dim: int) -> np.ndarray:
    vector = np.frombuffer(base64.b64decode(text), "<f4")
    if vector.shape != (dim,):
        raise ValueError(f"a vector of {vector.size} values, the index holds {dim}")
    return vector.astype(np.float32)


@contextlib.contextmanager
def write_lock(index_dir: str | Path, timeout_s: float = LOCK_TIMEOUT_S, what: str = "write") -> Iterator[None]:
    """The index's writer lock, held for the block; a UserError when another process keeps it
    longer than `timeout_s` (0: do not wait)."""
    directory = Path(index_dir) / UPDATES_DIR
    if not Path(index_dir).is_dir():  # creating it would leave a tree that holds no index
        raise UserError(f"{index_dir}: no such index directory; nothing written")
    directory.mkdir(exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise IndexBusy(
                        f"{index_dir}: another process is writing to this index (a compaction or an update); "
                        f"{what} refused, try again when it is done"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def read_log(index_dir: str | Path) -> tuple[list[dict], int]:
    """(the acknowledged entries in order, the byte length they take): a torn last line (a crash
    mid-append) is left out; a damaged line before the last is a UserError naming it."""
    path = log_path(index_dir)
    if not path.is_file():
        return [], 0
    data = path.read_bytes()
    entries, good = [], 0
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        if last and not line:  # the file ends with a newline: nothing torn
            break
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict) or not isinstance(entry.get("seq"), int):
                raise ValueError("not a log entry")
        except ValueError:
            if last:  # no newline after it: an append a crash cut short, never acknowledged
                break
            raise UserError(f"{path}:{i + 1}: damaged update log entry; restore the file from a backup") from None
        if last:  # complete JSON but no newline: the fsync that acknowledges it never ran
            break
        entries.append(entry)
        good += len(line) + 1
    return entries, good


def append(index_dir: str | Path, entry: dict, known_length: int | None = None) -> int:
    """Appends ENTRY (its "seq" set by the caller) as one line and fsyncs the file (and, when the
    file is new, its directory); returns the log's new length. The caller holds `write_lock`. A
    torn tail (from a crash) is cut off first, so the new line starts on a line of its own."""
    path = log_path(index_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if known_length is None or known_length != size:
            _, known_length = read_log(index_dir)
        if size != known_length:
            os.ftruncate(fd, known_length)
        written = os.pwrite(fd, line, known_length)
        if written != len(line):
            os.ftruncate(fd, known_length)
            raise UserError(f"{path}: short write ({written} of {len(line)} bytes); the write is refused")
        os.fsync(fd)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, known_length)
        raise UserError(f"{path}: cannot write ({e.strerror or e}); the write is refused") from None
    finally:
        os.close(fd)
    if new:  # the file's name must reach the disk too
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return known_length + len(line)

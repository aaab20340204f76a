"""The shard format shared by the local build and the Beam pipeline.

Shard i holds documents [i·S, (i+1)·S) of the cleaned corpus stream (S = --shard-size) in three
files under `shards/`, each written to a temporary name and renamed:

- `0000i.docs.jsonl`: one `[id, text]` or `[id, text, {stored fields}]` JSON array per line, in row
  order (the text store);
- `0000i.npy`: float32 (count, dim) document vectors, rows in the same order;
- `0000i.json`: the shard's record (count, dim, sha256 of both files, model fingerprint, corpus
  sha256, shard size), written last. The record is what makes a shard finished.

A rerun skips every shard whose record verifies. A shard without a record is the unfinished tail
of a killed build and is encoded again. A recorded shard whose files fail the record (truncated,
changed, another model or corpus) is refused with an error naming the file: it was complete once,
so something outside the build changed it, and only the user can say which side is right.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np

from deepseek_tf.data.beir import file_sha256
from deepseek_tf.errors import UserError
from deepseek_tf.files import atomic_write, write_json

SHARD_DIR = "shards"
RECORD_KEYS = ("model_fingerprint", "corpus_sha256", "shard_size", "stored_fields")


def shard_paths(output: Path, i: int) -> dict[str, Path]:
    base = Path(output) / SHARD_DIR / f"{i:05d}"
    return {
        "vectors": base.with_suffix(".npy"),
        "docs": base.with_suffix(".docs.jsonl"),
        "record": base.with_suffix(".json"),
    }


def save_npy(path: Path, array: np.ndarray) -> None:
    """np.save to PATH, checked: numpy writes an array's data with fwrite and ignores a short write
    (a full disk, `ulimit -f`), which left a truncated shard behind a record that vouched for it."""
    with path.open("wb") as f:  # np.save on a path would append ".npy"
        np.save(f, array)
        f.flush()
        size, want = os.fstat(f.fileno()).st_size, f.tell()
    if size != want:
        raise OSError(errno.EFBIG, f"short write: {size} of {want} bytes reached the disk")


def check_npy_written(path: Path) -> None:
    """OSError unless the .npy file at PATH holds all the data its header announces (a check after
    a library's np.save, which ignores a short write)."""
    shape, dtype, offset = read_vectors_header(path)
    want = offset + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if path.stat().st_size != want:
        raise OSError(errno.EFBIG, f"short write: {path.stat().st_size} of {want} bytes reached the disk", str(path))


def write_docs(output: Path, i: int, docs: list[tuple]) -> None:
    """docs: (id, text) or (id, text, stored fields) per document; empty fields are not written."""
    lines = "".join(
        json.dumps(list(d) if len(d) > 2 and d[2] else list(d[:2]), ensure_ascii=False) + "\n" for d in docs
    )
    atomic_write(shard_paths(output, i)["docs"], lambda p: p.write_text(lines, encoding="utf-8"))


def read_rows(output: Path, i: int) -> list[list]:
    """Shard i's docs lines: [id, text] or [id, text, stored fields] each."""
    path = shard_paths(output, i)["docs"]
    try:
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f]
    except (OSError, ValueError) as e:
        raise UserError(
            f"{path}: unreadable shard documents ({e.__class__.__name__}); delete "
            f"{path.with_suffix('').with_suffix('')}.* to encode that shard again"
        ) from None


def read_docs(output: Path, i: int) -> list[tuple[str, str]]:
    """Shard i's (id, text) pairs."""
    return [(row[0], row[1]) for row in read_rows(output, i)]


def write_vectors(output: Path, i: int, vectors: np.ndarray, settings: dict) -> dict:
    """Writes shard i's vectors (its docs file must exist), then its record; returns the record."""
    paths = shard_paths(output, i)
    vectors = np.ascontiguousarray(vectors, np.float32)  # (count, dim)
    atomic_write(paths["vectors"], lambda p: save_npy(p, vectors))
    record = {
        "shard": i,
        "count": int(vectors.shape[0]),
        "dim": int(vectors.shape[1]),
        "first_row": i * settings["shard_size"],
        "sha256": file_sha256(paths["vectors"]),
        "docs_sha256": file_sha256(paths["docs"]),
        **{k: settings[k] for k in RECORD_KEYS},
    }
    write_json(paths["record"], record)
    return record


def _refuse(path: Path, why: str, i: int) -> UserError:
    return UserError(
        f"{path}: {why}; delete {path.parent / f'{i:05d}'}.* to encode that shard again, or build into another --output"
    )


def read_vectors_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) from an .npy header, without reading the data."""
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            return shape, dtype, f.tell()
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable .npy file ({e})") from None


def verify_shard(output: Path, i: int, settings: dict, checksums: bool = True) -> dict | None:
    """Shard i's record if the shard is finished and matches `settings`; None when it has no
    record (never finished); UserError naming the file when it fails its record."""
    paths = shard_paths(output, i)
    if not paths["record"].is_file():
        return None
    try:
        record = json.loads(paths["record"].read_text(encoding="utf-8"))
        count, dim = int(record["count"]), int(record["dim"])
    except (ValueError, KeyError, TypeError):
        raise _refuse(paths["record"], "corrupt shard record", i) from None
    for key, what in (
        ("model_fingerprint", "another model"),
        ("corpus_sha256", "another corpus file"),
        ("shard_size", "another --shard-size"),
        ("stored_fields", "another --fields"),
    ):
        if record.get(key) != settings[key]:
            raise _refuse(
                paths["record"], f"shard was built from {what} ({key} {record.get(key)} != {settings[key]})", i
            )
    for kind in ("vectors", "docs"):
        if not paths[kind].is_file():
            raise _refuse(paths[kind], "missing shard file", i)
    shape, dtype, offset = read_vectors_header(paths["vectors"])
    if shape != (count, dim) or dtype != np.float32:
        raise _refuse(paths["vectors"], f"holds {shape} {dtype}, its record says ({count}, {dim}) float32", i)
    if paths["vectors"].stat().st_size != offset + count * dim * 4:
        raise _refuse(paths["vectors"], "truncated (file size does not match its header)", i)
    if checksums:
        if file_sha256(paths["vectors"]) != record.get("sha256"):
            raise _refuse(paths["vectors"], "checksum mismatch (truncated or changed after it was written)", i)
        if file_sha256(paths["docs"]) != record.get("docs_sha256"):
            raise _refuse(paths["docs"], "checksum mismatch (truncated or changed after it was written)", i)
    return record


def remove_stale(output: Path) -> None:
    """Temporary files of a killed write: never complete, so never kept. Some are directories
    (bm25s saves a directory: `.bm25.tmp/`), removed as a whole."""
    for directory in (Path(output), Path(output) / SHARD_DIR):
        if directory.is_dir():
            for tmp in directory.glob(".*.tmp"):
                if tmp.is_dir() and not tmp.is_symlink():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink(missing_ok=True)

"""Streaming corpus readers: documents one at a time, never the whole corpus in memory.

Accepted files: BEIR `corpus.jsonl` (`_id`, `title`, `text`), CSV/TSV with a header naming an id
column (`id`, `_id` or `doc_id`), a `text` column and an optional `title` column, and `.txt`
(one document per line, id = line number). Texts are normalised (`data.normalize_text`) and the
title joined as `data.join_title` does; empty documents and repeated ids (the first wins) are
dropped and counted, as `deepseek-tf search` reads a corpus.
"""

from __future__ import annotations

import csv
import itertools
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from deepseek_tf.data import join_title, normalize_text
from deepseek_tf.data.beir import Dropped, iter_jsonl
from deepseek_tf.errors import UserError

FORMATS = (".jsonl", ".csv", ".tsv", ".txt")
ID_COLUMNS = ("id", "_id", "doc_id")


def check_corpus(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"missing corpus file: {path}")
    if path.suffix.lower() not in FORMATS:
        raise UserError(
            f"{path}: corpus must be one of {', '.join(FORMATS)} (BEIR corpus.jsonl, CSV/TSV "
            f"with id,text[,title] columns, or one document per line)"
        )
    return path


def count_lines(path: str | Path) -> int:
    """Lines in the file: the progress total (an upper bound on documents for every format)."""
    n = 0
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
    return n


def _jsonl_records(path: Path) -> Iterator[tuple[str, str, str]]:
    for row in iter_jsonl(path):
        yield str(row["_id"]), row.get("title") or "", row.get("text") or ""


def _table_records(path: Path) -> Iterator[tuple[str, str, str]]:
    csv.field_size_limit(sys.maxsize)  # long documents are normal in a corpus
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        try:
            columns = reader.fieldnames or []
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not UTF-8 (byte {e.start})") from None
        id_col = next((c for c in ID_COLUMNS if c in columns), None)
        if id_col is None or "text" not in columns:
            raise UserError(
                f"{path}: needs a header with an id column ({' or '.join(ID_COLUMNS)}) and a 'text' "
                f"column (found: {', '.join(columns) or 'nothing'})"
            )
        try:
            for row in reader:
                yield str(row[id_col] or ""), row.get("title") or "", row.get("text") or ""
        except UnicodeDecodeError as e:
            raise UserError(f"{path}:{reader.line_num}: not UTF-8 (byte {e.start})") from None
        except csv.Error as e:
            raise UserError(f"{path}:{reader.line_num}: {e}") from None


def _text_records(path: Path) -> Iterator[tuple[str, str, str]]:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                yield str(lineno), "", raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise UserError(f"{path}:{lineno}: not UTF-8 (byte {e.start} of the line)") from None


def iter_documents(path: str | Path, dropped: Dropped | None = None) -> Iterator[tuple[str, str]]:
    """(doc id, text) in file order; what is dropped is counted into `dropped`.

    Only the set of ids seen is kept (to drop repeats), never the texts.
    """
    path = check_corpus(path)
    dropped = dropped if dropped is not None else Dropped()
    suffix = path.suffix.lower()
    records = (_jsonl_records if suffix == ".jsonl" else _text_records if suffix == ".txt" else _table_records)(path)
    seen: set[str] = set()
    for doc_id, title, text in records:
        text = join_title({"title": normalize_text(title), "text": normalize_text(text)})
        if not doc_id.strip() and suffix != ".txt":
            dropped.add("docs without an id")
            continue
        if not text:
            if suffix != ".txt":  # a blank line of a .txt file is no document, not a dropped one
                dropped.add("empty docs", doc_id)
            continue
        if doc_id in seen:
            dropped.add("duplicate doc ids", doc_id)
            continue
        seen.add(doc_id)
        yield doc_id, text


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk

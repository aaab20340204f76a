"""The one corpus reader (`index`, `search`): documents one at a time, never the whole corpus.

Accepted files: BEIR `corpus.jsonl` (`_id`, `title`, `text`), CSV/TSV with a header naming an id
column (`id`, `_id` or `doc_id`), a `text` column and an optional `title` column, and `.txt`
(one document per line, id = line number, lines split at "\\n" only). Texts are normalised
(`normalize_text`) and the title joined as `join_title` does; empty documents and repeated ids
(the first wins) are dropped and counted. Every line is read with a bound (`MAX_LINE_BYTES`).

`iter_records` also gives each document's stored fields: `title`, `text` and the record's other
JSONL keys or CSV columns (a CSV cell that reads as a number or true/false becomes one, when it
reads back the same: "02134" stays text).
"""

from __future__ import annotations

import csv
import itertools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from deepseek_tf.data.beir import (
    MAX_LINE_BYTES,
    Dropped,
    iter_lines,
    join_title,
    jsonl_records,
    normalize_text,
)
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


def cell_value(cell: str | None) -> str | int | float | bool | None:
    """A CSV cell as the JSON value it spells: a number or true/false when it reads back the same
    ("02134" and "1e3" stay text), None when empty, else the text."""
    if cell is None or cell == "":
        return None
    if cell in ("true", "false"):
        return cell == "true"
    for kind in (int, float):
        try:
            value = kind(cell)
        except ValueError:
            continue
        if str(value) == cell and value == value and abs(value) != float("inf"):
            return value
    return cell


def _table_records(path: Path, max_line_bytes: int) -> Iterator[tuple[str, str, str, dict]]:
    # a quoted field may span lines: the field bound keeps it from growing without end too
    csv.field_size_limit(max_line_bytes)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.DictReader((line for _, line in iter_lines(path, max_line_bytes)), delimiter=delimiter)
    try:
        columns = reader.fieldnames or []
        id_col = next((c for c in ID_COLUMNS if c in columns), None)
        if id_col is None or "text" not in columns:
            raise UserError(
                f"{path}: needs a header with an id column ({' or '.join(ID_COLUMNS)}) and a 'text' "
                f"column (found: {', '.join(columns) or 'nothing'})"
            )
        others = [c for c in columns if c not in (id_col, "title", "text")]
        for row in reader:
            extra = {c: cell_value(row.get(c)) for c in others}
            yield str(row[id_col] or ""), row.get("title") or "", row.get("text") or "", extra
    except csv.Error as e:
        raise UserError(f"{path}:{reader.line_num}: {e}") from None


def _text_records(path: Path, max_line_bytes: int) -> Iterator[tuple[str, str, str, dict]]:
    for lineno, line in iter_lines(path, max_line_bytes):
        yield str(lineno), "", line, {}


def _records(path: Path, max_line_bytes: int) -> Iterator[tuple[str, str, str, dict]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return jsonl_records(path, max_line_bytes)
    return (_text_records if suffix == ".txt" else _table_records)(path, max_line_bytes)


def scan_corpus(path: str | Path, max_line_bytes: int = MAX_LINE_BYTES) -> int:
    """Reads the whole corpus once, as `iter_documents` will, without keeping or normalising
    anything: a bad line (invalid JSON, an id of another type, a line over the bound) is refused
    with file:line before a build writes anything or spends hours encoding what comes before it.
    Returns the number of records (an upper bound on documents: the progress total)."""
    return sum(1 for _ in _records(check_corpus(path), max_line_bytes))


def iter_records(
    path: str | Path,
    dropped: Dropped | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
    fields: Sequence[str] | None = None,
) -> Iterator[tuple[str, str, dict]]:
    """(doc id, text, stored fields) in file order; what is dropped is counted into `dropped`.

    Stored fields: `title` (when not empty), `text` and every other key or column, or only those
    named in `fields` (`()`: none). Only the set of ids seen is kept (to drop repeats), never the texts.
    """
    path = check_corpus(path)
    dropped = dropped if dropped is not None else Dropped()
    suffix = path.suffix.lower()
    seen: set[str] = set()
    keep = None if fields is None else set(fields)
    for doc_id, title, text, extra in _records(path, max_line_bytes):
        title, body = normalize_text(title), normalize_text(text)
        text = join_title({"title": title, "text": body})
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
        yield doc_id, text, stored_fields(title, body, extra, keep)


def stored_fields(title: str, text: str, extra: dict, keep: set[str] | None = None) -> dict:
    """A record's stored fields from its normalised title and text and its other keys: `title`
    (when not empty), `text` and the rest, or only the names in KEEP (None: all)."""
    stored = {"title": title, "text": text, **extra} if title else {"text": text, **extra}
    return stored if keep is None else {k: v for k, v in stored.items() if k in keep}


def iter_documents(
    path: str | Path, dropped: Dropped | None = None, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[str, str]]:
    """(doc id, text) in file order (`iter_records` without stored fields)."""
    for doc_id, text, _ in iter_records(path, dropped, max_line_bytes, fields=()):
        yield doc_id, text


def read_documents(path: str | Path, max_line_bytes: int = MAX_LINE_BYTES) -> tuple[list[str], list[str], Dropped]:
    """(ids, texts, dropped) of a whole corpus, read by `iter_documents` (for callers that hold
    the corpus anyway, such as an in-memory search); a corpus with no document is refused."""
    dropped = Dropped()
    ids, texts = [], []
    for doc_id, text in iter_documents(path, dropped, max_line_bytes):
        ids.append(doc_id)
        texts.append(text)
    if not ids:
        raise UserError(f"{path}: no documents")
    return ids, texts, dropped


def chunked(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk

"""BEIR-layout readers (corpus, queries, graded qrels), text cleaning, and TREC run files."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from deepseek_tf.errors import UserError
from deepseek_tf.files import write_text

PAIR_COLUMNS = ("query", "doc_content")
IMAGE_FIELD = "image_embedding"  # a corpus record's precomputed image vector (a list of numbers)
IMAGE_FILE_FIELD = "image"  # a corpus record's image file: a path, relative to the corpus file's directory
OPTIONAL_COLUMNS = ("neg_doc", "label")


def normalize_text(text: object) -> str:
    """NFKC (folds full-width forms), control characters to spaces, whitespace collapsed."""
    if text is None or (isinstance(text, float) and text != text):  # NaN from pandas
        return ""
    text = unicodedata.normalize("NFKC", str(text))
    text = "".join(" " if unicodedata.category(c).startswith("C") else c for c in text)
    return " ".join(text.split())


# ---------------------------------------------------------------------------- BEIR
@dataclass
class BeirDataset:
    corpus: dict[str, dict[str, str]]  # doc id -> {"title", "text"}
    queries: dict[str, str]  # query id -> text
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: graded relevance}
    dropped: dict[str, int] = field(default_factory=dict)  # what was dropped and how often

    def doc_text(self, doc_id: str, use_title: bool = True) -> str:
        return join_title(self.corpus[doc_id], use_title)

    def judged_subset(self, qids) -> BeirDataset:
        """The same corpus and queries with only these queries' judgments (dev splits, folds)."""
        keep = set(qids)
        return BeirDataset(self.corpus, self.queries, {q: v for q, v in self.qrels.items() if q in keep}, self.dropped)


def join_title(doc: dict[str, str], use_title: bool = True) -> str:
    """BEIR's convention: title + " " + text even when the text repeats the title (Cranfield's
    does): all-MiniLM-L6-v2 gets its reference nDCG@10 0.403 this way (0.393 on text alone)."""
    title, text = doc.get("title", ""), doc.get("text", "")
    if use_title and title:
        return f"{title} {text}".strip()
    return text or title


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read 1 MiB at a time (corpora, shards, indexes)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# One record (a JSONL line, a .txt document, a CSV row's line) is read with this bound: the
# corpus readers stream, and a 50 MB line once took 5 GB of memory on its way to the encoder.
MAX_LINE_BYTES = 8 << 20


def iter_lines(path: str | Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file split at b"\n" only (never at \x0c, \x1c or U+2028,
    which str.splitlines also splits at), each line read with the bound `max_line_bytes`: a
    longer one is refused naming file:line before it is held whole."""
    with Path(path).open("rb") as f:
        lineno = 0
        while raw := f.readline(max_line_bytes + 1):
            lineno += 1
            if len(raw) - raw.endswith(b"\n") > max_line_bytes:
                raise UserError(
                    f"{path}:{lineno}: line longer than {max_line_bytes / 2**20:.3g} MB, the most one record may "
                    f"take; split it (`deepseek-tf index --max-line-mb` raises the bound)"
                )
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as e:  # the line, so the bad byte can be found
                raise UserError(f"{path}:{lineno}: not UTF-8 (byte {e.start} of the line)") from None


def read_jsonl(path: Path, id_key: str = "_id") -> list[dict]:
    if not path.is_file():
        raise UserError(f"missing file: {path}")
    return list(iter_jsonl(path, id_key))


def iter_jsonl(path: Path, id_key: str = "_id", max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[dict]:
    """The records of a JSONL file one at a time (a corpus too big to hold stays on disk); a bad
    line is one error naming the file and the line. See `iter_jsonl_numbered`."""
    for _, row in iter_jsonl_numbered(path, id_key, max_line_bytes):
        yield row


def no_constants(name: str):
    """json's `parse_constant`: NaN, Infinity and -Infinity are not JSON, and no field may hold them."""
    raise ValueError(f"{name} is not valid JSON")


def finite_number(text: str) -> float:
    """json's `parse_float`: a number too large for a float (1e400) would be read as infinity."""
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text[:20]} is out of a float's range")
    return value


def loads_strict(text: str | bytes, **kwargs):
    """json.loads that refuses NaN, infinities and numbers out of a float's range (ValueError)."""
    return json.loads(text, parse_constant=no_constants, parse_float=finite_number, **kwargs)


def iter_jsonl_numbered(
    path: Path, id_key: str = "_id", max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, dict]]:
    """(line number, record) of a JSONL file. Every record's `id_key` is a string or an integer
    and comes out as a string: null, true or 1.0 would become "None", "True" or "1.0", ids no
    qrels line could name, so they are refused with file:line."""
    for lineno, line in iter_lines(path, max_line_bytes):
        if not line.strip():
            continue
        try:
            row = loads_strict(line)
        except ValueError as e:
            raise UserError(f"{path}:{lineno}: invalid JSON ({getattr(e, 'msg', e)})") from None
        if not isinstance(row, dict) or id_key not in row:
            raise UserError(f"{path}:{lineno}: record has no '{id_key}' field")
        value = row[id_key]
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise UserError(f"{path}:{lineno}: '{id_key}' is {_shown(value)}; ids must be strings or integers")
        row[id_key] = str(value)
        yield lineno, row


def _shown(value: object) -> str:
    """A JSON value in an error line: its JSON, cut short (the line must stay one short line)."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def text_field(row: dict, key: str, path: str | Path, lineno: int) -> str:
    """row[key] as text: a string, or "" when missing or null. An object, array, number or
    boolean is refused with file:line: indexed as its Python repr, it would be searched as
    "{'a': 1}"."""
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UserError(f"{path}:{lineno}: '{key}' is {_shown(value)}; text fields must be strings")
    return value


def jsonl_records(path: Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[str, str, str, dict]]:
    """(doc id, title, text, the record's other keys) of a BEIR corpus.jsonl, checked, not yet
    normalised: the one reading of a JSONL corpus (BEIR loading, `index`, `search`)."""
    for lineno, row in iter_jsonl_numbered(path, "_id", max_line_bytes):
        title, text = text_field(row, "title", path, lineno), text_field(row, "text", path, lineno)
        yield row.pop("_id"), title, text, {k: v for k, v in row.items() if k not in ("title", "text")}


class Dropped(dict):
    """{what: count} of dropped input, plus `examples` {what: first few ids}: a count alone does
    not say which records to fix."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.examples: dict[str, list[str]] = {}

    def add(self, what: str, example: str | None = None) -> None:
        self[what] = self.get(what, 0) + 1
        if example is not None and len(self.examples.setdefault(what, [])) < 5:
            self.examples[what].append(example)


def describe_dropped(dropped: dict[str, int]) -> list[str]:
    """One line per kind of dropped input, naming the first few ids where they are known."""
    examples = getattr(dropped, "examples", {})
    lines = []
    for what, count in dropped.items():
        named = examples.get(what)
        first = f" (first: {', '.join(map(repr, named))})" if named else ""
        lines.append(f"dropped {count} {what}{first}")
    return lines


def read_corpus(path: Path) -> tuple[dict[str, dict[str, str]], dict[str, int]]:
    """corpus.jsonl -> ({doc id: {"title", "text"[, "image_embedding"]}}, dropped counts).

    The first of duplicate ids wins; documents with neither title nor text are dropped. A record's
    `image_embedding` is kept as read; `data.images.image_inputs` checks it against the model.
    """
    if not path.is_file():
        raise UserError(f"missing file: {path}")
    corpus: dict[str, dict[str, str]] = {}
    dropped = Dropped()
    for doc_id, title, text, other in jsonl_records(path):
        if not doc_id.strip():
            dropped.add("docs without an id")
            continue
        if doc_id in corpus:
            dropped.add("duplicate doc ids", doc_id)
            continue
        title, text = normalize_text(title), normalize_text(text)
        if not title and not text:
            dropped.add("empty docs")
            continue
        corpus[doc_id] = {"title": title, "text": text}
        if IMAGE_FIELD in other:
            corpus[doc_id][IMAGE_FIELD] = other[IMAGE_FIELD]
        if IMAGE_FILE_FIELD in other:
            corpus[doc_id][IMAGE_FILE_FIELD] = resolve_image_path(other[IMAGE_FILE_FIELD], path.parent)
    return corpus, dropped


def resolve_image_path(value: object, root: Path) -> object:
    """An `image` field as an absolute path (relative ones are under ROOT, the corpus file's
    directory); anything but a non-empty string is kept for `data.images` to refuse."""
    if isinstance(value, str) and value.strip():
        return str(root / value) if not Path(value).is_absolute() else value
    return value


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise UserError(f"missing {what}: {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:  # the line, so the bad byte can be found
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 (byte {e.start})") from None


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    lines = _read_lines(path, "qrels file")
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in enumerate(lines, 1):
        parts = line.split("\t") if "\t" in line else line.split()
        if not parts or not line.strip():
            continue
        if lineno == 1 and not parts[-1].strip().lstrip("-").isdigit():
            continue  # header line
        if len(parts) != 3:
            raise UserError(f"{path}:{lineno}: expected 'query-id corpus-id score', got {line!r}")
        qid, did, score = (p.strip() for p in parts)
        try:
            qrels.setdefault(qid, {})[did] = int(float(score))
        except ValueError:
            raise UserError(f"{path}:{lineno}: score {score!r} is not a number") from None
    if not qrels:
        raise UserError(f"{path}: no judgments")
    return qrels


def load_beir(directory: str | Path, split: str = "test", unknown_ids: str = "error") -> BeirDataset:
    """Reads corpus.jsonl, queries.jsonl and qrels/{split}.tsv.

    unknown_ids: "error" raises on qrels naming ids absent from corpus/queries; "drop"
    drops them and counts them in `dropped` (evaluation goes on with the rest).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"dataset directory not found: {directory}")
    corpus, dropped = read_corpus(directory / "corpus.jsonl")
    queries: dict[str, str] = {}
    queries_path = directory / "queries.jsonl"
    if not queries_path.is_file():
        raise UserError(f"missing file: {queries_path}")
    for lineno, row in iter_jsonl_numbered(queries_path):
        text = normalize_text(text_field(row, "text", queries_path, lineno))
        if not text:
            dropped["empty queries"] = dropped.get("empty queries", 0) + 1
            continue
        if str(row["_id"]) in queries:  # first one wins, as for documents
            dropped.add("duplicate query ids", str(row["_id"]))
            continue
        queries[str(row["_id"])] = text
    qrels_path = directory / "qrels" / f"{split}.tsv"
    qrels = read_qrels(qrels_path)
    unknown = [(q, d) for q, docs in qrels.items() for d in docs if q not in queries or d not in corpus]
    if unknown and unknown_ids == "error":
        q, d = unknown[0]
        what = f"query id {q!r}" if q not in queries else f"corpus id {d!r}"
        raise UserError(f"{qrels_path}: {len(unknown)} judgments name unknown ids (first: {what})")
    for q, d in unknown:
        del qrels[q][d]
    if unknown:
        dropped["judgments with unknown ids"] = len(unknown)
    qrels = {q: docs for q, docs in qrels.items() if docs}
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, dropped=dropped)


# ---------------------------------------------------------------------------- runs
RUN_PREFIX = "run:"


def run_file(source: str) -> str | None:
    """The path in a "run:PATH" first-stage source (`data.negatives_from`), else None."""
    return source[len(RUN_PREFIX) :] if source.startswith(RUN_PREFIX) else None


def read_run(path: str | Path) -> dict[str, dict[str, float]]:
    """A TREC run file (`qid Q0 docid rank score tag`, whitespace-separated, as trec_eval reads
    it): {query id: {doc id: score}}. The rank column is ignored; the score orders."""
    path = Path(path)
    lines = _read_lines(path, "run file")
    run: dict[str, dict[str, float]] = {}
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise UserError(f"{path}:{lineno}: expected 'qid Q0 docid rank score tag', got {line!r}")
        try:
            score = float(parts[4])
        except ValueError:
            raise UserError(f"{path}:{lineno}: score {parts[4]!r} is not a number") from None
        if score != score:
            raise UserError(f"{path}:{lineno}: score is NaN")
        if parts[2] in run.setdefault(parts[0], {}):
            raise UserError(f"{path}:{lineno}: document {parts[2]!r} listed twice for query {parts[0]!r}")
        run[parts[0]][parts[2]] = score
    if not run:
        raise UserError(f"{path}: no lines")
    return run


def load_run(path: str | Path, ds: BeirDataset, top_k: int) -> dict[str, dict[str, float]]:
    """A run file's top_k documents for each judged query of `ds`; every judged query must be in
    the file and every document in the corpus (the text is needed to rerank it)."""
    run = read_run(path)
    qids = sorted(q for q in ds.qrels if q in ds.queries)
    missing = [q for q in qids if q not in run]
    if missing:
        raise UserError(
            f"{path}: {len(missing)} of the {len(qids)} judged queries are not in the run (first: {missing[0]!r})"
        )
    unknown = sorted({d for q in qids for d in run[q] if d not in ds.corpus})
    if unknown:
        raise UserError(f"{path}: {len(unknown)} documents not in the corpus (first: {unknown[0]!r})")
    return {q: dict(sorted(run[q].items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]) for q in qids}


def write_run(run: dict[str, dict[str, float]], path: str | Path, tag: str = "deepseek_tf") -> None:
    """Writes `run` as a TREC run file, each query's documents by score descending (rank from 1);
    whole or not at all (a temporary file renamed into place)."""
    lines = []
    for q in sorted(run):
        ranked = sorted(run[q].items(), key=lambda kv: (-kv[1], kv[0]))
        lines += [f"{q} Q0 {d} {rank} {score:.6f} {tag}" for rank, (d, score) in enumerate(ranked, 1)]
    write_text(Path(path), "\n".join(lines) + "\n")

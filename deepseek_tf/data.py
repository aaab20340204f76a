"""Readers (BEIR layout, CSV/TSV/JSONL pairs), cleaning, and tf.data pipelines.

Tokenization happens in the pipeline, after batching, so each batch is padded to its
own longest sequence and the model never holds a tokenizer while training.
"""
from __future__ import annotations

import json
import sys
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf

from deepseek_tf.errors import UserError

PAIR_COLUMNS = ("query", "doc_content")
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

    def judged_subset(self, qids) -> "BeirDataset":
        """The same corpus and queries with only these queries' judgments (dev splits, folds)."""
        keep = set(qids)
        return BeirDataset(self.corpus, self.queries, {q: v for q, v in self.qrels.items() if q in keep},
                           self.dropped)


def join_title(doc: dict[str, str], use_title: bool = True) -> str:
    """BEIR's convention: title + " " + text even when the text repeats the title (Cranfield's
    does): all-MiniLM-L6-v2 gets its reference nDCG@10 0.403 this way (0.393 on text alone)."""
    title, text = doc.get("title", ""), doc.get("text", "")
    if use_title and title:
        return f"{title} {text}".strip()
    return text or title


def _read_jsonl(path: Path, id_key: str = "_id") -> list[dict]:
    if not path.is_file():
        raise UserError(f"missing file: {path}")
    rows = []
    try:
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
                if not isinstance(row, dict) or id_key not in row:
                    raise UserError(f"{path}:{lineno}: record has no '{id_key}' field")
                rows.append(row)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 (byte {e.start})") from None
    return rows


def read_corpus(path: Path) -> tuple[dict[str, dict[str, str]], dict[str, int]]:
    """corpus.jsonl -> ({doc id: {"title", "text"}}, dropped counts).

    The first of duplicate ids wins; documents with neither title nor text are dropped.
    """
    corpus: dict[str, dict[str, str]] = {}
    dropped: dict[str, int] = {}
    for row in _read_jsonl(path):
        doc_id = str(row["_id"])
        if doc_id in corpus:
            dropped["duplicate doc ids"] = dropped.get("duplicate doc ids", 0) + 1
            continue
        title, text = normalize_text(row.get("title")), normalize_text(row.get("text"))
        if not title and not text:
            dropped["empty docs"] = dropped.get("empty docs", 0) + 1
            continue
        corpus[doc_id] = {"title": title, "text": text}
    return corpus, dropped


def _read_lines(path: Path, what: str) -> list[str]:
    if not path.is_file():
        raise UserError(f"missing {what}: {path}")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 (byte {e.start})") from None


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
    for row in _read_jsonl(directory / "queries.jsonl"):
        text = normalize_text(row.get("text"))
        if not text:
            dropped["empty queries"] = dropped.get("empty queries", 0) + 1
            continue
        if str(row["_id"]) in queries:  # first one wins, as for documents
            dropped["duplicate query ids"] = dropped.get("duplicate query ids", 0) + 1
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
    return source[len(RUN_PREFIX):] if source.startswith(RUN_PREFIX) else None


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
        raise UserError(f"{path}: {len(missing)} of the {len(qids)} judged queries are not in the run "
                        f"(first: {missing[0]!r})")
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
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)


# ---------------------------------------------------------------------------- pairs
@dataclass
class Pairs:
    """Training pairs; `negs` (hard negatives: one text per pair, or a list of k texts per
    pair) and `labels` (graded 0-4) are optional."""

    queries: list[str]
    docs: list[str]
    negs: Optional[list[str]] = None
    labels: Optional[list[int]] = None

    def __len__(self) -> int:
        return len(self.queries)


def _read_table(path: Path):
    import pandas as pd

    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return pd.read_json(path, lines=True, dtype=False, encoding="utf-8")
        sep = "\t" if suffix in (".tsv", ".tab") else ","
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 (byte {e.start})") from None
    except ValueError as e:
        raise UserError(f"{path}: cannot parse as {suffix[1:] or 'csv'} ({str(e).splitlines()[0]})") from None


def read_pairs(path: str | Path, verbose: bool = True) -> Pairs:
    """Reads `query, doc_content[, neg_doc][, label]` rows, cleans them and prints a summary."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"missing pairs file: {path}")
    df = _read_table(path)
    missing = [c for c in PAIR_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)} (have: {', '.join(map(str, df.columns))})")
    total = len(df)
    cols = [c for c in PAIR_COLUMNS + OPTIONAL_COLUMNS if c in df.columns]
    df = df[cols].copy()
    for c in cols:
        if c != "label":
            df[c] = df[c].map(normalize_text)
    empty = (df["query"] == "") | (df["doc_content"] == "")
    n_empty = int(empty.sum())
    df = df[~empty]
    labels = None
    if "label" in df.columns:
        import pandas as pd

        numeric = pd.to_numeric(df["label"], errors="coerce")
        bad = numeric.isna() | (numeric < 0) | (numeric > 4)
        if bad.any():
            row = int(df.index[bad.to_numpy()][0]) + 2  # +1 header, +1 one-based
            raise UserError(f"{path}:{row}: label must be a number from 0 to 4, got {df['label'][bad].iloc[0]!r}")
        df["label"] = numeric.astype(int)
    before = len(df)
    df = df.drop_duplicates()
    n_dup = before - len(df)
    if df.empty:
        raise UserError(f"{path}: no usable rows ({total} read, {n_empty} empty)")
    if verbose:
        print(f"{path.name}: {total} rows read, {n_empty} empty dropped, {n_dup} duplicates dropped, "
              f"{len(df)} kept", file=sys.stderr)
    negs = df["neg_doc"].tolist() if "neg_doc" in df.columns else None
    if negs is not None and any(n == "" for n in negs):
        negs = None if all(n == "" for n in negs) else negs
        if negs is not None:
            raise UserError(f"{path}: neg_doc is empty on some rows; give it on every row or none")
    if "label" in df.columns:
        labels = df["label"].tolist()
    return Pairs(df["query"].tolist(), df["doc_content"].tolist(), negs, labels)


def pairs_from_beir(ds: BeirDataset, min_label: int = 1, use_title: bool = True) -> Pairs:
    """(query, relevant doc) pairs from qrels, graded label kept; order is deterministic."""
    queries, docs, labels = [], [], []
    for qid in sorted(ds.qrels):
        for did, grade in sorted(ds.qrels[qid].items()):
            if grade >= min_label:
                queries.append(ds.queries[qid])
                docs.append(ds.doc_text(did, use_title))
                labels.append(grade)
    if not queries:
        raise UserError(f"no judgments with relevance >= {min_label} to train on")
    return Pairs(queries, docs, None, labels)


def grade_weights(labels: list[int]) -> list[float]:
    """Per-pair loss weights grade / mean grade (mean weight 1, so the loss scale and the
    learning rate keep their meaning): a grade-4 judgment counts four times a grade-1 one,
    as it does in nDCG's gain."""
    if not labels or min(labels) <= 0:
        raise UserError("train.grade_weighting needs a positive graded label on every training pair")
    mean = sum(labels) / len(labels)
    return [g / mean for g in labels]


def title_dataset(ds: BeirDataset) -> BeirDataset:
    """The corpus as its own training set: each document's title is a pseudo-query whose one
    relevant document is the document's body (an in-domain signal that needs no judgments,
    as in title/body pre-training). A body that opens with its title loses that prefix,
    else the pair is a copy task. Documents without both a title and a body are left out."""
    bodies, queries, qrels = {}, {}, {}
    for doc_id, doc in ds.corpus.items():
        title, text = doc.get("title", "").strip(), doc.get("text", "").strip()
        if title and text.startswith(title):
            text = text[len(title):].strip()
        if text:
            bodies[doc_id] = {"title": "", "text": text}
        if title and text:
            queries[f"title:{doc_id}"] = title
            qrels[f"title:{doc_id}"] = {doc_id: 1}
    return BeirDataset(bodies, queries, qrels)


def concat_pairs(a: Pairs, b: Pairs) -> Pairs:
    if (a.negs is None) != (b.negs is None) or (a.labels is None) != (b.labels is None):
        raise UserError("cannot mix training pairs with and without negatives/labels")
    join = lambda x, y: None if x is None else list(x) + list(y)
    return Pairs(a.queries + b.queries, a.docs + b.docs, join(a.negs, b.negs), join(a.labels, b.labels))


# ---------------------------------------------------------------------------- tf.data
def pair_dataset(
    pairs: Pairs,
    tokenizer,
    batch_size: int,
    query_max_length: int,
    doc_max_length: int,
    seed: int = 42,
    shuffle: bool = True,
    shuffle_buffer: int = 10000,
    drop_remainder: bool = True,
    weights: list[float] | None = None,
    teacher: np.ndarray | None = None,
    pad_multiple: int = 1,
) -> tf.data.Dataset:
    """Batches of {"query": ids, "doc": ids[, "neg": ids][, "weight": (batch,)][, "teacher": (batch, k)]}
    for dual-encoder training; `weights` are per-pair loss weights (see `grade_weights`), `teacher`
    a teacher's margins per pair and hard negative (see `distill.teacher_margins`); ids are padded
    to a multiple of `pad_multiple` (XLA: `Tokenizer.widen`)."""
    columns = {"query": pairs.queries, "doc": pairs.docs}
    if pairs.negs is not None:
        columns["neg"] = pairs.negs  # (N,) or (N, k)
    if weights is not None:
        columns["weight"] = np.asarray(weights, np.float32)
    if teacher is not None:
        columns["teacher"] = np.asarray(teacher, np.float32).reshape(len(pairs), -1)  # (N, k)
    ds = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle:
        ds = ds.shuffle(min(shuffle_buffer, len(pairs)), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    lengths = {"query": query_max_length, "doc": doc_max_length, "neg": doc_max_length}

    def ids(texts, length):
        if texts.shape.rank == 1:
            return tokenizer(texts, length, pad_multiple)
        # k negatives per pair: (batch, k) texts -> (batch, k, length) ids, so splits along the
        # batch axis (replicas, GradCache micro-batches) keep each pair's negatives with it
        flat = tokenizer(tf.reshape(texts, [-1]), length, pad_multiple)
        return {name: tf.reshape(t, tf.concat([tf.shape(texts), tf.shape(t)[1:]], 0)) for name, t in flat.items()}

    def tokenize(batch):
        return {k: ids(v, lengths[k]) if k in lengths else v for k, v in batch.items()}

    return ds.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def text_batches(texts: list[str], tokenizer, max_length: int, batch_size: int):
    """Yields (indices, tokenized batch) with texts sorted by length, so padding stays small."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        yield idx, tokenizer(tf.constant([texts[i] for i in idx]), max_length)

"""Training pairs: CSV/TSV/JSONL readers and cleaning, pairs from BEIR judgments, tf.data pipelines.

Tokenization happens in the pipeline, after batching, so each batch is padded to its
own longest sequence and the model never holds a tokenizer while training.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from deepseek_tf.data.beir import OPTIONAL_COLUMNS, PAIR_COLUMNS, BeirDataset, normalize_text
from deepseek_tf.errors import UserError


@dataclass
class Pairs:
    """Training pairs; `negs` (hard negatives: one text per pair, or a list of k texts per
    pair), `labels` (graded 0-4), `doc_ids` (the corpus ids of `docs`, for pairs from BEIR
    judgments) and `neg_ids` (the corpus ids of `negs`, shaped like them, for mined negatives)
    are optional."""

    queries: list[str]
    docs: list[str]
    negs: list[str] | None = None
    labels: list[int] | None = None
    doc_ids: list[str] | None = None
    neg_ids: list | None = None  # (N,) ids or (N, k) lists of ids, like `negs`

    def __len__(self) -> int:
        return len(self.queries)


def _read_table(path: Path):
    import pandas as pd

    suffix = path.suffix.lower()
    data = path.read_bytes()
    try:  # checked here: pandas reports an offset into its read buffer, not a line
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 (byte {e.start})") from None
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
        print(
            f"{path.name}: {total} rows read, {n_empty} empty dropped, {n_dup} duplicates dropped, {len(df)} kept",
            file=sys.stderr,
        )
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
    queries, docs, labels, doc_ids = [], [], [], []
    for qid in sorted(ds.qrels):
        for did, grade in sorted(ds.qrels[qid].items()):
            if grade >= min_label:
                queries.append(ds.queries[qid])
                docs.append(ds.doc_text(did, use_title))
                labels.append(grade)
                doc_ids.append(did)
    if not queries:
        raise UserError(f"no judgments with relevance >= {min_label} to train on")
    return Pairs(queries, docs, None, labels, doc_ids)


# ---------------------------------------------------------------------------- tf.data
# not tokenized: they join the "doc" / "neg" ids as "image" and "image_mask"
_IMAGE_COLUMNS = ("doc_image", "doc_image_mask", "neg_image", "neg_image_mask")


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
    teacher: np.ndarray | None = None,
    pad_multiple: int = 1,
    labels: bool = False,
    images: tuple[np.ndarray, np.ndarray] | None = None,
    neg_images: tuple[np.ndarray, np.ndarray] | None = None,
) -> tf.data.Dataset:
    """Batches of {"query": ids, "doc": ids[, "neg": ids][, "teacher": (batch, k)]}
    for dual-encoder training (plus "label": (batch,) graded labels with `labels`); `teacher` a
    teacher's margins per pair and hard negative (see `distill.teacher_margins`); ids are padded
    to a multiple of `pad_multiple` (XLA: `Tokenizer.widen`). `images`: each pair's document
    image vector (N, image_dim) and mask (N,) (`images.image_inputs`), carried in the doc ids as
    "image" and "image_mask"; `neg_images` likewise for each hard negative's own document,
    (N, image_dim) and (N,) or (N, k, image_dim) and (N, k) like `pairs.negs`, in the neg ids."""
    columns = {"query": pairs.queries, "doc": pairs.docs}
    if pairs.negs is not None:
        columns["neg"] = pairs.negs  # (N,) or (N, k)
    if labels:  # graded labels as per-pair loss weights (train.label_weighting)
        if pairs.labels is None:
            raise UserError("train.label_weighting needs graded labels (a `label` column or BEIR qrels)")
        columns["label"] = np.asarray(pairs.labels, np.float32)  # (N,)
    if images is not None:
        columns["doc_image"], columns["doc_image_mask"] = images  # (N, image_dim), (N,)
    if neg_images is not None:
        if pairs.negs is None:
            raise ValueError("neg_images without hard negatives (pairs.negs)")
        columns["neg_image"], columns["neg_image_mask"] = neg_images  # (N[, k], image_dim), (N[, k])
    if teacher is not None:
        columns["teacher"] = np.asarray(teacher, np.float32).reshape(len(pairs), -1)  # (N, k)
    ds = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle:
        ds = ds.shuffle(min(shuffle_buffer, len(pairs)), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    lengths = {"query": query_max_length, "doc": doc_max_length, "neg": doc_max_length}

    def ids(texts, length, tower):
        if texts.shape.rank == 1:
            return tokenizer.tower(texts, length, tower, pad_multiple)
        # k negatives per pair: (batch, k) texts -> (batch, k, length) ids, so splits along the
        # batch axis (replicas, GradCache micro-batches) keep each pair's negatives with it
        flat = tokenizer.tower(tf.reshape(texts, [-1]), length, tower, pad_multiple)
        return {name: tf.reshape(t, tf.concat([tf.shape(texts), tf.shape(t)[1:]], 0)) for name, t in flat.items()}

    def tokenize(batch):
        out = {
            k: ids(v, lengths[k], "query" if k == "query" else "doc") if k in lengths else v
            for k, v in batch.items()
            if k not in _IMAGE_COLUMNS
        }
        for tower in ("doc", "neg"):
            if f"{tower}_image" in batch:
                out[tower] = {
                    **out[tower],
                    "image": batch[f"{tower}_image"],
                    "image_mask": batch[f"{tower}_image_mask"],
                }
        return out

    return ds.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def text_batches(texts: list[str], tokenizer, max_length: int, batch_size: int):
    """Yields (indices, tokenized batch) with texts sorted by length, so padding stays small."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield idx, tokenizer(tf.constant([texts[i] for i in idx]), max_length)

"""Exact inner-product search in TensorFlow, in corpus chunks so memory stays bounded."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from deepseek_tf.errors import UserError


@tf.function(reduce_retracing=True)
def _chunk_topk(queries, chunk, k):
    scores = tf.matmul(queries, chunk, transpose_b=True)  # (q, chunk)
    return tf.math.top_k(scores, k=k)


def exact_search(queries: np.ndarray, docs: np.ndarray, k: int, chunk_size: int = 65536,
                 query_batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by dot product: (scores (q, k), indices (q, k)), best first.

    Scores at most query_batch × chunk_size at once, merging running top-k lists,
    so a 1M-document corpus never yields a 1M × Q score matrix.
    """
    n = docs.shape[0]
    k = min(k, n)
    all_scores = np.zeros((len(queries), k), np.float32)
    all_idx = np.zeros((len(queries), k), np.int64)
    for qs in range(0, len(queries), query_batch):
        q = tf.constant(queries[qs:qs + query_batch], tf.float32)
        best_s = tf.fill([tf.shape(q)[0], 0], 0.0)
        best_i = tf.zeros([tf.shape(q)[0], 0], tf.int64)
        for start in range(0, n, chunk_size):
            chunk = tf.constant(docs[start:start + chunk_size], tf.float32)
            s, i = _chunk_topk(q, chunk, tf.constant(min(k, chunk.shape[0])))
            merged_s = tf.concat([best_s, s], axis=1)
            merged_i = tf.concat([best_i, tf.cast(i, tf.int64) + start], axis=1)
            top = tf.math.top_k(merged_s, k=min(k, merged_s.shape[1]))
            best_s = top.values
            best_i = tf.gather(merged_i, top.indices, batch_dims=1)
        all_scores[qs:qs + query_batch] = best_s.numpy()
        all_idx[qs:qs + query_batch] = best_i.numpy()
    return all_scores, all_idx


class ExactIndex:
    """Document vectors + ids, saved with the fingerprint of the model that made them."""

    def __init__(self, vectors: np.ndarray, ids: list[str], fingerprint: str = ""):
        self.vectors, self.ids, self.fingerprint = vectors.astype(np.float32), list(ids), fingerprint

    def search(self, queries: np.ndarray, k: int = 10) -> list[list[tuple[str, float]]]:
        scores, idx = exact_search(queries, self.vectors, k)
        return [[(self.ids[j], float(s)) for s, j in zip(row_s, row_i)] for row_s, row_i in zip(scores, idx)]

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "vectors.npy", self.vectors)
        (directory / "index.json").write_text(json.dumps({"ids": self.ids, "fingerprint": self.fingerprint}))

    @classmethod
    def load(cls, directory: str | Path, fingerprint: str | None = None) -> "ExactIndex":
        directory = Path(directory)
        meta_path = directory / "index.json"
        if not meta_path.is_file():
            raise UserError(f"no index in {directory}")
        meta = json.loads(meta_path.read_text())
        if fingerprint is not None and meta["fingerprint"] != fingerprint:
            raise UserError(f"{directory}: index was built with another model "
                            f"(fingerprint {meta['fingerprint']} != {fingerprint}); rebuild it")
        return cls(np.load(directory / "vectors.npy"), meta["ids"], meta["fingerprint"])

"""Precomputed image vectors of documents (corpus.jsonl field `image_embedding`), checked.

A vector must be a list of `dim` finite numbers; anything else stops with one line naming the
document id and the field. A document without one gets mask 0 (the model's learned placeholder
stands in) and is counted in one warning.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from deepseek_tf.data.beir import IMAGE_FIELD
from deepseek_tf.errors import UserError


def _vector(doc_id: str, value: object, dim: int) -> np.ndarray:
    if not isinstance(value, list) or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in value):
        shown = type(value).__name__ if not isinstance(value, list) else "a list with non-numbers"
        raise UserError(f"document {doc_id!r}: '{IMAGE_FIELD}' must be a list of {dim} numbers, got {shown}")
    if len(value) != dim:
        raise UserError(f"document {doc_id!r}: '{IMAGE_FIELD}' has {len(value)} numbers; model.image_dim is {dim}")
    bad = next((j for j, x in enumerate(value) if not math.isfinite(x)), None)
    if bad is not None:
        raise UserError(f"document {doc_id!r}: '{IMAGE_FIELD}' holds {value[bad]} at position {bad}")
    return np.asarray(value, np.float32)


def image_inputs(
    corpus: dict[str, dict], doc_ids: list[str], dim: int, warn: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (N, dim) float32, mask (N,) float32) of `doc_ids` (repeats allowed): mask 1 where
    the document has an image vector, else 0 with a zero row. With `warn`, one stderr line counts
    the documents without one."""
    rows: dict[str, np.ndarray | None] = {}
    for doc_id in doc_ids:
        if doc_id not in rows:
            value = corpus[doc_id].get(IMAGE_FIELD)
            rows[doc_id] = None if value is None else _vector(doc_id, value, dim)
    missing = sum(v is None for v in rows.values())
    if missing and warn:
        print(
            f"warning: {missing} of {len(rows)} documents have no '{IMAGE_FIELD}'; the learned placeholder "
            "stands in for their image",
            file=sys.stderr,
        )
    zero = np.zeros(dim, np.float32)
    vectors = np.stack([zero if rows[d] is None else rows[d] for d in doc_ids]) if doc_ids else np.zeros((0, dim))
    mask = np.asarray([rows[d] is not None for d in doc_ids], np.float32)  # (N,)
    return vectors.astype(np.float32), mask


def doc_images(
    corpus: dict[str, dict], doc_ids: list[str], dim: int | None, warn: bool = True
) -> tuple[np.ndarray, np.ndarray] | None:
    """`image_inputs` for an embedder whose document tower reads images (`dim`), else None."""
    return None if dim is None else image_inputs(corpus, doc_ids, dim, warn)

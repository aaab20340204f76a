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
from deepseek_tf.data.image_files import ImageReader, image_file_inputs
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


def missing_images(missing: int, total: int) -> str:
    """The one line that counts documents without an image vector (commands prefix "warning: ")."""
    return f"{missing} of {total} documents have no '{IMAGE_FIELD}'; the learned placeholder stands in for their image"


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
        print(f"warning: {missing_images(missing, len(rows))}", file=sys.stderr)
    zero = np.zeros(dim, np.float32)
    vectors = np.stack([zero if rows[d] is None else rows[d] for d in doc_ids]) if doc_ids else np.zeros((0, dim))
    mask = np.asarray([rows[d] is not None for d in doc_ids], np.float32)  # (N,)
    return vectors.astype(np.float32), mask


def doc_images(
    corpus: dict[str, dict],
    doc_ids: list[str],
    dim: int | None,
    warn: bool = True,
    reader: ImageReader | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray] | None:
    """(vectors, mask) for an embedder whose document tower reads images (`dim`), else None: the
    documents' image files through READER, the model's image backbone, or without one their
    precomputed `image_embedding` vectors."""
    if dim is None:
        return None
    if reader is not None:
        return image_file_inputs(corpus, doc_ids, reader, warn, progress)
    return image_inputs(corpus, doc_ids, dim, warn)

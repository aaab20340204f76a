"""The image vectors of an index whose model's document tower reads them (`model.doc_inputs:
[text, image]`): each record's `image_embedding`, checked by `data.images.image_inputs` (a bad one
stops with one line naming the document id and the field) and passed to `encode_docs` with the
text. A document without one reads the model's learned placeholder (mask 0).

The vector is not a stored field of such an index unless `--fields` names it: the document's
dense vector already holds what the model took from it, and dim floats per document would
outweigh the text store. For a text-only model `image_embedding` is any other field, stored as
before (the model never reads it).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np

from deepseek_tf.data.beir import IMAGE_FIELD, MAX_LINE_BYTES, Dropped
from deepseek_tf.data.images import image_inputs
from deepseek_tf.index.corpus import chunked, iter_records

Row = tuple  # (id, text, stored fields): a record as `data.corpus.iter_records` reads it
SCAN_CHUNK = 4096  # records checked at once by `scan_images`


def read_selection(stored: Collection[str] | None, image_dim: int | None) -> tuple[str, ...] | None:
    """The fields to read from each record: the stored ones (None: all) and, for a model that reads
    images, the image vector (it is read for the model, whether stored or not)."""
    if stored is None or image_dim is None:
        return None if stored is None else tuple(stored)
    return (*stored, IMAGE_FIELD) if IMAGE_FIELD not in stored else tuple(stored)


def split_images(
    rows: list[Row], dim: int, stored: Collection[str] | None
) -> tuple[list[Row], tuple[np.ndarray, np.ndarray]]:
    """(ROWS with the image vector left out of their fields unless STORED names it, (vectors
    (N, dim) float32, mask (N,) float32)) for `encode_docs(..., images=)`. Ids must be distinct.
    A bad vector is a UserError naming the document id and the field."""
    images = image_inputs({r[0]: r[2] for r in rows}, [r[0] for r in rows], dim, warn=False)
    if stored is not None and IMAGE_FIELD in stored:
        return list(rows), images
    kept = [(r[0], r[1], {k: v for k, v in r[2].items() if k != IMAGE_FIELD}) for r in rows]
    return kept, images


def scan_images(corpus: str | Path, dim: int, max_line_bytes: int = MAX_LINE_BYTES) -> tuple[int, int]:
    """(documents without an image vector, documents) of CORPUS, every vector checked: the
    documents the build will encode (the same stream, drops and all), read before a build writes
    anything, so a bad vector near the end stops it before hours of encoding and a half-built index."""
    missing = total = 0
    records = iter_records(corpus, Dropped(), max_line_bytes, fields=(IMAGE_FIELD,))
    for rows in chunked(records, SCAN_CHUNK):
        _, mask = image_inputs({r[0]: r[2] for r in rows}, [r[0] for r in rows], dim, warn=False)
        missing += int(len(mask) - mask.sum())
        total += len(rows)
    return missing, total

"""Image files of documents (corpus.jsonl field `image`), decoded and resized in tf.data and
encoded by a model's image backbone (`models.images`).

A document whose `image` names no file on disk, or that has none, reads the model's learned
placeholder (mask 0); such documents are counted in one warning. A field that is not a path, or
a file that does not decode as an image, stops with one line naming the document id and the field.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deepseek_tf.data.beir import IMAGE_FILE_FIELD
from deepseek_tf.errors import UserError

if TYPE_CHECKING:
    import tensorflow as tf

IMAGE_FORMATS = "JPEG, PNG, GIF or BMP"  # what tf.io.decode_image reads


@dataclass(frozen=True)
class ImageReader:
    """How a model turns image files into vectors: `encode` maps pixels (batch, size, size, 3)
    float32 RGB in [0, 255] to (batch, dim) vectors."""

    encode: Callable[[tf.Tensor], np.ndarray]
    size: int
    dim: int
    batch_size: int = 32


def load_image(path: tf.Tensor, size: int) -> tf.Tensor:
    """One file -> (size, size, 3) float32 RGB in [0, 255] (bilinear resize, aspect not kept)."""
    import tensorflow as tf  # here, not at import: commands that read no image start without TensorFlow

    pixels = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    pixels = tf.image.resize(tf.cast(pixels, tf.float32), [size, size])
    return tf.ensure_shape(pixels, [size, size, 3])


def pixel_batches(paths: list[str], size: int, batch_size: int) -> tf.data.Dataset:
    """Batches of decoded, resized images in PATHS' order; files are read and decoded in parallel."""
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
        .map(lambda p: load_image(p, size), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def image_paths(corpus: dict[str, dict], doc_ids: list[str]) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """({doc id: path} of the documents whose file exists, {doc id: path} of those whose file is
    missing, ids without the field), each document once."""
    found, missing, absent = {}, {}, []
    for doc_id in dict.fromkeys(doc_ids):
        value = corpus[doc_id].get(IMAGE_FILE_FIELD)
        if value is None:
            absent.append(doc_id)
        elif not isinstance(value, str) or not value.strip():
            shown = type(value).__name__ if not isinstance(value, str) else "an empty string"
            raise UserError(f"document {doc_id!r}: '{IMAGE_FILE_FIELD}' must be an image file's path, got {shown}")
        elif Path(value).is_file():
            found[doc_id] = value
        else:
            missing[doc_id] = value
    return found, missing, absent


def missing_files(missing: int, absent: int, total: int, example: str = "") -> str:
    """The one line that counts documents whose image the placeholder stands in for: MISSING name
    a file that is not there (EXAMPLE, one of them), ABSENT have no `image` field."""
    parts = ([f"{missing} name a missing file, e.g. {example}"] if missing else []) + (
        [f"{absent} have no '{IMAGE_FILE_FIELD}'"] if absent else []
    )
    return (
        f"{missing + absent} of {total} documents have no image file ({'; '.join(parts)}); "
        "the learned placeholder stands in for their image"
    )


def first_undecodable(found: dict[str, str], size: int) -> tuple[str, str] | None:
    """(doc id, path) of the first file that does not decode, or None."""
    import tensorflow as tf

    for doc_id, path in found.items():
        try:
            load_image(tf.constant(path), size)
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
            return doc_id, path
    return None


def image_file_inputs(
    corpus: dict[str, dict], doc_ids: list[str], reader: ImageReader, warn: bool = True, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (N, reader.dim) float32, mask (N,) float32) of `doc_ids` (repeats allowed): each
    document's image file through READER, mask 0 and a zero row where it has none."""
    import tensorflow as tf

    found, missing, absent = image_paths(corpus, doc_ids)
    if (missing or absent) and warn:
        total, example = len(found) + len(missing) + len(absent), next(iter(missing.values()), "")
        print(f"warning: {missing_files(len(missing), len(absent), total, example)}", file=sys.stderr)
    rows: dict[str, np.ndarray] = {}
    if found:
        batches = pixel_batches(list(found.values()), reader.size, reader.batch_size)
        if progress:  # a bar on a terminal, plain lines in a log
            from deepseek_tf.console import progress as shown

            total = -(-len(found) // reader.batch_size)
            batches = shown(batches, "encoding images", unit="batch", leave=False, total=total)
        try:
            vectors = np.concatenate([reader.encode(pixels) for pixels in batches])  # (found, dim)
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
            bad = first_undecodable(found, reader.size)
            if bad is None:
                raise
            raise UserError(
                f"document {bad[0]!r}: '{IMAGE_FILE_FIELD}' {bad[1]} is not an image ({IMAGE_FORMATS})"
            ) from None
        rows = dict(zip(found, vectors))
    zero = np.zeros(reader.dim, np.float32)
    vectors = np.stack([rows.get(d, zero) for d in doc_ids]) if doc_ids else np.zeros((0, reader.dim))
    mask = np.asarray([d in rows for d in doc_ids], np.float32)  # (N,)
    return vectors.astype(np.float32), mask

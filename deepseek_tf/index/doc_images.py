"""The images of an index whose model's document tower reads them (`model.doc_inputs: [text,
image]`): each record's `image_embedding` vector, or, for a model with an image backbone, its
`image` file (a path relative to the corpus file's directory), decoded and encoded by the model.
A bad vector or a field that is no path stops with one line naming the document id and the field;
a document without an image (or whose file is missing) reads the model's learned placeholder.

The vector is not a stored field of such an index unless `--fields` names it: the document's
dense vector already holds what the model took from it, and dim floats per document would
outweigh the text store. An image file's path is stored like any other field. For a text-only
model both are ordinary fields (the model never reads them).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepseek_tf.data.beir import IMAGE_FIELD, IMAGE_FILE_FIELD, MAX_LINE_BYTES, Dropped, resolve_image_path
from deepseek_tf.data.image_files import ImageReader, image_file_inputs, image_paths, missing_files
from deepseek_tf.data.images import image_inputs, missing_images
from deepseek_tf.index.corpus import chunked, iter_records

Row = tuple  # (id, text, stored fields): a record as `data.corpus.iter_records` reads it
SCAN_CHUNK = 4096  # records checked at once by `scan_images`


@dataclass(frozen=True)
class DocImages:
    """What a model's document tower reads beside the text, and where relative image paths start."""

    dim: int  # the image vectors' length
    reader: ImageReader | None = None  # the model's image backbone (image files); None: `image_embedding` vectors
    root: Path | None = None  # the corpus file's directory

    @property
    def field(self) -> str:
        """The record field the model reads."""
        return IMAGE_FILE_FIELD if self.reader is not None else IMAGE_FIELD

    def inputs(self, rows: list[Row]) -> tuple[np.ndarray, np.ndarray]:
        """(vectors (N, dim) float32, mask (N,) float32) of ROWS' images (distinct ids)."""
        if self.reader is None:
            return image_inputs({r[0]: r[2] for r in rows}, [r[0] for r in rows], self.dim, warn=False)
        return image_file_inputs(self.located(rows), [r[0] for r in rows], self.reader, warn=False)

    def located(self, rows: list[Row]) -> dict[str, dict]:
        """{id: {"image": absolute path or the field as read}} of ROWS."""
        root = self.root or Path.cwd()
        return {r[0]: {IMAGE_FILE_FIELD: resolve_image_path(r[2].get(IMAGE_FILE_FIELD), root)} for r in rows}

    def missing(self, rows: list[Row]) -> tuple[int, int, str]:
        """(documents of ROWS whose image is missing, those without the field, one missing file's
        path or ""), every field checked, no file decoded. Vectors are never "missing", only absent."""
        if self.reader is None:
            _, mask = self.inputs(rows)
            return 0, int(len(mask) - mask.sum()), ""
        _, missing, absent = image_paths(self.located(rows), [r[0] for r in rows])
        return len(missing), len(absent), next(iter(missing.values()), "")

    def warning(self, missing: int, absent: int, total: int, example: str) -> str:
        """The one line that counts a whole corpus's documents without an image."""
        if self.reader is None:
            return missing_images(absent, total)
        return missing_files(missing, absent, total, example)


def doc_images(embedder, corpus: str | Path | None = None) -> DocImages | None:
    """The DocImages of EMBEDDER's document tower (None: it reads text only); relative image paths
    start at CORPUS's directory."""
    dim = getattr(embedder, "image_dim", None)  # any object with encode_docs serves as embedder
    if dim is None:
        return None
    root = Path(corpus).resolve().parent if corpus is not None else None
    return DocImages(dim, getattr(embedder, "image_reader", None), root)


def read_selection(stored: Collection[str] | None, images: DocImages | None) -> tuple[str, ...] | None:
    """The fields to read from each record: the stored ones (None: all) and, for a model that reads
    images, its image field (it is read for the model, whether stored or not)."""
    if stored is None or images is None:
        return None if stored is None else tuple(stored)
    return (*stored, images.field) if images.field not in stored else tuple(stored)


def split_images(
    rows: list[Row], images: DocImages, stored: Collection[str] | None
) -> tuple[list[Row], tuple[np.ndarray, np.ndarray]]:
    """(ROWS with the image vector left out of their fields unless STORED names it, (vectors
    (N, dim) float32, mask (N,) float32)) for `encode_docs(..., images=)`. Ids must be distinct.
    A bad vector or image field is a UserError naming the document id and the field."""
    inputs = images.inputs(rows)
    if images.field != IMAGE_FIELD or (stored is not None and IMAGE_FIELD in stored):
        return list(rows), inputs
    kept = [(r[0], r[1], {k: v for k, v in r[2].items() if k != IMAGE_FIELD}) for r in rows]
    return kept, inputs


def scan_images(corpus: str | Path, images: DocImages, max_line_bytes: int = MAX_LINE_BYTES) -> str | None:
    """Every record's image field checked (vectors in full; files for a path and their existence,
    not decoded), read before a build writes anything, so a bad one near the end stops it before
    hours of encoding and a half-built index; the one warning line counting the documents without
    an image, or None."""
    missing = absent = total = 0
    example = ""
    records = iter_records(corpus, Dropped(), max_line_bytes, fields=(images.field,))
    for rows in chunked(records, SCAN_CHUNK):
        m, a, path = images.missing(rows)
        missing, absent, total, example = missing + m, absent + a, total + len(rows), example or path
    return images.warning(missing, absent, total, example) if missing or absent else None

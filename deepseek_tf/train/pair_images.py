"""Image vectors of what a fused document tower trains on: each pair's document and hard negatives.

They are computed (and checked) once, before the workdir gets anything, and looked up by document
id: a mined negative carries its own document's image, never its pair's positive's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepseek_tf import data as data_lib
from deepseek_tf.config import Config

Images = tuple[np.ndarray, np.ndarray]  # (vectors (N[, k], image_dim) float32, mask (N[, k]) float32)


def _per_pair(neg_ids: list) -> list[list[str]]:
    return [[n] if isinstance(n, str) else list(n) for n in neg_ids]  # (N, k)


@dataclass(frozen=True)
class TrainingImages:
    """Image vectors and mask of some corpus documents, one row per distinct id."""

    vectors: np.ndarray  # (M, image_dim)
    mask: np.ndarray  # (M,)
    rows: dict[str, int]  # document id -> row

    def of(self, doc_ids: list[str]) -> Images:
        """(vectors (N, image_dim), mask (N,)) of `doc_ids`, repeats allowed."""
        idx = np.fromiter((self.rows[d] for d in doc_ids), np.int64, len(doc_ids))  # (N,)
        return self.vectors[idx], self.mask[idx]

    def of_pairs(self, pairs: data_lib.Pairs) -> tuple[Images, Images | None]:
        """The pairs' documents' images, and their hard negatives' shaped like `pairs.negs`:
        (N, image_dim) and (N,) for one negative a pair, (N, k, image_dim) and (N, k) for k."""
        docs = self.of(pairs.doc_ids)
        if pairs.negs is None:
            return docs, None
        if pairs.neg_ids is None:  # negatives known by text alone (a pairs file): no image to give them
            raise ValueError("hard negatives without document ids cannot carry image vectors")
        per_pair = _per_pair(pairs.neg_ids)
        vectors, mask = self.of([n for ns in per_pair for n in ns])  # (N·k, image_dim), (N·k,)
        if isinstance(pairs.neg_ids[0], str):
            return docs, (vectors, mask)
        n, k = len(per_pair), len(per_pair[0])
        return docs, (vectors.reshape(n, k, -1), mask.reshape(n, k))


def training_images(config: Config, corpus: dict, pairs: data_lib.Pairs, verbose: int) -> TrainingImages:
    """The images of the pairs' documents and mined negatives: their `image_embedding` vectors, or
    their image files through model.image_backbone (frozen, so each file is encoded once here).
    A model that mines its own negatives (data.negatives_from self) encodes the whole corpus
    first, so then every corpus document's image is read."""
    m, d = config.model, config.data
    if d.mine_negatives and d.negatives_from == "self":
        doc_ids = list(corpus)
    else:
        doc_ids = list(dict.fromkeys([*pairs.doc_ids, *(n for ns in _per_pair(pairs.neg_ids or []) for n in ns)]))
    reader = None
    if m.image_backbone != "none":
        from deepseek_tf.models.images import build_image_encoder, image_reader

        reader = image_reader(build_image_encoder(m))
    vectors, mask = data_lib.doc_images(corpus, doc_ids, m.image_dim, reader=reader, progress=bool(verbose))
    return TrainingImages(vectors, mask, {doc_id: row for row, doc_id in enumerate(doc_ids)})

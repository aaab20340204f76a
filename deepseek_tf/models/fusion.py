"""Image fusion in the document tower: a document's text embedding joined with its image vector.

`model.fusion` names one row of `FUSIONS`; each row is one function of the text embedding
t (batch, d) and the image vector i (batch, image_dim), and whether it has a gate. A document
without an image reads a learned placeholder vector in place of i, picked by a per-document mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras
from keras import ops

from deepseek_tf.config import ModelConfig

# The keys a document's model inputs carry beside its token ids when the tower reads images.
IMAGE_KEYS = ("image", "image_mask")


def l2_normalize(x):
    """x / ‖x‖ along the last axis (an all-zero row stays zero)."""
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-24))


def _concat(layer: ImageFusion, text, image):
    """Dense_d([t; i]): the seeds' fusion."""
    return layer.project(ops.concatenate([text, image], axis=-1))  # (batch, d)


def _sum(layer: ImageFusion, text, image):
    """t + Dense_d(i)."""
    return text + layer.project(image)  # (batch, d)


def _gated(layer: ImageFusion, text, image):
    """t + σ(Dense_d([t; p]))·p with p = Dense_d(i): a gate near 0 lets the text stand alone."""
    projected = layer.project(image)  # (batch, d)
    gate = ops.sigmoid(layer.gate(ops.concatenate([text, projected], axis=-1)))  # (batch, d)
    return text + gate * projected


@dataclass(frozen=True)
class Fusion:
    """One row of the fusion table: how t and i combine, and what `project` reads."""

    combine: Callable  # (layer, text (batch, d), image (batch, image_dim)) -> (batch, d)
    project_reads_text: bool = False  # `project` reads [t; i], not i alone
    gated: bool = False  # has a `gate` Dense on [t; p]


# `model.fusion` -> how the document tower joins text and image.
FUSIONS = {
    "concat": Fusion(_concat, project_reads_text=True),
    "sum": Fusion(_sum),
    "gated": Fusion(_gated, gated=True),
}


@keras.saving.register_keras_serializable(package="deepseek_tf")
class ImageFusion(keras.layers.Layer):
    """(text embedding, image vector, mask) -> the document embedding.

    i' = m·i/‖i‖ + (1 − m)·placeholder, with m = 1 where the document has an image (vectors exported
    from different vision models come at any scale, so present ones are L2-normalised); then the
    row of `FUSIONS` named by `kind` combines t and i', and with `normalize` the result is
    L2-normalised like the text tower's output.
    """

    def __init__(self, kind: str, image_dim: int, dim: int, normalize: bool = True, **kwargs):
        super().__init__(**kwargs)
        if kind not in FUSIONS:
            raise ValueError(f"unknown fusion {kind!r} (one of {', '.join(FUSIONS)})")
        self.kind, self.image_dim, self.dim, self.normalize = kind, image_dim, dim, normalize
        self.project = keras.layers.Dense(dim, name="project", dtype=self.dtype_policy)
        self.gate = keras.layers.Dense(dim, name="gate", dtype=self.dtype_policy) if FUSIONS[kind].gated else None

    def build(self, input_shape=None):
        self.placeholder = self.add_weight(
            shape=(self.image_dim,),
            initializer=keras.initializers.RandomNormal(stddev=1.0 / self.image_dim**0.5),
            name="missing_image",
        )
        row = FUSIONS[self.kind]
        self.project.build((None, self.dim + self.image_dim if row.project_reads_text else self.image_dim))
        if self.gate is not None:
            self.gate.build((None, 2 * self.dim))
        self.built = True

    def call(self, text, image, image_mask):
        mask = ops.expand_dims(ops.cast(image_mask, text.dtype), -1)  # (batch, 1)
        image = mask * l2_normalize(ops.cast(image, text.dtype)) + (1.0 - mask) * self.placeholder[None, :]
        fused = FUSIONS[self.kind].combine(self, text, image)  # (batch, d)
        return l2_normalize(fused) if self.normalize else fused

    def get_config(self):
        config = super().get_config()
        config.update(kind=self.kind, image_dim=self.image_dim, dim=self.dim, normalize=self.normalize)
        return config


def build_fusion(m: ModelConfig, dim: int) -> ImageFusion:
    """The document tower's fusion layer for `model.fusion`; `dim` is the text embedding's size.
    Float32 whatever the precision policy: it is a few small matrices."""
    return ImageFusion(m.fusion, m.image_dim, dim, m.normalize, dtype="float32", name="image_fusion")

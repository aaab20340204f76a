"""Image backbones: a document's image file -> its image vector, inside the document tower's model.

`model.image_backbone` names one row of `IMAGE_BACKBONES`, a keras.applications architecture
without its classifier, average-pooled to one vector per image. Its weights come from the local
file `model.image_weights` (nothing is downloaded); the backbone is frozen and the trained model
keeps it (model.keras), so evaluate, index and export need no weights file. Pixels arrive as
float32 RGB in [0, 255], as `data.image_files` decodes them; each row's own preprocessing runs
inside the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from deepseek_tf.config import ModelConfig
from deepseek_tf.data.image_files import ImageReader
from deepseek_tf.errors import ConfigError, UserError


@keras.saving.register_keras_serializable(package="deepseek_tf")
class CaffeInputs(keras.layers.Layer):
    """RGB in [0, 255] -> BGR minus the ImageNet channel means: what the ResNet50 weights expect
    (keras.applications.resnet50.preprocess_input, as a layer so the saved model carries it)."""

    MEANS = (103.939, 116.779, 123.68)  # B, G, R

    def call(self, x):
        return x[..., ::-1] - tf.constant(self.MEANS, x.dtype)


@dataclass(frozen=True)
class ImageBackbone:
    """One row of the backbone table: its keras.applications constructor and output width."""

    build: Callable[..., keras.Model]
    width: int  # the pooled vector's length: model.image_dim must say so
    preprocess: Callable[[], keras.layers.Layer] | None = None  # None: the architecture scales its own input
    options: tuple[tuple[str, object], ...] = ()


# `model.image_backbone` -> the architecture that encodes each document's image file.
IMAGE_BACKBONES = {
    "mobilenet_v3_small": ImageBackbone(
        keras.applications.MobileNetV3Small, 576, options=(("include_preprocessing", True),)
    ),
    "mobilenet_v3_large": ImageBackbone(
        keras.applications.MobileNetV3Large, 960, options=(("include_preprocessing", True),)
    ),
    "efficientnet_b0": ImageBackbone(keras.applications.EfficientNetB0, 1280),
    "resnet50": ImageBackbone(keras.applications.ResNet50, 2048, preprocess=CaffeInputs),
}


def build_image_encoder(m: ModelConfig) -> keras.Model:
    """The frozen image encoder of `model.image_backbone`, its weights read from `model.image_weights`:
    pixels (batch, size, size, 3) float32 in [0, 255] -> (batch, width) float32."""
    if m.image_backbone not in IMAGE_BACKBONES:
        raise ConfigError(f"model.image_backbone must be one of none, {', '.join(IMAGE_BACKBONES)}")
    row = IMAGE_BACKBONES[m.image_backbone]
    if m.image_dim != row.width:
        raise ConfigError(
            f"model.image_dim is {m.image_dim}; {m.image_backbone} gives {row.width}-d image vectors: "
            f"set model.image_dim: {row.width}"
        )
    if not m.image_weights:
        raise ConfigError(f"model.image_backbone {m.image_backbone} needs model.image_weights: a local weights file")
    weights = Path(m.image_weights)
    if not weights.is_file():
        raise UserError(f"model.image_weights: {weights} is not a file")
    shape = (m.image_size, m.image_size, 3)
    try:
        base = row.build(include_top=False, weights=None, input_shape=shape, pooling="avg", **dict(row.options))
        base.load_weights(str(weights))
    except Exception as e:  # Keras raises assorted types, with multi-line messages, for a file that does not fit
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"model.image_weights: {weights} does not load into {m.image_backbone} ({first})") from None
    pixels = keras.Input(shape, name="pixels")
    x = row.preprocess()(pixels) if row.preprocess else pixels
    encoder = keras.Model(pixels, base(x), name="image_encoder")
    encoder.trainable = False
    return encoder


def image_reader(encoder: keras.Model | None, batch_size: int = 32) -> ImageReader | None:
    """What turns documents' image files into vectors with ENCODER (None: no image backbone)."""
    if encoder is None:
        return None
    size = int(encoder.input_shape[1])
    encode = tf.function(
        lambda x: encoder(x, training=False), input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)]
    )
    return ImageReader(lambda x: np.asarray(encode(x)), size, int(encoder.output_shape[-1]), batch_size)

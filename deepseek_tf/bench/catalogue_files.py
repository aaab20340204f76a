"""The generated catalogue with image files instead of vectors, and a backbone weights file to read them.

Each product's photo is a PNG of its colour (brightness jittered, pixel noise added): the colour
is in the pixels and nowhere in the text. No pretrained image weights can be installed offline, so
the backbone is MobileNetV3Small with random weights whose BatchNormalization statistics are set
from the catalogue's own images (one training-mode pass with momentum 0); freshly initialised,
its activations vanish (outputs ~1e-11), and with the statistics set its vectors separate colours.
It stands in for a pretrained "notop" file, which users give as `model.image_weights`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

RGB = {
    "red": (220, 30, 30),
    "blue": (30, 60, 220),
    "green": (30, 170, 60),
    "black": (20, 20, 20),
    "white": (240, 240, 240),
    "yellow": (240, 220, 40),
    "pink": (245, 150, 190),
    "grey": (128, 128, 128),
}
PIXELS = 24  # the PNG files' side; the backbone resizes them to its own size


def colours(qrels: dict[str, list[tuple[str, str]]]) -> dict[str, str]:
    """{doc id: its colour}, read off the judgments: each product is judged for the queries
    `q-{type}-{colour}-{wording}` of its own type and colour."""
    return {doc: qid.split("-")[2] for pairs in qrels.values() for qid, doc in pairs}


def with_image_files(
    corpus: list[dict], colour_of: dict[str, str], directory: Path, seed: int = 0
) -> tuple[list[dict], np.ndarray]:
    """(the corpus with `"image": "images/ID.png"` in place of each vector, the pixels written):
    one PNG per product under DIRECTORY/images."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    records, pixels = [], []
    for record in corpus:
        record = {k: v for k, v in record.items() if k != "image_embedding"}
        rgb = np.asarray(RGB[colour_of[record["_id"]]], np.float64) * rng.uniform(0.8, 1.1)
        image = np.clip(rgb + rng.normal(0, 12, (PIXELS, PIXELS, 3)), 0, 255).astype(np.uint8)
        record["image"] = f"images/{record['_id']}.png"
        tf.io.write_file(str(directory / record["image"]), tf.io.encode_png(image))
        records.append(record)
        pixels.append(image)
    return records, np.stack(pixels)


def backbone_weights(path: Path, pixels: np.ndarray, size: int) -> Path:
    """A MobileNetV3Small (no top, average-pooled) weights file with random weights and
    BatchNormalization statistics from PIXELS (N, h, w, 3) uint8, resized to SIZE."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    encoder = keras.applications.MobileNetV3Small(
        include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg", include_preprocessing=True
    )
    for layer in encoder.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # the next pass's batch statistics become the layer's
    sample = pixels[np.random.default_rng(0).permutation(len(pixels))[:64]]
    encoder(tf.image.resize(tf.cast(sample, tf.float32), [size, size]), training=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoder.save_weights(str(path))
    return path

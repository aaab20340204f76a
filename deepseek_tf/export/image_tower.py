"""The image tower of a model with an image backbone: `PREFIX.image.tflite`, pixels -> image vectors.

The SavedModel's `encode_image` endpoint converted like the text towers. keras.applications
backbones need builtin ops only (MobileNetV3Small: CONV_2D, DEPTHWISE_CONV_2D, HARD_SWISH, MEAN,
ADD, MUL), which matters: TensorFlow's TFLite interpreter has no Flex delegate. The file is checked
against the Keras backbone on held pixels (`saved_model.held_pixels`) and, with `--dataset`, on its
corpus's images, comparing unit vectors (`saved_model.unit`: the fusion reads nothing else) by
the tower modes' TOLERANCES. int8 calibrates on the corpus's image files: seeded noise would set
activation ranges no photo has.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from deepseek_tf.data.beir import IMAGE_FILE_FIELD
from deepseek_tf.data.image_files import ImageReader, image_file_inputs
from deepseek_tf.errors import UserError
from deepseek_tf.export.saved_model import held_pixels, unit
from deepseek_tf.export.tflite import agreement, check_failed, convert
from deepseek_tf.retrieval.tflite import TFLiteImageRunner


def check_calibration_images(quantize: str, calibration: dict | None) -> None:
    """int8 needs the dataset's image files (said before minutes of conversion)."""
    if quantize == "int8" and not (calibration or {}).get("image_files"):
        raise UserError(
            f"--quantize int8 calibrates the image backbone on --dataset's image files, and its corpus "
            f"names none on disk ('{IMAGE_FILE_FIELD}' fields)"
        )


def dataset_pixels(calibration: dict | None, size: int) -> np.ndarray:
    """The calibration sample's image files (`tflite.calibration_texts`' "image_files"), decoded
    and resized as for encoding: (n, size, size, 3) float32; (0, ...) without any. A file that
    does not decode stops with one line naming its document."""
    files = dict((calibration or {}).get("image_files", []))
    if not files:
        return np.zeros((0, size, size, 3), np.float32)
    flat = ImageReader(lambda pixels: np.reshape(pixels, (len(pixels), -1)), size, size * size * 3)
    corpus = {doc_id: {IMAGE_FILE_FIELD: path} for doc_id, path in files.items()}
    vectors, _ = image_file_inputs(corpus, list(corpus), flat, warn=False)
    return vectors.reshape(-1, size, size, 3)


def convert_image_tower(
    saved_model: str | Path,
    reader: ImageReader,
    quantize: str,
    calibration: dict | None = None,
    tolerance: float | None = None,
) -> tuple[bytes, dict]:
    """The SavedModel's encode_image as .tflite bytes and its check, which it passed (else a
    UserError: nothing is written). READER is the Keras backbone's, the reference."""
    start = time.perf_counter()
    check_calibration_images(quantize, calibration)
    real = dataset_pixels(calibration, reader.size)
    blob = convert(saved_model, "encode_image", quantize, [{"pixels": p} for p in real] if quantize == "int8" else None)
    runner = TFLiteImageRunner(blob, source="encode_image")
    pixels = np.concatenate([held_pixels(reader.size), real])
    want = np.concatenate([reader.encode(batch) for batch in np.array_split(pixels, -(-len(pixels) // 32))])
    single = np.concatenate([runner(pixels[i : i + 1]) for i in range(len(pixels))])  # batch of 1: the dynamic batch
    check = agreement(unit(want), unit(runner(pixels)), unit(single), quantize, tolerance)
    check |= {"images": len(pixels), "dataset_images": len(real), "convert_s": round(time.perf_counter() - start, 2)}
    if not check["passed"]:
        raise check_failed("image tower", quantize, check)
    return blob, check

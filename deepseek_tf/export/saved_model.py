"""Raw-string SavedModel export (encode_query, encode_doc, score), checked against Keras before it is written.

The SavedModel carries the tokenizer in its graph (tensorflow-text), so its
signatures take raw strings: encode_query(text) / encode_doc(text) -> (N, D) float32,
score(query, doc) -> (N,) float32. A model that reads documents' image files through an image
backbone also gets encode_image(pixels (N, size, size, 3) float32 RGB in [0, 255]) -> (N, image_dim),
so the export turns files into the vectors encode_doc takes. `--format tflite` writes one
raw-string file per tower (`export/tflite.py`). Every export is checked against the Keras model on held texts
and nothing is written when outputs drift past the tolerance. `--report` exports every
TFLite quantization mode and measures size, latency, nDCG@10 and cosine to float32.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

from deepseek_tf.data.image_files import ImageReader
from deepseek_tf.errors import UserError
from deepseek_tf.export.publish import check_not_model, check_output_dir, publish, removed_on_failure
from deepseek_tf.models.fusion import IMAGE_KEYS

# Texts the export checks itself on: varied lengths, punctuation, numbers, CJK.
CHECK_TEXTS = [
    "summer dress",
    "轻便笔记本",
    "iPhone 15 Pro 手机壳 防摔",
    "What similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft?",
    "Café naïve façade — 3.5 kg, 20% off!",
    "",
]
# Longer held texts: past every max length in use, so truncation is checked as well.
LONG_TEXTS = [
    "experimental investigation of the aerodynamics of a wing in a slipstream. an experimental study of a "
    "wing in a propeller slipstream was made in order to determine the spanwise distribution of the lift "
    "increase due to slipstream at different angles of attack of the wing and at different free stream to "
    "slipstream velocity ratios. the results were intended in part as an evaluation basis for different "
    "theoretical treatments of this problem. the comparative span loading curves, together with supporting "
    "evidence, showed that a substantial part of the lift increment produced by the slipstream was due to a "
    "/destalling/ or boundary-layer-control effect. " * 3,
    "轻便笔记本电脑 长续航 " * 40 + "waterproof two person camping tent with aluminium poles, 2.1 kg",
]
HELD_TEXTS = CHECK_TEXTS + LONG_TEXTS


def build_archive(model, tokenizer, query_max_length: int, doc_max_length: int):
    """An ExportArchive whose endpoints tokenize raw strings and call the towers (attention
    masks switched to additive biases, see `additive_attention_masks`). A model whose document
    tower fuses images takes them beside the text: encode_doc(text, image_embedding (N, image_dim)
    float32, image_mask (N,) float32: 1 where the document has an image), score likewise; with an
    image backbone (`model.image_encoder`), encode_image(pixels) gives those image vectors."""
    import keras

    from deepseek_tf.models.encoder import additive_attention_masks

    additive_attention_masks(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(tokenizer)  # keeps the tensorflow-text lookup tables alive in the graph
    spec = tf.TensorSpec([None], tf.string, name="text")

    def query_fn(text):
        return model.query_encoder(tokenizer.tower(text, query_max_length, "query"), training=False)

    image_specs = []
    if model.doc_fusion is not None:
        image_specs = [
            tf.TensorSpec([None, model.doc_fusion.image_dim], tf.float32, name="image_embedding"),
            tf.TensorSpec([None], tf.float32, name="image_mask"),
        ]

    def doc_fn(text, *image):
        ids = tokenizer.tower(text, doc_max_length, "doc")
        return model.encode_doc(ids | dict(zip(IMAGE_KEYS, image)), training=False)  # (N, D)

    def score_fn(query, doc, *image):
        return tf.reduce_sum(query_fn(query) * doc_fn(doc, *image), axis=-1)  # (N,)

    archive.add_endpoint("encode_query", query_fn, input_signature=[spec])
    archive.add_endpoint("encode_doc", doc_fn, input_signature=[spec, *image_specs])
    archive.add_endpoint(
        "score",
        score_fn,
        input_signature=[
            tf.TensorSpec([None], tf.string, name="query"),
            tf.TensorSpec([None], tf.string, name="doc"),
            *image_specs,
        ],
    )
    encoder = getattr(model, "image_encoder", None)
    if encoder is not None:
        size = int(encoder.input_shape[1])
        archive.add_endpoint(
            "encode_image",
            lambda pixels: encoder(pixels, training=False),  # (N, image_dim)
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32, name="pixels")],
        )
    return archive


def held_images(image_dim: int | None, reader: ImageReader | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Seeded image vectors for HELD_TEXTS, the last two missing (the placeholder's path). With an
    image backbone (READER) they are its vectors of `held_pixels`: the document
    tower of such a model only ever reads those, and an int8 file calibrated on them would be
    checked out of its range on Gaussian ones."""
    if image_dim is None:
        return None
    if reader is None:
        vectors = np.random.default_rng(0).standard_normal((len(HELD_TEXTS), image_dim)).astype(np.float32)
    else:
        pixels = held_pixels(reader.size)
        vectors = np.resize(reader.encode(pixels), (len(HELD_TEXTS), image_dim)).astype(np.float32)
    mask = np.ones(len(HELD_TEXTS), np.float32)
    mask[-2:] = 0.0
    return vectors, mask


def held_pixels(size: int) -> np.ndarray:
    """Seeded images an image endpoint is checked on, (12, size, size, 3) float32 RGB in [0, 255]:
    noise, flat colours, ramps, black and white. Noise alone keeps every activation in one
    range; flat and graded images reach the ones a photo's plain regions and edges reach."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0.0, 255.0, size)
    images = [
        *rng.uniform(0, 255, (4, size, size, 3)),
        *(np.broadcast_to(rgb, (size, size, 3)) for rgb in rng.uniform(0, 255, (4, 3))),
        np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], 255.0 - ramp[:, None]), -1),
        np.stack(np.broadcast_arrays(ramp[None, :], 128.0, ramp[:, None]), -1),
        np.zeros((size, size, 3)),
        np.full((size, size, 3), 255.0),
    ]
    return np.stack(images).astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (a zero row stays zero). Image vectors are compared so: the fusion
    L2-normalises them, and a backbone's raw outputs (in the hundreds or thousands for some
    weights) would make one absolute tolerance mean different things for different backbones."""
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def load_for_export(spec: str | Path):
    """MODEL (trained model/ dir or preset) -> (keras model, Tokenizer, Config), built."""
    from deepseek_tf.models import preset_model
    from deepseek_tf.models.backbones import PRESETS
    from deepseek_tf.models.loading import load_trained

    model_dir = Path(str(spec))
    if str(spec) not in PRESETS:
        from deepseek_tf.models.loading import refuse_unfinished

        refuse_unfinished(model_dir)
    if str(spec) in PRESETS:
        model, tokenizer, config = preset_model(str(spec))
    else:
        if not (model_dir / "model.keras").is_file():
            raise UserError(f"--model {spec}: not a trained model directory (no model.keras)")
        model, tokenizer, config = load_trained(model_dir)
    if not model.built and config.model.kind == "dual_encoder":
        ids = tokenizer(tf.constant(["x"]), 8)  # a preset is built lazily; export needs variables
        model({"query": ids, "doc": ids}, training=False)
    return model, tokenizer, config


def reference_embedder(model, tokenizer, config):
    from deepseek_tf.retrieval.embedders import KerasEmbedder

    m = config.model
    return KerasEmbedder(model, tokenizer, m.query_max_length, m.doc_max_length, name="keras")


def base_meta(tokenizer, config, reference) -> dict:
    m = config.model
    reader = reference.image_reader  # pixels' side length, for whoever decodes image files for the export
    return {
        **({"image_size": reader.size, "image_dim": reader.dim} if reader is not None else {}),
        "embedding_dim": int(reference.encode(["x"], "query").shape[-1]),
        "query_max_length": m.query_max_length,
        "doc_max_length": m.doc_max_length,
        "tokenizer": "wordpiece" if getattr(tokenizer, "vocab", None) is not None else "sentencepiece",
        "vocab_size": tokenizer.vocab_size,
        "vocab_sha256": vocab_hash(tokenizer),
        "lowercase": tokenizer.lowercase,
        "query_prefix": tokenizer.query_prefix,
        "doc_prefix": tokenizer.doc_prefix,
        "model_config": config_dict(config),
    }


def export_saved_model(
    model_dir: str | Path, output: str | Path, tolerance: float = 1e-5, overwrite: bool = False
) -> dict:
    """Writes a raw-string SavedModel to `output` after checking it matches the Keras model.

    An existing `output` is replaced only if it is a previous export (or `overwrite`)."""
    output = Path(output)
    check_not_model(model_dir, [output])
    check_output_dir(output, overwrite)  # before minutes of work, and before anything is deleted
    model, tokenizer, config = load_for_export(model_dir)
    if config.model.kind == "cross_encoder":  # one score(query, doc) endpoint, built in rerank.py
        from deepseek_tf.export.cross import export_cross_encoder

        return export_cross_encoder(model, tokenizer, config, output, tolerance, overwrite=overwrite)
    m = config.model
    reference = reference_embedder(model, tokenizer, config)
    tmp = output.with_name(output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with removed_on_failure(tmp):
        build_archive(model, tokenizer, m.query_max_length, m.doc_max_length).write_out(str(tmp), verbose=False)
        loaded = tf.saved_model.load(str(tmp))
        checks = {}
        images = held_images(reference.image_dim, reference.image_reader)  # None for text-only documents
        for tower, fn in (("query", loaded.encode_query), ("doc", loaded.encode_doc)):
            extra = images if tower == "doc" and images is not None else ()
            want = reference.encode(HELD_TEXTS, tower, images=extra or None)
            got = fn(tf.constant(HELD_TEXTS), *map(tf.constant, extra)).numpy()
            checks[f"{tower}_max_abs_diff"] = max_abs_diff(want, got)
        if reference.image_reader is not None:
            pixels = held_pixels(reference.image_reader.size)
            got = loaded.encode_image(tf.constant(pixels)).numpy()
            checks["image_max_abs_diff"] = max_abs_diff(unit(reference.image_reader.encode(pixels)), unit(got))
        if not max(checks.values()) <= tolerance:
            worst = next(k for k, v in checks.items() if not v <= tolerance).removesuffix("_max_abs_diff")
            raise UserError(
                f"export check failed: SavedModel differs from Keras by {max(checks.values()):.2e} "
                f"> tolerance {tolerance:.0e} (encode_{worst}); nothing written"
            )
    return publish(
        tmp,
        output,
        {
            "format": "saved_model",
            **base_meta(tokenizer, config, reference),
            "tolerance": tolerance,
            "checks": checks,
            "checks_passed": True,
        },
        overwrite,
    )


def vocab_hash(tokenizer) -> str:
    """sha256 of the WordPiece vocabulary, or of the SentencePiece model proto."""
    import hashlib

    if getattr(tokenizer, "vocab", None) is None:
        return hashlib.sha256(tokenizer.model_proto).hexdigest()
    return hashlib.sha256("\n".join(tokenizer.vocab).encode("utf-8")).hexdigest()


def config_dict(config) -> dict:
    from deepseek_tf.config import config_to_dict

    return config_to_dict(config)["model"]

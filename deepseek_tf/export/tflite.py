"""TFLite export: one raw-string `.tflite` file per dual-encoder tower (or one per cross-encoder), verified.

Each tower becomes `PREFIX.query.tflite` / `PREFIX.doc.tflite` with a metadata file beside
it (`PREFIX.query.json`, ...); a cross-encoder becomes `PREFIX.tflite` with a
`score(query, doc)` signature. The graph is the SavedModel endpoint (tokenizer included)
converted with `allow_custom_ops=True`: the tensorflow-text kernels (FastBertNormalize,
FastWordpieceTokenizeWithOffsets, RaggedTensorToTensor) are resolved at run time by
`tensorflow_text.tflite_registrar.SELECT_TFTEXT_OPS`. That registrar is compiled against
TensorFlow's own TFLite runtime, so files run in
`tensorflow.lite.python.interpreter.InterpreterWithCustomOps`; ai-edge-litert ships a separate
runtime whose interpreter cannot take these kernels.

A conversion that merely succeeds proves nothing (a wrongly frozen graph gives -inf), so
every file is run on held texts and compared with the Keras model before it is written.
A model with an image backbone gets a third file, `PREFIX.image.tflite` (`export.image_tower`).
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import tensorflow as tf

from deepseek_tf.config import QUANT_MODES
from deepseek_tf.data.beir import IMAGE_FIELD, IMAGE_FILE_FIELD, resolve_image_path
from deepseek_tf.data.image_files import ImageReader
from deepseek_tf.data.images import doc_images
from deepseek_tf.errors import UserError
from deepseek_tf.export.publish import write_files
from deepseek_tf.export.saved_model import held_images
from deepseek_tf.retrieval.embedders import Embedder
from deepseek_tf.retrieval.tflite import (
    IMAGE_TOWER,
    TOWERS,
    TFLiteRunner,
    TFLiteScorer,
    meta_path,
    native_stderr_silenced,
    tower_paths,
)

# Per mode: (check, bound). "max_abs_diff" must stay <= bound; "min_cosine" >= bound.
# Set from measurements on all-MiniLM-L6-v2 and the tiny test model (docs/results.md, "Export").
TOLERANCES: dict[str, tuple[str, float]] = {
    "none": ("max_abs_diff", 1e-4),
    "float16": ("min_cosine", 0.999),
    "dynamic": ("min_cosine", 0.98),
    "int8": ("min_cosine", 0.95),
}
CALIBRATION_TEXTS = 64  # per tower, for --quantize int8


def convert(
    saved_model: str | Path, signature: str, quantize: str = "none", calibration: list[dict[str, str]] | None = None
) -> bytes:
    """One SavedModel endpoint -> .tflite bytes.

    int8 is full-integer post-training quantization (weights and activations, calibrated on
    `calibration` samples, each {input name: one input's value}) with float32 output and string
    input: the tokenizer ops have no integer kernels, so the converter keeps them (and any op without an int8 kernel)
    in float instead of demanding TFLITE_BUILTINS_INT8 everywhere.
    """
    import tensorflow_text as tft

    if quantize not in QUANT_MODES:
        raise UserError(f"--quantize must be one of {', '.join(QUANT_MODES)}, got {quantize!r}")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[signature])
    converter.allow_custom_ops = True  # the tensorflow-text kernels, registered at run time
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        if not calibration:
            raise UserError("--quantize int8 needs calibration texts (--dataset DIR)")
        converter.representative_dataset = lambda: (
            {name: tf.constant([value]) for name, value in sample.items()} for sample in calibration
        )
        # The calibrator runs the float model, tokenizer included, so it needs the kernels too.
        converter.target_spec._experimental_custom_op_registerers = tft.tflite_registrar.SELECT_TFTEXT_OPS
    try:
        with warnings.catch_warnings(), native_stderr_silenced():  # the int8 calibrator: deprecated Interpreter
            warnings.simplefilter("ignore")
            return converter.convert()
    except Exception as e:  # the converter raises assorted types with multi-line messages
        raise UserError(
            f"TFLite conversion of {signature} ({quantize}) failed: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}"
        ) from None


def compare(want: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Row-wise agreement: max |want - got| and cos(want_i, got_i) = w·g / (|w| |g|)."""
    want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
    cos = np.sum(want * got, -1) / np.maximum(np.linalg.norm(want, axis=-1) * np.linalg.norm(got, axis=-1), 1e-12)
    return {
        "max_abs_diff": float(np.max(np.abs(want - got))),
        "min_cosine": float(np.min(cos)),
        "mean_cosine": float(np.mean(cos)),
    }


def verify(
    runner: TFLiteRunner,
    want: np.ndarray,
    texts: list[str],
    quantize: str,
    tolerance: float | None = None,
    images: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Runs `texts` (with `images`, for a fused document tower) as one batch and one at a time;
    all rows must agree with `want` (Keras)."""
    got = runner(texts, images)  # (N, D)
    one = lambda i: None if images is None else tuple(a[i : i + 1] for a in images)
    single = np.concatenate([runner([t], one(i)) for i, t in enumerate(texts)])  # batch of 1: the dynamic batch
    return agreement(want, got, single, quantize, tolerance)


def agreement(
    want: np.ndarray, got: np.ndarray, single: np.ndarray, quantize: str, tolerance: float | None = None
) -> dict:
    """Whether a file's outputs, run as one batch (`got`) and one row at a time (`single`), agree
    with `want` (Keras) by `quantize`'s check in TOLERANCES (or `tolerance`)."""
    if not (np.all(np.isfinite(got)) and np.all(np.isfinite(single))):
        return {"passed": False, "reason": "non-finite outputs", **compare(want, np.nan_to_num(got))}
    figures = compare(want, got)
    alone = compare(want, single)
    check, bound = TOLERANCES[quantize]
    bound = bound if tolerance is None else tolerance
    worst = max(figures[check], alone[check]) if check == "max_abs_diff" else min(figures[check], alone[check])
    passed = worst <= bound if check == "max_abs_diff" else worst >= bound
    return {
        "passed": bool(passed),
        "check": check,
        "bound": bound,
        "worst": worst,
        **figures,
        "batch_of_one_max_abs_diff": alone["max_abs_diff"],
    }


def check_failed(part: str, quantize: str, c: dict) -> UserError:
    """The one line for a file that failed its check (`agreement`'s figures in `c`)."""
    sign = "<=" if c.get("check") == "max_abs_diff" else ">="
    return UserError(
        f"export check failed: {part} ({quantize}) {c.get('check', c.get('reason'))} "
        f"{c.get('worst', float('nan')):.4g}, needs {sign} {c.get('bound', 0):.4g}; nothing written"
    )


def calibration_texts(dataset: str | Path | None, n: int = CALIBRATION_TEXTS) -> dict[str, list] | None:
    """A fixed sample of queries and documents from a BEIR dir (seeded, so exports repeat), with
    the sampled documents' `image_embedding` values (None where absent) under "doc_images" and
    their `image` files under "doc_image_files"; "image_files": up to N (document id, path) pairs
    of documents whose image file exists, to calibrate an image backbone on."""
    if dataset is None:
        return None
    from deepseek_tf.data.beir import normalize_text, read_jsonl

    directory = Path(dataset)
    if not (directory / "corpus.jsonl").is_file() or not (directory / "queries.jsonl").is_file():
        raise UserError(f"--dataset {dataset}: needs corpus.jsonl and queries.jsonl")
    rows = read_jsonl(directory / "corpus.jsonl")
    docs = [normalize_text(f"{r.get('title') or ''} {r.get('text') or ''}") for r in rows]
    queries = [normalize_text(r.get("text")) for r in read_jsonl(directory / "queries.jsonl")]
    rng = np.random.default_rng(0)
    picked = lambda xs: [i for i in rng.permutation(len(xs))[:n] if xs[i]]
    doc_rows = picked(docs)
    image_file = lambda r: resolve_image_path(r.get(IMAGE_FILE_FIELD), directory)
    on_disk = [i for i, r in enumerate(rows) if isinstance(image_file(r), str) and Path(image_file(r)).is_file()]
    return {
        "query": [queries[i] for i in picked(queries)],
        "doc": [docs[i] for i in doc_rows],
        "doc_images": [rows[i].get(IMAGE_FIELD) for i in doc_rows],
        "doc_image_files": [image_file(rows[i]) for i in doc_rows],
        "image_files": [(str(rows[i].get("_id")), image_file(rows[i])) for i in sorted(rng.permutation(on_disk)[:n])],
    }


def calibration_images(
    calibration: dict[str, list], image_dim: int, reader: ImageReader | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The sampled documents' image vectors and mask, checked like any corpus's: their image files
    through READER (a model with an image backbone), else their `image_embedding` vectors."""
    field, key = (IMAGE_FIELD, "doc_images") if reader is None else (IMAGE_FILE_FIELD, "doc_image_files")
    values = calibration.get(key) or [None] * len(calibration["doc"])
    corpus = {f"calibration document {i}": {field: v} for i, v in enumerate(values)}
    return doc_images(corpus, list(corpus), image_dim, warn=False, reader=reader)


def calibration_samples(
    calibration: dict[str, list] | None, tower: str, image_dim: int | None, reader: ImageReader | None = None
) -> list[dict[str, object]]:
    """The converter's representative samples for TOWER: {"text"} or, for a fused document
    tower, {"text", "image_embedding", "image_mask"} per document."""
    texts = (calibration or {}).get(tower, [])
    if tower == "query" or image_dim is None or not texts:
        return [{"text": t} for t in texts]
    vectors, mask = calibration_images(calibration, image_dim, reader)
    return [{"text": t, "image_embedding": v, "image_mask": m} for t, v, m in zip(texts, vectors, mask)]


def write_tflite(
    saved_model: str | Path,
    reference: Embedder,
    output: str | Path,
    quantize: str,
    check_texts: list[str],
    base_meta: dict,
    calibration: dict[str, list[str]] | None = None,
    tolerance: float | None = None,
    image: tuple[bytes, dict] | None = None,
) -> dict:
    """Converts both towers, verifies them, then writes files + metadata (all or nothing).
    `image`: a verified image tower's (.tflite bytes, check), written beside them."""
    paths = tower_paths(output, image=image is not None)
    if quantize == "int8" and not calibration:
        raise UserError("--quantize int8 needs --dataset DIR (texts to calibrate activations on)")
    blobs, checks = {}, {}
    for tower in TOWERS:
        start = time.perf_counter()
        samples = calibration_samples(calibration, tower, reference.image_dim, reference.image_reader)
        blobs[tower] = convert(saved_model, f"encode_{tower}", quantize, samples)
        # None for text-only documents
        images = held_images(reference.image_dim, reference.image_reader) if tower == "doc" else None
        want = reference.encode(check_texts, tower, images=images)
        checks[tower] = verify(TFLiteRunner(blobs[tower]), want, check_texts, quantize, tolerance, images)
        checks[tower]["convert_s"] = round(time.perf_counter() - start, 2)
        if not checks[tower]["passed"]:
            raise check_failed(f"{tower} tower", quantize, checks[tower])
    if image is not None:
        blobs[IMAGE_TOWER], checks[IMAGE_TOWER] = image
    names = {t: p.name for t, p in paths.items()}
    written: list[tuple[Path, bytes]] = []
    for tower, path in paths.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            **base_meta,
            "format": "tflite",
            "tower": tower,
            "quantization": quantize,
            "tower_files": names,
            "max_length": base_meta.get(f"{tower}_max_length"),  # None for the image tower
            "size_bytes": len(blobs[tower]),
            "checks": checks,
            "checks_passed": True,
            "check_texts": len(check_texts),
            "calibration_texts": len((calibration or {}).get(tower, [])),
            **({"check_images": checks[IMAGE_TOWER]["images"]} if image is not None else {}),
            "runtime": "tensorflow.lite InterpreterWithCustomOps + tensorflow_text SELECT_TFTEXT_OPS",
        }
        written += [(path, blobs[tower]), (meta_path(path), json.dumps(meta, indent=2).encode())]
    write_files(written)  # every file or none
    return {
        "paths": {t: str(p) for t, p in paths.items()},
        "checks": checks,
        "size_bytes": {t: len(b) for t, b in blobs.items()},
    }


def verify_scores(
    scorer: TFLiteScorer,
    want: np.ndarray,
    queries: list[str],
    docs: list[str],
    quantize: str,
    tolerance: float | None = None,
) -> dict:
    """Scores are logits, not unit vectors: float32 must match to max |diff|; quantized files
    must keep the ordering, measured as Pearson r = cos(want - mean, got - mean) over the pairs
    (Spearman's rho, the same on ranks, is reported beside it)."""
    got = scorer(queries, docs)
    single = np.concatenate([scorer([q], [d]) for q, d in zip(queries, docs)])  # batch of 1
    diff = float(max(np.max(np.abs(want - got)), np.max(np.abs(want - single))))
    centred = lambda x: (np.asarray(x, np.float64) - np.mean(x))[None]
    pearson = min(compare(centred(want), centred(out))["min_cosine"] for out in (got, single))
    # rank agreement: Spearman's rho = Pearson r of the ranks (no ties among float scores)
    ranks = lambda x: np.argsort(np.argsort(np.asarray(x, np.float64))).astype(np.float64)
    spearman = min(compare(centred(ranks(want)), centred(ranks(out)))["min_cosine"] for out in (got, single))
    check, bound = TOLERANCES[quantize]
    bound = bound if tolerance is None else tolerance
    worst = diff if check == "max_abs_diff" else pearson
    passed = np.all(np.isfinite(got)) and (worst <= bound if check == "max_abs_diff" else worst >= bound)
    return {
        "passed": bool(passed),
        "check": check if check == "max_abs_diff" else "pearson",
        "bound": bound,
        "worst": worst,
        "max_abs_diff": diff,
        "pearson": pearson,
        "spearman": spearman,
        "pairs": len(queries),
    }


def cross_path(output: str | Path) -> Path:
    """A cross-encoder's file for --output PREFIX: PREFIX.tflite."""
    output = Path(output)
    return output if output.suffix == ".tflite" else output.with_name(output.name + ".tflite")


def write_cross_tflite(
    saved_model: str | Path,
    reference,
    output: str | Path,
    quantize: str,
    check_texts: list[str],
    base_meta: dict,
    calibration: dict[str, list[str]] | None = None,
    tolerance: float | None = None,
) -> dict:
    """Converts a cross-encoder SavedModel's `score` endpoint to PREFIX.tflite (+ PREFIX.json).

    `reference` is a `rerank.Reranker` on the Keras model; held pairs are every check text
    against every other, so short/long, Chinese and empty strings meet in both slots.
    """
    path = cross_path(output)
    if quantize == "int8" and not calibration:
        raise UserError("--quantize int8 needs --dataset DIR (texts to calibrate activations on)")
    cal = calibration or {"query": [], "doc": []}
    cal_pairs = [{"query": q, "doc": d} for q, d in zip(cal["query"], cal["doc"])]  # sampled independently
    blob = convert(saved_model, "score", quantize, cal_pairs)
    queries = [q for q in check_texts for _ in check_texts]
    docs = [d for _ in check_texts for d in check_texts]
    check = verify_scores(TFLiteScorer(blob), reference.score_pairs(queries, docs), queries, docs, quantize, tolerance)
    if not check["passed"]:
        sign = "<=" if check["check"] == "max_abs_diff" else ">="
        raise UserError(
            f"export check failed: cross-encoder ({quantize}) {check['check']} {check['worst']:.4g}, "
            f"needs {sign} {check['bound']:.4g}; nothing written"
        )
    meta = {
        **base_meta,
        "format": "tflite",
        "kind": "cross_encoder",
        "quantization": quantize,
        "size_bytes": len(blob),
        "checks": {"score": check},
        "checks_passed": True,
        "calibration_pairs": len(cal_pairs),
        "runtime": "tensorflow.lite InterpreterWithCustomOps + tensorflow_text SELECT_TFTEXT_OPS",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_files([(path, blob), (meta_path(path), json.dumps(meta, indent=2).encode())])
    return {"paths": {"score": str(path)}, "checks": {"score": check}, "size_bytes": {"score": len(blob)}}

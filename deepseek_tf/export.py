"""Export: `python -m deepseek_tf.export --model MODEL --format saved_model|tflite --output PATH`.

The SavedModel carries the tokenizer in its graph (tensorflow-text), so its
signatures take raw strings: encode_query(text) / encode_doc(text) -> (N, D) float32,
score(query, doc) -> (N,) float32. Every export is checked against the Keras model on
held texts and nothing is written when outputs drift past the tolerance.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

from deepseek_tf.errors import UserError, cli_entry

# Texts the export checks itself on: varied lengths, punctuation, numbers, CJK.
CHECK_TEXTS = [
    "summer dress",
    "轻便笔记本",
    "iPhone 15 Pro 手机壳 防摔",
    "What similarity laws must be obeyed when constructing aeroelastic models of heated high speed aircraft?",
    "Café naïve façade — 3.5 kg, 20% off!",
    "",
]


def build_archive(model, tokenizer, query_max_length: int, doc_max_length: int):
    """An ExportArchive whose endpoints tokenize raw strings and call the towers."""
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(tokenizer)  # keeps the tensorflow-text lookup tables alive in the graph
    spec = tf.TensorSpec([None], tf.string, name="text")

    def query_fn(text):
        return model.query_encoder(tokenizer(text, query_max_length), training=False)

    def doc_fn(text):
        return model.doc_tower(tokenizer(text, doc_max_length), training=False)

    def score_fn(query, doc):
        return tf.reduce_sum(query_fn(query) * doc_fn(doc), axis=-1)  # (N,)

    archive.add_endpoint("encode_query", query_fn, input_signature=[spec])
    archive.add_endpoint("encode_doc", doc_fn, input_signature=[spec])
    archive.add_endpoint("score", score_fn, input_signature=[tf.TensorSpec([None], tf.string, name="query"),
                                                            tf.TensorSpec([None], tf.string, name="doc")])
    return archive


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def export_saved_model(model_dir: str | Path, output: str | Path, tolerance: float = 1e-5) -> dict:
    """Writes a raw-string SavedModel to `output` after checking it matches the Keras model."""
    from deepseek_tf.embedders import KerasEmbedder, load_trained, preset_model
    from deepseek_tf.models.backbones import PRESETS

    model_dir, output = Path(str(model_dir)), Path(output)
    if str(model_dir) in PRESETS:
        model, tokenizer, config = preset_model(str(model_dir))
    else:
        if not (model_dir / "model.keras").is_file():
            raise UserError(f"--model {model_dir}: not a trained model directory (no model.keras)")
        model, tokenizer, config = load_trained(model_dir)
    m = config.model
    reference = KerasEmbedder(model, tokenizer, m.query_max_length, m.doc_max_length, name="keras")
    tmp = output.with_name(output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build_archive(model, tokenizer, m.query_max_length, m.doc_max_length).write_out(str(tmp), verbose=False)
    loaded = tf.saved_model.load(str(tmp))
    checks = {}
    for tower, fn in (("query", loaded.encode_query), ("doc", loaded.encode_doc)):
        want = reference.encode(CHECK_TEXTS, tower)
        got = fn(tf.constant(CHECK_TEXTS)).numpy()
        checks[f"{tower}_max_abs_diff"] = max_abs_diff(want, got)
    if max(checks.values()) > tolerance:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"export check failed: SavedModel differs from Keras by {max(checks.values()):.2e} "
                        f"> tolerance {tolerance:.0e}; nothing written")
    meta = {"format": "saved_model", "embedding_dim": int(reference.encode(["x"], "query").shape[-1]),
            "query_max_length": m.query_max_length, "doc_max_length": m.doc_max_length,
            "vocab_sha256": _vocab_hash(tokenizer.vocab), "tolerance": tolerance, "checks": checks,
            "checks_passed": True, "model_config": _config_dict(config)}
    (tmp / "deepseek_export.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(output, ignore_errors=True)
    tmp.rename(output)
    return meta


def _vocab_hash(vocab: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest()


def _config_dict(config) -> dict:
    from deepseek_tf.config import config_to_dict

    return config_to_dict(config)["model"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m deepseek_tf.export",
                                description="Export a trained model as a raw-string SavedModel or TFLite file.")
    p.add_argument("--model", required=True, help="trained model/ dir or preset name")
    p.add_argument("--format", required=True, choices=["saved_model", "tflite"])
    p.add_argument("--quantize", default="none", choices=["none", "float16", "dynamic", "int8"],
                   help="TFLite quantization (default: none)")
    p.add_argument("--dataset", help="BEIR dir with texts for int8 calibration")
    p.add_argument("--output", required=True, help="output directory (saved_model) or path prefix (tflite)")
    p.add_argument("--tolerance", type=float, default=None, help="max allowed drift from the Keras model")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.format == "saved_model":
        if args.quantize != "none":
            raise UserError("--quantize applies to --format tflite only")
        meta = export_saved_model(args.model, args.output, args.tolerance or 1e-5)
        print(f"wrote {args.output} (dim {meta['embedding_dim']}, max abs diff "
              f"{max(meta['checks'].values()):.2e} vs Keras)")
        return 0
    raise UserError("--format tflite is not available yet")


if __name__ == "__main__":
    sys.exit(main())

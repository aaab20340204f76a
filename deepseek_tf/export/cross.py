"""The cross-encoder's SavedModel export: one raw-string `score(query, doc)` endpoint."""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from deepseek_tf.config import Config, config_to_dict
from deepseek_tf.errors import UserError
from deepseek_tf.export.publish import check_output_dir, publish, removed_on_failure
from deepseek_tf.models.encoder import additive_attention_masks
from deepseek_tf.retrieval.rerank import Reranker


def export_cross_encoder(
    model,
    tokenizer,
    config: Config,
    output: str | Path,
    tolerance: float = 1e-5,
    check_texts: list[str] | None = None,
    overwrite: bool = False,
) -> dict:
    """SavedModel with one raw-string endpoint `score(query: string[N], doc: string[N]) -> float[N]`.

    Checked against the Keras model on held (query, doc) pairs; nothing is written when the
    largest difference exceeds `tolerance`.
    """
    output = Path(output)
    check_output_dir(output, overwrite)
    additive_attention_masks(model)  # as the dual-encoder export: no broadcast SELECTs in the graph
    reference = Reranker.from_keras(model, tokenizer, config)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(tokenizer)  # keeps the tensorflow-text lookup tables alive in the graph
    archive.add_endpoint(
        "score",
        reference._score_fn.python_function,
        input_signature=[tf.TensorSpec([None], tf.string, name="query"), tf.TensorSpec([None], tf.string, name="doc")],
    )
    tmp = output.with_name(output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with removed_on_failure(tmp):
        archive.write_out(str(tmp), verbose=False)
    texts = check_texts or [
        "summer dress",
        "What similarity laws must be obeyed for aeroelastic models?",
        "轻便笔记本",
        "Café naïve façade — 3.5 kg, 20% off!",
        "",
    ]
    queries, docs = [q for q in texts for _ in texts], [d for _ in texts for d in texts]
    want = reference.score_pairs(queries, docs)
    loaded = tf.saved_model.load(str(tmp))  # keep a reference: its variables die with it
    got = loaded.score(tf.constant(queries), tf.constant(docs)).numpy()
    diff = float(np.max(np.abs(want.astype(np.float64) - got)))
    if not diff <= tolerance:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(
            f"export check failed: SavedModel score differs from Keras by {diff:.2e} "
            f"> tolerance {tolerance:.0e}; nothing written"
        )
    return publish(
        tmp,
        output,
        {
            "format": "saved_model",
            "kind": "cross_encoder",
            "endpoints": ["score"],
            "pair_max_length": config.model.doc_max_length,
            "tolerance": tolerance,
            "checks": {"score_max_abs_diff": diff},
            "checks_passed": True,
            "model_config": config_to_dict(config)["model"],
        },
        overwrite,
    )

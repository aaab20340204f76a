"""`export_tflite`: a dual encoder's towers (or a cross-encoder) as verified raw-string `.tflite` files;
a model with an image backbone gets its image tower beside them (`export.image_tower`)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from deepseek_tf.errors import UserError
from deepseek_tf.export.image_tower import check_calibration_images, convert_image_tower
from deepseek_tf.export.publish import check_not_model, check_output_files, removed_on_failure
from deepseek_tf.export.saved_model import (
    HELD_TEXTS,
    base_meta,
    build_archive,
    config_dict,
    load_for_export,
    reference_embedder,
    vocab_hash,
)
from deepseek_tf.export.tflite import QUANT_MODES, calibration_texts, cross_path, write_cross_tflite, write_tflite
from deepseek_tf.models.loading import weights_fingerprint
from deepseek_tf.retrieval.tflite import tower_paths
from deepseek_tf.text.sentencepiece_lite import for_tflite


class PreparedExport:
    """A model loaded once, its Keras reference and a temporary SavedModel to convert from."""

    def __init__(self, spec: str | Path, loaded: tuple | None = None):
        self.model, self.tokenizer, self.config = loaded or load_for_export(spec)
        if self.config.model.kind != "dual_encoder":
            # export_tflite sends cross-encoders elsewhere; only the tower report lands here
            raise UserError(
                f"--report measures dual-encoder towers and {spec} is a {self.config.model.kind}: "
                f"export it with --quantize MODE and score the file with "
                f"`evaluate --rerank FILE.tflite` (docs/results.md)"
            )
        m = self.config.model
        self.reference = reference_embedder(self.model, self.tokenizer, self.config)
        self.base_meta = base_meta(self.tokenizer, self.config, self.reference)
        self.tmpdir = tempfile.mkdtemp(prefix="deepseek_export_")
        self.saved_model = Path(self.tmpdir) / "saved_model"
        # SentencePiece runs as its lite twin: the same ids on ops that have TFLite kernels
        with removed_on_failure(Path(self.tmpdir)):
            build_archive(self.model, for_tflite(self.tokenizer), m.query_max_length, m.doc_max_length).write_out(
                str(self.saved_model), verbose=False
            )

    def write(self, output: str | Path, quantize: str, calibration=None, tolerance: float | None = None) -> dict:
        reader = self.reference.image_reader
        image = (
            None if reader is None else convert_image_tower(self.saved_model, reader, quantize, calibration, tolerance)
        )
        return write_tflite(
            self.saved_model,
            self.reference,
            output,
            quantize,
            HELD_TEXTS,
            self.base_meta,
            calibration,
            tolerance,
            image,
        )

    def close(self) -> None:
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def export_tflite(
    model: str | Path,
    output: str | Path,
    quantize: str = "none",
    dataset: str | None = None,
    tolerance: float | None = None,
    overwrite: bool = False,
) -> dict:
    """Writes PREFIX.query.tflite / PREFIX.doc.tflite (+ PREFIX.image.tflite for a model with an
    image backbone; .json metadata beside each) after verifying them.

    Existing files are replaced only when they are a previous export (their .json beside them)
    or with `overwrite`."""
    if quantize not in QUANT_MODES:
        raise UserError(f"--quantize must be one of {', '.join(QUANT_MODES)}, got {quantize!r}")
    if quantize == "int8" and dataset is None:
        raise UserError("--quantize int8 needs --dataset DIR (texts to calibrate activations on)")
    check_not_model(model, [cross_path(output), *tower_paths(output, image=True).values()])
    calibration = calibration_texts(dataset) if quantize == "int8" else None
    loaded = load_for_export(model)
    cross = loaded[2].model.kind == "cross_encoder"
    image = getattr(loaded[0], "image_encoder", None) is not None
    check_output_files([cross_path(output)] if cross else list(tower_paths(output, image).values()), overwrite)
    if image:
        check_calibration_images(quantize, calibration)
    if cross:
        source = weights_fingerprint(Path(model)) if Path(str(model)).is_dir() else None
        return _export_cross_tflite(*loaded, output, quantize, calibration, tolerance, source)
    prepared = PreparedExport(model, loaded)
    try:
        return prepared.write(output, quantize, calibration, tolerance)
    finally:
        prepared.close()


def _export_cross_tflite(
    model, tokenizer, config, output, quantize: str, calibration, tolerance, source: str | None = None
) -> dict:
    """Cross-encoder: its checked SavedModel (rerank.export_cross_encoder) -> one PREFIX.tflite.

    `source`: the model dir's weights_fingerprint, recorded so a service can tell a stale file."""
    from deepseek_tf.export.cross import export_cross_encoder
    from deepseek_tf.retrieval.rerank import Reranker

    tmpdir = Path(tempfile.mkdtemp(prefix="deepseek_export_"))
    try:
        with removed_on_failure(tmpdir):
            # a SentencePiece tokenizer goes in as its twin on ops with TFLite kernels
            export_cross_encoder(model, for_tflite(tokenizer), config, tmpdir / "saved_model")
        base = {
            "pair_max_length": config.model.doc_max_length,
            "query_max_length": config.model.query_max_length,
            "vocab_size": tokenizer.vocab_size,
            "vocab_sha256": vocab_hash(tokenizer),
            "lowercase": tokenizer.lowercase,
            "model_config": config_dict(config),
            "source_fingerprint": source,
        }
        return write_cross_tflite(
            tmpdir / "saved_model",
            Reranker.from_keras(model, tokenizer, config),
            output,
            quantize,
            HELD_TEXTS,
            base,
            calibration,
            tolerance,
        )
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

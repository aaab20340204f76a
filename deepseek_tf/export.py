"""Export: `python -m deepseek_tf.export --model MODEL --format saved_model|tflite --output PATH`.

The SavedModel carries the tokenizer in its graph (tensorflow-text), so its
signatures take raw strings: encode_query(text) / encode_doc(text) -> (N, D) float32,
score(query, doc) -> (N,) float32. `--format tflite` writes one raw-string file per tower
(`deepseek_tf.tflite`). Every export is checked against the Keras model on held texts
and nothing is written when outputs drift past the tolerance. `--report` exports every
TFLite quantization mode and measures size, latency, nDCG@10 and cosine to float32.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from deepseek_tf.errors import UserError, cli_entry
from deepseek_tf.tflite import (QUANT_MODES, TOLERANCES, TFLiteEmbedder, calibration_texts, default_threads,
                                write_cross_tflite, write_tflite)

__all__ = ["CHECK_TEXTS", "HELD_TEXTS", "TFLiteEmbedder", "build_archive", "export_saved_model",
           "export_tflite", "quantization_report"]

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
    masks switched to additive biases, see `additive_attention_masks`)."""
    import keras

    from deepseek_tf.models.encoder import additive_attention_masks

    additive_attention_masks(model)
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


def load_for_export(spec: str | Path):
    """MODEL (trained model/ dir or preset) -> (keras model, Tokenizer, Config), built."""
    from deepseek_tf.embedders import load_trained, preset_model
    from deepseek_tf.models.backbones import PRESETS

    model_dir = Path(str(spec))
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


def _reference(model, tokenizer, config):
    from deepseek_tf.embedders import KerasEmbedder

    m = config.model
    return KerasEmbedder(model, tokenizer, m.query_max_length, m.doc_max_length, name="keras")


def _base_meta(tokenizer, config, reference) -> dict:
    m = config.model
    return {"embedding_dim": int(reference.encode(["x"], "query").shape[-1]),
            "query_max_length": m.query_max_length, "doc_max_length": m.doc_max_length,
            "vocab_size": tokenizer.vocab_size, "vocab_sha256": _vocab_hash(tokenizer.vocab),
            "lowercase": tokenizer.lowercase, "model_config": _config_dict(config)}


def export_saved_model(model_dir: str | Path, output: str | Path, tolerance: float = 1e-5) -> dict:
    """Writes a raw-string SavedModel to `output` after checking it matches the Keras model."""
    output = Path(output)
    model, tokenizer, config = load_for_export(model_dir)
    if config.model.kind == "cross_encoder":  # one score(query, doc) endpoint, built in rerank.py
        from deepseek_tf.rerank import export_cross_encoder

        return export_cross_encoder(model, tokenizer, config, output, tolerance)
    m = config.model
    reference = _reference(model, tokenizer, config)
    tmp = output.with_name(output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    build_archive(model, tokenizer, m.query_max_length, m.doc_max_length).write_out(str(tmp), verbose=False)
    loaded = tf.saved_model.load(str(tmp))
    checks = {}
    for tower, fn in (("query", loaded.encode_query), ("doc", loaded.encode_doc)):
        want = reference.encode(HELD_TEXTS, tower)
        got = fn(tf.constant(HELD_TEXTS)).numpy()
        checks[f"{tower}_max_abs_diff"] = max_abs_diff(want, got)
    if not max(checks.values()) <= tolerance:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"export check failed: SavedModel differs from Keras by {max(checks.values()):.2e} "
                        f"> tolerance {tolerance:.0e}; nothing written")
    return publish(tmp, output, {"format": "saved_model", **_base_meta(tokenizer, config, reference),
                                 "tolerance": tolerance, "checks": checks, "checks_passed": True})


def publish(tmp: Path, output: Path, meta: dict) -> dict:
    """A checked export in `tmp`: writes its deepseek_export.json, then swaps it in for `output`."""
    (tmp / "deepseek_export.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(output, ignore_errors=True)
    tmp.rename(output)
    return meta


class _Prepared:
    """A model loaded once, its Keras reference and a temporary SavedModel to convert from."""

    def __init__(self, spec: str | Path, loaded: tuple | None = None):
        self.model, self.tokenizer, self.config = loaded or load_for_export(spec)
        if self.config.model.kind != "dual_encoder":
            # export_tflite sends cross-encoders elsewhere; only the tower report lands here
            raise UserError(f"--report measures dual-encoder towers and {spec} is a {self.config.model.kind}: "
                            f"export it with --quantize MODE and score the file with "
                            f"`evaluate --rerank FILE.tflite` (README, Reranking)")
        m = self.config.model
        self.reference = _reference(self.model, self.tokenizer, self.config)
        self.base_meta = _base_meta(self.tokenizer, self.config, self.reference)
        self.tmpdir = tempfile.mkdtemp(prefix="deepseek_export_")
        self.saved_model = Path(self.tmpdir) / "saved_model"
        build_archive(self.model, self.tokenizer, m.query_max_length, m.doc_max_length).write_out(
            str(self.saved_model), verbose=False)

    def write(self, output: str | Path, quantize: str, calibration=None, tolerance: float | None = None) -> dict:
        return write_tflite(self.saved_model, self.reference, output, quantize, HELD_TEXTS,
                            self.base_meta, calibration, tolerance)

    def close(self) -> None:
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def export_tflite(model: str | Path, output: str | Path, quantize: str = "none", dataset: str | None = None,
                  tolerance: float | None = None) -> dict:
    """Writes PREFIX.query.tflite / PREFIX.doc.tflite (+ .json metadata) after verifying them."""
    if quantize not in QUANT_MODES:
        raise UserError(f"--quantize must be one of {', '.join(QUANT_MODES)}, got {quantize!r}")
    if quantize == "int8" and dataset is None:
        raise UserError("--quantize int8 needs --dataset DIR (texts to calibrate activations on)")
    calibration = calibration_texts(dataset) if quantize == "int8" else None
    loaded = load_for_export(model)
    if loaded[2].model.kind == "cross_encoder":
        return _export_cross_tflite(*loaded, output, quantize, calibration, tolerance)
    prepared = _Prepared(model, loaded)
    try:
        return prepared.write(output, quantize, calibration, tolerance)
    finally:
        prepared.close()


def _export_cross_tflite(model, tokenizer, config, output, quantize: str, calibration, tolerance) -> dict:
    """Cross-encoder: its checked SavedModel (rerank.export_cross_encoder) -> one PREFIX.tflite."""
    from deepseek_tf.rerank import Reranker, export_cross_encoder

    tmpdir = Path(tempfile.mkdtemp(prefix="deepseek_export_"))
    try:
        export_cross_encoder(model, tokenizer, config, tmpdir / "saved_model")
        base = {"pair_max_length": config.model.doc_max_length, "query_max_length": config.model.query_max_length,
                "vocab_size": tokenizer.vocab_size, "vocab_sha256": _vocab_hash(tokenizer.vocab),
                "lowercase": tokenizer.lowercase, "model_config": _config_dict(config)}
        return write_cross_tflite(tmpdir / "saved_model", Reranker.from_keras(model, tokenizer, config), output,
                                  quantize, HELD_TEXTS, base, calibration, tolerance)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


# ---------------------------------------------------------------- quantization report
FILE_LABELS = {"none": "float32", "float16": "float16", "dynamic": "dynamic-int8", "int8": "int8"}


class _Recording(TFLiteEmbedder):
    """A TFLiteEmbedder that keeps every vector it returns (text -> vector), per tower."""

    def __init__(self, path: str | Path):
        super().__init__(path)
        self.vectors: dict[str, dict[str, np.ndarray]] = {"query": {}, "doc": {}}

    def _encode(self, texts: list[str], tower: str) -> np.ndarray:
        vecs = super()._encode(texts, tower)
        self.vectors[tower].update(zip(texts, vecs))
        return vecs


def _p50_ms_per_text(embedders: dict, texts: list[str], tower: str) -> dict[str, float]:
    """Batch-of-one latency; modes take turns on each text so CPU contention hits them alike."""
    times: dict[str, list[float]] = {m: [] for m in embedders}
    for emb in embedders.values():
        emb.encode([texts[0]], tower)  # warm-up: allocation for batch size 1
    for text in texts:
        for mode, emb in embedders.items():
            start = time.perf_counter()
            emb.encode([text], tower)
            times[mode].append((time.perf_counter() - start) * 1000)
    return {m: float(np.percentile(t, 50)) for m, t in times.items()}


def quantization_report(model: str | Path, dataset: str | Path, output: str | Path,
                        modes: tuple[str, ...] = QUANT_MODES, split: str = "test",
                        latency_texts: int = 100) -> dict:
    """Exports every mode to OUTPUT-{float32,float16,dynamic-int8,int8}.{query,doc}.tflite and measures it.

    Per mode: file size; p50 latency of one text (queries and documents sampled from the
    dataset, modes interleaved); nDCG@10 on `split` through `evaluate.dense_run` on the
    .tflite files; mean cosine cos(v_mode, v_float32) over every query and document encoded.
    Writes OUTPUT.report.md and OUTPUT.report.json.
    """
    from tqdm import tqdm

    from deepseek_tf.data import load_beir
    from deepseek_tf.evaluate import dense_run, trec_metrics

    ds = load_beir(dataset, split, unknown_ids="drop")
    modes = ("none",) + tuple(m for m in modes if m != "none")  # float32 is the baseline
    calibration = calibration_texts(dataset) if "int8" in modes else None
    prepared = _Prepared(model)
    exported, failed = {}, {}
    try:
        for mode in tqdm(modes, desc="exporting", unit="mode"):
            try:
                exported[mode] = prepared.write(f"{output}-{FILE_LABELS[mode]}", mode, calibration)
            except UserError as e:  # a mode that fails its check is reported, not shipped
                if mode == "none":
                    raise
                failed[mode] = str(e)
                print(f"warning: {e}", file=sys.stderr)
    finally:
        prepared.close()
    modes = tuple(m for m in modes if m in exported)
    embedders = {m: _Recording(exported[m]["paths"]["query"]) for m in modes}
    rows: dict[str, dict] = {}
    for mode in tqdm(modes, desc=f"nDCG@10 on {split}", unit="mode"):
        run, stats = dense_run(embedders[mode], ds)
        means, _ = trec_metrics(ds.qrels, run)
        checks = exported[mode]["checks"]
        rows[mode] = {"files": exported[mode]["paths"], "size_mb": exported[mode]["size_bytes"]["doc"] / 2**20,
                      "ndcg@10": means["ndcg@10"], "recall@100": means["recall@100"], "queries": means["queries"],
                      "min_cosine_to_keras": min(c["min_cosine"] for c in checks.values()),
                      "max_abs_diff_to_keras": max(c["max_abs_diff"] for c in checks.values())}
    base = embedders["none"].vectors
    for mode in modes:
        vecs = embedders[mode].vectors
        cos = [float(np.dot(v, base[t][k]) / max(np.linalg.norm(v) * np.linalg.norm(base[t][k]), 1e-12))
               for t in ("query", "doc") for k, v in vecs[t].items()]
        rows[mode]["mean_cosine_to_float32"] = float(np.mean(cos))
        rows[mode]["size_ratio"] = rows["none"]["size_mb"] / rows[mode]["size_mb"]
        rows[mode]["ndcg_ratio"] = rows[mode]["ndcg@10"] / max(rows["none"]["ndcg@10"], 1e-12)
    rng = np.random.default_rng(0)
    qids, dids = sorted(ds.qrels), sorted(ds.corpus)
    sample = lambda xs, n: [xs[i] for i in sorted(rng.permutation(len(xs))[:n])]
    query_texts = [ds.queries[q] for q in sample(qids, latency_texts)]
    doc_texts = [ds.doc_text(d) for d in sample(dids, latency_texts)]
    for tower, texts in (("query", query_texts), ("doc", doc_texts)):
        for mode, p50 in _p50_ms_per_text(embedders, texts, tower).items():
            rows[mode][f"p50_ms_{tower}"] = p50
    import os
    import platform

    report = {"model": str(model), "dataset": str(dataset), "split": split, "modes": rows, "failed": failed,
              "latency_texts": latency_texts, "cpu": f"{platform.machine()} x{os.cpu_count()}",
              "runtime": f"tensorflow.lite InterpreterWithCustomOps ({default_threads()} threads)",
              "tolerances": {m: list(TOLERANCES[m]) for m in modes}}
    report["markdown"] = format_report(report)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    for suffix, text in ((".report.json", json.dumps(report, indent=2)), (".report.md", report["markdown"] + "\n")):
        target = out.with_name(out.name + suffix)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(target)
    return report


def format_report(report: dict) -> str:
    head = ("| mode | file MB (per tower) | × smaller | p50 ms/query | p50 ms/doc | nDCG@10 | × float32 nDCG "
            "| mean cos to float32 | min cos to Keras |")
    lines = [f"Model `{report['model']}`, {report['dataset']} ({report['split']}), CPU {report['cpu']}, "
             f"p50 over {report['latency_texts']} single texts per tower.", "", head, "|---" * 9 + "|"]
    for mode, r in report["modes"].items():
        lines.append(f"| {FILE_LABELS[mode]} | {r['size_mb']:.1f} | {r['size_ratio']:.2f} | {r['p50_ms_query']:.2f} "
                     f"| {r['p50_ms_doc']:.2f} | {r['ndcg@10']:.4f} | {r['ndcg_ratio']:.3f} "
                     f"| {r['mean_cosine_to_float32']:.4f} | {r['min_cosine_to_keras']:.4f} |")
    for mode, message in report.get("failed", {}).items():
        why = message.removeprefix("export check failed: ").removesuffix("; nothing written")
        lines.append(f"| {FILE_LABELS[mode]} | not written: {why} |" + " |" * 7)
    return "\n".join(lines)


def _vocab_hash(vocab: list[str]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(vocab).encode("utf-8")).hexdigest()


def _config_dict(config) -> dict:
    from deepseek_tf.config import config_to_dict

    return config_to_dict(config)["model"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m deepseek_tf.export",
                                description="Export a trained model as a raw-string SavedModel or TFLite files.")
    p.add_argument("--model", required=True, help="trained model/ dir or preset name")
    p.add_argument("--format", required=True, choices=["saved_model", "tflite"])
    p.add_argument("--quantize", default="none", choices=list(QUANT_MODES),
                   help="TFLite quantization: none (float32), float16, dynamic (int8 weights), "
                        "int8 (int8 weights and activations, needs --dataset) (default: none)")
    p.add_argument("--dataset", help="BEIR dir: texts for int8 calibration; with --report, the eval data")
    p.add_argument("--output", required=True,
                   help="directory (saved_model) or path prefix (tflite: PREFIX.query.tflite + PREFIX.doc.tflite "
                        "for a dual encoder, PREFIX.tflite for a cross-encoder; .json metadata beside each)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="override the check: max abs diff (saved_model, tflite none) or min cosine "
                        "(tflite float16/dynamic/int8) against the Keras model")
    p.add_argument("--report", action="store_true",
                   help="tflite: export every quantization mode and write PREFIX.report.{md,json} "
                        "(size, p50 latency, nDCG@10 on --dataset, cosine to float32)")
    p.add_argument("--split", default="test", help="qrels split for --report (default: test)")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.format == "saved_model":
        if args.quantize != "none" or args.report:
            raise UserError("--quantize and --report apply to --format tflite only")
        meta = export_saved_model(args.model, args.output, args.tolerance or 1e-5)
        if meta.get("kind") == "cross_encoder":
            print(f"wrote {args.output} (cross-encoder score endpoint, max abs diff "
                  f"{meta['checks']['score_max_abs_diff']:.2e} vs Keras)")
            return 0
        print(f"wrote {args.output} (dim {meta['embedding_dim']}, max abs diff "
              f"{max(meta['checks'].values()):.2e} vs Keras)")
        return 0
    if args.report:
        if not args.dataset:
            raise UserError("--report needs --dataset DIR (nDCG@10 and int8 calibration)")
        report = quantization_report(args.model, args.dataset, args.output, split=args.split)
        print(report["markdown"])
        print(f"wrote {args.output}.report.md and {args.output}.report.json")
        return 0
    result = export_tflite(args.model, args.output, args.quantize, args.dataset, args.tolerance)
    for part, path in result["paths"].items():
        c = result["checks"][part]
        print(f"wrote {path} ({args.quantize}, {result['size_bytes'][part] / 2**20:.1f} MB; vs Keras: "
              f"{c['check']} {c['worst']:.5g}, bound {c['bound']:.5g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

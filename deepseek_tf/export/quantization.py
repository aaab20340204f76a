"""The quantization report: every TFLite mode exported and measured (size, latency, nDCG@10, cosine)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from deepseek_tf.errors import UserError
from deepseek_tf.export.tflite import QUANT_MODES, TOLERANCES, calibration_texts
from deepseek_tf.export.towers import PreparedExport
from deepseek_tf.files import write_text
from deepseek_tf.retrieval.engines import default_threads
from deepseek_tf.retrieval.tflite import TFLiteEmbedder

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


def quantization_report(
    model: str | Path,
    dataset: str | Path,
    output: str | Path,
    modes: tuple[str, ...] = QUANT_MODES,
    split: str = "test",
    latency_texts: int = 100,
    overwrite: bool = False,
) -> dict:
    """Exports every mode to OUTPUT-{float32,float16,dynamic-int8,int8}.{query,doc}.tflite and measures it.

    Per mode: file size; p50 latency of one text (queries and documents sampled from the
    dataset, modes interleaved); nDCG@10 on `split` through `evaluate.dense_run` on the
    .tflite files; mean cosine cos(v_mode, v_float32) over every query and document encoded.
    Writes OUTPUT.report.md and OUTPUT.report.json.
    """
    from deepseek_tf.console import progress  # a bar on a terminal, a line per mode in a log
    from deepseek_tf.data import load_beir
    from deepseek_tf.evaluate.report import dense_run, trec_metrics
    from deepseek_tf.export.publish import check_not_model, check_output_files
    from deepseek_tf.retrieval.tflite import tower_paths

    modes = ("none",) + tuple(m for m in modes if m != "none")  # float32 is the baseline
    check_not_model(
        model,
        [Path(f"{output}.report.md"), *(p for m in modes for p in tower_paths(f"{output}-{FILE_LABELS[m]}").values())],
    )
    ds = load_beir(dataset, split, unknown_ids="drop")
    check_output_files([p for m in modes for p in tower_paths(f"{output}-{FILE_LABELS[m]}").values()], overwrite)
    calibration = calibration_texts(dataset) if "int8" in modes else None
    prepared = PreparedExport(model)
    exported, failed = {}, {}
    try:
        if prepared.reference.image_dim is not None:  # its latency and cosine rows time text alone
            raise UserError(
                f"--report measures text-only towers and {model}'s document tower reads image vectors: export it "
                "with --quantize MODE and score the files with `evaluate --model PREFIX.query.tflite`"
            )
        for mode in progress(modes, "exporting", unit="mode"):
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
    for mode in progress(modes, f"nDCG@10 on {split}", unit="mode"):
        run, stats = dense_run(embedders[mode], ds)
        means, _ = trec_metrics(ds.qrels, run)
        checks = exported[mode]["checks"]
        rows[mode] = {
            "files": exported[mode]["paths"],
            "size_mb": exported[mode]["size_bytes"]["doc"] / 2**20,
            "ndcg@10": means["ndcg@10"],
            "recall@100": means["recall@100"],
            "queries": means["queries"],
            "min_cosine_to_keras": min(c["min_cosine"] for c in checks.values()),
            "max_abs_diff_to_keras": max(c["max_abs_diff"] for c in checks.values()),
        }
    base = embedders["none"].vectors
    for mode in modes:
        vecs = embedders[mode].vectors
        cos = [
            float(np.dot(v, base[t][k]) / max(np.linalg.norm(v) * np.linalg.norm(base[t][k]), 1e-12))
            for t in ("query", "doc")
            for k, v in vecs[t].items()
        ]
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

    report = {
        "model": str(model),
        "dataset": str(dataset),
        "split": split,
        "modes": rows,
        "failed": failed,
        "latency_texts": latency_texts,
        "cpu": f"{platform.machine()} x{os.cpu_count()}",
        "runtime": f"tensorflow.lite InterpreterWithCustomOps ({default_threads()} threads)",
        "tolerances": {m: list(TOLERANCES[m]) for m in modes},
    }
    report["markdown"] = format_report(report)
    out = Path(output)
    for suffix, text in ((".report.json", json.dumps(report, indent=2)), (".report.md", report["markdown"] + "\n")):
        write_text(out.with_name(out.name + suffix), text)
    return report


def format_report(report: dict) -> str:
    head = (
        "| mode | file MB (per tower) | × smaller | p50 ms/query | p50 ms/doc | nDCG@10 | × float32 nDCG "
        "| mean cos to float32 | min cos to Keras |"
    )
    lines = [
        f"Model `{report['model']}`, {report['dataset']} ({report['split']}), CPU {report['cpu']}, "
        f"p50 over {report['latency_texts']} single texts per tower.",
        "",
        head,
        "|---" * 9 + "|",
    ]
    for mode, r in report["modes"].items():
        lines.append(
            f"| {FILE_LABELS[mode]} | {r['size_mb']:.1f} | {r['size_ratio']:.2f} | {r['p50_ms_query']:.2f} "
            f"| {r['p50_ms_doc']:.2f} | {r['ndcg@10']:.4f} | {r['ndcg_ratio']:.3f} "
            f"| {r['mean_cosine_to_float32']:.4f} | {r['min_cosine_to_keras']:.4f} |"
        )
    for mode, message in report.get("failed", {}).items():
        why = message.removeprefix("export check failed: ").removesuffix("; nothing written")
        lines.append(f"| {FILE_LABELS[mode]} | not written: {why} |" + " |" * 7)
    return "\n".join(lines)

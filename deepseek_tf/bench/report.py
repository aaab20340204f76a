"""The pure half of `deepseek_tf.bench`: FLOP counts, ratios, targets and the Markdown table.

Nothing here times anything or imports TensorFlow/PyTorch, so it is tested directly.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from deepseek_tf.errors import UserError

START, END = "<!-- bench:start -->", "<!-- bench:end -->"
FLOAT32_KINDS = ("keras", "keras_xla", "saved_model", "tflite_fp32")

# The targets, as (what, bound): ratios are ours / peer measured in the same run.
TARGETS = {
    "saved_model_vs_st": 1.0,  # SavedModel encode docs/s ÷ sentence-transformers encode docs/s
    "tflite_dynamic_vs_st": 2.0,  # TFLite dynamic-range int8 ÷ sentence-transformers
    "best_matmul_share": 0.5,  # our fastest encode path: useful FLOP/s ÷ measured matmul FLOP/s
    "training_vs_st": 1.0,  # training examples/s ÷ sentence-transformers fit examples/s
}


def flops_per_token(layers: int, hidden: int, intermediate: int, length: float) -> float:
    """Forward FLOPs per token of a BERT encoder, multiply-add counted as 2 FLOPs.

    Per layer and token: Q, K, V and output projections 4·H² multiply-adds, the feed-forward
    pair 2·H·I, scores QKᵀ and the weighted sum of V L·H each: 2·(4H² + 2HI + 2LH)
    = 8H² + 4HI + 4LH. Embedding lookups, softmax, layer norms and GELU are not counted.
    MiniLM-L6 (H 384, I 1536) at L = 128: 6 × (1,179,648 + 2,359,296 + 196,608)
    = 22,413,312 ≈ 22.4 MFLOP.
    """
    return layers * (8 * hidden * hidden + 4 * hidden * intermediate + 4 * length * hidden)


def token_weighted_length(lengths) -> float:
    """Σn² / Σn over texts of n tokens: the L that makes Σ_texts n·flops(n) = Σn · flops(L)
    (a text of n tokens spends 4·n·H attention FLOPs on each of its n tokens)."""
    n = np.asarray(lengths, np.float64)
    return float(np.sum(n * n) / max(np.sum(n), 1.0))


def cpu_model(cpuinfo: str | None = None) -> str:
    """'AMD EPYC (family 25, model 17; avx2 avx512f ...)' from /proc/cpuinfo."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            import platform

            return platform.processor() or "unknown CPU"
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    detail = ", ".join(
        x
        for x in (
            f"family {fields['cpu family']}" if "cpu family" in fields else "",
            f"model {fields['model']}" if "model" in fields else "",
        )
        if x
    )
    extra = "; ".join(x for x in (detail, " ".join(isa)) if x)
    return f"{fields.get('model name', 'unknown CPU')}" + (f" ({extra})" if extra else "")


def package_versions() -> dict:
    import importlib.metadata as md

    out = {}
    for name in ("tensorflow", "keras", "torch", "sentence-transformers", "faiss-cpu", "transformers"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


def system_load() -> dict:
    """1-minute load average and CPU busy % over 1 s (psutil): other processes' load skews timings."""
    out = {"cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    try:
        import psutil

        out["cpu_busy_percent"] = psutil.cpu_percent(interval=1.0)
    except ImportError:
        pass
    return out


def contention_note(results: dict) -> str:
    """A warning when the load average says other processes shared the CPUs during the run."""
    loads = [results.get(k, {}).get("load_avg_1m") for k in ("load_before", "load_after")]
    loads = [x for x in loads if x is not None]
    cpus = (results.get("load_before") or {}).get("cpus") or results.get("threads", 1)
    if not loads or max(loads) <= 1.25 * cpus:
        return ""
    return (
        f" **Taken under contention:** load average {' → '.join(f'{x:.1f}' for x in loads)} on {cpus} CPUs "
        "(other processes were running), so absolute rates are low and noisy; the ratios come from "
        "interleaved rounds and are the figures to read."
    )


def encode_row(
    system: str,
    kind: str,
    texts: int,
    tokens: int,
    seconds: float,
    vecs: np.ndarray,
    reference: np.ndarray | None,
    note: str = "",
) -> dict:
    """One encode measurement; `min_cosine_vs_peer` = min_i cos(ours_i, sentence-transformers_i)."""
    row = {
        "system": system,
        "kind": kind,
        "measured": True,
        "seconds": seconds,
        "docs_per_s": texts / seconds,
        "tokens_per_s": tokens / seconds,
        "note": note,
    }
    if reference is not None:
        a, b = np.asarray(vecs, np.float64), np.asarray(reference, np.float64)
        cos = np.sum(a * b, -1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
        row["min_cosine_vs_peer"] = float(np.min(cos))
    return row


def rerank_row(
    system: str,
    kind: str,
    pairs: int,
    query_seconds: list[float],
    peer_pairs_per_s: float | None,
    max_abs_diff_vs_keras: float | None = None,
) -> dict:
    """One reranking measurement: `query_seconds` holds one timed top-k per query.

    pairs_per_s = pairs / Σ seconds; p50/p95 over the per-query milliseconds.
    """
    ms = np.asarray(query_seconds, np.float64) * 1000.0
    rate = pairs / float(ms.sum() / 1000.0)
    return {
        "system": system,
        "kind": kind,
        "measured": True,
        "seconds": float(ms.sum() / 1000.0),
        "pairs_per_s": rate,
        "query_ms_p50": float(np.percentile(ms, 50)),
        "query_ms_p95": float(np.percentile(ms, 95)),
        "vs_peer": ratio(rate, peer_pairs_per_s),
        "max_abs_diff_vs_keras": max_abs_diff_vs_keras,
    }


def rerank_lines(rerank: dict) -> list[str]:
    """The reranking table (empty when the run skipped it)."""
    if not rerank:
        return []
    parity = rerank.get("parity", {})
    lines = [
        "",
        f"Rerank: {rerank['queries']} Cranfield test queries × BM25's top-100 = {rerank['pairs']:,} "
        f"(query, document) pairs, max length {rerank['max_length']}, batch size {rerank['batch_size']}, the "
        "same length-sorted batches for every system; a MiniLM cross-encoder with an untrained head (cost, not "
        "relevance). One timed call per query, systems taking turns. Parity: min cos of the [CLS] states, "
        f"ours vs PyTorch, {_num(parity.get('min_cls_cosine_vs_peer'), 4)} over {parity.get('pairs', 0)} pairs.",
        "",
        "| rerank | pairs/s | ms per query p50 / p95 | × sentence-transformers | max abs diff vs Keras |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rerank.get("rows", []):
        if not r.get("measured"):
            lines.append(f"| {r['system']} | — | — | — | {r.get('note', '')} |")
            continue
        diff = r.get("max_abs_diff_vs_keras")
        lines.append(
            f"| {r['system']} | {_num(r['pairs_per_s'])} | {_num(r['query_ms_p50'], 0)} / "
            f"{_num(r['query_ms_p95'], 0)} | {_times(r.get('vs_peer'))} | "
            f"{'—' if diff is None else f'{diff:.1e}'} |"
        )
    return lines


def encode_peers_lines(peers: dict | None) -> list[str]:
    """The encode-peers table (empty when the run skipped it): every runtime on the same batches."""
    if not peers:
        return []
    sets, split = peers.get("ndcg_sets") or {}, peers.get("qbqtc_dev_split") or {}

    def described(key: str, what: str) -> str:
        n = sets.get(key)
        return f"{what}: not given" if not n else f"{what}: {n['docs']:,} docs, {n['queries']:,} queries"

    qbqtc = "QBQTC dev" + (
        f" ({split['split']} split, dev fraction {split['dev_fraction']}, seed {split['dev_seed']})" if split else ""
    )

    lines = [
        "",
        f"Encode peers{' (quick)' if peers.get('quick') else ''}: {peers['model']} on the first "
        f"{peers['texts']:,} corpus texts by id ({peers.get('tokens', 0):,} tokens, max length "
        f"{peers['max_length']}), {peers['batches']} length-sorted batches of {peers['batch_size']}, the same "
        f"lists for every system; best of {peers['rounds']} timed passes, systems taking turns, after an "
        f"untimed warm-up; {peers['threads']} threads each. CPU {peers['cpu']}; of avx2, avx512_vnni, "
        f"avx512_bf16, amx_tile it has {', '.join(peers['cpu_flags']) or 'none'}. int8: ONNX Runtime dynamic "
        f"(optimum's {peers['quantization_arch']} config), OpenVINO static calibrated on "
        f"{peers['calibration_texts']} other corpus texts. nDCG@10: exact dot product over normalized vectors; "
        f"{described('cranfield_test', 'Cranfield test')}; "
        f"{described('qbqtc_dev', qbqtc)}.",
        "",
        "| system | engine / precision | docs/s | × ST torch | cos to fp32 mean / min | nDCG@10 Cranfield test "
        "| nDCG@10 QBQTC dev |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in peers.get("rows", []):
        engine = " ".join(x for x in (r.get("engine", ""), f"({r['note']})" if r.get("note") else "") if x)
        engine = engine.replace("|", "\\|")
        if not r.get("measured"):
            lines.append(f"| {r['system']} | {engine or '—'} | — | — | — | — | — |")
            continue
        cos, ndcg = r.get("cosine_to_fp32"), r.get("ndcg@10") or {}
        cells = ["—" if ndcg.get(k) is None else f"{ndcg[k]:.4f}" for k in ("cranfield_test", "qbqtc_dev")]
        cosine = "—" if not cos else f"{cos['mean']:.5f} / {cos['min']:.5f}"  # bf16 differs in the 5th
        lines.append(
            f"| {r['system']} | {engine} | {_num(r['docs_per_s'])} | {_times(r.get('vs_st_torch'))} | {cosine} | "
            f"{cells[0]} | {cells[1]} |"
        )
    return lines


def ratio(ours: float | None, peer: float | None) -> float | None:
    return None if not ours or not peer else ours / peer


def evaluate_targets(results: dict) -> dict:
    """Ratios pair by pair and, per target, {"value", "bound", "met"}; None where not measured."""
    rows = {r["kind"]: r for r in results.get("encode", []) if r.get("measured")}
    peer = rows.get("peer", {}).get("docs_per_s")
    for r in results.get("encode", []):
        if r.get("measured"):
            r["vs_peer"] = ratio(r["docs_per_s"], peer)
    train = results.get("training") or {}
    ours_best = max((r for k, r in rows.items() if k != "peer"), key=lambda r: r["tokens_per_s"], default=None)
    values = {
        "saved_model_vs_st": rows.get("saved_model", {}).get("vs_peer"),
        "tflite_dynamic_vs_st": rows.get("tflite_dynamic", {}).get("vs_peer"),
        "best_matmul_share": ours_best.get("matmul_share") if ours_best else None,
        "training_vs_st": ratio(train.get("ours_examples_per_s"), train.get("peer_examples_per_s")),
    }
    out = {
        k: {"value": v, "bound": TARGETS[k], "met": None if v is None else bool(v >= TARGETS[k])}
        for k, v in values.items()
    }
    if ours_best:
        out["best_matmul_share"]["system"] = ours_best["system"]
    fp32 = [r for k, r in rows.items() if k in FLOAT32_KINDS]
    if fp32:  # informational: int8 kernels can beat the float32 matmul rate, float32 ones cannot
        best32 = max(fp32, key=lambda r: r["tokens_per_s"])
        out["best_float32_share"] = {"value": best32.get("matmul_share"), "system": best32["system"]}
    results["target_status"] = out
    return out


def _num(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _times(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}×"


def _verdict(status: dict | None, bound_text: str) -> str:
    if not status:
        return ""
    met = status["met"]
    return f"{bound_text}: " + ("not measured" if met is None else "met" if met else "**missed**")


def render_markdown(results: dict) -> str:
    """The results table (Markdown), with date, CPU, threads and how FLOPs are counted."""
    status = evaluate_targets(results)
    s, mm = results.get("encode_stats", {}), results.get("matmul", {})
    torch_rate = f" (PyTorch: {mm['torch_flops'] / 1e9:,.0f})" if mm.get("torch_flops") else ""
    lines = [
        f"Measured {results['date']}{' (--quick smoke run)' if results.get('quick') else ''} on "
        f"{results['cpu']}, {results['threads']} threads (TF intra/inter-op, PyTorch, faiss, TFLite)."
        + contention_note(results),
        "",
        f"Encode: {s.get('texts', 0):,} corpus texts, {s.get('tokens', 0):,} tokens (mean "
        f"{s.get('mean_tokens', 0):.1f}, max length {s.get('max_length')}), batch size {s.get('batch_size')}, "
        f"length-sorted batches padded per batch, {s.get('rounds', 1)} interleaved rounds. "
        f"Matmul rate: TF float32 {mm.get('n')}² matmul, best "
        f"seen before and during the rounds, {mm.get('tf_flops', 0) / 1e9:,.0f} GFLOP/s{torch_rate}. "
        "Share = tokens/s × FLOPs/token ÷ "
        f"matmul FLOP/s, FLOPs/token = 6 × (8H² + 4HI + 4LH) = {s.get('flops_per_token', 0) / 1e6:.1f} M "
        f"(H 384, I 1536, L = Σn²/Σn = {s.get('token_weighted_length', 0):.0f}; multiply-add = 2 FLOPs; "
        f"{s.get('flops_per_token_at_128', 0) / 1e6:.1f} M at L = 128).",
        "",
        "| encode | docs/s | tokens/s | share of matmul rate | × sentence-transformers | min cos vs ST | target |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    targets = {"saved_model": ("saved_model_vs_st", "≥ 1.0×"), "tflite_dynamic": ("tflite_dynamic_vs_st", "≥ 2.0×")}
    for r in results.get("encode", []):
        t = targets.get(r["kind"])
        verdict = _verdict(status.get(t[0]), t[1]) if t else ""
        if not r.get("measured"):
            lines.append(f"| {r['system']} | — | — | — | — | — | {r.get('note', '')} {verdict} |")
            continue
        share = r.get("matmul_share")
        lines.append(
            f"| {r['system']} | {_num(r['docs_per_s'])} | {_num(r['tokens_per_s'], 0)} | "
            f"{'n/a' if share is None else f'{share:.0%}'} | {_times(r.get('vs_peer'))} | "
            f"{_num(r.get('min_cosine_vs_peer'), 4)} | {verdict} |"
        )
    best = status.get("best_matmul_share", {})
    lines += ["", "| other | deepseek_tf | peer | ours / peer | target |", "|---|---:|---:|---:|---|"]
    if best.get("value") is not None:
        lines.append(
            f"| best encode path, share of matmul rate ({best.get('system')}) | {best['value']:.0%} | "
            f"— | — | {_verdict(best, '≥ 50%')} |"
        )
    best32 = status.get("best_float32_share", {})
    if best32.get("value") is not None:
        lines.append(
            f"| best float32 path, share of matmul rate ({best32['system']}) | {best32['value']:.0%} | — | — | |"
        )
    train = results.get("training")
    if train:
        lines.append(
            f"| training examples/s (batch {train['batch_size']}, {train['steps']} steps, "
            f"in-batch negatives; peer: sentence-transformers `fit` + MNRL) | "
            f"{_num(train.get('ours_examples_per_s'), 2)} | {_num(train.get('peer_examples_per_s'), 2)} | "
            f"{_times(status['training_vs_st']['value'])} | {_verdict(status['training_vs_st'], '≥ 1.0×')} |"
        )
    for name, srch in (results.get("search") or {}).items():
        what = "Cranfield vectors" if name == "cranfield" else "random unit vectors"
        lines.append(
            f"| exact search queries/s ({srch['queries']:,} × {srch['docs']:,} {what}, k {srch['k']}; "
            f"peer: faiss IndexFlatIP; same top-k {srch['same_top_k']:.0%}) | {_num(srch['ours_qps'], 0)} | "
            f"{_num(srch['peer_qps'], 0)} | {_times(ratio(srch['ours_qps'], srch['peer_qps']))} | |"
        )
    lines += rerank_lines(results.get("rerank"))
    lines += encode_peers_lines(results.get("encode_peers"))
    return "\n".join(lines) + "\n"


def replace_between_markers(text: str, table: str) -> str:
    """TEXT with everything between the bench markers replaced by TABLE."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise UserError(f"README has no '{START}' ... '{END}' markers to put the table between")
    return text[: start + len(START)] + "\n" + table.strip("\n") + "\n" + text[end:]


def write_results(results: dict, table: str, out_dir: Path) -> None:
    """OUT_DIR/results.json and results.md, each written to a temp file then renamed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, content in (
        ("results.json", json.dumps(results, indent=2, default=float)),
        ("results.md", "# deepseek_tf benchmarks\n\n" + table),
    ):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(content, encoding="utf-8")
        tmp.replace(out_dir / name)

"""Evaluation: `python -m deepseek_tf.evaluate --model MODEL --dataset DIR [...]`.

Every reported figure comes from pytrec_eval (trec_eval's own code).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from deepseek_tf.data import BeirDataset, load_beir
from deepseek_tf.errors import UserError, cli_entry

METRIC_KEYS = ("ndcg@10", "mrr@10", "recall@10", "recall@100", "p@10", "map")
Run = dict[str, dict[str, float]]  # query id -> {doc id: score}


def trec_metrics(qrels: dict[str, dict[str, int]], run: Run) -> tuple[dict[str, float], dict[str, dict]]:
    """(mean metrics, per-query metrics) exactly as trec_eval computes them.

    MRR@10 is trec_eval's recip_rank on the run cut to each query's 10 best documents.
    Queries with no judgments are not scored (as trec_eval); queries judged but absent
    from the run score 0.
    """
    import pytrec_eval

    run = {q: docs for q, docs in run.items() if q in qrels}
    full = {q: run.get(q, {}) for q in qrels}
    measures = {"ndcg_cut.10", "recall.10", "recall.100", "P.10", "map"}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(
        {q: d if d else {"__none__": 0.0} for q, d in full.items()})
    top10 = {q: dict(sorted(d.items(), key=lambda x: (-x[1], x[0]))[:10]) or {"__none__": 0.0}
             for q, d in full.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    rows = {}
    for q, m in per_query.items():
        rows[q] = {"ndcg@10": m["ndcg_cut_10"], "mrr@10": rr[q]["recip_rank"], "recall@10": m["recall_10"],
                   "recall@100": m["recall_100"], "p@10": m["P_10"], "map": m["map"]}
    means = {k: float(np.mean([r[k] for r in rows.values()])) if rows else 0.0 for k in METRIC_KEYS}
    means["queries"] = len(rows)
    return means, rows


def dense_run(embedder, ds: BeirDataset, top_k: int = 100, batch_size: int = 64,
              use_title: bool = True) -> tuple[Run, dict[str, float]]:
    """Encodes the corpus, then answers each judged query alone (so latency is per query)."""
    from deepseek_tf.index import exact_search

    doc_ids = list(ds.corpus)
    texts = [ds.doc_text(d, use_title) for d in doc_ids]
    start = time.perf_counter()
    doc_vecs = embedder.encode_docs(texts, batch_size, progress=sys.stderr.isatty())
    encode_s = time.perf_counter() - start
    run, latencies = {}, []
    qids = [q for q in ds.qrels if q in ds.queries]
    embedder.encode_queries([ds.queries[qids[0]]])  # warm-up: trace/compile once
    for q in qids:
        t0 = time.perf_counter()
        vec = embedder.encode_queries([ds.queries[q]])
        scores, idx = exact_search(vec, doc_vecs, top_k)
        latencies.append((time.perf_counter() - t0) * 1000)
        run[q] = {doc_ids[j]: float(s) for s, j in zip(scores[0], idx[0])}
    stats = {"latency_ms_p50": float(np.percentile(latencies, 50)),
             "latency_ms_p95": float(np.percentile(latencies, 95)),
             "docs_per_s": len(texts) / max(encode_s, 1e-9)}
    return run, stats


def evaluate(model: str, dataset: str, split: str = "test", top_k: int = 100,
             batch_size: int = 64) -> dict[str, dict]:
    """Evaluates MODEL on a BEIR-layout dataset; returns {system name: figures}."""
    from deepseek_tf.embedders import load_embedder

    ds = load_beir(dataset, split, unknown_ids="drop")
    for what, count in ds.dropped.items():
        print(f"warning: {dataset}: dropped {count} {what}", file=sys.stderr)
    embedder = load_embedder(model)
    run, stats = dense_run(embedder, ds, top_k, batch_size)
    means, per_query = trec_metrics(ds.qrels, run)
    return {"dense": {**means, **stats, "model": model, "per_query": per_query}}


def format_table(results: dict[str, dict]) -> str:
    cols = list(METRIC_KEYS) + ["queries", "latency_ms_p50", "latency_ms_p95", "docs_per_s"]
    lines = ["| system | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in results.items():
        cells = [f"{r[c]:.4f}" if c in METRIC_KEYS else
                 (f"{r[c]}" if c == "queries" else (f"{r[c]:.1f}" if r.get(c) is not None else "-"))
                 for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m deepseek_tf.evaluate",
                                description="Evaluate a retriever on a BEIR-layout dataset with trec_eval metrics.")
    p.add_argument("--model", required=True, help="trained model/ dir, SavedModel dir, .tflite file or preset name")
    p.add_argument("--dataset", required=True, help="BEIR-layout directory (corpus.jsonl, queries.jsonl, qrels/)")
    p.add_argument("--split", default="test", help="qrels split (default: test)")
    p.add_argument("--top-k", type=int, default=100, help="documents retrieved per query (default: 100)")
    p.add_argument("--batch-size", type=int, default=64, help="encoding batch size (default: 64)")
    p.add_argument("--output", help="write the report as JSON here")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.top_k < 1:
        raise UserError("--top-k must be >= 1")
    results = evaluate(args.model, args.dataset, args.split, args.top_k, args.batch_size)
    print(format_table(results))
    if args.output:
        out = Path(args.output)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2))
        tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""IR metrics exactly as trec_eval computes them (through pytrec_eval): pure functions of qrels and a run."""

from __future__ import annotations

import numpy as np

from deepseek_tf.evaluate.significance import METRIC_KEYS
from deepseek_tf.retrieval.ranking import ranking

CURVE_MAX_K = 100
Run = dict[str, dict[str, float]]  # query id -> {doc id: score}


def trec_metrics(qrels: dict[str, dict[str, int]], run: Run) -> tuple[dict[str, float], dict[str, dict]]:
    """(mean metrics, per-query metrics) exactly as trec_eval computes them.

    nDCG@10 = DCG@10 / IDCG@10 with DCG@10 = sum_{i<=10} rel_i / log2(i + 1) (graded rel_i);
    MRR@10 = 1 / rank of the first relevant document if it is in the top 10, else 0
    (trec_eval's recip_rank on the run cut to each query's 10 best documents, in trec_eval's
    order); Recall@k = relevant in top k / all relevant; P@10 = relevant in top 10 / 10;
    MAP = mean over relevant documents of precision at their ranks.
    Queries with no judgments are not scored (as trec_eval), nor are queries with no document
    judged relevant (grade >= 1; counted in "queries_without_relevant"); queries with a relevant
    document but absent from the run score 0.
    """
    import pytrec_eval

    judged = len(qrels)
    # A query whose every judgment is "not relevant" has no ideal ranking (IDCG = 0): trec_eval
    # would average in its 0, which only says the assessors found nothing. Left out, and counted.
    qrels = {q: docs for q, docs in qrels.items() if any(g >= 1 for g in docs.values())}
    run = {q: docs for q, docs in run.items() if q in qrels}
    full = {q: run.get(q, {}) for q in qrels}
    measures = {"ndcg_cut.10", "recall.10", "recall.100", "P.10", "map"}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(
        {q: d if d else {"__none__": 0.0} for q, d in full.items()}
    )
    # cut in trec_eval's own order (the one ranking order), so MRR@10 reads the 10 that trec_eval ranks first
    top10 = {q: dict(ranking(d, 10)) or {"__none__": 0.0} for q, d in full.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    rows = {}
    for q, m in per_query.items():
        rows[q] = {
            "ndcg@10": m["ndcg_cut_10"],
            "mrr@10": rr[q]["recip_rank"],
            "recall@10": m["recall_10"],
            "recall@100": m["recall_100"],
            "p@10": m["P_10"],
            "map": m["map"],
        }
    means = {k: float(np.mean([r[k] for r in rows.values()])) if rows else 0.0 for k in METRIC_KEYS}
    means["queries"] = len(rows)
    means["queries_without_relevant"] = judged - len(qrels)
    return means, rows


def recall_curve(qrels: dict[str, dict[str, int]], run: Run, max_k: int = CURVE_MAX_K) -> list[float]:
    """Mean Recall@k for k = 1..max_k, from trec_eval's recall.k (absent queries count 0)."""
    import pytrec_eval

    full = {q: run.get(q) or {"__none__": 0.0} for q in qrels}
    ks = list(range(1, max_k + 1))
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"recall." + ",".join(map(str, ks))}).evaluate(full)
    return [float(np.mean([m[f"recall_{k}"] for m in per_query.values()])) for k in ks]

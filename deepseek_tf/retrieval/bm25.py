"""BM25 with `bm25s` over the terms of a lexical analyzer (`text/analyzer.py`; default: English
words stemmed, CJK runs as character 1-2-grams).

Lucene's BM25 (bm25s's default, k1=1.5, b=0.75) scores a document d for query q as

    score(q, d) = sum_{t in q} idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

with N documents, df(t) documents containing t, |d| the document's length in tokens.
These are bm25s's documented defaults, unchanged; on Cranfield test (title + text) they give nDCG@10 0.3832
(the reference figure is 0.383).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from deepseek_tf.errors import UserError
from deepseek_tf.retrieval.ranking import ranked, ranking
from deepseek_tf.text.analyzer import Analyzer

METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")


class BM25Index:
    """A bm25s retriever over documents with string ids; `search` returns only matching documents.

    Terms come from `text.analyzer.Analyzer(analyzer)`; the index, its queries and any saved
    copy must use the same analyzer, so `config()` names it."""

    def __init__(self, k1: float = 1.5, b: float = 0.75, method: str = "lucene", analyzer: str = "default"):
        import logging

        import bm25s

        # bm25s sets its logger to DEBUG; once anything installs a root handler (TensorBoard
        # does, during training) its "Building index" lines would reach the user's terminal.
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        if method not in METHODS:
            raise UserError(f"BM25 method {method!r} is not one of {', '.join(METHODS)}")
        self.k1, self.b, self.method = k1, b, method
        self.analyzer = Analyzer(analyzer)
        self.analyzer_setting = analyzer
        self._bm25 = bm25s.BM25(k1=k1, b=b, method=method)
        self.ids: list[str] = []

    def config(self) -> dict:
        return {
            "k1": self.k1,
            "b": self.b,
            "method": self.method,
            "analyzer": self.analyzer.name,
            "analyzer_setting": self.analyzer_setting,
        }

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        return self.analyzer(texts)

    def index(self, ids: list[str], texts: list[str], progress: bool = False) -> BM25Index:
        if not texts:
            raise UserError("BM25: no documents to index")
        self.ids = list(ids)
        self.analyzer = self.analyzer.resolved(texts)
        terms = self._tokenize(texts)
        if not any(terms):
            raise UserError(f"BM25: the {self.analyzer.name} analyzer finds no terms in any document")
        self._bm25.index(terms, show_progress=progress)
        return self

    def search(self, queries: list[str], k: int = 100, mask: np.ndarray | None = None) -> list[list[tuple[str, float]]]:
        """Top-k (doc id, score) per query, best first; documents sharing no term are left out,
        and with `mask` ((n,) bool) those it leaves out.

        bm25s pads a short result list with score-0 documents in arbitrary order; keeping them
        would rank non-matching documents (and give them reciprocal-rank credit in fusion).
        """
        limit = len(self.ids) if mask is None else int(mask.sum())
        k = min(k, limit)
        if k < 1:
            return [[] for _ in queries]
        weights = None if mask is None else mask.astype(np.float32)  # bm25s multiplies each score by it
        tokens = self._tokenize(queries)
        out: list[list[tuple[str, float]]] = [[] for _ in queries]
        live = [i for i, t in enumerate(tokens) if t]  # all-stop-word queries match nothing
        if not live:
            return out
        # bm25s keeps any of the documents tied at the k-th score: fetch until no tie reaches the cut,
        # so that the one order (ranking.ranking: score, then id) picks them, and every k is a prefix
        depth = min(limit, k + 1)  # one past the cut: does a tie run across it?
        while True:
            docs, scores = self._bm25.retrieve(
                [tokens[i] for i in live], k=depth, show_progress=False, n_threads=1, weight_mask=weights
            )  # (queries, depth) each
            tied = (scores[:, k - 1] > 0) & (scores[:, -1] == scores[:, k - 1])
            if depth >= limit or not tied.any():
                break
            depth = min(limit, 2 * depth)
        for row, i in enumerate(live):
            found = {self.ids[j]: float(s) for j, s in zip(docs[row], scores[row]) if s > 0}
            out[i] = ranking(found, k)
        return out


def bm25_run(ds, top_k: int = 100, use_title: bool = True, **bm25_args) -> tuple[dict, dict]:
    """BM25 over a BeirDataset: (run, stats); stats as evaluate.dense_run's (latency_ms per query, docs/s
    of indexing)."""
    ids = list(ds.corpus)
    texts = [ds.doc_text(d, use_title) for d in ids]
    start = time.perf_counter()
    index = BM25Index(**bm25_args).index(ids, texts, progress=sys.stderr.isatty())
    index_s = time.perf_counter() - start
    qids = [q for q in ds.qrels if q in ds.queries]
    run, latencies = {}, {}
    for q in qids:
        t0 = time.perf_counter()
        hits = index.search([ds.queries[q]], top_k)[0]
        latencies[q] = (time.perf_counter() - t0) * 1000
        run[q] = dict(hits)
    values = list(latencies.values())
    stats = {
        "latency_ms_p50": float(np.percentile(values, 50)) if values else None,
        "latency_ms_p95": float(np.percentile(values, 95)) if values else None,
        "docs_per_s": len(texts) / max(index_s, 1e-9),
        "index_s": index_s,
        "latency_ms": latencies,
        "bm25": index.config(),
    }
    return run, stats


def reciprocal_rank_fusion(
    runs: list[dict[str, dict[str, float]]], k: int = 60, top_k: int | None = None
) -> dict[str, dict[str, float]]:
    """RRF (Cormack et al., 2009): fused(d) = sum_{r in runs} 1 / (k + rank_r(d)), ranks from 1.

    A document missing from a run gets nothing from it. Ranks follow each run's scores in the one
    ranking order (`ranking.ranked`: ties by higher doc id first, as trec_eval orders them).
    """
    fused: dict[str, dict[str, float]] = {}
    for run in runs:
        for q, docs in run.items():
            acc = fused.setdefault(q, {})
            for rank, d in enumerate(ranked(docs), 1):
                acc[d] = acc.get(d, 0.0) + 1.0 / (k + rank)
    if top_k is not None:
        fused = {q: dict((d, docs[d]) for d in ranked(docs)[:top_k]) for q, docs in fused.items()}
    return fused

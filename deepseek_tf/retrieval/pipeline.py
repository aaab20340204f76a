"""Retrieve → (hybrid) → rerank → (fusion): the one query flow behind `deepseek-tf search`,
`deepseek-tf serve`'s /search and `evaluate`'s hybrid and reranked systems.

1. retrieve, by `mode`:
   - `dense`: the query encoded, then any `DenseSearch` (a built index's `search_dense`, exact
     search over an in-memory matrix: `exact_dense`);
   - `bm25`: any `LexicalSearch` (a `BM25Index`'s `search`, a built index's `search_bm25`);
   - `hybrid`: both, each `max(depth, hybrid_depth)` deep, fused by reciprocal rank
     (`bm25.reciprocal_rank_fusion`, k = `rrf_k`) and cut to `depth`.
2. rerank (optional): the first stage's best `max(k, rerank_depth)` rescored by a cross-encoder.
3. fusion (optional, W in [0, 1]): ordered by W·z(cross-encoder) + (1 − W)·z(retriever), z
   standardised over the reranked candidates (`fuse`).

Every list is in the one ranking order (`ranking.ranking`: trec_eval's), so a query gets the same
ranking through every command, and evaluate's metrics measure that ranking.

`search` runs the whole flow for one query. The stages are public so that a caller who fetches
the first-stage hits its own way (serve: dense through a micro-batcher, asynchronously; evaluate:
whole runs timed system by system) still ranks, fuses and reranks them here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from deepseek_tf.errors import UserError
from deepseek_tf.retrieval.bm25 import reciprocal_rank_fusion
from deepseek_tf.retrieval.ranking import Hits, ranking

Run = dict[str, dict[str, float]]  # query id -> {doc id: score}
MODES = ("dense", "bm25", "hybrid")
DenseSearch = Callable[[np.ndarray, int], list[Hits]]  # query vectors (q, dim), k -> top-k per query
LexicalSearch = Callable[[list[str], int], list[Hits]]  # query texts, k -> top-k per query


class Scorer(Protocol):
    """A cross-encoder (`rerank.Reranker`): one query against documents -> a score per document."""

    def score(self, query: str, docs: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class Hit:
    id: str
    score: float  # what orders the hits: the retriever's, the cross-encoder's or the fusion's
    retriever_score: float | None = None  # reranked hits only: the first stage's score
    reranker_score: float | None = None  # reranked hits only: the cross-encoder's score


def exact_dense(vectors: np.ndarray, ids: list[str]) -> DenseSearch:
    """A DenseSearch over an in-memory (n, dim) matrix whose row i is document ids[i]: exact
    inner-product top-k (`knn.exact_search`)."""
    from deepseek_tf.retrieval.knn import exact_search

    def search(query_vectors: np.ndarray, k: int) -> list[Hits]:
        scores, rows = exact_search(query_vectors, vectors, k)
        return [[(ids[r], float(s)) for s, r in zip(rs, rr)] for rs, rr in zip(scores, rows)]

    return search


def rerank_query(reranker: Scorer, query: str, candidates: Hits, texts: list[str]) -> dict[str, float]:
    """One query's first-stage candidates [(doc id, score)] and their texts -> {doc id: reranked score}."""
    scores = reranker.score(query, texts)  # (len(candidates),)
    return {d: float(s) for (d, _), s in zip(candidates, scores)}


def fuse(first_stage: Run, reranked: Run, weight: float) -> Run:
    """Score fusion over each query's reranked documents, both scores standardised per query:

    fused(d) = w · z_ce(d) + (1 − w) · z_first(d),  z(d) = (s(d) − mean_q s) / std_q s  (std 0 -> 1)

    w = 1 is the cross-encoder alone; the first stage's score keeps what it knows that the
    cross-encoder (trained on few queries, reading 128 tokens) may not.
    """

    def z(values: np.ndarray) -> np.ndarray:
        std = values.std()
        return (values - values.mean()) / (std if std > 0 else 1.0)

    fused = {}
    for q, docs in reranked.items():
        if not docs:  # nothing retrieved: no mean or deviation to take
            fused[q] = {}
            continue
        ids = list(docs)
        ce = z(np.array([docs[d] for d in ids], np.float64))
        first = z(np.array([first_stage[q][d] for d in ids], np.float64))
        fused[q] = {d: float(weight * c + (1 - weight) * f) for d, c, f in zip(ids, ce, first)}
    return fused


def fusion_weights(fusion: float | Sequence[float] | None) -> tuple[float, ...]:
    """--rerank-fusion W or W1,W2,...: the weights as a tuple, each checked to lie in [0, 1]."""
    weights = () if fusion is None else (fusion,) if isinstance(fusion, (int, float)) else tuple(fusion)
    for w in weights:
        if not 0.0 <= w <= 1.0:
            raise UserError(f"--rerank-fusion must be in [0, 1], got {w:g}")
    if len(set(weights)) != len(weights):
        raise UserError(f"--rerank-fusion: a weight is given twice ({','.join(f'{w:g}' for w in weights)})")
    return weights


@dataclass
class SearchPipeline:
    """The flow over whatever this caller has: a component a mode does not use may be None
    (`check` says which are missing before any work)."""

    encode_queries: Callable[[list[str]], np.ndarray] | None = None  # texts -> (q, dim), for dense
    dense: DenseSearch | None = None
    bm25: LexicalSearch | None = None
    text: Callable[[str], str] | None = None  # doc id -> the text the cross-encoder reads
    reranker: Scorer | None = None
    rerank_depth: int = 100  # candidates the cross-encoder rescores (at least k)
    hybrid_depth: int = 100  # depth of the dense and BM25 runs that hybrid fuses (at least depth)
    rrf_k: int = 60

    @classmethod
    def over_index(cls, index, embedder, **options) -> SearchPipeline:
        """The pipeline over a built index (`index.BuiltIndex`, or anything with its `search_dense`,
        `search_bm25` and `text`) whose vectors EMBEDDER's query tower matches."""
        return cls(embedder.encode_queries, index.search_dense, index.search_bm25, index.text, **options)

    def check(self, mode: str, rerank: bool = False, fusion: float | None = None) -> None:
        """A one-line UserError for a query this pipeline cannot answer."""
        if mode not in MODES:
            raise UserError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if mode != "bm25" and (self.dense is None or self.encode_queries is None):
            raise UserError(f"mode {mode}: no dense retriever")
        if mode != "dense" and self.bm25 is None:
            raise UserError(f"mode {mode}: no BM25 index")
        if rerank and (self.reranker is None or self.text is None):
            raise UserError("rerank needs a cross-encoder")
        if fusion is not None and not rerank:
            raise UserError("fusion needs rerank")
        fusion_weights(fusion)

    def depth(self, k: int, rerank: bool = False) -> int:
        """How many first-stage hits a query for the best k needs."""
        return max(k, self.rerank_depth) if rerank else k

    def run_depth(self, mode: str, depth: int) -> int:
        """How deep each retriever under MODE is asked, for a first stage `depth` deep."""
        return max(depth, self.hybrid_depth) if mode == "hybrid" else depth

    # ------------------------------------------------------------------ stage 1
    def retrieve_dense(self, queries: list[str], depth: int, mask: np.ndarray | None = None) -> list[Hits]:
        """Each query's top `depth` by the dense retriever, in its own order (not yet ranked);
        with `mask` ((n,) bool, a built index's `filter_mask`), among the rows it keeps."""
        vectors = np.asarray(self.encode_queries(queries))
        return self.dense(vectors, depth) if mask is None else self.dense(vectors, depth, mask)

    def first_stage(self, mode: str, depth: int, dense: Hits | None = None, bm25: Hits | None = None) -> Hits:
        """The first stage's best `depth`, ranked, from the hits of the retrievers MODE uses
        (each fetched `run_depth(mode, depth)` deep)."""
        if mode == "dense":
            return ranking(dict(dense), depth)
        if mode == "bm25":
            return ranking(dict(bm25), depth)
        # RRF fuses runs ({query id: {doc id: score}}): one query's hits under a placeholder id
        fused = reciprocal_rank_fusion([{"q": dict(dense)}, {"q": dict(bm25)}], self.rrf_k, depth)
        return ranking(fused.get("q", {}))

    def retrieve(self, query: str, mode: str, depth: int, mask: np.ndarray | None = None) -> Hits:
        """Stage 1 for one query: its best `depth` by MODE (among the rows MASK keeps)."""
        n = self.run_depth(mode, depth)
        dense = self.retrieve_dense([query], n, mask)[0] if mode != "bm25" else None
        bm25 = (self.bm25([query], n) if mask is None else self.bm25([query], n, mask))[0] if mode != "dense" else None
        return self.first_stage(mode, depth, dense, bm25)

    # ------------------------------------------------------------------ stages 2 and 3
    def rerank_scores(self, query: str, hits: Hits) -> dict[str, float]:
        """The cross-encoder's score of each hit {doc id: score}."""
        return rerank_query(self.reranker, query, hits, [self.text(d) for d, _ in hits])

    def finish(self, query: str, hits: Hits, k: int, rerank: bool = False, fusion: float | None = None) -> list[Hit]:
        """Stages 2 and 3 over the first stage's ranked HITS: the best k, best first."""
        if not rerank or not hits:  # no candidates: nothing for the cross-encoder to read
            return [Hit(d, s) for d, s in hits[:k]]
        top = hits[: self.depth(k, True)]
        first = dict(top)
        reranked = self.rerank_scores(query, top)
        order = reranked if fusion is None else fuse({query: first}, {query: reranked}, fusion)[query]
        return [Hit(d, s, first[d], reranked[d]) for d, s in ranking(order, k)]

    def search(
        self,
        query: str,
        k: int = 10,
        mode: str = "dense",
        rerank: bool = False,
        fusion: float | None = None,
        mask: np.ndarray | None = None,
    ) -> list[Hit]:
        """The whole flow for one query: its best k, best first (among the rows MASK keeps)."""
        hits = self.retrieve(query, mode, self.depth(k, rerank), mask)
        return self.finish(query, hits, k, rerank, fusion)

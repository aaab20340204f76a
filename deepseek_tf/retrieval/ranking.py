"""The one ranking order: score descending, ties by doc id descending.

It is trec_eval's order (trec_eval sorts a run so, ignoring the rank column), so the lists that
`search` and `serve` show are the lists whose metrics `evaluate` reports; reciprocal-rank fusion,
rerank depth cuts and metric cuts all rank with it.
"""

from __future__ import annotations

Hits = list[tuple[str, float]]  # (doc id, score), best first


def ranking(docs: dict[str, float], k: int | None = None) -> Hits:
    """DOCS {doc id: score} as (doc id, score) in the one order, the best `k` (all when None)."""
    return sorted(docs.items(), key=lambda x: (x[1], x[0]), reverse=True)[:k]


def ranked(docs: dict[str, float]) -> list[str]:
    """Doc ids in the one order."""
    return [d for d, _ in ranking(docs)]

"""Hard-negative mining: `deepseek-tf mine --dataset DIR --output pairs.tsv [...]`.

For every judged training pair (q, d⁺) one negative is chosen from the source's top-k for q
(BM25 via `bm25s`, or a dense model's top-k), with three guards against false negatives
(unjudged relevant documents are common near the top of any ranking):

  * the `skip_top` best ranks are never taken;
  * a candidate n must score s(q, n) ≤ s(q, d⁺) − margin·|s(q, d⁺)| (NV-Retriever's
    "TopK-PercPos": with margin 0.05, at most 95% of the positive's score);
  * a document judged relevant to q (grade ≥ min_label) is never taken.

Pairs of one query take different candidates in turn. When no candidate survives, a
seeded random unjudged document is used, so every pair gets a negative (and the count of
such fall-backs is reported). The output is a pairs file (query, doc_content, neg_doc,
label) that `data.pairs` reads directly.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepseek_tf.data import BeirDataset, Pairs, describe_dropped, doc_images
from deepseek_tf.errors import UserError, refuse_aliasing
from deepseek_tf.files import atomic_write
from deepseek_tf.text.analyzer import Analyzer


@dataclass
class MinedPairs:
    pairs: Pairs
    pair_ids: list[tuple]  # (query id, positive doc id, negative doc id or a tuple of them)
    fallbacks: int  # negatives from outside the top-k window (random unjudged documents)


def score_matrix_bm25(
    ds: BeirDataset, qids: list[str], doc_ids: list[str], use_title: bool = True, analyzer: str = "default"
) -> np.ndarray:
    """BM25 (bm25s, Lucene variant, k1=1.5, b=0.75) score of every document for every query,
    terms from `analyzer`: (queries, docs)."""
    import bm25s

    texts = [ds.doc_text(d, use_title) for d in doc_ids]
    analyze = Analyzer(analyzer).resolved(texts)
    bm25 = bm25s.BM25()
    bm25.index(analyze(texts), show_progress=False)
    tokens = analyze([ds.queries[q] for q in qids])
    return np.stack([bm25.get_scores(t) if t else np.zeros(len(doc_ids), np.float32) for t in tokens])


def score_matrix_dense(
    embedder,
    ds: BeirDataset,
    qids: list[str],
    doc_ids: list[str],
    use_title: bool = True,
    batch_size: int = 64,
    images: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Dot products of the embedder's query and document vectors: (queries, docs). A document
    tower that reads images encodes each document with its own: `images` ((docs, image_dim)
    vectors, (docs,) mask in `doc_ids` order) where the caller has them, else read from the corpus."""
    if images is None:
        images = doc_images(ds.corpus, doc_ids, embedder.image_dim, reader=embedder.image_reader, progress=True)
    texts = [ds.doc_text(d, use_title) for d in doc_ids]
    # minutes for a large corpus: a bar on a terminal, plain lines in a log (console.progress)
    docs = embedder.encode_docs(texts, batch_size, progress=True, images=images)  # (docs, dim)
    queries = embedder.encode_queries([ds.queries[q] for q in qids], batch_size, progress=True)
    return queries @ docs.T


def mine_negatives(
    ds: BeirDataset,
    scores: np.ndarray,
    qids: list[str],
    doc_ids: list[str],
    top_k: int = 30,
    skip_top: int = 3,
    margin: float = 0.05,
    min_label: int = 1,
    seed: int = 42,
    use_title: bool = True,
    per_pair: int = 1,
    judged: int = 0,
) -> MinedPairs:
    """`per_pair` guarded hard negatives per (query, judged positive); `scores` is (queries, docs).
    With per_pair 1 a pair's negative is a string, else a list of distinct documents. The first
    up to `judged` of them are the query's judged non-relevant documents (grade < min_label,
    best-scored first): a judge said no, so they are the surest negatives there are.

    When the top-k window has too few documents under the positive's ceiling (typical for a
    positive the source ranks low), the rest are random unjudged documents."""
    if top_k <= skip_top:
        raise UserError(f"mining: top_k ({top_k}) must exceed skip_top ({skip_top})")
    if per_pair < 1:
        raise UserError(f"mining: negatives per pair must be >= 1, got {per_pair}")
    rng = random.Random(seed)
    column = {d: j for j, d in enumerate(doc_ids)}
    queries, docs, negs, labels, ids = [], [], [], [], []
    pos_ids, neg_ids = [], []
    fallbacks = 0
    for row, qid in enumerate(qids):
        grades = ds.qrels.get(qid, {})
        relevant = {d for d, g in grades.items() if g >= min_label}
        judged_out = sorted(
            (d for d, g in grades.items() if g < min_label and d in column), key=lambda d: (-scores[row, column[d]], d)
        )[:judged]
        order = np.argsort(-scores[row], kind="stable")  # (docs,) best first
        ranked = [doc_ids[j] for j in order[skip_top:top_k] if doc_ids[j] not in relevant]
        turn = rng.randrange(max(len(ranked), 1))
        for pos in sorted(relevant):
            if pos not in column:
                continue
            ceiling = scores[row, column[pos]] - margin * abs(scores[row, column[pos]])
            allowed = [d for d in ranked if scores[row, column[d]] <= ceiling]
            chosen: list[str] = judged_out[:per_pair]
            for _ in range(per_pair - len(chosen)):
                candidates = [d for d in allowed if d not in chosen]
                if candidates:
                    chosen.append(candidates[turn % len(candidates)])
                    turn += 1
                    continue
                fallbacks += 1
                pool = [d for d in doc_ids if d not in relevant and d not in chosen]
                if not pool:
                    raise UserError(f"mining: too few documents not relevant to query {qid!r} for {per_pair} negatives")
                chosen.append(rng.choice(pool))
            texts = [ds.doc_text(n, use_title) for n in chosen]
            queries.append(ds.queries[qid])
            docs.append(ds.doc_text(pos, use_title))
            negs.append(texts[0] if per_pair == 1 else texts)
            labels.append(int(grades[pos]))
            ids.append((qid, pos, chosen[0] if per_pair == 1 else tuple(chosen)))
            pos_ids.append(pos)
            neg_ids.append(chosen[0] if per_pair == 1 else list(chosen))
    if not queries:
        raise UserError(f"mining: no judgments with relevance >= {min_label}")
    return MinedPairs(Pairs(queries, docs, negs, labels, pos_ids, neg_ids), ids, fallbacks)


def mine(
    ds: BeirDataset,
    source: str = "bm25",
    top_k: int = 30,
    skip_top: int = 3,
    margin: float = 0.05,
    min_label: int = 1,
    seed: int = 42,
    use_title: bool = True,
    embedder=None,
    per_pair: int = 1,
    judged: int = 0,
    analyzer: str = "default",
    images: tuple[np.ndarray, np.ndarray] | None = None,
) -> MinedPairs:
    """Mines negatives for every judged query of `ds`; `embedder` (or the MODEL spec in
    `source`) scores densely, `source="bm25"` uses BM25 with `analyzer`; `judged`: see
    `mine_negatives`. `images`: the corpus documents' image vectors and mask in `ds.corpus`
    order, for an embedder whose document tower reads images (`score_matrix_dense`)."""
    qids = sorted(q for q in ds.qrels if q in ds.queries)
    doc_ids = list(ds.corpus)
    for line in describe_dropped(ds.dropped):  # e.g. judgments naming documents the corpus lacks
        print(f"warning: {line}; mining the rest", file=sys.stderr)
    if embedder is None and source != "bm25":
        from deepseek_tf.retrieval.artifacts import load_embedder

        embedder = load_embedder(source)
    if embedder is None:
        scores = score_matrix_bm25(ds, qids, doc_ids, use_title, analyzer)
    else:
        scores = score_matrix_dense(embedder, ds, qids, doc_ids, use_title, images=images)
    mined = mine_negatives(
        ds, scores, qids, doc_ids, top_k, skip_top, margin, min_label, seed, use_title, per_pair, judged
    )
    print(
        f"mining ({source}): {len(mined.pairs)} pairs × {per_pair} negatives, {mined.fallbacks} random "
        f"(no top-{top_k} candidate passed the guards)",
        file=sys.stderr,
    )
    return mined


def check_mine_output(output: str | Path, dataset: str | Path, source: str) -> None:
    """The pairs file may not be any file of the BEIR directory (mining reads them; the qrels
    would be replaced by the pairs) nor lie in or over a --source model."""
    dataset = Path(dataset)
    inputs = {"--dataset": [f for f in dataset.rglob("*") if f.is_file()] if dataset.is_dir() else [dataset]}
    if source != "bm25" and Path(source).exists():
        inputs["--source"] = [Path(source)]
    refuse_aliasing("--output", [output], inputs)


def check_output_file(path: str | Path) -> None:
    """Before minutes of mining: can `path` be written as a file?"""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--output {path}: a directory, not a file")
    for parent in path.parents:  # the nearest existing ancestor must be a directory
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--output {path}: {parent} is a file, not a directory")
            return


def write_pairs(pairs: Pairs, path: str | Path) -> None:
    """TSV with query, doc_content, neg_doc, label (what `data.pairs` reads); atomic."""
    import pandas as pd

    path = Path(path)
    check_output_file(path)
    frame = pd.DataFrame(
        {"query": pairs.queries, "doc_content": pairs.docs, "neg_doc": pairs.negs, "label": pairs.labels}
    )
    atomic_write(path, lambda tmp: frame.to_csv(tmp, sep="\t", index=False))

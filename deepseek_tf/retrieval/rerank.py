"""Retrieve -> rerank: the trained cross-encoder (`Reranker`) and the `evaluate --rerank` systems,
which rerank and fuse through the one query flow (`retrieval/pipeline.py`: `rerank_query`,
`fuse` and `fusion_weights` live there and are imported here by their old names).

Training the cross-encoder (mined groups, `train_cross_encoder`) is in `train/rerank_train.py`,
its SavedModel export in `export/cross.py`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from deepseek_tf import data as data_lib
from deepseek_tf.config import Config
from deepseek_tf.errors import UserError
from deepseek_tf.retrieval.pipeline import Run, SearchPipeline, fuse, fusion_weights
from deepseek_tf.retrieval.pipeline import rerank_query as rerank_query  # its old home: callers import it here
from deepseek_tf.retrieval.ranking import ranking


# ---------------------------------------------------------------------------- reranking
def _tflite_safe_segments(ids: dict) -> dict:
    """Same segment ids (0 up to the first [SEP], then 1 inside the mask), built by a cumulative sum.

    The TFLite converter folds `Cast(bool) < 0` in the embedding lookup into a boolean
    zeros_like, which it cannot lower; a cumsum hides the {0, 1} range from that fold.
    """
    mask = tf.cast(ids["padding_mask"], tf.int32)  # (batch, seq)
    seg = tf.minimum(tf.cumsum(ids["segment_ids"], axis=1), 1) * mask
    return {**ids, "segment_ids": seg}


class Reranker:
    """Scores (query, document) pairs with a trained cross-encoder `model/` dir or its SavedModel."""

    def __init__(self, score_fn, name: str, batch_size: int = 32):
        self._score_fn, self.name, self.batch_size = score_fn, name, batch_size

    @classmethod
    def from_keras(cls, model, tokenizer, config: Config, name: str = "cross_encoder") -> Reranker:
        m = config.model
        spec = tf.TensorSpec([None], tf.string)
        if m.interaction == "light":

            def fn(q, d):
                return model(
                    {"query": tokenizer(q, m.query_max_length), "doc": tokenizer(d, m.doc_max_length)}, training=False
                )
        else:

            def fn(q, d):
                return model(_tflite_safe_segments(tokenizer.pairs(q, d, m.doc_max_length)), training=False)

        return cls(tf.function(fn, input_signature=[spec, spec]), name)

    @classmethod
    def load(cls, spec: str) -> Reranker:
        from deepseek_tf.models.loading import refuse_unfinished

        path = Path(spec)
        refuse_unfinished(path, "--rerank")
        if (path / "model.keras").is_file():
            from deepseek_tf.models.loading import load_trained

            model, tokenizer, config = load_trained(path)
            if config.model.kind != "cross_encoder":
                raise UserError(f"--rerank {spec}: a {config.model.kind} model, not a cross-encoder")
            return cls.from_keras(model, tokenizer, config, name=path.parent.name or path.name)
        if (path / "saved_model.pb").is_file():
            from deepseek_tf.models.loading import load_exported_saved_model

            loaded = load_exported_saved_model(path, "--rerank")
            if not hasattr(loaded, "score") or hasattr(loaded, "encode_query"):
                raise UserError(f"--rerank {spec}: SavedModel is not a cross-encoder export (no lone 'score')")
            reranker = cls(loaded.score, path.name)
            reranker.loaded = loaded  # the endpoint's variables live as long as this object
            return reranker
        if path.suffix == ".tflite" and path.is_file():  # deepseek_tf.export --format tflite
            from deepseek_tf.retrieval.tflite import TFLiteScorer

            return cls(TFLiteScorer(path), path.name)
        raise UserError(f"--rerank {spec!r}: not a trained cross-encoder model dir or its SavedModel")

    def score_pairs(self, queries: list[str], docs: list[str], progress: bool = False) -> np.ndarray:
        """Scores row i = score(queries[i], docs[i]); length-sorted batches keep padding small."""
        out = np.zeros(len(docs), np.float32)
        order = sorted(range(len(docs)), key=lambda i: len(docs[i]))
        starts = range(0, len(order), self.batch_size)
        if progress:  # a bar on a terminal, plain lines in a log
            from deepseek_tf.console import progress as shown

            starts = shown(starts, "scoring pairs", unit="batch", leave=False)
        for s in starts:
            idx = order[s : s + self.batch_size]
            out[idx] = np.asarray(
                self._score_fn(tf.constant([queries[i] for i in idx]), tf.constant([docs[i] for i in idx]))
            )
        return out

    def score(self, query: str, docs: list[str]) -> np.ndarray:
        return self.score_pairs([query] * len(docs), docs)


def rerank_run(
    reranker: Reranker,
    ds: data_lib.BeirDataset,
    first_stage: Run,
    top_k: int = 100,
    use_title: bool = True,
    progress: bool = False,
) -> tuple[Run, dict[str, float]]:
    """Rescores each query's top-k first-stage documents (the pipeline's rerank stage).

    stats: latency_ms (per query, reranking only) and its p50/p95, docs_per_s (pairs scored per second).
    """
    qids = [q for q in first_stage if q in ds.queries]
    if qids:  # warm-up: trace the scoring graph once, outside the timings
        reranker.score(ds.queries[qids[0]], [ds.doc_text(next(iter(ds.corpus)), use_title)])
    items = qids
    if progress:  # a bar on a terminal, plain lines in a log
        from deepseek_tf.console import progress as shown

        items = shown(qids, "reranking", unit="query", leave=False)
    pipeline = SearchPipeline(text=lambda d: ds.doc_text(d, use_title), reranker=reranker, rerank_depth=top_k)
    run, latencies, pairs = {}, {}, 0
    for q in items:
        top = ranking(first_stage[q], top_k)
        t0 = time.perf_counter()
        run[q] = pipeline.rerank_scores(ds.queries[q], top)
        latencies[q] = (time.perf_counter() - t0) * 1000
        pairs += len(top)
    values = list(latencies.values())
    stats = {
        "latency_ms_p50": float(np.percentile(values, 50)) if values else None,
        "latency_ms_p95": float(np.percentile(values, 95)) if values else None,
        "docs_per_s": pairs / max(sum(values) / 1000, 1e-9),
        "rerank_depth": top_k,
        "latency_ms": latencies,
    }
    return run, stats


def rerank_system(
    spec: str,
    ds: data_lib.BeirDataset,
    first_stage: Run,
    first_stats: dict,
    top_k: int = 100,
    fusion: float | Sequence[float] | None = None,
    progress: bool = False,
) -> list[tuple[str, Run, dict]]:
    """The "<first stage>+rerank" system(s) for evaluate: [(name suffix, run, stats)].

    "+rerank" orders by the cross-encoder alone; with `fusion` = w, "+rerank+fusion" orders
    by `fuse(first, reranked, w)` (same scoring pass, no extra cost). With several weights (a
    sweep, e.g. to pick w on held-out queries) each gets its own "+rerank+fusion@w" row.
    stats["latency_ms"][q] = first-stage latency + reranking latency (the system a user runs);
    rerank_latency_ms_p50/p95 are the reranking stage alone; docs_per_s stays the first
    stage's indexing speed, rerank_pairs_per_s is the cross-encoder's scoring speed.
    """
    weights = fusion_weights(fusion)
    reranker = Reranker.load(spec)
    run, stats = rerank_run(reranker, ds, first_stage, top_k, progress=progress)
    before = first_stats.get("latency_ms", {})
    latencies = {q: ms + before.get(q, 0.0) for q, ms in stats.pop("latency_ms").items()}
    values = list(latencies.values())
    common = {
        "latency_ms_p50": float(np.percentile(values, 50)) if values else None,
        "latency_ms_p95": float(np.percentile(values, 95)) if values else None,
        "docs_per_s": first_stats.get("docs_per_s"),
        "index_s": first_stats.get("index_s"),
        "rerank_latency_ms_p50": stats["latency_ms_p50"],
        "rerank_latency_ms_p95": stats["latency_ms_p95"],
        "rerank_pairs_per_s": stats["docs_per_s"],
        "rerank_depth": top_k,
    }
    systems = [("+rerank", run, {**common, "latency_ms": latencies})]
    for w, name in zip(weights, rerank_suffixes(fusion)[1:]):
        systems.append((name, fuse(first_stage, run, w), {**common, "rerank_fusion": w, "latency_ms": dict(latencies)}))
    return systems


def rerank_suffixes(fusion: float | Sequence[float] | None = None) -> list[str]:
    """The name suffixes of `rerank_system`'s rows: "+rerank", then "+rerank+fusion" for one
    weight or "+rerank+fusion@w" for each of several."""
    weights = fusion_weights(fusion)
    return ["+rerank", *("+rerank+fusion" if len(weights) == 1 else f"+rerank+fusion@{w:g}" for w in weights)]


def check_reranker_spec(spec: str, fusion: float | Sequence[float] | None = None, name: str = "--rerank") -> None:
    """Cheap up-front check of --rerank MODEL [--rerank-fusion W[,W...]] (before minutes of first-stage
    work); `name` is the option or config key the errors name."""
    from deepseek_tf.models.loading import refuse_unfinished

    fusion_weights(fusion)
    path = Path(spec)
    refuse_unfinished(path, name)
    if (path / "model.keras").is_file() and (path / "config.yaml").is_file():
        from deepseek_tf.config import load_config

        kind = load_config(path / "config.yaml").model.kind
        if kind != "cross_encoder":
            raise UserError(f"{name} {spec}: a {kind} model, not a cross-encoder")
    elif not (path / "saved_model.pb").is_file() and not (path.suffix == ".tflite" and path.is_file()):
        raise UserError(f"{name} {spec!r}: not a trained cross-encoder model dir or its SavedModel")

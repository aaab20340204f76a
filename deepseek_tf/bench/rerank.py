"""The reranking part of `make bench`: scoring a query's top-100 with a MiniLM cross-encoder.

Ours (Keras graph, TFLite float32, TFLite dynamic int8) against sentence-transformers'
`CrossEncoder.predict` (PyTorch float32), all built from the same all-MiniLM-L6-v2 weights with
an untrained score head: what is compared is the cost of a joint pass per pair, not relevance.
Every system scores the same (query, document) pairs, BM25's top-`depth` for each query, in the
same length-sorted batches; a query's pairs are one timed call, and the systems take turns
query by query (the order flips every query) so a burst of load hits them alike.
The parity check runs outside the timing: our backbone's and PyTorch's [CLS] states for the
same pairs (the tokenizers must agree on pair ids and truncation for them to match).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from deepseek_tf.bench.peers import PRESET, peer_checkpoint
from deepseek_tf.bench.report import rerank_row
from deepseek_tf.bench.variants import tflite_systems
from deepseek_tf.errors import UserError


def rerank_pairs(dataset: Path, n_queries: int, depth: int = 100) -> list[tuple[str, list[str]]]:
    """(query, BM25's top-`depth` document texts) for the first `n_queries` test queries by id."""
    from deepseek_tf.data import BeirDataset, load_beir
    from deepseek_tf.retrieval.bm25 import bm25_run
    from deepseek_tf.retrieval.ranking import ranking

    full = load_beir(dataset, "test", unknown_ids="drop")
    qids = sorted((q for q in full.qrels if q in full.queries), key=str)[:n_queries]
    ds = BeirDataset(full.corpus, {q: full.queries[q] for q in qids}, {q: full.qrels[q] for q in qids})
    run, _ = bm25_run(ds, top_k=depth)
    out = []
    for q in qids:
        out.append((ds.queries[q], [ds.doc_text(d) for d, _ in ranking(run.get(q, {}))]))
    if not out or not any(docs for _, docs in out):
        raise UserError(f"--dataset {dataset}: no test query retrieved any document to rerank")
    return out


def our_cross_encoder(max_length: int):
    """(model, tokenizer, config): the MiniLM cross-encoder, [CLS] pooling, Dense(1) head."""
    from deepseek_tf.config import config_from_dict
    from deepseek_tf.models import build_model
    from deepseek_tf.models.backbones import vocab_path
    from deepseek_tf.text.tokenizer import Tokenizer

    config = config_from_dict(
        {
            "model": {
                "kind": "cross_encoder",
                "interaction": "full",
                "backbone": PRESET,
                "pooling": "cls",
                "doc_max_length": max_length,
            }
        }
    )
    tokenizer = Tokenizer.from_file(vocab_path(PRESET))
    return build_model(config, tokenizer.vocab_size), tokenizer, config


def peer_cross_encoder(max_length: int):
    """sentence-transformers' CrossEncoder on the same checkpoint, offline, float32 on CPU."""
    path = peer_checkpoint()
    from sentence_transformers import CrossEncoder
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the fresh score head is expected: not a warning here
    return CrossEncoder(path, num_labels=1, max_length=max_length, device="cpu")


def cls_cosines(model, tokenizer, config, peer, pairs: list[tuple[str, str]]) -> np.ndarray:
    """cos(our [CLS] state, PyTorch's [CLS] state) per pair: (N,)."""
    import tensorflow as tf
    import torch

    q, d = [p[0] for p in pairs], [p[1] for p in pairs]
    ids = tokenizer.pairs(tf.constant(q), tf.constant(d), config.model.doc_max_length)
    ours = np.asarray(model.backbone(ids, training=False)["sequence_output"], np.float64)[:, 0]  # (N, H)
    feats = peer.tokenizer(
        q, d, truncation=True, max_length=config.model.doc_max_length, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        theirs = peer.model.bert(**feats).last_hidden_state[:, 0].double().numpy()  # (N, H)
    unit = lambda v: v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return np.sum(unit(ours) * unit(theirs), axis=1)


def bench_reranking(
    dataset: Path, n_queries: int, batch_size: int, max_length: int, threads: int, workdir: Path, log=print
) -> dict:
    """Reranking rows (pairs/s, ms per query p50/p95, × the peer) and the parity figures."""
    from deepseek_tf.export.towers import export_tflite
    from deepseek_tf.retrieval.rerank import Reranker
    from deepseek_tf.retrieval.tflite import TFLiteScorer
    from deepseek_tf.train.artifacts import save_trained_model

    queries = rerank_pairs(dataset, n_queries)
    model, tokenizer, config = our_cross_encoder(max_length)
    peer = peer_cross_encoder(max_length)
    keras_rr = Reranker.from_keras(model, tokenizer, config)
    keras_rr.batch_size = batch_size
    keras_rr.score(queries[0][0], queries[0][1][:1])  # builds the model before it is saved
    save_trained_model(model, tokenizer, config, workdir / "model")  # exported as a user's model/ dir is

    def ours(rr):
        return lambda q, docs: rr.score(q, docs)

    def st(q, docs):  # the order our Reranker batches in: same pairs per batch, same padding
        order = sorted(range(len(docs)), key=lambda i: len(docs[i]))
        out = np.zeros(len(docs), np.float32)
        out[order] = peer.predict([(q, docs[i]) for i in order], batch_size=batch_size, show_progress_bar=False)
        return out

    systems = [
        ("sentence-transformers CrossEncoder (PyTorch fp32)", "peer", st),
        ("deepseek_tf Keras (graph)", "keras", ours(keras_rr)),
    ]

    def tflite(quantize: str, system: str) -> Callable:
        log(f"  converting the cross-encoder to TFLite ({quantize}) ...")
        path = workdir / f"cross-{quantize}.tflite"
        export_tflite(workdir / "model", path, quantize)
        return ours(Reranker(TFLiteScorer(path, num_threads=threads), system, batch_size=batch_size))

    converted, failed = tflite_systems(tflite)
    systems += converted

    first_q, first_docs = queries[0]
    for _, _, fn in systems:  # untimed: tracing, interpreter allocation, PyTorch's first call
        fn(first_q, first_docs)
    seconds = {kind: [] for _, kind, _ in systems}
    scores = {kind: [] for _, kind, _ in systems}
    for i, (q, docs) in enumerate(queries):
        log(f"  rerank query {i + 1}/{len(queries)} ({len(docs)} pairs) ...")
        for _, kind, fn in systems if i % 2 == 0 else systems[::-1]:
            start = time.perf_counter()
            scores[kind].append(np.asarray(fn(q, docs), np.float64))
            seconds[kind].append(time.perf_counter() - start)
    n_pairs = sum(len(docs) for _, docs in queries)
    keras_scores = np.concatenate(scores["keras"])
    peer_rate = n_pairs / sum(seconds["peer"])
    rows = [
        rerank_row(
            system,
            kind,
            n_pairs,
            seconds[kind],
            peer_rate,
            None if kind == "peer" else float(np.max(np.abs(np.concatenate(scores[kind]) - keras_scores))),
        )
        for system, kind, _ in systems
    ]
    sample = [(q, d) for q, docs in queries[:2] for d in docs[::10]]
    cos = cls_cosines(model, tokenizer, config, peer, sample)
    return {
        "rows": rows + failed,
        "queries": len(queries),
        "pairs": n_pairs,
        "batch_size": batch_size,
        "max_length": max_length,
        "threads": threads,
        "parity": {"pairs": len(sample), "min_cls_cosine_vs_peer": float(cos.min())},
    }

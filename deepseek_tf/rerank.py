"""Retrieve -> rerank: cross-encoder training data, training, and reranking a first-stage run.

Training data are groups of 1 judged positive + k negatives per query. Negatives come from
a first-stage retriever's top-k (BM25, or a dual encoder / preset given as a MODEL), with
every judged positive of that query removed; judged non-relevant documents (grade 0) are
kept in the pool, since they are the hardest true negatives. Grades stay graded (0-4).
`train.py` hands `model.kind: cross_encoder` configs to `train_cross_encoder` here.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from deepseek_tf import data as data_lib
from deepseek_tf.config import Config
from deepseek_tf.errors import ConfigError, UserError

Run = dict[str, dict[str, float]]  # query id -> {doc id: score}


# ---------------------------------------------------------------------------- training data
def mine_negatives(ds: data_lib.BeirDataset, source: str = "bm25", top_k: int = 30,
                   use_title: bool = True, min_label: int = 1) -> dict[str, list[str]]:
    """Per judged query: the first stage's top-k doc ids minus that query's judged positives.

    A judged positive is any document with grade >= min_label; grade-0 judgments are
    added to the pool even if the retriever missed them (known non-relevant, lexically close).
    """
    qids = sorted(q for q in ds.qrels if q in ds.queries)
    doc_ids = list(ds.corpus)
    texts = [ds.doc_text(d, use_title) for d in doc_ids]
    queries = [ds.queries[q] for q in qids]
    if source == "bm25":
        from deepseek_tf.bm25 import BM25Index

        hits = BM25Index().index(doc_ids, texts).search(queries, top_k)
        ranked = [[d for d, _ in row] for row in hits]
    else:
        from deepseek_tf.embedders import load_embedder
        from deepseek_tf.index import exact_search

        embedder = load_embedder(source)
        doc_vecs = embedder.encode_docs(texts, progress=sys.stderr.isatty())
        _, idx = exact_search(embedder.encode_queries(queries), doc_vecs, top_k)
        ranked = [[doc_ids[j] for j in row] for row in idx]
    pools = {}
    for q, row in zip(qids, ranked):
        judged = ds.qrels[q]
        pool = [d for d in row if judged.get(d, 0) < min_label]
        pool += [d for d, g in sorted(judged.items()) if g == 0 and d not in pool and d in ds.corpus]
        pools[q] = pool
    return pools


@dataclass
class Groups:
    """Training groups: each query with n documents (column 0 the positive) and their grades."""

    queries: list[str]
    docs: list[list[str]]  # (G, n)
    grades: list[list[int]]  # (G, n)

    def __len__(self) -> int:
        return len(self.queries)


def build_groups(ds: data_lib.BeirDataset, pools: dict[str, list[str]], num_negatives: int,
                 min_label: int = 1, use_title: bool = True, rounds: int = 1, seed: int = 42) -> Groups:
    """`rounds` passes over every (query, positive); each pass samples fresh negatives.

    Negatives are drawn without replacement from the query's pool (with replacement if the
    pool is smaller than k; from the rest of the corpus if it is empty). A pool document's
    grade is its judgment, 0 when unjudged.
    """
    if num_negatives < 1:
        raise ConfigError("data.num_negatives must be >= 1 for a cross-encoder")
    rng = np.random.default_rng(seed)
    all_ids = list(ds.corpus)
    queries, docs, grades = [], [], []
    for _ in range(rounds):
        for q in sorted(pools):
            judged = ds.qrels[q]
            positives = [(d, g) for d, g in sorted(judged.items()) if g >= min_label and d in ds.corpus]
            pool = pools[q] or [d for d in all_ids if judged.get(d, 0) < min_label]
            for d, g in positives:
                picks = rng.choice(len(pool), num_negatives, replace=len(pool) < num_negatives)
                negs = [pool[i] for i in picks]
                queries.append(ds.queries[q])
                docs.append([ds.doc_text(x, use_title) for x in [d] + negs])
                grades.append([g] + [judged.get(x, 0) for x in negs])
    if not queries:
        raise UserError(f"no judgments with relevance >= {min_label} to train on")
    return Groups(queries, docs, grades)


def tokenize_groups(tokenizer, interaction: str, query_max_length: int, pair_max_length: int):
    """A tf.data map: {"query": (B,), "docs": (B, n)}, grades -> (model inputs for B·n pairs, grades)."""

    def fn(batch, grades):
        n = tf.shape(batch["docs"])[1]
        queries = tf.repeat(batch["query"], n)  # (B·n,) query i repeated for its n docs
        docs = tf.reshape(batch["docs"], [-1])  # (B·n,)
        if interaction == "light":
            x = {"query": tokenizer(queries, query_max_length), "doc": tokenizer(docs, pair_max_length)}
        else:
            x = tokenizer.pairs(queries, docs, pair_max_length)
        return x, tf.cast(grades, tf.float32)

    return fn


def group_dataset(groups: Groups, tokenizer, config: Config, shuffle: bool = True) -> tf.data.Dataset:
    m, t = config.model, config.train
    ds = tf.data.Dataset.from_tensor_slices(({"query": groups.queries, "docs": groups.docs}, groups.grades))
    if shuffle:
        ds = ds.shuffle(min(config.data.shuffle_buffer, len(groups)), seed=t.seed)
    ds = ds.batch(t.batch_size, drop_remainder=True)
    fn = tokenize_groups(tokenizer, m.interaction, m.query_max_length, m.doc_max_length)
    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------- training
def train_cross_encoder(config: Config, workdir: str | Path, verbose: int = 1) -> dict:
    """`model.kind: cross_encoder`: mines negatives, trains on groups, writes WORKDIR/model/.

    Same workdir layout, checkpointing and resume as dual-encoder training (train.py).
    `train.batch_size` counts groups, so a step scores batch_size × (1 + num_negatives) pairs.
    """
    import json
    import math

    import keras

    from deepseek_tf.config import save_config
    from deepseek_tf.models import build_model
    from deepseek_tf.train import _Checkpointer, _make_optimizer, make_strategy, prepare_tokenizer, save_trained_model

    workdir, d, t = Path(workdir), config.data, config.train
    if not d.dataset:
        raise ConfigError("config: a cross-encoder trains on a BEIR directory; set data.dataset")
    workdir.mkdir(parents=True, exist_ok=True)
    save_config(config, workdir / "config.yaml")
    keras.utils.set_random_seed(t.seed)
    ds = data_lib.load_beir(d.dataset, d.train_split, unknown_ids="drop")
    for what, count in ds.dropped.items():
        print(f"warning: {d.dataset}: dropped {count} {what}", file=sys.stderr)
    start = time.perf_counter()
    pools = mine_negatives(ds, d.negatives_from, d.mine_top_k, d.use_title, d.min_label)
    groups = build_groups(ds, pools, d.num_negatives, d.min_label, d.use_title, rounds=t.epochs, seed=t.seed)
    print(f"{len(groups) // t.epochs} groups per epoch (1 positive + {d.num_negatives} negatives from "
          f"{d.negatives_from} top-{d.mine_top_k}), mined in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    # A scratch vocabulary is learned from every query and document text.
    flat = data_lib.Pairs(list(ds.queries.values()), [ds.doc_text(x, d.use_title) for x in ds.corpus])
    tokenizer = prepare_tokenizer(config, flat, workdir)
    steps = t.steps_per_epoch or len(groups) // t.epochs // t.batch_size
    if steps < 1:
        raise UserError(f"only {len(groups) // t.epochs} groups: fewer than one batch of {t.batch_size}")
    dataset = group_dataset(groups, tokenizer, config).repeat()

    with make_strategy(t.strategy).scope():
        model = build_model(config, tokenizer.vocab_size)
        optimizer = _make_optimizer(config, steps * t.epochs)
        model.compile(optimizer=optimizer)
        model(next(iter(dataset.take(1)))[0])  # build variables before restoring
        optimizer.build(model.trainable_variables)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, str(workdir / "checkpoints"), max_to_keep=2)
    initial_epoch = 0
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).expect_partial()
        initial_epoch = int(optimizer.iterations.numpy()) // steps
        print(f"resuming from {manager.latest_checkpoint}", file=sys.stderr)
    history_path = workdir / "history.json"
    history = json.loads(history_path.read_text()) if history_path.is_file() else {}
    if initial_epoch < t.epochs:
        result = model.fit(dataset, epochs=t.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps,
                           shuffle=False, verbose=verbose, callbacks=[_Checkpointer(manager),
                                                       keras.callbacks.TensorBoard(str(workdir / "logs"))])
        for k, v in result.history.items():
            history.setdefault(k, []).extend(float(x) for x in v)
    if any(not math.isfinite(x) for x in history.get("loss", [])):
        raise UserError("training diverged: loss is not finite (lower train.learning_rate?)")
    history["steps"] = [int(optimizer.iterations.numpy())]
    history_path.write_text(json.dumps(history, indent=2))
    save_trained_model(model, tokenizer, config, workdir / "model")
    return history


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
    def from_keras(cls, model, tokenizer, config: Config, name: str = "cross_encoder") -> "Reranker":
        m = config.model
        spec = tf.TensorSpec([None], tf.string)
        if m.interaction == "light":
            def fn(q, d):
                return model({"query": tokenizer(q, m.query_max_length), "doc": tokenizer(d, m.doc_max_length)},
                             training=False)
        else:
            def fn(q, d):
                return model(_tflite_safe_segments(tokenizer.pairs(q, d, m.doc_max_length)), training=False)
        return cls(tf.function(fn, input_signature=[spec, spec]), name)

    @classmethod
    def load(cls, spec: str) -> "Reranker":
        path = Path(spec)
        if (path / "model.keras").is_file():
            from deepseek_tf.embedders import load_trained

            model, tokenizer, config = load_trained(path)
            if config.model.kind != "cross_encoder":
                raise UserError(f"--rerank {spec}: a {config.model.kind} model, not a cross-encoder")
            return cls.from_keras(model, tokenizer, config, name=path.parent.name or path.name)
        if (path / "saved_model.pb").is_file():
            loaded = tf.saved_model.load(str(path))
            if not hasattr(loaded, "score") or hasattr(loaded, "encode_query"):
                raise UserError(f"--rerank {spec}: SavedModel is not a cross-encoder export (no lone 'score')")
            reranker = cls(loaded.score, path.name)
            reranker.loaded = loaded  # the endpoint's variables live as long as this object
            return reranker
        if path.suffix == ".tflite" and path.is_file():  # deepseek_tf.export --format tflite
            from deepseek_tf.tflite import TFLiteScorer

            return cls(TFLiteScorer(path), path.name)
        raise UserError(f"--rerank {spec!r}: not a trained cross-encoder model dir or its SavedModel")

    def score_pairs(self, queries: list[str], docs: list[str]) -> np.ndarray:
        """Scores row i = score(queries[i], docs[i]); length-sorted batches keep padding small."""
        out = np.zeros(len(docs), np.float32)
        order = sorted(range(len(docs)), key=lambda i: len(docs[i]))
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            out[idx] = np.asarray(self._score_fn(tf.constant([queries[i] for i in idx]),
                                                 tf.constant([docs[i] for i in idx])))
        return out

    def score(self, query: str, docs: list[str]) -> np.ndarray:
        return self.score_pairs([query] * len(docs), docs)


def rerank_run(reranker: Reranker, ds: data_lib.BeirDataset, first_stage: Run, top_k: int = 100,
               use_title: bool = True, progress: bool = False) -> tuple[Run, dict[str, float]]:
    """Rescores each query's top-k first-stage documents.

    stats: latency_ms (per query, reranking only) and its p50/p95, docs_per_s (pairs scored per second).
    """
    qids = [q for q in first_stage if q in ds.queries]
    if qids:  # warm-up: trace the scoring graph once, outside the timings
        reranker.score(ds.queries[qids[0]], [ds.doc_text(next(iter(ds.corpus)), use_title)])
    items = qids
    if progress:
        from tqdm import tqdm

        items = tqdm(qids, desc="reranking", unit="query", leave=False)
    run, latencies, pairs = {}, {}, 0
    for q in items:
        top = sorted(first_stage[q].items(), key=lambda x: (-x[1], x[0]))[:top_k]
        ids = [d for d, _ in top]
        t0 = time.perf_counter()
        scores = reranker.score(ds.queries[q], [ds.doc_text(d, use_title) for d in ids])
        latencies[q] = (time.perf_counter() - t0) * 1000
        pairs += len(ids)
        run[q] = {d: float(s) for d, s in zip(ids, scores)}
    values = list(latencies.values())
    stats = {"latency_ms_p50": float(np.percentile(values, 50)) if values else None,
             "latency_ms_p95": float(np.percentile(values, 95)) if values else None,
             "docs_per_s": pairs / max(sum(values) / 1000, 1e-9), "rerank_depth": top_k, "latency_ms": latencies}
    return run, stats


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
        ids = list(docs)
        ce = z(np.array([docs[d] for d in ids], np.float64))
        first = z(np.array([first_stage[q][d] for d in ids], np.float64))
        fused[q] = {d: float(weight * c + (1 - weight) * f) for d, c, f in zip(ids, ce, first)}
    return fused


def rerank_system(spec: str, ds: data_lib.BeirDataset, first_stage: Run, first_stats: dict, top_k: int = 100,
                  fusion: float | None = None, progress: bool = False) -> list[tuple[str, Run, dict]]:
    """The "<first stage>+rerank" system(s) for evaluate: [(name suffix, run, stats)].

    "+rerank" orders by the cross-encoder alone; with `fusion` = w, "+rerank+fusion" orders
    by `fuse(first, reranked, w)` (same scoring pass, no extra cost).
    stats["latency_ms"][q] = first-stage latency + reranking latency (the system a user runs);
    rerank_latency_ms_p50/p95 are the reranking stage alone; docs_per_s stays the first
    stage's indexing speed, rerank_pairs_per_s is the cross-encoder's scoring speed.
    """
    if fusion is not None and not 0.0 <= fusion <= 1.0:
        raise UserError(f"--rerank-fusion must be in [0, 1], got {fusion}")
    reranker = Reranker.load(spec)
    run, stats = rerank_run(reranker, ds, first_stage, top_k, progress=progress)
    before = first_stats.get("latency_ms", {})
    latencies = {q: ms + before.get(q, 0.0) for q, ms in stats.pop("latency_ms").items()}
    values = list(latencies.values())
    common = {"latency_ms_p50": float(np.percentile(values, 50)) if values else None,
              "latency_ms_p95": float(np.percentile(values, 95)) if values else None,
              "docs_per_s": first_stats.get("docs_per_s"), "index_s": first_stats.get("index_s"),
              "rerank_latency_ms_p50": stats["latency_ms_p50"], "rerank_latency_ms_p95": stats["latency_ms_p95"],
              "rerank_pairs_per_s": stats["docs_per_s"], "rerank_depth": top_k}
    systems = [("+rerank", run, {**common, "latency_ms": latencies})]
    if fusion is not None:
        systems.append(("+rerank+fusion", fuse(first_stage, run, fusion),
                        {**common, "rerank_fusion": fusion, "latency_ms": dict(latencies)}))
    return systems


def check_reranker_spec(spec: str, fusion: float | None = None) -> None:
    """Cheap up-front check of --rerank MODEL [--rerank-fusion W] (before minutes of first-stage work)."""
    if fusion is not None and not 0.0 <= fusion <= 1.0:
        raise UserError(f"--rerank-fusion must be in [0, 1], got {fusion}")
    path = Path(spec)
    if (path / "model.keras").is_file() and (path / "config.yaml").is_file():
        from deepseek_tf.config import load_config

        kind = load_config(path / "config.yaml").model.kind
        if kind != "cross_encoder":
            raise UserError(f"--rerank {spec}: a {kind} model, not a cross-encoder")
    elif not (path / "saved_model.pb").is_file() and not (path.suffix == ".tflite" and path.is_file()):
        raise UserError(f"--rerank {spec!r}: not a trained cross-encoder model dir or its SavedModel")


# ---------------------------------------------------------------------------- export
def export_cross_encoder(model, tokenizer, config: Config, output: str | Path, tolerance: float = 1e-5,
                         check_texts: list[str] | None = None) -> dict:
    """SavedModel with one raw-string endpoint `score(query: string[N], doc: string[N]) -> float[N]`.

    Checked against the Keras model on held (query, doc) pairs; nothing is written when the
    largest difference exceeds `tolerance`.
    """
    import shutil

    import keras

    from deepseek_tf.config import config_to_dict
    from deepseek_tf.export import publish
    from deepseek_tf.models.encoder import additive_attention_masks

    output = Path(output)
    additive_attention_masks(model)  # as the dual-encoder export: no broadcast SELECTs in the graph
    reference = Reranker.from_keras(model, tokenizer, config)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(tokenizer)  # keeps the tensorflow-text lookup tables alive in the graph
    archive.add_endpoint("score", reference._score_fn.python_function,
                         input_signature=[tf.TensorSpec([None], tf.string, name="query"),
                                          tf.TensorSpec([None], tf.string, name="doc")])
    tmp = output.with_name(output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    archive.write_out(str(tmp), verbose=False)
    texts = check_texts or ["summer dress", "What similarity laws must be obeyed for aeroelastic models?",
                            "轻便笔记本", "Café naïve façade — 3.5 kg, 20% off!", ""]
    queries, docs = [q for q in texts for _ in texts], [d for _ in texts for d in texts]
    want = reference.score_pairs(queries, docs)
    loaded = tf.saved_model.load(str(tmp))  # keep a reference: its variables die with it
    got = loaded.score(tf.constant(queries), tf.constant(docs)).numpy()
    diff = float(np.max(np.abs(want.astype(np.float64) - got)))
    if not diff <= tolerance:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"export check failed: SavedModel score differs from Keras by {diff:.2e} "
                        f"> tolerance {tolerance:.0e}; nothing written")
    return publish(tmp, output, {"format": "saved_model", "kind": "cross_encoder", "endpoints": ["score"],
                                 "pair_max_length": config.model.doc_max_length, "tolerance": tolerance,
                                 "checks": {"score_max_abs_diff": diff}, "checks_passed": True,
                                 "model_config": config_to_dict(config)["model"]})

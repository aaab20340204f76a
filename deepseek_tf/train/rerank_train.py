"""Cross-encoder training: groups of 1 judged positive + k negatives from a first stage.

Negatives come from a first-stage retriever's top-k (BM25, or a dual encoder / preset given
as a MODEL), with every judged positive of that query removed; judged non-relevant documents
(grade 0) are kept in the pool, since they are the hardest true negatives. Grades stay graded
(0-4). `train.py` hands `model.kind: cross_encoder` configs to `train_cross_encoder` here; reranking
with the result is in `rerank.py`.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from deepseek_tf import data as data_lib
from deepseek_tf.config import Config, TrainConfig
from deepseek_tf.errors import ConfigError, UserError
from deepseek_tf.retrieval.rerank import Run


# ---------------------------------------------------------------------------- training data
def first_stage_top_k(
    ds: data_lib.BeirDataset, source: str = "bm25", top_k: int = 30, use_title: bool = True, analyzer: str = "default"
) -> Run:
    """Per judged query: {doc id: score} of the first stage's top-k. `source`: "bm25" (terms from
    `analyzer`, data.analyzer), a retriever MODEL, or "run:PATH", a TREC run file (another
    system's results, e.g. the production first stage the reranker will sit behind)."""
    qids = sorted(q for q in ds.qrels if q in ds.queries)
    run_path = data_lib.run_file(source)
    if run_path is not None:
        return data_lib.load_run(run_path, ds, top_k)
    doc_ids = list(ds.corpus)
    texts = [ds.doc_text(d, use_title) for d in doc_ids]
    queries = [ds.queries[q] for q in qids]
    if source == "bm25":
        from deepseek_tf.retrieval.bm25 import BM25Index

        hits = BM25Index(analyzer=analyzer).index(doc_ids, texts).search(queries, top_k)
        return {q: {d: float(s) for d, s in row} for q, row in zip(qids, hits)}
    from deepseek_tf.retrieval.artifacts import load_embedder
    from deepseek_tf.retrieval.knn import exact_search

    embedder = load_embedder(source)
    doc_vecs = embedder.encode_docs(texts, progress=True)
    scores, idx = exact_search(embedder.encode_queries(queries), doc_vecs, top_k)
    return {q: {doc_ids[j]: float(s) for j, s in zip(row, srow)} for q, row, srow in zip(qids, idx, scores)}


def mine_negatives(
    ds: data_lib.BeirDataset,
    source: str = "bm25",
    top_k: int = 30,
    use_title: bool = True,
    min_label: int = 1,
    first: Run | None = None,
) -> dict[str, list[str]]:
    """Per judged query: the first stage's top-k doc ids minus that query's judged positives.

    A judged positive is any document with grade >= min_label; grade-0 judgments are
    added to the pool even if the retriever missed them (known non-relevant, lexically close).
    `first`: an already computed `first_stage_top_k` (each query's docs in rank order).
    """
    first = first if first is not None else first_stage_top_k(ds, source, top_k, use_title)
    pools = {}
    for q, docs in first.items():
        judged = ds.qrels[q]
        pool = [d for d in docs if judged.get(d, 0) < min_label]
        pool += [d for d, g in sorted(judged.items()) if g == 0 and d not in pool and d in ds.corpus]
        pools[q] = pool
    return pools


@dataclass
class Groups:
    """Training groups: each query with n documents (its positives first) and their grades."""

    queries: list[str]
    docs: list[list[str]]  # (G, n)
    grades: list[list[int]]  # (G, n)

    def __len__(self) -> int:
        return len(self.queries)


def check_group_shape(num_negatives: int, judged_negatives: int = 0) -> None:
    """ConfigError on a group layout build_groups cannot fill (checked before any mining)."""
    if num_negatives < 1:
        raise ConfigError("data.num_negatives must be >= 1 for a cross-encoder")
    if not 0 <= judged_negatives <= num_negatives:
        raise ConfigError(
            f"data.judged_negatives must be in [0, data.num_negatives = {num_negatives}], got {judged_negatives}"
        )


def build_groups(
    ds: data_lib.BeirDataset,
    pools: dict[str, list[str]],
    num_negatives: int,
    min_label: int = 1,
    use_title: bool = True,
    rounds: int = 1,
    seed: int = 42,
    judged_negatives: int = 0,
) -> Groups:
    """`rounds` passes over every (query, positive); each pass samples fresh negatives.

    judged_negatives: up to this many of the group's num_negatives slots go to the query's judged
    non-relevant documents (grade < min_label, sampled) in every group; the mined ones are then
    drawn from the rest of the pool.

    Negatives are drawn without replacement from the query's pool (with replacement if the
    pool is smaller than k; from the rest of the corpus if it is empty). A pool document's
    grade is its judgment, 0 when unjudged.
    """
    check_group_shape(num_negatives, judged_negatives)
    rng = np.random.default_rng(seed)
    all_ids = list(ds.corpus)
    queries, docs, grades = [], [], []
    for _ in range(rounds):
        for q in sorted(pools):
            judged = ds.qrels[q]
            positives = [(d, g) for d, g in sorted(judged.items()) if g >= min_label and d in ds.corpus]
            pool = pools[q] or [d for d in all_ids if judged.get(d, 0) < min_label]
            refused = [d for d, g in sorted(judged.items()) if g < min_label and d in ds.corpus]
            for positive, grade in positives:
                n_judged = min(judged_negatives, len(refused))
                k = num_negatives - n_judged  # mined negatives fill the rest
                negs, drawn = [], pool
                if n_judged:  # the RNG is only touched when on, so other configs draw as before
                    negs = [refused[i] for i in rng.choice(len(refused), n_judged, replace=False)]
                    drawn = [d for d in pool if d not in negs] or pool
                negs += [drawn[i] for i in rng.choice(len(drawn), k, replace=len(drawn) < k)]
                queries.append(ds.queries[q])
                docs.append([ds.doc_text(x, use_title) for x in [positive] + negs])
                grades.append([grade] + [judged.get(x, 0) for x in negs])
    if not queries:
        raise UserError(f"no judgments with relevance >= {min_label} to train on")
    return Groups(queries, docs, grades)


def tokenize_groups(tokenizer, interaction: str, query_max_length: int, pair_max_length: int, pad_multiple: int = 1):
    """A tf.data map: {"query": (B,), "docs": (B, n)}, grades -> (model inputs for B·n pairs, grades)."""

    def fn(batch, grades):
        n = tf.shape(batch["docs"])[1]
        queries = tf.repeat(batch["query"], n)  # (B·n,) query i repeated for its n docs
        docs = tf.reshape(batch["docs"], [-1])  # (B·n,)
        if interaction == "light":
            x = {
                "query": tokenizer(queries, query_max_length, pad_multiple),
                "doc": tokenizer(docs, pair_max_length, pad_multiple),
            }
        else:
            x = tokenizer.pairs(queries, docs, pair_max_length, pad_multiple)
        return x, tf.cast(grades, tf.float32)

    return fn


def group_dataset(
    groups: Groups, tokenizer, config: Config, shuffle: bool = True, pad_multiple: int = 1
) -> tf.data.Dataset:
    """Batches of groups -> (pair inputs, grades); inputs padded to a multiple of `pad_multiple`
    (XLA: `Tokenizer.widen`)."""
    m, t = config.model, config.train
    ds = tf.data.Dataset.from_tensor_slices(({"query": groups.queries, "docs": groups.docs}, groups.grades))
    if shuffle:
        ds = ds.shuffle(min(config.data.shuffle_buffer, len(groups)), seed=t.seed)
    ds = ds.batch(t.batch_size, drop_remainder=True)
    fn = tokenize_groups(tokenizer, m.interaction, m.query_max_length, m.doc_max_length, pad_multiple)
    return ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------- training
def check_cross_encoder_config(config: Config) -> None:
    """The checks that need no data, run before anything is written or mined (also for each soup member)."""
    d, t = config.data, config.train
    if not d.dataset:
        raise ConfigError("config: a cross-encoder trains on a BEIR directory; set data.dataset")
    if d.teacher or t.distill_weight:
        raise ConfigError(
            "data.teacher / train.distill_weight distill a cross-encoder into a dual encoder; "
            "a cross-encoder does not take them"
        )
    # dual-encoder-only keys would be accepted and do nothing: refused, naming them
    defaults = TrainConfig()
    dual_only = [
        f"train.{name}"
        for name in ("accumulation_steps", "label_weighting", "mask_duplicates", "gather_across_replicas")
        if getattr(t, name) != getattr(defaults, name)
    ]
    if dual_only:
        raise ConfigError(f"{', '.join(dual_only)}: dual-encoder settings; a cross-encoder does not take them")
    check_group_shape(d.num_negatives, d.judged_negatives)
    run_path = data_lib.run_file(d.negatives_from)
    if run_path is not None and not Path(run_path).is_file():
        raise ConfigError(f"data.negatives_from: missing run file: {run_path}")


def dev_rerank_ndcg(
    model, tokenizer, config: Config, dev: data_lib.BeirDataset, first: Run, fusion: float = 0.5
) -> tuple[float, dict[str, float]]:
    """(nDCG@10 of the dev queries' first-stage top-k reranked by the model being trained,
    {"dev_fused_ndcg@10": the same fused with the first stage, `rerank.fuse` at W = fusion}):
    the first decides the best epoch, the second is logged beside it."""
    from deepseek_tf.evaluate.report import trec_metrics
    from deepseek_tf.retrieval.rerank import Reranker, fuse, rerank_run

    run, _ = rerank_run(
        Reranker.from_keras(model, tokenizer, config), dev, first, config.data.mine_top_k, config.data.use_title
    )
    fused = trec_metrics(dev.qrels, fuse(first, run, fusion))[0]["ndcg@10"]
    return trec_metrics(dev.qrels, run)[0]["ndcg@10"], {"dev_fused_ndcg@10": fused}


def train_cross_encoder(config: Config, workdir: str | Path, verbose: int = 1) -> dict:
    """`model.kind: cross_encoder`: mines negatives, trains on groups, writes WORKDIR/model/.

    Same workdir layout, checkpointing and resume as dual-encoder training (train.py).
    `train.batch_size` counts groups, so a step scores batch_size × (1 + num_negatives) pairs.
    """

    import keras

    from deepseek_tf.config import save_config
    from deepseek_tf.data.splits import sample_queries, split_train_dev
    from deepseek_tf.train.artifacts import prepare_tokenizer
    from deepseek_tf.train.compute import jit_policy, make_strategy, precision_policy
    from deepseek_tf.train.compute import pad_multiple as jit_pad_multiple
    from deepseek_tf.train.loop import Training

    workdir, d, t = Path(workdir), config.data, config.train
    check_cross_encoder_config(config)  # before minutes of mining
    # MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
    strategy = make_strategy(t.strategy)
    ds = data_lib.load_beir(d.dataset, d.train_split, unknown_ids="drop")
    for line in data_lib.describe_dropped(ds.dropped):
        print(f"warning: {d.dataset}: {line}", file=sys.stderr)
    ds, dev = split_train_dev(ds, config)
    if dev is not None and dev.qrels.keys() & ds.qrels.keys():  # before minutes of mining
        raise UserError(
            f"data.dev_split {d.dev_split}: {len(dev.qrels.keys() & ds.qrels.keys())} of its "
            f"queries are also in data.train_split {d.train_split}"
        )
    if dev is not None:
        dev = sample_queries(dev, d.dev_max_queries, d.dev_seed)
    workdir.mkdir(parents=True, exist_ok=True)
    save_config(config, workdir / "config.yaml")
    keras.utils.set_random_seed(t.seed)
    start = time.perf_counter()
    # one first-stage pass: the training queries' pools and the dev queries' candidates
    both = ds if dev is None else data_lib.BeirDataset(ds.corpus, ds.queries, {**dev.qrels, **ds.qrels}, ds.dropped)
    first = first_stage_top_k(both, d.negatives_from, d.mine_top_k, d.use_title, d.analyzer)
    dev_first = None if dev is None else {q: first.pop(q) for q in dev.qrels if q in first}
    if dev is not None:
        print(
            f"dev: {len(dev_first)} queries, their {d.negatives_from} top-{d.mine_top_k} reranked after each epoch",
            file=sys.stderr,
        )
    pools = mine_negatives(ds, d.negatives_from, d.mine_top_k, d.use_title, d.min_label, first=first)
    groups = build_groups(
        ds,
        pools,
        d.num_negatives,
        d.min_label,
        d.use_title,
        rounds=t.epochs,
        seed=t.seed,
        judged_negatives=d.judged_negatives,
    )
    print(
        f"{len(groups) // t.epochs} groups per epoch (1 positive + {d.num_negatives} negatives from "
        f"{d.negatives_from} top-{d.mine_top_k}), mined in {time.perf_counter() - start:.1f}s",
        file=sys.stderr,
    )
    # A scratch vocabulary is learned from every query and document text.
    flat = data_lib.Pairs(list(ds.queries.values()), [ds.doc_text(x, d.use_title) for x in ds.corpus])
    tokenizer = prepare_tokenizer(config, flat, workdir)
    steps = t.steps_per_epoch or len(groups) // t.epochs // t.batch_size
    if steps < 1:
        raise UserError(f"only {len(groups) // t.epochs} groups: fewer than one batch of {t.batch_size}")
    policy = precision_policy(t.mixed_precision)
    pad = jit_pad_multiple(jit_policy(t.jit_compile, policy, t.strategy, config.model.kind))

    def stream(done: int) -> tf.data.Dataset:
        # groups of every epoch in one seeded order: skipping `done` batches resumes mid-epoch
        return group_dataset(groups, tokenizer, config, pad_multiple=pad).repeat().skip(done)

    sample = next(iter(stream(0).take(1)))[0]
    run = Training(config, workdir, strategy, policy, tokenizer, steps, sample)
    model = run.model
    dev_metric = None
    if dev is not None:
        dev_metric = lambda: dev_rerank_ndcg(model, tokenizer, config, dev, dev_first)  # noqa: E731
    return run.fit_and_save(stream, dev_metric, verbose)

"""Held-out query splits: dev queries carved from a training split."""

from __future__ import annotations

import random

from deepseek_tf.config import Config
from deepseek_tf.data import beir as data_lib
from deepseek_tf.errors import ConfigError


def split_dev(ds: data_lib.BeirDataset, fraction: float, seed: int):
    """(train, dev) with `fraction` of the judged queries (seeded choice) held out as dev."""
    qids = sorted(ds.qrels)
    random.Random(seed).shuffle(qids)
    n_dev = max(1, round(fraction * len(qids)))
    if n_dev >= len(qids):
        raise ConfigError(f"data.dev_fraction={fraction} leaves no training queries")
    return ds.judged_subset(qids[n_dev:]), ds.judged_subset(qids[:n_dev])


def split_train_dev(
    ds: data_lib.BeirDataset, config: Config
) -> tuple[data_lib.BeirDataset, data_lib.BeirDataset | None]:
    """(training set, dev set or None): qrels/{data.dev_split}.tsv, or data.dev_fraction of the
    training queries held out (chosen by data.dev_seed, so a soup's members hold out the same ones)."""
    d = config.data
    if d.dev_split:
        return ds, data_lib.load_beir(d.dataset, d.dev_split, unknown_ids="drop")
    if d.dev_fraction > 0:
        return split_dev(ds, d.dev_fraction, d.dev_seed)
    return ds, None


def limit_corpus(ds: data_lib.BeirDataset, max_docs: int, seed: int) -> data_lib.BeirDataset:
    """Judged documents plus a seeded sample of the rest, at most `max_docs` in all."""
    if len(ds.corpus) <= max_docs:
        return ds
    judged = {d for docs in ds.qrels.values() for d in docs if d in ds.corpus}
    rest = sorted(set(ds.corpus) - judged)
    keep = judged | set(random.Random(seed).sample(rest, max(0, min(len(rest), max_docs - len(judged)))))
    return data_lib.BeirDataset({d: ds.corpus[d] for d in ds.corpus if d in keep}, ds.queries, ds.qrels, ds.dropped)


def sample_queries(ds: data_lib.BeirDataset, max_queries: int | None, seed: int) -> data_lib.BeirDataset:
    """A seeded sample of at most `max_queries` judged queries (None: all of them)."""
    if max_queries is None or len(ds.qrels) <= max_queries:
        return ds
    keep = set(random.Random(seed).sample(sorted(ds.qrels), max_queries))
    return data_lib.BeirDataset(ds.corpus, ds.queries, {q: ds.qrels[q] for q in ds.qrels if q in keep}, ds.dropped)

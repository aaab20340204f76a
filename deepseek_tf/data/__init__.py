"""Data: BEIR-layout collections, training pairs, dev splits and tf.data pipelines."""

from deepseek_tf.data.beir import (
    RUN_PREFIX,
    BeirDataset,
    describe_dropped,
    join_title,
    load_beir,
    load_run,
    normalize_text,
    read_corpus,
    read_qrels,
    read_run,
    run_file,
    write_run,
)
from deepseek_tf.data.pairs import Pairs, pair_dataset, pairs_from_beir, read_pairs, text_batches
from deepseek_tf.data.splits import limit_corpus, split_dev, split_train_dev

__all__ = [
    "BeirDataset",
    "describe_dropped",
    "join_title",
    "load_beir",
    "load_run",
    "normalize_text",
    "read_corpus",
    "read_qrels",
    "read_run",
    "run_file",
    "write_run",
    "RUN_PREFIX",
    "Pairs",
    "pair_dataset",
    "pairs_from_beir",
    "read_pairs",
    "text_batches",
    "limit_corpus",
    "split_dev",
    "split_train_dev",
]

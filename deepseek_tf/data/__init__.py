"""Data: BEIR-layout collections, training pairs, dev splits and tf.data pipelines."""
from deepseek_tf.data.beir import (BeirDataset, describe_dropped, join_title, load_beir, load_run, normalize_text, read_corpus,
                                   read_qrels, read_run, run_file, write_run, RUN_PREFIX)
from deepseek_tf.data.pairs import (Pairs, concat_pairs, grade_weights, pair_dataset, pairs_from_beir, read_pairs,
                                    text_batches, title_dataset)
from deepseek_tf.data.splits import check_folds, fold_split, limit_corpus, split_dev, split_train_dev

__all__ = ["BeirDataset", "describe_dropped", "join_title", "load_beir", "load_run", "normalize_text", "read_corpus", "read_qrels",
           "read_run", "run_file", "write_run", "RUN_PREFIX", "Pairs", "concat_pairs", "grade_weights",
           "pair_dataset", "pairs_from_beir", "read_pairs", "text_batches", "title_dataset", "check_folds",
           "fold_split", "limit_corpus", "split_dev", "split_train_dev"]

"""Out-of-fold first-stage runs: every training query retrieved by a retriever that never saw it.

A reranker learns from its first stage's candidates for the training queries. When that first
stage was trained on the same queries, it has learned them: on Cranfield the config's retriever
scores nDCG@10 0.597 on the 150 training queries it saw and 0.460 on the test queries. Its top-k and its
scores on training queries are then easier and surer than anything the reranker meets at test
time, and a reranker trained on them (above all one that learns a correction to the first
stage's score, `model.first_stage_weight`) learns the wrong lesson. Cross-fitting, as in
stacking: split the training queries into K folds (seeded by `data.dev_seed`), train the
retriever config K times, each time without one fold (`data.folds` / `data.fold`), and retrieve
each fold's queries with the retriever that left it out. The result is a TREC run file for
`data.negatives_from: run:PATH` in a cross-encoder config.

Measured on Cranfield (docs/reranking-experiments.md, session 14), it did not help: the
reranker trained on the out-of-fold candidates ranked worse than the one trained on the
in-sample retriever's, both plain and as a correction to the first stage. The config keeps the
in-sample retriever.

    deepseek-tf crossfit --config configs/cranfield_minilm.yaml --folds 2 \\
        --output runs/cranfield_oof.trec [--set train.soup=1]
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from deepseek_tf import data as data_lib
from deepseek_tf.config import Config, load_config
from deepseek_tf.errors import ConfigError
from deepseek_tf.evaluate.report import Run


def fold_config(config: Config, folds: int, fold: int) -> Config:
    return dataclasses.replace(config, data=dataclasses.replace(config.data, folds=folds, fold=fold))


def crossfit(config: Config, folds: int, workdir: str | Path, output: str | Path, top_k: int = 100,
             verbose: int = 1) -> Run:
    """Trains the retriever `folds` times in WORKDIR/fold<i>/ (each without fold i; a finished
    fold is reused, an unfinished one resumes), writes the out-of-fold top-k run to `output`."""
    from deepseek_tf.retrieval.artifacts import load_embedder
    from deepseek_tf.evaluate.report import dense_run
    from deepseek_tf.data.splits import fold_split
    from deepseek_tf.train.run import check_config, train

    if config.model.kind != "dual_encoder":
        raise ConfigError(f"crossfit trains a retriever (model.kind: dual_encoder), got {config.model.kind}")
    if folds < 2:
        raise ConfigError(f"--folds must be >= 2, got {folds}")
    if top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {top_k}")
    if not config.data.dataset:
        raise ConfigError("crossfit splits a BEIR directory's training queries; set data.dataset")
    for i in range(folds):
        check_config(fold_config(config, folds, i))
    d = config.data
    ds = data_lib.load_beir(d.dataset, d.train_split, unknown_ids="drop")
    parts = fold_split(ds.qrels, folds, d.dev_seed)
    workdir, run = Path(workdir), {}
    for i, part in enumerate(parts):
        fold_dir = workdir / f"fold{i}"
        print(f"fold {i + 1}/{folds}: training on {len(ds.qrels) - len(part)} queries, "
              f"retrieving the other {len(part)} ({fold_dir})", file=sys.stderr)
        want = fold_config(config, folds, i)
        if not (fold_dir / "model").is_dir():
            train(want, fold_dir, verbose)
        elif load_config(fold_dir / "config.yaml") != want:
            raise ConfigError(f"{fold_dir} holds a model trained with another config; give another --workdir")
        held = ds.judged_subset(part)
        fold_run, _ = dense_run(load_embedder(str(fold_dir / "model")), held, top_k, use_title=d.use_title)
        run.update(fold_run)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    data_lib.write_run(run, output, tag="crossfit")
    return run

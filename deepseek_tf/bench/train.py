"""The training part of `make bench`: examples/s of our dual-encoder `fit` against
sentence-transformers' `fit` with MultipleNegativesRankingLoss, on the same pairs and batch size."""

from __future__ import annotations

import os
import time
from pathlib import Path

from deepseek_tf.bench.peers import PRESET, sentence_transformer


def bench_training(dataset: Path, batch_size: int, steps: int, max_length: int, workdir: Path, log=print) -> dict:
    """Examples/s of `steps` training steps (after one warm-up step; steps < 0: the rest of one
    epoch over the training pairs) for us and for ST's fit."""
    import keras

    from deepseek_tf import data as data_lib
    from deepseek_tf.config import config_from_dict
    from deepseek_tf.models import build_model
    from deepseek_tf.models.backbones import vocab_path
    from deepseek_tf.text.tokenizer import Tokenizer
    from deepseek_tf.train.compute import make_strategy
    from deepseek_tf.train.trainer import load_training_pairs

    config = config_from_dict(
        {
            "model": {"backbone": PRESET, "query_max_length": max_length, "doc_max_length": max_length},
            "data": {"dataset": str(dataset)},
            "train": {"batch_size": batch_size, "learning_rate": 2e-5, "temperature": 0.05},
        }
    )
    pairs = load_training_pairs(config)
    epoch = len(pairs) // batch_size - 1  # one epoch of batches after the warm-up step
    steps = epoch if steps < 0 else max(1, min(steps, epoch))
    out = {"pairs": len(pairs), "batch_size": batch_size, "steps": steps}

    tokenizer = Tokenizer.from_file(vocab_path(PRESET))
    ds = data_lib.pair_dataset(pairs, tokenizer, batch_size, max_length, max_length, seed=0).repeat()
    with make_strategy(config.train.strategy).scope():
        model = build_model(config, tokenizer.vocab_size)
        model.compile(optimizer=keras.optimizers.AdamW(2e-5, weight_decay=0.01, clipnorm=1.0))
        model(next(iter(ds.take(1))))
    log("  training: deepseek_tf ...")
    model.fit(ds, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)  # traces train_step
    start = time.perf_counter()
    model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)  # tf.data shuffles
    out["ours_examples_per_s"] = steps * batch_size / (time.perf_counter() - start)
    del model

    log("  training: sentence-transformers ...")
    from sentence_transformers import InputExample, losses
    from torch.utils.data import DataLoader

    st = sentence_transformer(max_length)
    examples = [InputExample(texts=[q, d]) for q, d in zip(pairs.queries, pairs.docs)]
    loss = losses.MultipleNegativesRankingLoss(st, scale=20.0)  # scale 20 = temperature 0.05

    def fit(n: int) -> float:
        loader = DataLoader(examples, shuffle=True, batch_size=batch_size, drop_last=True)
        start = time.perf_counter()
        st.fit(train_objectives=[(loader, loss)], epochs=1, steps_per_epoch=n, warmup_steps=0, show_progress_bar=False)
        return time.perf_counter() - start

    # Both sides draw shuffled batches of the same pairs (ST's Trainer shuffles whatever the loader does).
    # fit() builds a Trainer and converts the data on every call: time fit(1 + steps) - fit(1),
    # so both sides count `steps` steady-state steps. fit() may write under ./checkpoints.
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        one = fit(1)
        out["peer_examples_per_s"] = steps * batch_size / max(fit(1 + steps) - one, 1e-9)
    finally:
        os.chdir(cwd)
    return out

"""Keras callbacks of the trainers: step checkpoints, the dev-set evaluator, plain progress lines."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from deepseek_tf import data as data_lib
from deepseek_tf.config import Config
from deepseek_tf.console import PlainProgress, every_for, format_eta, is_terminal
from deepseek_tf.files import write_json


def dev_ndcg(embedder, config: Config, dev: data_lib.BeirDataset, images=None) -> float:
    """nDCG@10 (trec_eval) of exact dot-product search over the dev corpus; IMAGES: the dev
    documents' (vectors, mask) for a fused document tower (`dev_images`)."""
    from deepseek_tf.evaluate.report import trec_metrics

    doc_ids = list(dev.corpus)
    texts = [dev.doc_text(x, config.data.use_title) for x in doc_ids]
    docs = embedder.encode_docs(texts, config.eval.batch_size, images=images)
    qids = sorted(q for q in dev.qrels if q in dev.queries)
    scores = embedder.encode_queries([dev.queries[q] for q in qids], config.eval.batch_size) @ docs.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :100]
    run = {q: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(qids)}
    return trec_metrics(dev.qrels, run)[0]["ndcg@10"]


def dev_images(embedder, dev: data_lib.BeirDataset):
    """The dev documents' (vectors, mask) for a fused document tower, else None. The image backbone
    is frozen, so these are read once per run, not after every epoch; missing images were counted
    in the training data's warning already."""
    return data_lib.doc_images(
        dev.corpus, list(dev.corpus), embedder.image_dim, warn=False, reader=embedder.image_reader
    )


def dev_metric(embedder, config: Config, dev: data_lib.BeirDataset) -> Callable[[], float]:
    """`dev_ndcg` of EMBEDDER's model as it is when called, its dev images read at the first call."""
    images: list = []

    def metric() -> float:
        if not images:
            images.append(dev_images(embedder, dev))
        return dev_ndcg(embedder, config, dev, images[0])

    return metric


class Checkpointer(keras.callbacks.Callback):
    """Saves at every epoch end and, with `every`, each `every` steps (numbered by step)."""

    def __init__(self, manager: tf.train.CheckpointManager, every: int | None = None):
        super().__init__()
        self.manager, self.every = manager, every

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        if self.every and self._step() % self.every == 0:
            self.manager.save(checkpoint_number=self._step())

    def on_epoch_end(self, epoch, logs=None):
        self.manager.save(checkpoint_number=self._step())


class DevEvaluator(keras.callbacks.Callback):
    """After each epoch: dev nDCG@10 into the logs, best weights kept, early stop after
    `patience` epochs without a gain. Its state lives in best.json, so it survives a resume.
    `evaluate` returns the dev nDCG@10, or (it, {other figure: value}) to log beside it."""

    def __init__(self, evaluate, best_dir: Path, patience: int | None, model_ref):
        super().__init__()
        self.evaluate, self.patience = evaluate, patience
        self.best_dir = best_dir
        self.state_path = best_dir / "best.json"
        self.state = (
            json.loads(self.state_path.read_text())
            if self.state_path.is_file()
            else {"dev_ndcg@10": -1.0, "epoch": 0, "step": 0, "wait": 0}
        )
        self.manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model_ref), str(best_dir), max_to_keep=1)

    def restore_best(self, model, history: dict) -> None:
        """model/ holds the weights of the best dev epoch, not the last one; history["best"] says which."""
        if self.manager.latest_checkpoint:
            tf.train.Checkpoint(model=model).restore(self.manager.latest_checkpoint).expect_partial()
            history["best"] = [self.state]

    def exhausted(self) -> bool:
        return self.patience is not None and self.state["wait"] >= self.patience

    def on_epoch_end(self, epoch, logs=None):
        score, extra = self.evaluate(), {}
        if isinstance(score, tuple):  # (dev nDCG@10, other figures to log beside it)
            score, extra = score
        if logs is not None:
            logs["dev_ndcg@10"] = score
            logs.update(extra)
        step = int(self.model.optimizer.iterations.numpy())
        if score > self.state["dev_ndcg@10"]:
            self.manager.save(checkpoint_number=step)
            self.state = {"dev_ndcg@10": score, "epoch": epoch + 1, "step": step, "wait": 0}
        else:
            self.state["wait"] += 1
        write_json(self.state_path, self.state, indent=2)
        print(
            f"\nepoch {epoch + 1}: dev nDCG@10 {score:.4f} (best {self.state['dev_ndcg@10']:.4f} "
            f"at epoch {self.state['epoch']})",
            file=sys.stderr,
        )
        if self.exhausted():
            self.model.stop_training = True


class PlainProgressLogger(keras.callbacks.Callback):
    """In place of Keras's bar where output is not a terminal: every `every` steps (default:
    about `lines` lines over the fit call) and at each epoch's last step
    `epoch 1/2 step 20/67, loss 2.3141, 1.52 steps/s, ETA 31s`, then per epoch
    `epoch 1/2 done: 67 steps in 44s, 1.52 steps/s, loss 2.2010, dev_ndcg@10 0.4120`.
    No carriage returns, no escape codes."""

    def __init__(self, every: int | None = None, lines: int = 30, stream=None, clock=None):
        super().__init__()
        self.every_arg, self.lines, self.stream = every, lines, stream
        self.clock = clock or time.perf_counter
        self.bar: PlainProgress | None = None

    def on_train_begin(self, logs=None):
        self.every = None  # set at the first epoch: over the epochs this fit call runs

    def on_epoch_begin(self, epoch, logs=None):
        epochs, steps = self.params.get("epochs") or 1, self.params.get("steps")
        if self.every is None:
            self.every = self.every_arg or every_for((steps or 0) * max(1, epochs - epoch), self.lines)
        self.bar = PlainProgress(
            f"epoch {epoch + 1}/{epochs} step",
            steps,
            self.every,
            self.stream or sys.stderr,
            clock=self.clock,
            unit="steps",
        )
        self.epochs = epochs

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        self.bar.update(batch + 1, f"loss {float(loss):.4f}" if loss is not None else "")

    def on_epoch_end(self, epoch, logs=None):
        bar = self.bar
        elapsed = max(self.clock() - bar.start, 1e-9)
        figures = "".join(f", {k} {float(v):.4f}" for k, v in (logs or {}).items() if np.ndim(v) == 0)
        print(
            f"epoch {epoch + 1}/{self.epochs} done: {bar.done} steps in {format_eta(elapsed)}, "
            f"{bar.done / elapsed:.2f} steps/s{figures}",
            file=bar.stream,
            flush=True,
        )


def fit_progress(verbose: int) -> tuple[int, list[keras.callbacks.Callback]]:
    """(fit's verbose, callbacks to add): Keras's bar when stdout is a terminal; otherwise (CI,
    nohup, a file) verbose=0 and plain lines on stderr: Keras 3's bar writes ANSI codes wherever
    it goes, and redraws with `\\r` on any POSIX system. verbose=0 shows neither."""
    if not verbose:
        return 0, []
    if is_terminal(sys.stdout):
        return verbose, []
    return 0, [PlainProgressLogger()]

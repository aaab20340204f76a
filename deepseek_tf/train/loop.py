"""The one training skeleton both model kinds run: build under the strategy, restore the last
checkpoint, fit with mid-epoch resume, keep the best dev epoch, write history and model/.

A trainer supplies what differs — the model inputs' sample, the data stream, the dev metric —
and `fit_and_save` does the rest, so resume, checkpoints, history and the float32 copy behave the
same for a dual encoder and a cross-encoder.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from deepseek_tf.config import Config
from deepseek_tf.errors import UserError
from deepseek_tf.files import write_json
from deepseek_tf.train.artifacts import save_trained_model
from deepseek_tf.train.callbacks import Checkpointer, DevEvaluator, fit_progress
from deepseek_tf.train.compute import build_in_policy, float32_copy, jit_policy
from deepseek_tf.train.compute import pad_multiple as jit_pad_multiple
from deepseek_tf.train.optim import make_optimizer

HISTORY = "history.json"


class Training:
    """A model built under `strategy` from `sample` inputs for `tokenizer`'s vocabulary, compiled,
    its optimizer built and its last checkpoint in WORKDIR/checkpoints restored.
    `configure(model)` runs inside the scope before the first call (e.g. the dual encoder's
    accumulation steps)."""

    def __init__(
        self,
        config: Config,
        workdir: Path,
        strategy: tf.distribute.Strategy,
        policy: str | None,
        tokenizer,
        steps: int,
        sample: dict,
        configure: Callable[[keras.Model], None] | None = None,
    ):
        t = config.train
        self.config, self.workdir, self.policy, self.steps = config, Path(workdir), policy, steps
        self.tokenizer, self.vocab_size, self.sample = tokenizer, tokenizer.vocab_size, sample
        self.jit = jit_policy(t.jit_compile, policy, t.strategy, config.model.kind)
        self.pad_multiple = jit_pad_multiple(self.jit)
        with strategy.scope():
            model = build_in_policy(config, self.vocab_size, policy)
            if configure is not None:
                configure(model)
            model.compile(optimizer=make_optimizer(config, steps * t.epochs), jit_compile=self.jit)
            model(sample)  # variables exist before a checkpoint is restored into them
            model.optimizer.build(model.trainable_variables)
            checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
        self.model = model
        self.manager = tf.train.CheckpointManager(checkpoint, str(self.workdir / "checkpoints"), max_to_keep=2)
        self.resumed = bool(self.manager.latest_checkpoint)
        if self.resumed:
            checkpoint.restore(self.manager.latest_checkpoint).expect_partial()
            print(f"resuming from {self.manager.latest_checkpoint} (step {self.done})", file=sys.stderr)

    @property
    def done(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def fit_and_save(
        self,
        stream: Callable[[int], tf.data.Dataset],
        dev_metric: Callable[[], float | tuple] | None,
        verbose: int,
    ) -> dict:
        """Trains to train.epochs × steps (or dev early stop), resuming mid-epoch: `stream(done)`
        is the data stream with the `done` batches already seen skipped (a seeded, repeated
        tf.data pipeline). Writes history.json and model/; returns the history."""
        t, workdir, model = self.config.train, self.workdir, self.model
        evaluator = None
        callbacks: list[keras.callbacks.Callback] = []
        if dev_metric is not None:  # first: the others see dev_ndcg@10 in the logs
            evaluator = DevEvaluator(dev_metric, workdir / "best", t.patience, model)
            callbacks.append(evaluator)
        callbacks += [
            Checkpointer(self.manager, t.checkpoint_every),
            keras.callbacks.TensorBoard(str(workdir / "logs")),
        ]
        fit_verbose, shown = fit_progress(verbose)  # a bar on a terminal, plain lines in a log
        callbacks += shown  # last: the lines show dev_ndcg@10

        history_path = workdir / HISTORY
        previous = json.loads(history_path.read_text()) if history_path.is_file() else {}
        history = {k: list(v) for k, v in previous.items() if k not in ("steps", "best", "train_seconds")}
        start, steps, total = time.perf_counter(), self.steps, self.steps * t.epochs
        done = self.done
        while done < total and not (evaluator and evaluator.exhausted()):
            epoch, into = divmod(done, steps)  # a resume mid-epoch first finishes that epoch
            result = model.fit(
                stream(done),
                epochs=epoch + 1 if into else t.epochs,
                initial_epoch=epoch,
                steps_per_epoch=steps - into if into else steps,
                verbose=fit_verbose,
                callbacks=callbacks,
                shuffle=False,  # the tf.data pipeline shuffles with the seed
            )
            for k, v in result.history.items():
                history.setdefault(k, []).extend(float(x) for x in v)
            done = self.done
            if model.stop_training:
                break
        if any(not math.isfinite(x) for x in history.get("loss", [])):
            raise UserError("training diverged: loss is not finite (lower train.learning_rate?)")
        history["steps"] = [done]
        history["train_seconds"] = [round(time.perf_counter() - start, 1)]
        if evaluator is not None:
            evaluator.restore_best(model, history)
        write_history(history_path, history)
        if self.policy:  # serve, evaluate and export in float32: same weights, no bfloat16 rounding
            model = float32_copy(model, self.config, self.vocab_size, self.sample)
        save_trained_model(model, self.tokenizer, self.config, workdir / "model")
        return history


def write_history(path: Path, history: dict) -> None:
    """history.json whole or not at all."""
    write_json(path, history, indent=2)

"""Training: `python -m deepseek_tf.train --config FILE [--set k=v ...] [--workdir DIR]`.

Writes WORKDIR/{config.yaml, checkpoints/, logs/, model/, history.json}; resumes from
the last checkpoint when WORKDIR already holds one.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import keras
import tensorflow as tf

from deepseek_tf import data as data_lib
from deepseek_tf.config import Config, load_config, save_config
from deepseek_tf.errors import ConfigError, UserError, cli_entry
from deepseek_tf.models import build_model
from deepseek_tf.models.backbones import backbone_kind, vocab_path
from deepseek_tf.tokenizer import Tokenizer, build_vocab, read_vocab, save_vocab


@keras.saving.register_keras_serializable(package="deepseek_tf")
class WarmupExponentialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to `peak` over `warmup_steps`, then peak·rate^((step − warmup)/decay_steps)."""

    def __init__(self, peak: float, warmup_steps: int, decay_steps: int, decay_rate: float):
        self.peak, self.warmup_steps = peak, warmup_steps
        self.decay_steps, self.decay_rate = decay_steps, decay_rate
        self.decay = keras.optimizers.schedules.ExponentialDecay(peak, decay_steps, decay_rate)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = float(max(self.warmup_steps, 1))
        warmup_lr = self.peak * (step + 1.0) / warm
        return tf.where(step < self.warmup_steps, warmup_lr, self.decay(step - self.warmup_steps))

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate}


def make_strategy(name: str) -> tf.distribute.Strategy:
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.OneDeviceStrategy("/cpu:0" if not tf.config.list_physical_devices("GPU") else "/gpu:0")


def load_training_pairs(config: Config) -> data_lib.Pairs:
    d = config.data
    if d.pairs:
        return data_lib.read_pairs(d.pairs)
    if d.dataset:
        ds = data_lib.load_beir(d.dataset, d.train_split)
        return data_lib.pairs_from_beir(ds, d.min_label, d.use_title)
    raise ConfigError("config: set data.pairs (a pairs file) or data.dataset (a BEIR directory)")


def prepare_tokenizer(config: Config, pairs: data_lib.Pairs, out_dir: Path) -> Tokenizer:
    """Pretrained backbones bring their vocab; from scratch it is learned from the pairs."""
    m = config.model
    target = out_dir / "vocab.txt"
    if target.is_file():  # resuming: keep the vocabulary the checkpoint was trained with
        return Tokenizer(read_vocab(target), m.lowercase)
    if m.vocab:
        vocab = read_vocab(m.vocab)
    elif (path := vocab_path(m.backbone)) is not None:
        vocab = read_vocab(path)
    elif backbone_kind(m.backbone) == "scratch":
        texts = pairs.queries + pairs.docs + (pairs.negs or [])
        vocab = build_vocab(texts, m.vocab_size, m.lowercase)
    else:
        raise ConfigError(f"model.vocab: backbone {m.backbone!r} ships no vocab.txt; set model.vocab")
    save_vocab(vocab, target)
    return Tokenizer(vocab, m.lowercase)


def _make_optimizer(config: Config, total_steps: int) -> keras.optimizers.Optimizer:
    t = config.train
    schedule = WarmupExponentialDecay(t.learning_rate, int(total_steps * t.warmup_ratio),
                                      t.decay_steps, t.decay_rate)
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=t.weight_decay, clipnorm=t.clipnorm)


class _Checkpointer(keras.callbacks.Callback):
    def __init__(self, manager: tf.train.CheckpointManager):
        super().__init__()
        self.manager = manager

    def on_epoch_end(self, epoch, logs=None):
        self.manager.save(checkpoint_number=epoch + 1)


def train(config: Config, workdir: str | Path, verbose: int = 1) -> dict:
    """Trains per `config` into `workdir`; returns the history dict."""
    workdir = Path(workdir)
    t = config.train
    if t.batch_size < 1 or t.epochs < 1:
        raise ConfigError("train.batch_size and train.epochs must be >= 1")
    workdir.mkdir(parents=True, exist_ok=True)
    save_config(config, workdir / "config.yaml")
    keras.utils.set_random_seed(t.seed)

    pairs = load_training_pairs(config)
    tokenizer = prepare_tokenizer(config, pairs, workdir)
    steps = t.steps_per_epoch or len(pairs) // t.batch_size
    if steps < 1:
        raise UserError(f"only {len(pairs)} training pairs: fewer than one batch of {t.batch_size}")
    dataset = data_lib.pair_dataset(
        pairs, tokenizer, t.batch_size, config.model.query_max_length, config.model.doc_max_length,
        seed=t.seed, shuffle_buffer=config.data.shuffle_buffer,
    ).repeat()

    strategy = make_strategy(t.strategy)
    with strategy.scope():
        model = build_model(config, tokenizer.vocab_size)
        optimizer = _make_optimizer(config, steps * t.epochs)
        model.compile(optimizer=optimizer)
        model(next(iter(dataset.take(1))))  # build variables before restoring
        optimizer.build(model.trainable_variables)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer)
    manager = tf.train.CheckpointManager(checkpoint, str(workdir / "checkpoints"), max_to_keep=2)
    initial_epoch = 0
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).expect_partial()
        initial_epoch = int(optimizer.iterations.numpy()) // steps
        print(f"resuming from {manager.latest_checkpoint} (step {int(optimizer.iterations.numpy())})",
              file=sys.stderr)

    history_path = workdir / "history.json"
    previous = json.loads(history_path.read_text()) if history_path.is_file() else {}
    history = {k: list(v) for k, v in previous.items()}
    if initial_epoch < t.epochs:
        result = model.fit(
            dataset, epochs=t.epochs, initial_epoch=initial_epoch, steps_per_epoch=steps, verbose=verbose,
            callbacks=[_Checkpointer(manager), keras.callbacks.TensorBoard(str(workdir / "logs"))],
        )
        for k, v in result.history.items():
            history.setdefault(k, []).extend(float(x) for x in v)
    if any(not math.isfinite(x) for x in history.get("loss", [])):
        raise UserError("training diverged: loss is not finite (lower train.learning_rate?)")
    history["steps"] = [int(optimizer.iterations.numpy())]
    history_path.write_text(json.dumps(history, indent=2))
    save_trained_model(model, tokenizer, config, workdir / "model")
    return history


def save_trained_model(model: keras.Model, tokenizer: Tokenizer, config: Config, out: Path) -> None:
    """`model/` = model.keras + vocab.txt + config.yaml; written to a temp dir then renamed."""
    import shutil

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save(tmp / "model.keras")
    save_vocab(tokenizer.vocab, tmp / "vocab.txt")
    save_config(config, tmp / "config.yaml")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m deepseek_tf.train", description="Train a retrieval model from a YAML config.")
    p.add_argument("--config", required=True, help="YAML config file (see configs/)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.batch_size=8 (repeatable)")
    p.add_argument("--workdir", default=None, help="output directory (default: runs/<config name>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config(args.config, args.overrides)
    workdir = args.workdir or f"runs/{Path(args.config).stem}"
    history = train(config, workdir, verbose=0 if args.quiet else 1)
    loss = history.get("loss", [float("nan")])[-1]
    print(f"trained {history['steps'][0]} steps, final loss {loss:.4f}; model in {Path(workdir) / 'model'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

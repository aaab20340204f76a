"""Training: `python -m deepseek_tf.train --config FILE [--set k=v ...] [--workdir DIR]`.

Writes WORKDIR/{config.yaml, checkpoints/, logs/, model/, history.json} (and best/ with
best.json when a dev set is configured); resumes from the last checkpoint when WORKDIR
already holds one: step count, learning-rate schedule, optimizer moments and the position
in the (seeded) data stream all continue where they stopped.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from deepseek_tf import data as data_lib
from deepseek_tf import distill
from deepseek_tf.config import Config, add_run_arguments, config_and_workdir, save_config
from deepseek_tf.errors import ConfigError, UserError, cli_entry
from deepseek_tf.models import build_model
from deepseek_tf.models.backbones import backbone_kind, vocab_path
from deepseek_tf.optim import make_optimizer
from deepseek_tf.tokenizer import Tokenizer, build_vocab, read_vocab, save_vocab


def make_strategy(name: str) -> tf.distribute.Strategy:
    """mirrored: all local devices; multi_worker: the cluster in TF_CONFIG; one_device."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.OneDeviceStrategy("/cpu:0" if not tf.config.list_physical_devices("GPU") else "/gpu:0")


# CPU flags (Linux /proc/cpuinfo) of native bfloat16 matrix maths: Intel AMX or AVX512_BF16 (x86),
# BF16 (Arm v8.6+). Without them TensorFlow emulates bfloat16: measured on a 2-core AMD EPYC (Zen 2,
# AVX2 only), the Cranfield retriever recipe took 91 s per step in mixed_bfloat16 against 22 s in
# float32, where AMX made it 1.35x faster than float32.
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16", "bf16"})


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU's flags (/proc/cpuinfo text; read when None) include native bfloat16 maths.
    An unreadable /proc/cpuinfo (macOS, Windows) counts as no: float32 is never the slow choice."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features") and NATIVE_BF16_FLAGS & set(value.split()):
            return True
    return False


def precision_policy(name: str, cpuinfo: str | None = None) -> str | None:
    """The Keras dtype policy for `train.mixed_precision` (None: float32).

    auto: on GPUs mixed_bfloat16 from compute capability 8.0 (Ampere) on, else mixed_float16 (with
    loss scaling); on a CPU mixed_bfloat16 where it is native (`cpu_has_native_bf16`), else float32.
    An explicit mixed_bfloat16 on a CPU without it is kept, with a warning: it is many times slower.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        if gpus:
            capabilities = [tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0))
                            for g in gpus]
            return "mixed_bfloat16" if min(capabilities) >= (8, 0) else "mixed_float16"
        return "mixed_bfloat16" if cpu_has_native_bf16(cpuinfo) else None
    if name == "mixed_bfloat16" and not gpus and not cpu_has_native_bf16(cpuinfo):
        print("warning: train.mixed_precision mixed_bfloat16 on a CPU without native bfloat16 (no AMX, "
              "AVX512_BF16 or BF16 flag): emulated, several times slower than float32; use auto or none",
              file=sys.stderr)
    return None if name == "none" else name


# Under XLA, tokenized batches are padded to multiples of this width (Tokenizer.widen), so the
# step compiles for a few shapes instead of once per batch width.
XLA_PAD_MULTIPLE = 64


def jit_policy(name: str, policy: str | None, strategy: str, kind: str) -> bool | str:
    """Keras `jit_compile` for `train.jit_compile`, given the dtype policy, strategy and model kind.

    auto: XLA for a cross-encoder on a CPU in float32, where it measured faster (9-11 s a step
    against 11-15 s on a 2-core AMD EPYC, README); a dual encoder there gained nothing (24 s
    against 25 s), so it stays off. On GPUs Keras's own "auto". Not with bfloat16 on CPUs (never
    measured) nor multi_worker (its CPU collectives fail to compile). Keras's "auto" alone never
    uses XLA on a CPU.
    """
    if name == "auto":
        if tf.config.list_physical_devices("GPU"):
            return "auto"
        return policy is None and strategy != "multi_worker" and kind == "cross_encoder"
    return name == "xla"


def pad_multiple(jit: bool | str) -> int:
    return 1 if jit is False else XLA_PAD_MULTIPLE


def build_in_policy(config: Config, vocab_size: int, policy: str | None) -> keras.Model:
    """`build_model` under a Keras dtype policy (None: the current one), then restores the global one.

    Layers take the policy when built; later code (evaluation, export, tests) keeps float32.
    A pretrained backbone comes with the dropout rates it was saved with: `model.dropout`
    replaces them here, so the dual-encoder and cross-encoder trainers apply it alike.
    """
    previous = keras.config.dtype_policy()
    try:
        if policy:
            keras.config.set_dtype_policy(policy)
        model = build_model(config, vocab_size)
    finally:
        keras.config.set_dtype_policy(previous)
    if backbone_kind(config.model.backbone) != "scratch":
        set_dropout(model, config.model.dropout)
    return model


# ---------------------------------------------------------------------------- data
def split_dev(ds: data_lib.BeirDataset, fraction: float, seed: int):
    """(train, dev) with `fraction` of the judged queries (seeded choice) held out as dev."""
    qids = sorted(ds.qrels)
    random.Random(seed).shuffle(qids)
    n_dev = max(1, round(fraction * len(qids)))
    if n_dev >= len(qids):
        raise ConfigError(f"data.dev_fraction={fraction} leaves no training queries")
    return ds.judged_subset(qids[n_dev:]), ds.judged_subset(qids[:n_dev])


def fold_split(qids, folds: int, seed: int) -> list[set[str]]:
    """`folds` disjoint parts of the query ids (seeded shuffle, then every folds-th id)."""
    order = sorted(qids)
    random.Random(seed).shuffle(order)
    return [set(order[i::folds]) for i in range(folds)]


def check_folds(config: Config) -> None:
    d = config.data
    if d.folds == 1 or d.folds < 0 or (d.folds and not 0 <= d.fold < d.folds):
        raise ConfigError(f"data.folds must be 0 (off) or >= 2 and data.fold in [0, folds), "
                          f"got folds {d.folds}, fold {d.fold}")


def split_train_dev(ds: data_lib.BeirDataset, config: Config
                    ) -> tuple[data_lib.BeirDataset, data_lib.BeirDataset | None]:
    """(training set, dev set or None): qrels/{data.dev_split}.tsv, or data.dev_fraction of the
    training queries held out (chosen by data.dev_seed, so a soup's members hold out the same ones).
    With data.folds, part data.fold of the training queries is dropped first (cross-fitting)."""
    d = config.data
    if d.folds:
        held = fold_split(ds.qrels, d.folds, d.dev_seed)[d.fold]
        ds = ds.judged_subset(q for q in ds.qrels if q not in held)
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
    return data_lib.BeirDataset({d: ds.corpus[d] for d in ds.corpus if d in keep}, ds.queries, ds.qrels,
                                ds.dropped)


def load_training_data(config: Config) -> tuple[data_lib.Pairs, data_lib.BeirDataset | None,
                                                 data_lib.BeirDataset | None]:
    """(pairs, train BEIR set or None, dev BEIR set or None); bm25/MODEL negatives are mined here."""
    d, seed = config.data, config.train.seed
    if d.pairs:
        if d.mine_negatives or d.dev_fraction or d.dev_split or d.folds:
            raise ConfigError("data.mine_negatives, dev sets and data.folds need data.dataset (a BEIR directory)")
        return data_lib.read_pairs(d.pairs), None, None
    if not d.dataset:
        raise ConfigError("config: set data.pairs (a pairs file) or data.dataset (a BEIR directory)")
    ds = data_lib.load_beir(d.dataset, d.train_split, unknown_ids="drop")
    for what, count in ds.dropped.items():
        print(f"warning: {d.dataset}: dropped {count} {what}", file=sys.stderr)
    ds, dev = split_train_dev(ds, config)
    if dev is not None:
        dev = limit_corpus(dev, d.dev_max_docs, d.dev_seed)
        print(f"dev: {len(dev.qrels)} queries, {len(dev.corpus)} documents", file=sys.stderr)
    if d.mine_negatives and d.negatives_from != "self":
        return mined_pairs(ds, config, d.negatives_from), ds, dev
    pairs = data_lib.pairs_from_beir(ds, d.min_label, d.use_title)
    if d.title_pairs and not d.mine_negatives:
        pairs = data_lib.concat_pairs(pairs, data_lib.pairs_from_beir(data_lib.title_dataset(ds), 1, False))
    return pairs, ds, dev


def mined_pairs(ds: data_lib.BeirDataset, config: Config, source: str, embedder=None) -> data_lib.Pairs:
    """The judged pairs of `ds` with `data.hard_negatives` mined negatives each, plus (with
    `data.title_pairs`) the corpus's title/body pairs mined the same way. A MODEL `source` is
    loaded once for both."""
    from deepseek_tf.mining import mine

    d, seed = config.data, config.train.seed
    if embedder is None and source != "bm25":
        from deepseek_tf.embedders import load_embedder

        embedder = load_embedder(source)
    pairs = mine(ds, source, d.mine_top_k, d.mine_skip_top, d.mine_margin, d.min_label, seed, d.use_title,
                 embedder=embedder, per_pair=d.hard_negatives, fallback=d.mine_fallback).pairs
    if d.title_pairs:
        titles = mine(data_lib.title_dataset(ds), source, d.mine_top_k, d.mine_skip_top, d.mine_margin, 1, seed,
                      False, embedder=embedder, per_pair=d.hard_negatives, fallback=d.mine_fallback).pairs
        pairs = data_lib.concat_pairs(pairs, titles)
    return pairs


def load_training_pairs(config: Config) -> data_lib.Pairs:
    return load_training_data(config)[0]


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
        texts = pairs.queries + pairs.docs + [t for n in (pairs.negs or []) for t in ([n] if isinstance(n, str) else n)]
        vocab = build_vocab(texts, m.vocab_size, m.lowercase)
    else:
        raise ConfigError(f"model.vocab: backbone {m.backbone!r} ships no vocab.txt; set model.vocab")
    save_vocab(vocab, target)
    return Tokenizer(vocab, m.lowercase)


# ---------------------------------------------------------------------------- model
def check_config(config: Config) -> None:
    """The checks that need no data, before anything is written (by `train` and, for its members,
    by a soup). For a dual encoder they run no TensorFlow op: MultiWorkerMirroredStrategy comes first."""
    if config.model.kind == "cross_encoder":
        from deepseek_tf.rerank_train import check_cross_encoder_config

        return check_cross_encoder_config(config)
    t, d = config.train, config.data
    if t.batch_size < 1 or t.epochs < 1 or t.accumulation_steps < 1:
        raise ConfigError("train.batch_size, train.epochs and train.accumulation_steps must be >= 1")
    if not 0.0 <= t.label_smoothing < 1.0 or not 0.0 <= d.dev_fraction < 1.0:
        raise ConfigError("train.label_smoothing and data.dev_fraction must be in [0, 1)")
    if t.grade_weighting and t.loss != "infonce":
        raise ConfigError("train.grade_weighting works with train.loss: infonce")
    if d.hard_negatives < 1:
        raise ConfigError(f"data.hard_negatives must be >= 1, got {d.hard_negatives}")
    if d.judged_negatives:
        raise ConfigError("data.judged_negatives fills cross-encoder groups; a dual encoder's negatives come from "
                          "data.mine_negatives and the batch")
    check_folds(config)
    if d.mine_negatives and data_lib.run_file(d.negatives_from) is not None:
        raise ConfigError("data.negatives_from: a run file serves cross-encoder training; a dual encoder mines "
                          "from bm25, self or a MODEL")
    distill.check_distillation(config)


def check_layer_keys(config: Config) -> None:
    """Checks model.frozen_layers / model.local_layers by building the model once and dropping it,
    and that train.layer_decay has transformer layers to decay.

    Trainers call it before they write or mine anything, so a bad count costs one backbone load,
    not minutes of mining and a half-written workdir; the builder stays the one place the rules
    live. It draws from Keras's random state, so it runs before the trainer seeds it.
    """
    if config.train.layer_decay is not None and backbone_kind(config.model.backbone) == "hub":
        # a TF Hub SavedModel has no transformer_layer_N variables: the decay would do nothing
        raise ConfigError("train.layer_decay needs a keras-hub BERT backbone (scratch, HF or a trained model "
                          f"dir), not {config.model.backbone}")
    if config.model.frozen_layers or config.model.local_layers:
        build_model(config, vocab_size=2)  # the vocabulary size plays no part in these checks


def _dropout_layers(model: keras.Model) -> list[keras.layers.Dropout]:
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Dropout)]


def set_dropout(model: keras.Model, rate: float) -> int:
    """Sets every Dropout layer's rate (pretrained backbones keep their own otherwise)."""
    layers = _dropout_layers(model)
    for layer in layers:
        layer.rate = rate
    return len(layers)


def dev_ndcg(embedder, config: Config, dev: data_lib.BeirDataset) -> float:
    """nDCG@10 (trec_eval) of exact dot-product search over the dev corpus."""
    from deepseek_tf.evaluate import trec_metrics

    doc_ids = list(dev.corpus)
    docs = embedder.encode_docs([dev.doc_text(x, config.data.use_title) for x in doc_ids], config.eval.batch_size)
    qids = sorted(q for q in dev.qrels if q in dev.queries)
    scores = embedder.encode_queries([dev.queries[q] for q in qids], config.eval.batch_size) @ docs.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :100]
    run = {q: {doc_ids[j]: float(scores[i, j]) for j in top[i]} for i, q in enumerate(qids)}
    return trec_metrics(dev.qrels, run)[0]["ndcg@10"]


class _Checkpointer(keras.callbacks.Callback):
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
        self.state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {
            "dev_ndcg@10": -1.0, "epoch": 0, "step": 0, "wait": 0}
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
        tmp = self.state_path.with_name("best.json.tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.state_path)
        print(f"\nepoch {epoch + 1}: dev nDCG@10 {score:.4f} (best {self.state['dev_ndcg@10']:.4f} "
              f"at epoch {self.state['epoch']})", file=sys.stderr)
        if self.exhausted():
            self.model.stop_training = True


# ---------------------------------------------------------------------------- training
def train(config: Config, workdir: str | Path, verbose: int = 1, shared_dir: str | Path | None = None) -> dict:
    """Trains per `config` into `workdir`; returns the history dict. `shared_dir` (default: workdir)
    holds what runs of one recipe can share: a soup passes its own dir, so its members score
    their distillation teacher's pairs once between them."""
    if config.train.soup < 1:
        raise ConfigError(f"train.soup must be >= 1, got {config.train.soup}")
    if config.train.soup > 1:  # N seeded runs averaged into one model (soup.py)
        from deepseek_tf.soup import train_soup

        return train_soup(config, workdir, verbose)
    if config.model.kind == "cross_encoder":  # groups of 1 positive + k mined negatives (rerank_train.py)
        from deepseek_tf.rerank_train import train_cross_encoder

        return train_cross_encoder(config, workdir, verbose)
    workdir = Path(workdir)
    t, d = config.train, config.data
    check_config(config)
    # MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
    strategy = make_strategy(t.strategy)
    replicas = strategy.num_replicas_in_sync
    if t.batch_size % (replicas * t.accumulation_steps):
        raise ConfigError(f"train.batch_size ({t.batch_size}) must be a multiple of replicas ({replicas}) "
                          f"x train.accumulation_steps ({t.accumulation_steps})")
    check_layer_keys(config)  # before anything is written or mined
    workdir.mkdir(parents=True, exist_ok=True)
    save_config(config, workdir / "config.yaml")
    keras.utils.set_random_seed(t.seed)

    pairs, train_ds, dev = load_training_data(config)
    tokenizer = prepare_tokenizer(config, pairs, workdir)
    steps = t.steps_per_epoch or len(pairs) // t.batch_size
    if steps < 1:
        raise UserError(f"only {len(pairs)} training pairs: fewer than one batch of {t.batch_size}")

    policy = precision_policy(t.mixed_precision)
    with strategy.scope():
        model = build_in_policy(config, tokenizer.vocab_size, policy)
        model.accumulation_steps = t.accumulation_steps
        optimizer = make_optimizer(config, steps * t.epochs)
        jit = jit_policy(t.jit_compile, policy, t.strategy, config.model.kind)
        model.compile(optimizer=optimizer, jit_compile=jit)
        # build variables before restoring (eager tokenizer calls: in multi-worker mode an
        # eager iterator over a nested tf.data element hands back tuples, not dicts)
        sample = {"query": tokenizer(tf.constant(pairs.queries[:2]), config.model.query_max_length),
                  "doc": tokenizer(tf.constant(pairs.docs[:2]), config.model.doc_max_length)}
        model(sample)
        model.optimizer.build(model.trainable_variables)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    manager = tf.train.CheckpointManager(checkpoint, str(workdir / "checkpoints"), max_to_keep=2)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).expect_partial()
        print(f"resuming from {manager.latest_checkpoint} (step {int(model.optimizer.iterations.numpy())})",
              file=sys.stderr)
    elif d.mine_negatives and d.negatives_from == "self":
        pairs = _mine_with_model(model, tokenizer, config, train_ds)

    weights = None
    if t.grade_weighting:
        weights = data_lib.grade_weights(pairs.labels or [])
    teacher = distill.load_teacher_margins(d.teacher, pairs, Path(shared_dir or workdir), verbose) if d.teacher else None
    callbacks: list[keras.callbacks.Callback] = []
    evaluator = None
    if dev is not None:
        from deepseek_tf.embedders import KerasEmbedder

        embedder = KerasEmbedder(model, tokenizer, config.model.query_max_length, config.model.doc_max_length, "dev")
        evaluator = DevEvaluator(lambda: dev_ndcg(embedder, config, dev), workdir / "best", t.patience, model)
        callbacks.append(evaluator)  # first: the others see dev_ndcg@10 in the logs
    callbacks += [_Checkpointer(manager, t.checkpoint_every), keras.callbacks.TensorBoard(str(workdir / "logs"))]

    history_path = workdir / "history.json"
    previous = json.loads(history_path.read_text()) if history_path.is_file() else {}
    history = {k: list(v) for k, v in previous.items() if k not in ("steps", "best", "train_seconds")}
    start = time.perf_counter()
    total = steps * t.epochs
    done = int(model.optimizer.iterations.numpy())
    while done < total and not (evaluator and evaluator.exhausted()):
        # A resume mid-epoch first finishes that epoch; the data stream skips what was seen.
        epoch, into = divmod(done, steps)
        dataset = data_lib.pair_dataset(
            pairs, tokenizer, t.batch_size, config.model.query_max_length, config.model.doc_max_length,
            seed=t.seed, shuffle_buffer=d.shuffle_buffer, weights=weights, teacher=teacher,
            pad_multiple=pad_multiple(jit)).repeat().skip(done)
        result = model.fit(dataset, epochs=epoch + 1 if into else t.epochs, initial_epoch=epoch,
                           steps_per_epoch=steps - into if into else steps, verbose=verbose, callbacks=callbacks,
                           shuffle=False)  # the tf.data pipeline shuffles with the seed
        for k, v in result.history.items():
            history.setdefault(k, []).extend(float(x) for x in v)
        done = int(model.optimizer.iterations.numpy())
        if model.stop_training:
            break
    if any(not math.isfinite(x) for x in history.get("loss", [])):
        raise UserError("training diverged: loss is not finite (lower train.learning_rate?)")
    history["steps"] = [done]
    history["train_seconds"] = [round(time.perf_counter() - start, 1)]
    if evaluator is not None:
        evaluator.restore_best(model, history)
    tmp = history_path.with_name("history.json.tmp")
    tmp.write_text(json.dumps(history, indent=2))
    tmp.replace(history_path)
    if policy:  # serve, evaluate and export in float32: same weights, no bfloat16 rounding
        model = float32_copy(model, config, tokenizer.vocab_size, sample)
    save_trained_model(model, tokenizer, config, workdir / "model")
    return history


def float32_copy(model: keras.Model, config: Config, vocab_size: int, sample: dict) -> keras.Model:
    """`model` rebuilt under the float32 policy, holding `model`'s weights.

    Mixed precision changes only the compute dtype (variables stay float32), so the copy has
    exactly the trained weights; `sample` (one batch of inputs) builds its variables.
    """
    copy = build_in_policy(config, vocab_size, "float32")
    for mine, theirs in zip(_dropout_layers(copy), _dropout_layers(model), strict=True):
        mine.rate = theirs.rate  # the rates it trained with (set_dropout or the checkpoint's own)
    copy(sample)
    copy.set_weights(model.get_weights())
    return copy


def _mine_with_model(model, tokenizer: Tokenizer, config: Config, train_ds) -> data_lib.Pairs:
    """data.negatives_from=self: negatives from the model about to be trained (its start point)."""
    from deepseek_tf.embedders import KerasEmbedder

    if train_ds is None:
        raise ConfigError("data.mine_negatives needs data.dataset (a BEIR directory)")
    embedder = KerasEmbedder(model, tokenizer, config.model.query_max_length, config.model.doc_max_length, "self")
    return mined_pairs(train_ds, config, "self", embedder)


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
    add_run_arguments(p, "YAML config file (see configs/)", "train.batch_size=8",
                      "output directory (default: runs/<config name>)")
    return p.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config, workdir = config_and_workdir(args)
    history = train(config, workdir, verbose=0 if args.quiet else 1)
    loss = history.get("loss", [float("nan")])[-1]
    best = history.get("best", [{}])[0]
    extra = f", best dev nDCG@10 {best['dev_ndcg@10']:.4f} (epoch {best['epoch']})" if best else ""
    print(f"trained {history['steps'][0]} steps, final loss {loss:.4f}{extra}; model in {Path(workdir) / 'model'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

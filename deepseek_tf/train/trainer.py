"""Training a dual encoder from a config, with resume.

Writes WORKDIR/{config.yaml, checkpoints/, logs/, model/, history.json} (and best/ with
best.json when a dev set is configured); resumes from the last checkpoint when WORKDIR
already holds one: step count, learning-rate schedule, optimizer moments and the position
in the (seeded) data stream all continue where they stopped.
"""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import tensorflow as tf

from deepseek_tf import data as data_lib
from deepseek_tf.config import Config, save_config
from deepseek_tf.data.splits import limit_corpus, split_train_dev
from deepseek_tf.errors import ConfigError, UserError
from deepseek_tf.models.dual_encoder import LOSSES as DUAL_LOSSES
from deepseek_tf.models.dual_encoder import reads_labels
from deepseek_tf.text.tokenizer import Tokenizer
from deepseek_tf.train import distill
from deepseek_tf.train.artifacts import prepare_tokenizer
from deepseek_tf.train.callbacks import dev_metric
from deepseek_tf.train.compute import (
    make_strategy,
    precision_policy,
)
from deepseek_tf.train.loop import Training
from deepseek_tf.train.pair_images import Images, TrainingImages, training_images
from deepseek_tf.train.self_negatives import check_saved_pairs, mining_inputs, self_mined_pairs


def load_training_data(
    config: Config,
) -> tuple[data_lib.Pairs, data_lib.BeirDataset | None, data_lib.BeirDataset | None]:
    """(pairs, train BEIR set or None, dev BEIR set or None); bm25/MODEL negatives are mined here."""
    d = config.data
    if d.pairs:
        if d.mine_negatives or d.dev_fraction or d.dev_split:
            raise ConfigError("data.mine_negatives and dev sets need data.dataset (a BEIR directory)")
        return data_lib.read_pairs(d.pairs), None, None
    if not d.dataset:
        raise ConfigError("config: set data.pairs (a pairs file) or data.dataset (a BEIR directory)")
    ds = data_lib.load_beir(d.dataset, d.train_split, unknown_ids="drop")
    for line in data_lib.describe_dropped(ds.dropped):
        print(f"warning: {d.dataset}: {line}", file=sys.stderr)
    ds, dev = split_train_dev(ds, config)
    if dev is not None:
        dev = limit_corpus(dev, d.dev_max_docs, d.dev_seed)
        print(f"dev: {len(dev.qrels)} queries, {len(dev.corpus)} documents", file=sys.stderr)
    if d.mine_negatives and d.negatives_from != "self":
        return mined_pairs(ds, config, d.negatives_from), ds, dev
    return data_lib.pairs_from_beir(ds, d.min_label, d.use_title), ds, dev


def mined_pairs(
    ds: data_lib.BeirDataset, config: Config, source: str, embedder=None, images: Images | None = None
) -> data_lib.Pairs:
    """The judged pairs of `ds` with `data.hard_negatives` mined negatives each, from `source`
    (bm25, or a MODEL when `embedder` is not given); `images`: the corpus's image vectors, for an
    `embedder` whose document tower reads them (else a MODEL reads them from the corpus itself)."""
    from deepseek_tf.retrieval.mining import mine

    d, seed = config.data, config.train.seed
    if embedder is None and source != "bm25":
        from deepseek_tf.retrieval.artifacts import load_embedder

        embedder = load_embedder(source)
    return mine(
        ds,
        source,
        d.mine_top_k,
        d.mine_skip_top,
        d.mine_margin,
        d.min_label,
        seed,
        d.use_title,
        embedder=embedder,
        per_pair=d.hard_negatives,
        judged=d.judged_negatives,
        analyzer=d.analyzer,
        images=images,
    ).pairs


def load_training_pairs(config: Config) -> data_lib.Pairs:
    return load_training_data(config)[0]


# ---------------------------------------------------------------------------- model
def check_dual_config(config: Config) -> None:
    """A dual encoder's checks that need no data, before anything is written. They run no
    TensorFlow op: MultiWorkerMirroredStrategy comes first."""
    d = config.data
    if d.judged_negatives and not d.mine_negatives:
        raise ConfigError(
            "data.judged_negatives: a dual encoder takes judged negatives among its mined ones; "
            "set data.mine_negatives: true"
        )
    if d.judged_negatives > d.hard_negatives:
        raise ConfigError(
            f"data.judged_negatives ({d.judged_negatives}) must be at most data.hard_negatives ({d.hard_negatives})"
        )
    if d.mine_negatives and data_lib.run_file(d.negatives_from) is not None:
        raise ConfigError(
            "data.negatives_from: a run file serves cross-encoder training; a dual encoder mines "
            "from bm25, self or a MODEL"
        )
    t = config.train
    if t.label_weighting and t.loss != "infonce":
        raise ConfigError(f"train.label_weighting weights infonce's pairs; train.loss is {t.loss!r}")
    if t.loss not in DUAL_LOSSES:
        raise ConfigError(
            f"train.loss {t.loss!r} is a cross-encoder loss; a dual encoder takes {', '.join(DUAL_LOSSES)}"
        )
    distill.check_distillation(config)
    check_image_inputs(config)


def check_image_inputs(config: Config) -> None:
    """model.doc_inputs with image: the settings that go with it. Mined negatives and distillation
    work as for text (a text-only teacher's margins are still margins); pairs files do not."""
    m, d = config.model, config.data
    if "image" not in m.doc_inputs:
        if m.image_backbone != "none":
            raise ConfigError("model.image_backbone encodes image files for model.doc_inputs [text, image]")
        return
    if "text" not in m.doc_inputs:
        raise ConfigError("model.doc_inputs: the document tower reads text, with or without image: [text, image]")
    if d.pairs:
        raise ConfigError("model.doc_inputs with image needs data.dataset: pairs files carry no image vectors")
    if m.image_backbone != "none" and not m.image_weights:
        raise ConfigError(f"model.image_backbone {m.image_backbone} needs model.image_weights: a local weights file")


# ---------------------------------------------------------------------------- training
def train_dual_encoder(
    config: Config, workdir: str | Path, verbose: int = 1, shared_dir: str | Path | None = None
) -> dict:
    """Trains a dual encoder per `config` into `workdir`; returns the history dict. `shared_dir`
    (default: workdir) holds what runs of one recipe can share: a soup passes its own dir, so its
    members score their distillation teacher's pairs once between them."""
    workdir = Path(workdir)
    t, d = config.train, config.data
    check_dual_config(config)
    # MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
    strategy = make_strategy(t.strategy)
    replicas = strategy.num_replicas_in_sync
    if t.batch_size % (replicas * t.accumulation_steps):
        raise ConfigError(
            f"train.batch_size ({t.batch_size}) must be a multiple of replicas ({replicas}) "
            f"x train.accumulation_steps ({t.accumulation_steps})"
        )
    keras.utils.set_random_seed(t.seed)

    # Bad data is found before the workdir gets anything: a failed start leaves no config.yaml
    # that looks like the start of a run.
    pairs, train_ds, dev = load_training_data(config)
    images = None
    if "image" in config.model.doc_inputs:  # each document's image vector, checked (and encoded) once
        images = training_images(config, train_ds.corpus, pairs, verbose)
    mined_from = None
    if d.mine_negatives and d.negatives_from == "self":
        mined_from = mining_inputs(config)
        check_saved_pairs(workdir, mined_from)
    workdir.mkdir(parents=True, exist_ok=True)
    save_config(config, workdir / "config.yaml")
    tokenizer = prepare_tokenizer(config, pairs, workdir)
    steps = t.steps_per_epoch or len(pairs) // t.batch_size
    if steps < 1:
        raise UserError(f"only {len(pairs)} training pairs: fewer than one batch of {t.batch_size}")

    # eager tokenizer calls: in multi-worker mode an eager iterator over a nested tf.data element
    # hands back tuples, not dicts
    sample = {
        "query": tokenizer(tf.constant(pairs.queries[:2]), config.model.query_max_length),
        "doc": tokenizer(tf.constant(pairs.docs[:2]), config.model.doc_max_length),
    }
    if images is not None:
        vectors, mask = images.of(pairs.doc_ids[:2])
        sample["doc"] |= {"image": tf.constant(vectors), "image_mask": tf.constant(mask)}
    run = Training(
        config,
        workdir,
        strategy,
        precision_policy(t.mixed_precision),
        tokenizer,
        steps,
        sample,
        configure=lambda model: setattr(model, "accumulation_steps", t.accumulation_steps),
    )
    model = run.model
    if mined_from is not None:
        pairs = self_mined_pairs(
            workdir, mined_from, lambda: _mine_with_model(model, tokenizer, config, train_ds, images)
        )
    doc_images, neg_images = images.of_pairs(pairs) if images is not None else (None, None)
    teacher = (
        distill.load_teacher_margins(d.teacher, pairs, Path(shared_dir or workdir), verbose) if d.teacher else None
    )
    dev_score = None
    if dev is not None:
        from deepseek_tf.retrieval.embedders import KerasEmbedder

        embedder = KerasEmbedder(model, tokenizer, config.model.query_max_length, config.model.doc_max_length, "dev")
        dev_score = dev_metric(embedder, config, dev)
    # label_weighting requires labels (pair_dataset says so when they are missing); contrastive
    # uses them when the data has them
    with_labels = reads_labels(t.loss, t.label_weighting) and (t.label_weighting or pairs.labels is not None)

    def stream(done: int) -> tf.data.Dataset:
        return (
            data_lib.pair_dataset(
                pairs,
                tokenizer,
                t.batch_size,
                config.model.query_max_length,
                config.model.doc_max_length,
                seed=t.seed,
                shuffle_buffer=d.shuffle_buffer,
                teacher=teacher,
                pad_multiple=run.pad_multiple,
                labels=with_labels,
                images=doc_images,
                neg_images=neg_images,
            )
            .repeat()
            .skip(done)
        )

    return run.fit_and_save(stream, dev_score, verbose)


def _mine_with_model(
    model, tokenizer: Tokenizer, config: Config, train_ds, images: TrainingImages | None
) -> data_lib.Pairs:
    """data.negatives_from=self: negatives from the model about to be trained (its start point),
    a fused one encoding each document with the image vector training reads for it."""
    from deepseek_tf.retrieval.embedders import KerasEmbedder

    if train_ds is None:
        raise ConfigError("data.mine_negatives needs data.dataset (a BEIR directory)")
    embedder = KerasEmbedder(model, tokenizer, config.model.query_max_length, config.model.doc_max_length, "self")
    corpus_images = None if images is None else images.of(list(train_ds.corpus))
    return mined_pairs(train_ds, config, "self", embedder, corpus_images)

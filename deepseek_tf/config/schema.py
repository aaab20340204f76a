"""The config's schema: one frozen dataclass per section, each key declared once by `setting(...)`
with its default, description and rule (type, range, choices), from which loading checks and
docs/configuration.md are derived."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any


def setting(
    default: Any = None,
    doc: str = "",
    *,
    range: str | None = None,
    choices: tuple[str, ...] | None = None,
    factory: Any = None,
) -> Any:
    """A config key: its default, one-line description, and the rule load time checks.

    `range` is ">= a", "> a", "<= a", "< a" or an interval "[a, b]", "(a, b]", "[a, b)", "(a, b)";
    None passes for an Optional key (its "off" value). `choices` closes a string key's values.
    docs/configuration.md is generated from these (`make docs`).
    """
    metadata = {"doc": doc, "range": range, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ModelConfig:
    kind: str = setting(
        "dual_encoder",
        "what to build: a retriever (two towers) or a reranker (one score per pair)",
        choices=("dual_encoder", "cross_encoder"),
    )
    backbone: str = setting(
        "scratch",
        "the transformer under each tower: `scratch`, a preset name "
        "(`all-MiniLM-L6-v2`), a Hugging Face BERT checkpoint directory, a TF Hub handle "
        "(URL, or `hub:` + a local SavedModel directory), or a trained dual encoder's `model/` dir",
    )
    vocab: str | None = setting(
        None,
        "WordPiece `vocab.txt` for a scratch backbone; unset: learned from the "
        "training texts (a pretrained backbone brings its own)",
    )
    vocab_size: int = setting(8000, "target vocabulary size when the vocabulary is learned from the data", range=">= 1")
    lowercase: bool = setting(True, "lowercase text before WordPiece (false for cased vocabularies)")
    num_layers: int = setting(2, "scratch backbone: transformer layers", range=">= 1")
    num_heads: int = setting(2, "scratch backbone: attention heads (must divide hidden_dim)", range=">= 1")
    hidden_dim: int = setting(32, "scratch backbone: hidden size", range=">= 1")
    intermediate_dim: int = setting(64, "scratch backbone: feed-forward size", range=">= 1")
    dropout: float = setting(
        0.1, "dropout rate in the backbone while training (also replaces a pretrained backbone's rate)", range="[0, 1)"
    )
    max_position: int = setting(512, "scratch backbone: longest sequence it has position embeddings for", range=">= 1")
    query_max_length: int = setting(
        32,
        "tokens kept of a query ([CLS] and [SEP] included); light cross-encoder: the query tower's length",
        range=">= 2",
    )
    doc_max_length: int = setting(
        256,
        "tokens kept of a document; full cross-encoder: of the whole `[CLS] query [SEP] document [SEP]` pair",
        range=">= 2",
    )
    query_prefix: str | None = setting(
        None,
        "text put before every query, in training and in every export "
        "(so users pass raw text); unset: the backbone's own "
        "(multilingual-e5-small: `query: `; none for the others)",
    )
    doc_prefix: str | None = setting(
        None,
        "text put before every document; unset: the backbone's own "
        "(multilingual-e5-small: `passage: `; none for the others)",
    )
    pooling: str = setting(
        "mean", "token states to one vector: mean over the attention mask, or the [CLS] state", choices=("mean", "cls")
    )
    projection_dim: int | None = setting(
        None, "Dense projection of the pooled vector to this size; unset: none", range=">= 1"
    )
    normalize: bool = setting(True, "L2-normalise embeddings (dot product = cosine)")
    shared_towers: bool = setting(True, "one encoder for queries and documents; false: two towers")
    trainable: bool = setting(
        True, "train the backbone's weights; false freezes them (e.g. a light cross-encoder on a retriever's tower)"
    )
    freeze_embeddings: bool = setting(
        False,
        "keep the backbone's token-embedding table fixed while the rest trains (multilingual-e5-small: "
        "96M of its 118M weights, whose dense gradient and optimizer state dominate a CPU step's time "
        "and memory)",
    )
    interaction: str = setting(
        "full",
        "cross-encoder: `full` reads `[CLS] q [SEP] d [SEP]` through one "
        "backbone; `light` lets query tokens attend over document tokens from the towers",
        choices=("full", "light"),
    )
    interaction_heads: int = setting(
        4,
        "light cross-encoder: attention heads of the query-over-document layer (must divide the hidden size)",
        range=">= 1",
    )
    score_head: str = setting(
        "dense",
        "cross-encoder score: `dense` = Dense(1) on the pooled pair; `cosine` = "
        "cos(query part, document part) / train.temperature + a zero-initialised Dense(1), "
        "so a sentence-transformers checkpoint starts out ranking like its bi-encoder",
        choices=("dense", "cosine"),
    )
    doc_inputs: tuple[str, ...] = setting(
        ("text",),
        "what the document tower reads: `[text]`, or `[text, image]` to fuse each document's "
        "precomputed image vector (corpus.jsonl field `image_embedding`) with its text; queries stay text",
        choices=("text", "image"),
    )
    image_dim: int = setting(
        512,
        "length of every document's image vector (model.doc_inputs with image): the corpus's "
        "`image_embedding` vectors, or the output width of model.image_backbone",
        range=">= 1",
    )
    image_backbone: str = setting(
        "none",
        "`none`: documents carry precomputed vectors (`image_embedding`); a keras.applications "
        "backbone name: documents carry image files (corpus.jsonl field `image`, a path relative to "
        "the corpus), decoded and resized in tf.data and encoded by this frozen backbone, which the "
        "trained model keeps",
        choices=("none", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "resnet50"),
    )
    image_weights: str | None = setting(
        None,
        "model.image_backbone's weights: a local file (the keras.applications `..._notop.h5` file, or "
        "one written by `save_weights`); nothing is downloaded",
    )
    image_size: int = setting(224, "model.image_backbone: images are resized to image_size × image_size", range=">= 32")
    fusion: str = setting(
        "concat",
        "how the document tower joins text t and image i (both to the embedding size d): `concat` = "
        "Dense_d([t; i]); `sum` = t + Dense_d(i); `gated` = t + σ(Dense_d([t; p]))·p with p = Dense_d(i), "
        "so the gate can shut out an uninformative image. A document without an image reads a learned "
        "placeholder vector",
        choices=("concat", "sum", "gated"),
    )


@dataclass(frozen=True)
class DataConfig:
    dataset: str | None = setting(None, "BEIR-layout directory (corpus.jsonl, queries.jsonl, qrels/*.tsv)")
    train_split: str = setting("train", "qrels split to train on (qrels/{train_split}.tsv)")
    dev_split: str | None = setting(
        None, "qrels split for early stopping and the best checkpoint; unset: data.dev_fraction decides"
    )
    pairs: str | None = setting(
        None, "CSV/TSV/JSONL training pairs (query, doc_content[, neg_doc][, label]) instead of data.dataset"
    )
    min_label: int = setting(1, "qrels grades below this are not positives (judged non-relevant)", range=">= 1")
    use_title: bool = setting(True, "prefix each document's text with its title")
    shuffle_buffer: int = setting(10000, "tf.data shuffle buffer (training pairs or groups)", range=">= 1")
    negatives_from: str = setting(
        "bm25",
        "first stage that negatives are mined from: `bm25`, `self` (dual "
        "encoder: the model about to be trained), a retriever MODEL (trained `model/` "
        "dir or preset), or `run:PATH` (cross-encoder: a TREC run file)",
    )
    mine_top_k: int = setting(30, "mine negatives from the first stage's top-k", range=">= 1")
    num_negatives: int = setting(
        3, "cross-encoder: negatives per group (a group = 1 judged positive + these)", range=">= 1"
    )
    judged_negatives: int = setting(
        0,
        "up to this many of each group's (cross-encoder) or each mined pair's "
        "(dual encoder) negatives are the query's judged non-relevant documents, "
        "the rest mined (at most data.num_negatives / data.hard_negatives)",
        range=">= 0",
    )
    analyzer: str = setting(
        "default",
        "lexical analyzer of BM25 negative mining: `default` (decided on the "
        "corpus: `cjk` when >= 30% of letters are CJK, else `mixed`), `mixed`, `cjk`, "
        "`english`, `jieba`",
        choices=("default", "mixed", "cjk", "english", "jieba"),
    )
    mine_negatives: bool = setting(
        False, "dual encoder: mine data.hard_negatives per pair from data.negatives_from before training"
    )
    mine_skip_top: int = setting(
        3,
        "dual-encoder mining: skip the first stage's best ranks (likely unjudged "
        "positives); must be below data.mine_top_k",
        range=">= 0",
    )
    mine_margin: float = setting(
        0.05, "dual-encoder mining: skip documents scoring above (1 − margin)·score(positive)", range="[0, 1)"
    )
    hard_negatives: int = setting(
        1, "dual encoder: mined negatives per pair (each joins the in-batch candidates)", range=">= 1"
    )
    dev_fraction: float = setting(
        0.0,
        "hold out this fraction of the training queries as the dev set (0: none, unless data.dev_split)",
        range="[0, 1)",
    )
    dev_seed: int = setting(
        42,
        "which queries data.dev_fraction holds out; separate from train.seed so a "
        "soup's members and both stages of a pipeline hold out the same ones",
        range=">= 0",
    )
    dev_max_docs: int = setting(
        20000, "dev ranking corpus: the judged documents plus a seeded sample up to this many", range=">= 1"
    )
    dev_max_queries: int | None = setting(
        None,
        "cross-encoder: rerank a seeded sample of this many dev queries after each epoch "
        "(reranking every dev query can take longer than the epoch); unset: all",
        range=">= 1",
    )
    teacher: str | None = setting(
        None,
        "dual encoder: a trained cross-encoder (`model/` dir or its "
        "SavedModel) whose margins are distilled (train.distill_weight, or "
        "train.loss: margin_mse)",
    )


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = setting(32, "pairs per step (cross-encoder: groups per step), summed over replicas", range=">= 1")
    epochs: int = setting(1, "passes over the training data", range=">= 1")
    steps_per_epoch: int | None = setting(None, "steps per epoch; unset: one pass over the data", range=">= 1")
    learning_rate: float = setting(5e-5, "AdamW peak learning rate (after warm-up)", range="> 0")
    decay_steps: int = setting(
        1000, "exponential decay: the rate is multiplied by train.decay_rate every this many steps", range=">= 1"
    )
    decay_rate: float = setting(0.9, "exponential decay factor per train.decay_steps (1: constant)", range="(0, 1]")
    warmup_ratio: float = setting(0.1, "fraction of all steps spent warming the rate up linearly", range="[0, 1)")
    weight_decay: float = setting(0.01, "AdamW decoupled weight decay", range=">= 0")
    clipnorm: float | None = setting(1.0, "clip each gradient to this norm; unset: no clipping", range="> 0")
    loss: str = setting(
        "infonce",
        "dual encoder: `infonce` (in-batch softmax), `contrastive`, `triplet`, "
        "`margin_mse` (distillation alone); cross-encoder: `listwise`, `bce`, `ranknet`, "
        "`hinge` (`infonce` means `listwise` there)",
        choices=("infonce", "contrastive", "triplet", "bce", "ranknet", "hinge", "listwise", "margin_mse"),
    )
    temperature: float = setting(
        0.05,
        "softmax temperature τ of infonce / listwise scores and the cosine score head (score = cos / τ)",
        range="> 0",
    )
    margin: float = setting(0.5, "margin of the contrastive, triplet and hinge losses", range=">= 0")
    strategy: str = setting(
        "mirrored",
        "tf.distribute strategy: all local devices, one device, or the cluster in TF_CONFIG",
        choices=("mirrored", "one_device", "multi_worker"),
    )
    seed: int = setting(42, "seeds weights, data order and mining", range=">= 0")
    soup: int = setting(
        1,
        "> 1: train this many runs (seeds seed, seed + 1, …) and average their weights "
        "into one model (a uniform model soup; needs a pretrained backbone)",
        range=">= 1",
    )
    checkpoint_every: int | None = setting(
        None, "checkpoint every this many steps; unset: at the end of every epoch", range=">= 1"
    )
    mask_duplicates: bool = setting(
        True,
        "infonce: a candidate that is another positive of the query (same "
        "query or document text) leaves the softmax instead of being a negative",
    )
    gather_across_replicas: bool = setting(
        True,
        "infonce: score each replica's queries against every "
        "replica's documents, as one device would on the global batch",
    )
    accumulation_steps: int = setting(
        1,
        "split each batch into this many micro-batches (GradCache: the same "
        "loss and update as the whole batch, the memory of one micro-batch); "
        "train.batch_size must be a multiple of replicas × this",
        range=">= 1",
    )
    mixed_precision: str = setting(
        "none",
        "Keras dtype policy; `auto`: bfloat16 where the hardware has it "
        "natively, else float32 (the saved model is float32 either way)",
        choices=("none", "auto", "mixed_bfloat16", "mixed_float16"),
    )
    jit_compile: str = setting(
        "auto",
        "compile the training step with XLA: `auto` (cross-encoders on CPUs in "
        "float32, Keras's own choice on GPUs), `xla`, or `none`",
        choices=("auto", "xla", "none"),
    )
    patience: int | None = setting(
        None, "stop after this many epochs without a dev nDCG@10 gain; unset: never", range=">= 1"
    )
    label_weighting: bool = setting(
        False,
        "infonce: weight each pair's loss by its graded label (a pair "
        "judged 2 counts twice one judged 1), so the ranking favours the more "
        "relevant documents that nDCG's gains reward",
    )
    distill_weight: float = setting(
        0.0,
        "dual encoder with data.teacher: loss = train.loss + this × Margin-MSE against the teacher's margins (0: off)",
        range=">= 0",
    )


QUANT_MODES = ("none", "float16", "dynamic", "int8")  # TFLite export precisions (export.tflite)


@dataclass(frozen=True)
class ExportConfig:
    quantize: str = setting("none", "TFLite weights and activations", choices=QUANT_MODES)
    tolerance: float = setting(1e-4, "largest output drift from the Keras model an export may have", range="> 0")


@dataclass(frozen=True)
class EvalConfig:
    split: str = setting("test", "qrels split evaluated")
    top_k: int = setting(100, "documents retrieved per query", range=">= 1")
    batch_size: int = setting(64, "texts per encoding batch", range=">= 1")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = setting(doc="the encoder and its heads", factory=ModelConfig)
    data: DataConfig = setting(doc="training data and negatives", factory=DataConfig)
    train: TrainConfig = setting(doc="optimisation and distribution", factory=TrainConfig)
    export: ExportConfig = setting(doc="SavedModel / TFLite export", factory=ExportConfig)
    eval: EvalConfig = setting(doc="evaluation", factory=EvalConfig)


# Keys of experiments that did not ship. Model dirs and configs written while they existed list
# them at these (off) values, and still load; any other value is refused.
RETIRED: dict[str, Any] = {
    "model.frozen_layers": 0,
    "model.local_layers": 0,
    "model.first_stage_weight": 0.0,
    "data.lower_graded": 0,
    "data.positives_per_group": 1,
    "data.negatives_top_share": 0.0,
    "data.negatives_top_depth": 20,
    "data.mine_fallback": "random",
    "data.title_pairs": False,
    "data.folds": 0,
    "data.fold": 0,
    "train.learn_temperature": False,
    "train.symmetric": False,
    "train.label_smoothing": 0.0,
    "train.grade_weighting": False,
    "train.ema_momentum": None,
    "train.layer_decay": None,
}


def iter_settings(cls: type = Config, prefix: str = ""):
    """(dotted key, type, dataclasses.Field) of every leaf key, in declaration order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            yield from iter_settings(tp, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, tp, f

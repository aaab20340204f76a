"""YAML in, frozen typed dataclasses out.

Loading is strict: an unknown key, a value of the wrong type, outside its range or not among
its choices is a `ConfigError` naming the dotted key and the file (exit code 2 on the CLI).
`--set section.key=value` overrides are parsed as YAML scalars and checked the same way.
Each key's default, description and rule live in one place, its `setting(...)` below; the
load-time checks and docs/configuration.md (`make docs`) are both derived from them.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deepseek_tf.errors import ConfigError


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


_BOUND = re.compile(r"^(>=|>|<=|<)\s*(\S+)$")
_INTERVAL = re.compile(r"^([\[(])\s*([^,\s]+)\s*,\s*([^\]\)\s]+)\s*([\])])$")


def in_range(value: float, rule: str) -> bool:
    """Whether `value` satisfies a `setting` range rule (see `setting`)."""
    rule = rule.strip()
    m = _BOUND.match(rule)
    if m:
        op, bound = m.group(1), float(m.group(2))
        return {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}[op]
    m = _INTERVAL.match(rule)
    if not m:
        raise ValueError(f"not a range rule: {rule!r}")
    lo, hi = float(m.group(2)), float(m.group(3))
    above = value >= lo if m.group(1) == "[" else value > lo
    below = value <= hi if m.group(4) == "]" else value < hi
    return above and below


def _check_rule(value: Any, f: dataclasses.Field, key: str, source: str, written: Any = None) -> None:
    """The key's range or choices (its `setting` metadata); None (an unset Optional) passes.
    `written`: the value as the file or --set gave it, for the message."""
    written = value if written is None else written
    if value is None:
        return
    rule, choices = f.metadata.get("range"), f.metadata.get("choices")
    if isinstance(value, tuple):  # a list key: the rule holds for every item
        for item in value:
            _check_rule(item, f, key, source, written)
        return
    if rule and not in_range(value, rule):
        shown = rule if rule[0] in "<>" else f"in {rule}"
        raise ConfigError(f"{source}: '{key}' must be {shown}, got {written!r}")
    if choices and value not in choices:
        raise ConfigError(f"{source}: '{key}' must be one of {', '.join(choices)}, got {written!r}")


# Closed sets of values, from the `setting` metadata (kept as a table for callers that list them).
CHOICES: dict[str, tuple[str, ...]] = {
    key: f.metadata["choices"] for key, _, f in iter_settings() if f.metadata.get("choices")
}


def _check_type(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_type(value, inner, key, source)
    if origin is tuple:  # a list of strings in YAML (`[text, image]`)
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{source}: '{key}' must be a list of strings, got {value!r}")
        if len(set(value)) != len(value):
            raise ConfigError(f"{source}: '{key}' names an item twice: {value!r}")
        return tuple(value)
    if tp is float and isinstance(value, str):
        try:  # YAML 1.1 reads `1e-4` (no dot) as a string
            value = float(value)
        except ValueError:
            pass
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[tp]
    if not ok:
        raise ConfigError(f"{source}: '{key}' must be {tp.__name__}, got {value!r}")
    return float(value) if tp is float else value


def _build(cls: type, raw: Any, prefix: str, source: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or '<top>'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key in fields:
            continue
        if prefix + key in RETIRED:
            if raw[key] != RETIRED[prefix + key]:
                raise ConfigError(f"{source}: '{prefix}{key}' is no longer a setting; remove it")
            continue
        raise ConfigError(f"{source}: unknown key '{prefix}{key}'")
    kwargs = {}
    for name, f in fields.items():
        if name not in raw:
            continue
        tp, key = hints[name], prefix + name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw[name], key + ".", source)
        else:
            value = _check_type(raw[name], tp, key, source)
            _check_rule(value, f, key, source, raw[name])
            kwargs[name] = value
    return cls(**kwargs)


def _apply_override(raw: dict, override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"--set: expected key.sub=value, got '{override}'")
    dotted, text = override.split("=", 1)
    parts = dotted.strip().split(".")
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set: '{dotted}' does not name a config key")
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        node[parts[-1]] = text


def config_from_dict(raw: dict, source: str = "<dict>") -> Config:
    return _build(Config, raw, "", source)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses what would silently change a config: a key given twice (PyYAML keeps
    the last, so a second `train:` block dropped the first) and aliases (`*name`): a few lines of
    nested aliases expand to billions of nodes (an 8 MB error line, 912 MB of memory)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not accepted in a config: write the values out", mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {str(key)[:40]!r} (first at line {seen[key]}; PyYAML would keep only the last)",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Reads a YAML config strictly and applies `key.sub=value` overrides."""
    raw: dict = {}
    source = str(path) if path else "<defaults>"
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        data = path.read_bytes()
        try:
            raw = yaml.load(data.decode("utf-8"), Loader=_StrictLoader) or {}
        except UnicodeDecodeError as e:  # the line, so the bad byte can be found
            line = data[: e.start].count(b"\n") + 1
            raise ConfigError(f"{path}:{line}: not UTF-8 (byte {e.start})") from None
        except yaml.YAMLError as e:  # PyYAML's marks are 0-based; editors count lines from 1
            mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            what = (getattr(e, "problem", None) or str(e).splitlines()[0])[:200]  # one short line, whatever the input
            raise ConfigError(f"{where}: not valid YAML ({what})") from None
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{path}: expected a YAML mapping of sections (model:, data:, train:), got {type(raw).__name__}"
            )
    for override in overrides:
        _apply_override(raw, override)
        source = f"{source} (with --set)" if "--set" not in source else source
    return config_from_dict(raw, source)


def config_to_dict(config: Config) -> dict:
    """The config as plain YAML/JSON values (list keys as lists)."""
    return {
        section: {k: list(v) if isinstance(v, tuple) else v for k, v in keys.items()}
        for section, keys in dataclasses.asdict(config).items()
    }


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")


def add_run_arguments(p: argparse.ArgumentParser, config_help: str, set_example: str, workdir_help: str) -> None:
    """--config, --set, --workdir and --quiet: the arguments every command that trains takes."""
    p.add_argument("--config", required=True, help=config_help)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value, e.g. --set {set_example} (repeatable)",
    )
    p.add_argument("--workdir", default=None, help=workdir_help)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_and_workdir(args: argparse.Namespace, suffix: str = "") -> tuple[Config, str]:
    """The config of `add_run_arguments`' arguments, and --workdir or runs/<config name><suffix>."""
    return load_config(args.config, args.overrides), args.workdir or f"runs/{Path(args.config).stem}{suffix}"


# ---------------------------------------------------------------------------- reference
def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is tuple:
        return "list of str"
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return f"{args[0].__name__} or null" if args else tp.__name__


def _yaml_value(value: Any) -> str:
    value = list(value) if isinstance(value, tuple) else value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def reference_markdown() -> str:
    """docs/configuration.md: every key with its type, default, allowed values and description."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from the dataclasses in deepseek_tf/config.py by `make docs`; do not edit by hand. -->",
        "",
        "A config is a YAML file of the sections below (`python -m deepseek_tf.train --config FILE`); "
        "`--set section.key=value` overrides one key. Every key is optional. Loading is strict: an "
        "unknown key, a value of the wrong type, outside its range or not among its choices stops "
        "the command with one line naming the key and the file, before anything is written. "
        "`null` turns off a key whose type says `or null`.",
        "",
    ]
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        lines += [
            f"## `{section.name}`: {section.metadata['doc']}",
            "",
            "| key | type | default | allowed | description |",
            "|---|---|---|---|---|",
        ]
        for key, tp, f in iter_settings(hints[section.name], f"{section.name}."):
            choices, rule = f.metadata.get("choices"), f.metadata.get("range")
            allowed = ", ".join(f"`{c}`" for c in choices) if choices else f"`{rule}`" if rule else "any"
            doc = f.metadata["doc"].replace("|", "\\|")
            lines.append(f"| `{key}` | {_type_name(tp)} | `{_yaml_value(f.default)}` | {allowed} | {doc} |")
        lines.append("")
    return "\n".join(lines)


def write_reference(path: str | Path = "docs/configuration.md") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(reference_markdown(), encoding="utf-8")
    return path


if __name__ == "__main__":  # `make docs`
    import sys

    print(f"wrote {write_reference(*sys.argv[1:2])}")

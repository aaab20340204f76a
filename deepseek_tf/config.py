"""YAML in, frozen typed dataclasses out.

Loading is strict: an unknown key, a value of the wrong type or a missing required
value is a `ConfigError` naming the dotted key and the file (exit code 2 on the CLI).
`--set section.key=value` overrides are parsed as YAML scalars and checked the same way.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from deepseek_tf.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    kind: str = "dual_encoder"  # dual_encoder | cross_encoder
    # "scratch", a preset name (all-MiniLM-L6-v2), a Hugging Face BERT checkpoint
    # directory, or a TF Hub handle (URL or local SavedModel directory).
    backbone: str = "scratch"
    vocab: Optional[str] = None  # vocab.txt; built from the training texts when None
    vocab_size: int = 8000  # target size when the vocabulary is built from data
    lowercase: bool = True
    num_layers: int = 2
    num_heads: int = 2
    hidden_dim: int = 32
    intermediate_dim: int = 64
    dropout: float = 0.1
    max_position: int = 512
    query_max_length: int = 32
    doc_max_length: int = 256
    pooling: str = "mean"  # mean | cls
    projection_dim: Optional[int] = None
    normalize: bool = True
    shared_towers: bool = True
    trainable: bool = True
    # Freeze the embeddings and the first N transformer layers (keras-hub BERT backbones): fewer
    # weights to fit on a few hundred queries, and no backward pass below layer N (faster steps).
    frozen_layers: int = 0
    # Cross-encoder only: "full" reads [CLS] q [SEP] d [SEP] through one backbone; "light" lets
    # query tokens attend over document tokens from the (frozen or trainable) towers.
    interaction: str = "full"  # full | light
    # full: the bottom N layers attend within the query and within the document only (late
    # interaction), so they read each text as the bi-encoder tower did; 0 = all layers joint.
    local_layers: int = 0
    interaction_heads: int = 4  # light: attention heads of the query-over-document layer
    # full: "dense" = Dense(1) on the pooled pair; "cosine" = cos(mean of query-segment tokens,
    # mean of document-segment tokens) / train.temperature + a zero-initialised Dense(1), so a
    # sentence-transformers checkpoint starts out ranking like the bi-encoder it came from.
    score_head: str = "dense"  # dense | cosine
    # Cross-encoder: rank by score + first_stage_weight · z, z the first stage's score standardised
    # over the query's top-k candidates. Training puts the same term in the loss (data.negatives_from
    # is the first stage), so the cross-encoder learns a correction to the retriever. 0 = off.
    first_stage_weight: float = 0.0


@dataclass(frozen=True)
class DataConfig:
    dataset: Optional[str] = None  # BEIR-layout directory
    train_split: str = "train"
    dev_split: Optional[str] = None
    pairs: Optional[str] = None  # CSV/TSV/JSONL with query, doc_content[, neg_doc][, label]
    min_label: int = 1  # qrels below this grade are not used as positives
    use_title: bool = True
    shuffle_buffer: int = 10000
    # Cross-encoder training: negatives mined from a first-stage retriever's top-k
    # ("bm25" or a retriever MODEL: trained model dir / preset), judged positives excluded.
    negatives_from: str = "bm25"
    mine_top_k: int = 30
    num_negatives: int = 3  # per positive; one group = 1 positive + num_negatives documents
    # Up to this many of those slots hold the query's judged positives graded below the group's
    # positive, so a graded loss (listwise, ranknet, hinge) learns the grades, not just judged > not.
    lower_graded: int = 0
    # Up to this many of those slots hold the query's judged non-relevant documents (grade below
    # min_label) in every group, instead of only when the pool draw finds them: an assessor's "no"
    # marks the hardest negatives (on Cranfield, the paper the question was written from).
    judged_negatives: int = 0
    # Up to this many of a query's judged positives share one group (with num_negatives mined
    # negatives, plus more where a query has fewer positives left), so one forward pass over the
    # negatives serves several positives; pair with train.loss: multi_positive. 1 = one per group.
    positives_per_group: int = 1
    # This share of a group's mined negatives comes from the first negatives_top_depth of the
    # query's pool (the first stage's best non-positives), the rest from past them; 0 = uniform.
    negatives_top_share: float = 0.0
    negatives_top_depth: int = 20
    # Dual encoder: one mined hard negative per pair (source: negatives_from, from its top
    # mine_top_k), skipping the mine_skip_top best ranks and any document scoring above
    # (1 − mine_margin)·score(positive); judged-relevant documents are never taken.
    mine_negatives: bool = False
    mine_skip_top: int = 3
    mine_margin: float = 0.05
    # Where a pair's negatives come from when the window has too few under the ceiling:
    # "random" unjudged documents, or "below": the best-ranked ones under the ceiling
    # past the window (score > 0), random only after those run out.
    mine_fallback: str = "random"
    hard_negatives: int = 1  # dual encoder: mined negatives per pair (each joins the candidates)
    # Add (title, body) pairs from the corpus itself (every document with both; see
    # data.title_dataset): in-domain training signal without judgments. Mined like the rest
    # (dual encoder: pairs; cross-encoder: groups of the same size as the judged ones).
    title_pairs: bool = False
    # Dev set for early stopping / best checkpoint: qrels/{dev_split}.tsv, or else this
    # fraction of the training queries held out (0 = no dev evaluation).
    dev_fraction: float = 0.0
    # Which queries dev_fraction holds out. Not train.seed: a soup's members (seeds seed + i)
    # and both stages of a pipeline must hold out the same queries for the dev figure to be honest.
    dev_seed: int = 42
    dev_max_docs: int = 20000  # dev ranking corpus: judged docs + a seeded sample up to this
    # Cross-fitting (deepseek-tf crossfit): with folds = K >= 2 the judged training
    # queries are split into K parts (by dev_seed) and part `fold` is left out of training.
    folds: int = 0
    fold: int = 0
    # Dual encoder distillation: a trained cross-encoder (model/ dir or its SavedModel) scores
    # each pair's positive and hard negatives once before training; train.loss: margin_mse (or
    # train.distill_weight > 0) makes the student's score margins regress its margins.
    teacher: Optional[str] = None


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32
    epochs: int = 1
    steps_per_epoch: Optional[int] = None  # None: one pass over the data
    learning_rate: float = 5e-5
    decay_steps: int = 1000
    decay_rate: float = 0.9
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    clipnorm: Optional[float] = 1.0
    loss: str = "infonce"  # infonce | contrastive | triplet
    temperature: float = 0.05
    learn_temperature: bool = False
    symmetric: bool = False
    margin: float = 0.5
    strategy: str = "mirrored"  # mirrored | one_device | multi_worker
    seed: int = 42
    # > 1: train this many runs (seeds seed, seed + 1, …) and average their weights into one
    # model, a uniform model soup (deepseek_tf/soup.py); needs a pretrained backbone.
    soup: int = 1
    checkpoint_every: Optional[int] = None  # steps; None: end of every epoch
    label_smoothing: float = 0.0  # infonce: ε of the smoothed targets
    mask_duplicates: bool = True  # infonce: pairs sharing a query/document are not negatives
    gather_across_replicas: bool = True  # infonce: negatives from every replica's batch
    accumulation_steps: int = 1  # micro-batches per batch (GradCache: same loss as the batch)
    mixed_precision: str = "none"  # none | auto (compute.precision_policy) | mixed_bfloat16 | mixed_float16
    # auto | xla | none: compile the training step with XLA (compute.jit_policy; auto: cross-encoders
    # on CPUs in float32, where it was measured faster, and Keras's own choice on GPUs)
    jit_compile: str = "auto"
    # infonce: weight each pair by its graded judgment / the mean grade (nDCG's gains); a
    # cross-encoder's listwise loss: weight each group by its positive's grade
    grade_weighting: bool = False
    patience: Optional[int] = None  # epochs without dev nDCG@10 gain before stopping; None: never
    # in (0, 1): keep an exponential moving average of the weights (avg = m·avg + (1 − m)·w after
    # each step) and save it instead of the last step's weights (Polyak averaging); None: off
    ema_momentum: Optional[float] = None
    # in (0, 1): layer-wise learning-rate decay; layer i of L steps at lr·d^(L−1−i), the
    # embeddings at lr·d^L, the head at lr (deepseek_tf/optim.py); None: one rate for all
    layer_decay: Optional[float] = None
    # Dual encoder with data.teacher: loss = train.loss + distill_weight · margin_mse
    # (train.loss: margin_mse distills alone).
    distill_weight: float = 0.0


@dataclass(frozen=True)
class ExportConfig:
    quantize: str = "none"  # none | float16 | dynamic | int8
    tolerance: float = 1e-4


@dataclass(frozen=True)
class EvalConfig:
    split: str = "test"
    top_k: int = 100
    batch_size: int = 64


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# Numeric keys that must lie strictly between two bounds, checked at load time too.
OPEN_INTERVALS: dict[str, tuple[float, float]] = {"train.ema_momentum": (0.0, 1.0),
                                                  "train.layer_decay": (0.0, 1.0)}

# Closed sets of values, checked at load time so a typo fails before training starts.
CHOICES: dict[str, tuple[str, ...]] = {
    "model.kind": ("dual_encoder", "cross_encoder"),
    "model.pooling": ("mean", "cls"),
    "train.loss": ("infonce", "contrastive", "triplet", "bce", "ranknet", "hinge", "listwise",
                   "multi_positive", "margin_mse"),
    "model.interaction": ("full", "light"),
    "model.score_head": ("dense", "cosine"),
    "train.strategy": ("mirrored", "one_device", "multi_worker"),
    "train.mixed_precision": ("none", "auto", "mixed_bfloat16", "mixed_float16"),
    "train.jit_compile": ("auto", "xla", "none"),
    "export.quantize": ("none", "float16", "dynamic", "int8"),
    "data.mine_fallback": ("random", "below"),
}


def _check_type(value: Any, tp: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_type(value, inner, key, source)
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
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise ConfigError(f"{source}: unknown key '{prefix}{key}'")
    kwargs = {}
    for name in names:
        if name not in raw:
            continue
        tp, key = hints[name], prefix + name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw[name], key + ".", source)
        else:
            value = _check_type(raw[name], tp, key, source)
            bounds = OPEN_INTERVALS.get(key)
            if bounds and value is not None and not bounds[0] < value < bounds[1]:
                raise ConfigError(f"{source}: '{key}' must be in ({bounds[0]:g}, {bounds[1]:g}), got {value!r}")
            if key in CHOICES and value not in CHOICES[key]:
                raise ConfigError(
                    f"{source}: '{key}' must be one of {', '.join(CHOICES[key])}, got {value!r}"
                )
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
            raw = yaml.safe_load(data.decode("utf-8")) or {}
        except UnicodeDecodeError as e:  # the line, so the bad byte can be found
            line = data[:e.start].count(b"\n") + 1
            raise ConfigError(f"{path}:{line}: not UTF-8 (byte {e.start})") from None
        except yaml.YAMLError as e:  # PyYAML's marks are 0-based; editors count lines from 1
            mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError(f"{where}: not valid YAML ({what})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a YAML mapping of sections (model:, data:, train:), "
                              f"got {type(raw).__name__}")
    for override in overrides:
        _apply_override(raw, override)
        source = f"{source} (with --set)" if "--set" not in source else source
    return config_from_dict(raw, source)


def config_to_dict(config: Config) -> dict:
    return dataclasses.asdict(config)


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")


def add_run_arguments(p: argparse.ArgumentParser, config_help: str, set_example: str, workdir_help: str) -> None:
    """--config, --set, --workdir and --quiet: the arguments every command that trains takes."""
    p.add_argument("--config", required=True, help=config_help)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override a config value, e.g. --set {set_example} (repeatable)")
    p.add_argument("--workdir", default=None, help=workdir_help)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_and_workdir(args: argparse.Namespace, suffix: str = "") -> tuple[Config, str]:
    """The config of `add_run_arguments`' arguments, and --workdir or runs/<config name><suffix>."""
    return load_config(args.config, args.overrides), args.workdir or f"runs/{Path(args.config).stem}{suffix}"

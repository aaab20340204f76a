"""Cross-encoders (rerankers): a relevance score per (query, document) pair.

Two interactions, both built from YAML (`model.kind: cross_encoder`, `model.interaction`):

- "full": `[CLS] query [SEP] document [SEP]` (segment ids 0/1) through one BERT backbone,
  pooled (mean over the pair, or [CLS]) and scored by Dense(1). Precise, costs one
  transformer pass per pair.
- "light": the seeds' cheap variant. Query and document go through the tower separately
  (frozen when `model.trainable: false`, so document states could be cached); query tokens
  attend over document tokens (multi-head attention), a residual + LayerNorm follows, the
  result is mean-pooled over the query and scored by Dense(1).

Training inputs are groups: x holds n documents per query (positives first) flattened to B·n rows,
y the graded judgments (B, n); `compute_loss` reshapes the scores to (B, n).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from deepseek_tf.models import losses
from deepseek_tf.models.encoder import MeanPooling

# `train.loss` -> the group loss over (B, n) scores and grades: f(scores, grades, margin, max_grade).
RANKING_LOSSES = {
    "bce": lambda s, g, margin, max_grade: losses.pointwise_bce(s, g, max_grade),
    "ranknet": lambda s, g, margin, max_grade: losses.ranknet(s, g),
    "hinge": lambda s, g, margin, max_grade: losses.pairwise_hinge(s, g, margin),
    "listwise": lambda s, g, margin, max_grade: losses.listwise_softmax(s, g),
}


def ranking_loss(
    name: str, scores: tf.Tensor, grades: tf.Tensor, margin: float = 1.0, max_grade: float = 4.0
) -> tf.Tensor:
    """Dispatches `train.loss` through RANKING_LOSSES to the group losses in `losses`; shapes (B, n)."""
    if name not in RANKING_LOSSES:
        raise ValueError(f"cross-encoder loss must be one of {', '.join(RANKING_LOSSES)}, got {name!r}")
    return RANKING_LOSSES[name](scores, grades, margin, max_grade)


# Constructor options of removed experiments (train.grade_weighting, model.local_layers),
# stored at their off values in older saved models.
_RETIRED_OPTIONS = ("grade_weighting", "local_layers")


def _cosine(a, b):
    """Row-wise cosine in float32: (batch, hidden) × 2 -> (batch,)."""
    unit = lambda v: v / ops.maximum(ops.norm(v, axis=-1, keepdims=True), 1e-12)
    return ops.sum(unit(ops.cast(a, "float32")) * unit(ops.cast(b, "float32")), axis=-1)


class _RankingModel(keras.Model):
    """Shared loss plumbing and config for both cross-encoder variants."""

    def __init__(self, backbone, loss: str = "listwise", margin: float = 1.0, max_grade: float = 4.0, **kwargs):
        super().__init__(**kwargs)
        if loss not in RANKING_LOSSES:
            raise ValueError(f"cross-encoder loss must be one of {', '.join(RANKING_LOSSES)}, got {loss!r}")
        self.backbone = backbone
        self.loss_name = loss
        self.margin = margin
        self.max_grade = max_grade

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        grades = tf.cast(y, tf.float32)  # (B, n)
        scores = tf.reshape(y_pred, tf.shape(grades))  # (B·n,) -> (B, n)
        loss = ranking_loss(self.loss_name, scores, grades, self.margin, self.max_grade)
        # Keras sums gradients over replicas; each replica contributes loss / n_replicas.
        return loss / tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, loss.dtype)

    def _sequence(self, ids, training):
        outputs = self.backbone(
            {
                "token_ids": ids["token_ids"],
                "padding_mask": ids["padding_mask"],
                "segment_ids": ids.get("segment_ids", ops.zeros_like(ids["token_ids"])),
            },
            training=training and self.backbone.trainable,  # a frozen tower drops no units
        )
        return outputs["sequence_output"]  # (batch, seq, hidden)

    def get_config(self):
        return {
            "name": self.name,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "loss": self.loss_name,
            "margin": self.margin,
            "max_grade": self.max_grade,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in _RETIRED_OPTIONS:  # rerankers saved while these options existed still load
            config.pop(key, None)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="deepseek_tf")
class CrossEncoder(_RankingModel):
    """Full interaction: pair ids {"token_ids", "padding_mask", "segment_ids"} -> score (batch,).

    Args:
      backbone: keras_hub BertBackbone (or anything returning "sequence_output").
      pooling: "mean" over the pair's tokens (suits sentence-transformers checkpoints, whose
        [CLS] was never trained) or "cls".
      loss: "bce" | "ranknet" | "hinge" | "listwise" (see `ranking_loss`).
      head: "dense": score = w · pooled + b. "cosine": score = cos(q̄, d̄) / temperature + w · pooled + b
        with q̄, d̄ the means of the segment-0 ([CLS] query [SEP]) and segment-1 (document [SEP])
        token states and w, b starting at 0, so a bi-encoder checkpoint starts from its own ranking
        and training learns the interaction on top.
    """

    def __init__(self, backbone, pooling: str = "mean", head: str = "dense", temperature: float = 0.05, **kwargs):
        super().__init__(backbone, **kwargs)
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        if head not in ("dense", "cosine"):
            raise ValueError(f"head must be 'dense' or 'cosine', got {head!r}")
        self.pooling = pooling
        self.head_kind = head
        self.temperature = temperature
        self.mean_pool = MeanPooling()
        zero = "zeros" if head == "cosine" else "glorot_uniform"
        self.head = keras.layers.Dense(1, kernel_initializer=zero, name="score")

    def build(self, input_shape=None):
        if not self.head.built:
            self.head.build((None, self.backbone.hidden_dim))
        self.built = True

    def call(self, inputs, training=None):
        sequence = self._sequence(inputs, training)  # (batch, seq, hidden)
        if self.pooling == "mean":
            pooled = self.mean_pool(sequence, inputs["padding_mask"])  # (batch, hidden)
        else:
            pooled = sequence[:, 0, :]
        score = ops.cast(self.head(pooled)[:, 0], "float32")  # (batch,)
        if self.head_kind == "cosine":
            mask = ops.cast(inputs["padding_mask"], "bool")
            in_doc = ops.cast(inputs["segment_ids"], "bool")
            q = self.mean_pool(sequence, ops.logical_and(mask, ops.logical_not(in_doc)))  # (batch, hidden)
            d = self.mean_pool(sequence, ops.logical_and(mask, in_doc))  # (batch, hidden)
            score = score + _cosine(q, d) / self.temperature
        return score

    def get_config(self):
        return {
            **super().get_config(),
            "pooling": self.pooling,
            "head": self.head_kind,
            "temperature": self.temperature,
        }


@keras.saving.register_keras_serializable(package="deepseek_tf")
class LightCrossEncoder(_RankingModel):
    """Light interaction: {"query": ids, "doc": ids} -> score (batch,).

    h = LayerNorm(Q + MHA(Q, D, D)),  score = w · mean_{query tokens}(h) + b
    with Q, D the tower's token states of query and document; padding masked both sides.
    head "cosine" adds cos(mean Q, mean D) / temperature — the bi-encoder's own score — and
    starts w, b at 0, so a (fine-tuned) bi-encoder tower starts out ranking exactly as its
    dual encoder does and the interaction learns a correction on top.
    """

    def __init__(self, backbone, num_heads: int = 4, head: str = "dense", temperature: float = 0.05, **kwargs):
        super().__init__(backbone, **kwargs)
        if head not in ("dense", "cosine"):
            raise ValueError(f"head must be 'dense' or 'cosine', got {head!r}")
        self.head_kind = head
        self.temperature = temperature
        hidden = backbone.hidden_dim
        if hidden % num_heads:
            raise ValueError(f"interaction_heads ({num_heads}) must divide the hidden size ({hidden})")
        self.num_heads = num_heads
        self.attention = keras.layers.MultiHeadAttention(num_heads, hidden // num_heads, name="query_over_doc")
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6, name="interaction_norm")
        self.mean_pool = MeanPooling()
        self.head = keras.layers.Dense(
            1, kernel_initializer="zeros" if head == "cosine" else "glorot_uniform", name="score"
        )

    def build(self, input_shape=None):
        hidden = self.backbone.hidden_dim
        if not self.attention.built:
            self.attention.build((None, None, hidden), (None, None, hidden))
        if not self.norm.built:
            self.norm.build((None, None, hidden))
        if not self.head.built:
            self.head.build((None, hidden))
        self.built = True

    def call(self, inputs, training=None):
        q = self._sequence(inputs["query"], training)  # (batch, q_len, hidden)
        d = self._sequence(inputs["doc"], training)  # (batch, d_len, hidden)
        q_mask = ops.cast(inputs["query"]["padding_mask"], "bool")
        d_mask = ops.cast(inputs["doc"]["padding_mask"], "bool")
        mask = ops.logical_and(q_mask[:, :, None], d_mask[:, None, :])  # (batch, q_len, d_len)
        attended = self.attention(q, d, d, attention_mask=mask, training=training)
        h = self.norm(q + attended)  # (batch, q_len, hidden)
        pooled = self.mean_pool(h, q_mask)  # (batch, hidden)
        score = ops.cast(self.head(pooled)[:, 0], "float32")  # (batch,)
        if self.head_kind == "cosine":
            score = score + _cosine(self.mean_pool(q, q_mask), self.mean_pool(d, d_mask)) / self.temperature
        return score

    def get_config(self):
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "head": self.head_kind,
            "temperature": self.temperature,
        }


def build_cross_encoder(config, vocab_size: int) -> keras.Model:
    """`model.kind: cross_encoder` -> CrossEncoder or LightCrossEncoder per `model.interaction`."""
    from deepseek_tf.models.backbones import build_backbone

    m, t = config.model, config.train
    if t.loss not in RANKING_LOSSES and t.loss != "infonce":
        from deepseek_tf.errors import ConfigError

        raise ConfigError(
            f"train.loss {t.loss!r} is for dual encoders; a cross-encoder takes {', '.join(RANKING_LOSSES)}"
        )
    # "infonce" is the config default; for groups of 1 positive + k negatives it is "listwise".
    loss = t.loss if t.loss in RANKING_LOSSES else "listwise"
    common = dict(loss=loss, margin=t.margin, max_grade=4.0)
    backbone = build_backbone(m, vocab_size)
    if m.interaction == "light":
        return LightCrossEncoder(
            backbone,
            num_heads=m.interaction_heads,
            head=m.score_head,
            temperature=t.temperature,
            name="light_cross_encoder",
            **common,
        )
    return CrossEncoder(
        backbone, pooling=m.pooling, head=m.score_head, temperature=t.temperature, name="cross_encoder", **common
    )

"""Text encoder: a transformer backbone, pooling, optional projection, optional L2 norm."""

from __future__ import annotations

import warnings

import keras
from keras import ops

# keras-hub's BertBackbone carries a pooler ("pooled_dense") that mean pooling never uses;
# Keras would warn on every training run that it gets no gradients.
warnings.filterwarnings("ignore", message=r"Gradients do not exist for variables \['pooled_dense")


@keras.saving.register_keras_serializable(package="deepseek_tf")
class MeanPooling(keras.layers.Layer):
    """Mean of token vectors over the attention mask: sum_t m_t h_t / max(sum_t m_t, 1)."""

    def call(self, sequence, mask, divide: bool = True):
        # expand_dims, not [:, :, None]: TFLite's StridedSlice cannot add axes (new_axis_mask).
        mask = ops.expand_dims(ops.cast(mask, sequence.dtype), -1)  # (batch, seq, 1)
        total = ops.sum(sequence * mask, axis=1)  # (batch, hidden)
        if not divide:  # the caller L2-normalises: 1/count would cancel
            return total
        count = ops.maximum(ops.sum(mask, axis=1), 1e-9)  # (batch, 1)
        return total / count


@keras.saving.register_keras_serializable(package="deepseek_tf")
class Encoder(keras.layers.Layer):
    """Token ids -> one embedding per text.

    Args:
      backbone: a layer mapping {"token_ids", "padding_mask", "segment_ids"} to a dict
        holding "sequence_output" (batch, seq, hidden) — a keras_hub BertBackbone or a
        wrapped TF Hub SavedModel.
      pooling: "mean" (over the padding mask, as sentence-transformers) or "cls".
      projection_dim: if set, a Dense projection hidden -> projection_dim (e.g. 384 -> 256).
      normalize: L2-normalise the output so dot product = cosine.
    """

    def __init__(
        self, backbone, pooling: str = "mean", projection_dim: int | None = None, normalize: bool = True, **kwargs
    ):
        super().__init__(**kwargs)
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        self.backbone = backbone
        self.pooling = pooling
        self.projection_dim = projection_dim
        self.normalize = normalize
        self.mean_pool = MeanPooling(dtype=self.dtype_policy)
        self.projection = (
            keras.layers.Dense(projection_dim, name="projection", dtype=self.dtype_policy) if projection_dim else None
        )

    def build(self, input_shape=None):
        # The backbone arrives built; only the projection needs the hidden size.
        if self.projection is not None and not self.projection.built:
            self.projection.build((None, self.backbone.hidden_dim))
        self.built = True

    def call(self, inputs, training=None):
        outputs = self.backbone(
            {
                "token_ids": inputs["token_ids"],
                "padding_mask": inputs["padding_mask"],
                "segment_ids": inputs.get("segment_ids", ops.zeros_like(inputs["token_ids"])),
            },
            training=training,
        )
        sequence = outputs["sequence_output"]  # (batch, seq, hidden)
        # No division in the exported graph when the output is L2-normalised: the norm cancels a
        # mean's 1/count, and x·rsqrt(Σx²) replaces x/‖x‖. TFLite's full-int8 DIV kernel rejects a
        # raw 0 divisor even where the zero point makes it a non-zero value, so a calibrated
        # model could fail on some lengths; float results are unchanged (to rounding).
        if self.pooling == "mean":
            pooled = self.mean_pool(sequence, inputs["padding_mask"], divide=self.mean_divides)  # (batch, hidden)
        else:
            pooled = sequence[:, 0, :]
        return self.head(pooled)

    @property
    def mean_divides(self) -> bool:
        """Does mean pooling divide by the token count? Not when the L2 norm right after cancels it."""
        return not (self.normalize and self.projection is None)

    def head(self, pooled):
        """(batch, hidden) pooled vectors -> (batch, dim) embeddings: projection, float32, L2 norm."""
        if self.projection is not None:
            pooled = self.projection(pooled)  # (batch, projection_dim)
        pooled = ops.cast(pooled, "float32")
        if self.normalize:
            pooled = pooled * ops.rsqrt(ops.maximum(ops.sum(ops.square(pooled), axis=-1, keepdims=True), 1e-24))
        return pooled

    def get_config(self):
        config = super().get_config()
        config.update(
            backbone=keras.saving.serialize_keras_object(self.backbone),
            pooling=self.pooling,
            projection_dim=self.projection_dim,
            normalize=self.normalize,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def _additive_attention(
    self, query, key, value, attention_mask=None, training=None, return_attention_scores=False, use_causal_mask=False
):
    """MultiHeadAttention's attention with the mask added to the scores as a bias.

    Keras masks with `where` ops that broadcast a (batch, 1, T, S) mask over (batch, heads,
    T, S) scores (two around the softmax, or one inside `dot_product_attention` when dropout
    is 0); TFLite runs broadcast SELECTs on its slow reference kernel (BroadcastSelect5DSlow:
    13% of MiniLM's dynamic-int8 encode time, profiled with perf). softmax(s + (1 − m)·(−1e9))
    is the same distribution, since exp underflows to exactly 0 at masked keys; it differs
    only for a query row with every key masked, which a padding mask never makes.
    """
    if use_causal_mask or len(self._attention_axes) != 1:
        return type(self)._compute_attention(
            self, query, key, value, attention_mask, training, return_attention_scores, use_causal_mask
        )
    query = ops.multiply(query, ops.cast(self._inverse_sqrt_key_dim, query.dtype))  # (batch, T, heads, dim)
    scores = ops.einsum(self._dot_product_equation, key, query)  # (batch, heads, T, S)
    if attention_mask is not None:
        while len(attention_mask.shape) < len(scores.shape):  # (batch, T, S) -> (batch, 1, T, S)
            attention_mask = ops.expand_dims(attention_mask, axis=-3)
        big = 3e4 if scores.dtype == "float16" else 1e9  # float16 tops out at 65504
        scores = scores + (1.0 - ops.cast(attention_mask, scores.dtype)) * ops.cast(-big, scores.dtype)
    probs = ops.softmax(scores, axis=-1)
    dropped = self._dropout_layer(probs, training=training) if self._dropout > 0.0 else probs
    return ops.einsum(self._combine_equation, dropped, value), probs  # (batch, T, heads, dim)


def additive_attention_masks(model: keras.layers.Layer) -> int:
    """Switches every MultiHeadAttention under `model` to `_additive_attention` (for export:
    the graphs then have one ADD per layer where they had broadcast SELECTs). Same outputs to
    rounding; returns how many layers were switched."""
    import types

    # Private Keras names, no public path: _flatten_layers is the only recursive walk over
    # nested layers, and _compute_attention is the one MultiHeadAttention step to replace (a
    # subclass would change the saved class names that model.keras files refer to).
    count = 0
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, keras.layers.MultiHeadAttention):
            layer._compute_attention = types.MethodType(_additive_attention, layer)
            count += 1
    return count

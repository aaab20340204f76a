"""Dual encoder (two-tower retriever): query and document towers, shared or separate."""
from __future__ import annotations

import keras
import tensorflow as tf

from deepseek_tf import losses


@keras.saving.register_keras_serializable(package="deepseek_tf")
class DualEncoder(keras.Model):
    """Embeds queries and documents; trained with an in-batch ranking loss.

    Inputs to `call` are {"query": ids, "doc": ids[, "neg": ids]}, each ids a dict of
    token_ids / padding_mask / segment_ids. With `doc_encoder=None` the towers share
    weights (the usual choice when queries and documents are the same language).
    """

    def __init__(self, query_encoder, doc_encoder=None, loss: str = "infonce",
                 temperature: float = 0.05, symmetric: bool = False, margin: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.query_encoder = query_encoder
        self.doc_encoder = doc_encoder
        self.loss_name = loss
        self.temperature = temperature
        self.symmetric = symmetric
        self.margin = margin

    @property
    def doc_tower(self):
        return self.doc_encoder if self.doc_encoder is not None else self.query_encoder

    def call(self, inputs, training=None):
        out = {"query": self.query_encoder(inputs["query"], training=training)}
        if "doc" in inputs:
            out["doc"] = self.doc_tower(inputs["doc"], training=training)
        if "neg" in inputs:
            out["neg"] = self.doc_tower(inputs["neg"], training=training)
        return out

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        q, d, neg = y_pred["query"], y_pred["doc"], y_pred.get("neg")  # (batch, dim) each
        if self.loss_name == "infonce":
            loss = losses.infonce(q, d, neg, temperature=self.temperature, symmetric=self.symmetric)
        elif self.loss_name == "triplet":
            if neg is None:
                neg = tf.roll(d, shift=1, axis=0)  # the next pair's document as negative
            loss = losses.triplet(q, d, neg, margin=self.margin)
        elif self.loss_name == "contrastive":
            labels = y if y is not None else tf.ones(tf.shape(q)[:1])
            loss = losses.contrastive(q, d, labels, margin=self.margin)
        else:
            raise ValueError(f"unknown loss {self.loss_name!r}")
        # Keras sums gradients over replicas; each replica contributes loss / n_replicas.
        return loss / tf.cast(tf.distribute.get_strategy().num_replicas_in_sync, loss.dtype)

    def get_config(self):
        return {
            "name": self.name,
            "query_encoder": keras.saving.serialize_keras_object(self.query_encoder),
            "doc_encoder": (keras.saving.serialize_keras_object(self.doc_encoder)
                            if self.doc_encoder is not None else None),
            "loss": self.loss_name,
            "temperature": self.temperature,
            "symmetric": self.symmetric,
            "margin": self.margin,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["query_encoder"] = keras.saving.deserialize_keras_object(config["query_encoder"])
        if config.get("doc_encoder") is not None:
            config["doc_encoder"] = keras.saving.deserialize_keras_object(config["doc_encoder"])
        return cls(**config)

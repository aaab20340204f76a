"""Ranking losses as pure functions of embeddings. Shapes: (batch, dim) unless noted."""
from __future__ import annotations

import tensorflow as tf


def infonce(q: tf.Tensor, d: tf.Tensor, neg: tf.Tensor | None = None, temperature: float = 0.05,
            symmetric: bool = False) -> tf.Tensor:
    """In-batch softmax cross-entropy (InfoNCE; MultipleNegativesRankingLoss; NT-Xent).

    loss = -1/B Σ_i log( exp(q_i·d_i/τ) / Σ_j exp(q_i·c_j/τ) ),  c = [d; neg]

    Every other document in the batch (and every hard negative) is a negative for q_i.
    With `symmetric`, the doc→query direction (over d only) is averaged in.
    """
    candidates = d if neg is None else tf.concat([d, neg], axis=0)  # (B or 2B, dim)
    logits = tf.matmul(q, candidates, transpose_b=True) / temperature  # (B, C)
    labels = tf.range(tf.shape(q)[0])
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    if symmetric:
        logits_d = tf.matmul(d, q, transpose_b=True) / temperature  # (B, B)
        loss_d = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits_d))
        loss = 0.5 * (loss + loss_d)
    return loss


def contrastive(q: tf.Tensor, d: tf.Tensor, labels: tf.Tensor, margin: float = 0.5) -> tf.Tensor:
    """Margin contrastive loss (Hadsell et al. 2006), the seeds' pair loss.

    loss = 1/B Σ_i  y_i·dist_i² + (1 − y_i)·max(margin − dist_i, 0)²,  dist = ||q − d||₂
    y = 1 for a relevant pair, 0 for an irrelevant one.
    """
    y = tf.cast(tf.reshape(labels, [-1]), q.dtype)  # (B,)
    dist = tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(q - d), axis=-1), 1e-12))  # (B,)
    return tf.reduce_mean(y * tf.square(dist) + (1.0 - y) * tf.square(tf.nn.relu(margin - dist)))


def triplet(q: tf.Tensor, pos: tf.Tensor, neg: tf.Tensor, margin: float = 0.5) -> tf.Tensor:
    """Triplet margin loss on Euclidean distance.

    loss = 1/B Σ_i max(||q_i − p_i||₂ − ||q_i − n_i||₂ + margin, 0)
    """
    d_pos = tf.norm(q - pos, axis=-1)  # (B,)
    d_neg = tf.norm(q - neg, axis=-1)  # (B,)
    return tf.reduce_mean(tf.nn.relu(d_pos - d_neg + margin))

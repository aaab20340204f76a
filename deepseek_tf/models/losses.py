"""Ranking losses as pure functions of embeddings. Shapes: (batch, dim) unless noted."""

from __future__ import annotations

import tensorflow as tf


def positive_mask(
    q_keys: tf.Tensor,
    d_keys: tf.Tensor,
    q_keys_all: tf.Tensor,
    d_keys_all: tf.Tensor,
    neg_keys_all: tf.Tensor | None = None,
) -> tf.Tensor:
    """True where candidate j is also a positive of query i, so it must not count as a negative.

    For local pairs (q_i, d_i) and candidate pairs (q'_j, d'_j) (all replicas), candidate
    document d'_j is another positive of q_i when q_i = q'_j (same query, another judged
    document) or d_i = d'_j (the same document twice). A hard negative n_k is dropped for
    q_i when n_k = d_i. Keys are any int64 identity of the text (e.g. a hash).
    Returns (B, C) bool with C = B_all (+ N_neg), diagonal positives included.
    """
    same = tf.logical_or(q_keys[:, None] == q_keys_all[None, :], d_keys[:, None] == d_keys_all[None, :])
    if neg_keys_all is not None:
        same = tf.concat([same, d_keys[:, None] == neg_keys_all[None, :]], axis=1)  # (B, B_all + N)
    return same


def infonce(
    q: tf.Tensor,
    d: tf.Tensor,
    neg: tf.Tensor | None = None,
    temperature: float = 0.05,
    offset: int | tf.Tensor = 0,
    mask: tf.Tensor | None = None,
    weights: tf.Tensor | None = None,
) -> tf.Tensor:
    """In-batch softmax cross-entropy (InfoNCE; MultipleNegativesRankingLoss; NT-Xent).

    With candidates c = [d; neg] and s_ij = q_i·c_j / τ, the positive of q_i being
    c_{o+i} (o = `offset`, the first row of this replica's pairs in a gathered `d`):

        loss = −1/B Σ_i log p_i,o+i,   p_ij = exp(s_ij) / Σ_{j' valid} exp(s_ij')

    Every other document in the batch (and every hard negative) is a negative for q_i.
    `mask` (B, C) True marks candidates that are other positives of q_i (see
    `positive_mask`): they leave the softmax (valid = ¬mask, plus the own positive), so
    two pairs of one query do not push each other apart.
    `weights` (B,) w_i ≥ 0 makes it a weighted mean, −Σ_i w_i log p_i,o+i / Σ_i w_i (graded
    relevance: a pair judged 2 weighs twice one judged 1).
    """
    candidates = d if neg is None else tf.concat([d, neg], axis=0)  # (C, dim)
    labels = tf.range(tf.shape(q)[0]) + offset  # (B,)
    return _softmax_ce(tf.matmul(q, candidates, transpose_b=True) / temperature, labels, mask, weights)


def _softmax_ce(
    logits: tf.Tensor, labels: tf.Tensor, mask: tf.Tensor | None, weights: tf.Tensor | None = None
) -> tf.Tensor:
    """Mean (or `weights`-weighted mean) over rows of −log p_label; masked columns are excluded."""
    logits = tf.cast(logits, tf.float32)
    own = tf.one_hot(labels, tf.shape(logits)[1], on_value=True, off_value=False)  # (B, C)
    valid = tf.ones_like(own) if mask is None else tf.logical_or(tf.logical_not(mask), own)
    logits = tf.where(valid, logits, tf.fill(tf.shape(logits), -1e9))
    log_p = tf.nn.log_softmax(logits, axis=-1)  # (B, C)
    row_loss = -tf.reduce_sum(tf.where(own, log_p, 0.0), axis=-1)  # (B,)
    if weights is None:
        return tf.reduce_mean(row_loss)
    weights = tf.cast(tf.reshape(weights, [-1]), tf.float32)  # (B,)
    return tf.reduce_sum(weights * row_loss) / tf.maximum(tf.reduce_sum(weights), 1e-9)


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


def margin_mse(
    q: tf.Tensor, pos: tf.Tensor, neg: tf.Tensor, teacher: tf.Tensor, temperature: float | tf.Tensor = 0.05
) -> tf.Tensor:
    """Margin-MSE distillation (Hofstätter et al. 2020): the student's score margins regress
    the teacher's.

    loss = 1/(B·k) Σ_i Σ_j ( (s(q_i, p_i) − s(q_i, n_ij)) − t_ij )²,  s(q, d) = q·d / τ

    `neg` is (B·k, dim), pair-major (n_i1 … n_ik for each pair i); `teacher` (B, k) holds the
    teacher's margins t_ij = S(q_i, p_i) − S(q_i, n_ij), e.g. a cross-encoder's scores. Only
    differences are matched, so the student keeps its own score offset. Dividing by τ puts a
    cosine student on the scale of a teacher that scores cos/τ (the `cosine` score head).
    """
    teacher = tf.cast(teacher, tf.float32)
    k = tf.shape(teacher)[1]
    q, pos, neg = (tf.cast(x, tf.float32) for x in (q, pos, neg))
    neg = tf.reshape(neg, [tf.shape(q)[0], k, -1])  # (B, k, dim)
    s_pos = tf.reduce_sum(q * pos, axis=-1, keepdims=True)  # (B, 1)
    s_neg = tf.einsum("bd,bkd->bk", q, neg)  # (B, k)
    return tf.reduce_mean(tf.square((s_pos - s_neg) / temperature - teacher))


# ------------------------------------------------------------ cross-encoder (reranker) losses
# Shapes: scores and grades are (B, n): one row per query group of n scored documents.
# Grades are graded judgments (0 = not relevant … max_grade = complete answer), never flattened.


def pointwise_bce(scores: tf.Tensor, grades: tf.Tensor, max_grade: float = 4.0) -> tf.Tensor:
    """Binary cross-entropy on logits against graded targets scaled to [0, 1].

    loss = −1/N Σ_i [ t_i log σ(s_i) + (1 − t_i) log(1 − σ(s_i)) ],  t_i = min(g_i / max_grade, 1)
    """
    s = tf.reshape(tf.cast(scores, tf.float32), [-1])
    t = tf.clip_by_value(tf.reshape(tf.cast(grades, tf.float32), [-1]) / max_grade, 0.0, 1.0)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=t, logits=s))


def _ordered_pairs(scores: tf.Tensor, grades: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(s_i − s_j, 1[g_i > g_j]) for every ordered pair within a group: (B, n, n) each."""
    s = tf.cast(scores, tf.float32)
    g = tf.cast(grades, tf.float32)
    diff = s[:, :, None] - s[:, None, :]  # (B, n, n)
    better = tf.cast(g[:, :, None] > g[:, None, :], tf.float32)  # (B, n, n)
    return diff, better


def ranknet(scores: tf.Tensor, grades: tf.Tensor) -> tf.Tensor:
    """RankNet logistic pairwise loss (Burges et al. 2005) over pairs with different grades.

    loss = 1/|P| Σ_{(i,j) ∈ P} log(1 + exp(−(s_i − s_j))),  P = {(i, j) in a group : g_i > g_j}
    """
    diff, better = _ordered_pairs(scores, grades)
    total = tf.reduce_sum(better * tf.nn.softplus(-diff))
    return total / tf.maximum(tf.reduce_sum(better), 1.0)


def pairwise_hinge(scores: tf.Tensor, grades: tf.Tensor, margin: float = 1.0) -> tf.Tensor:
    """Pairwise margin (hinge) loss over pairs with different grades.

    loss = 1/|P| Σ_{(i,j) ∈ P} max(0, margin − (s_i − s_j)),  P = {(i, j) in a group : g_i > g_j}
    """
    diff, better = _ordered_pairs(scores, grades)
    total = tf.reduce_sum(better * tf.nn.relu(margin - diff))
    return total / tf.maximum(tf.reduce_sum(better), 1.0)


def listwise_softmax(scores: tf.Tensor, grades: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy over each group (ListNet top-1 with graded gains).

    loss = Σ_b w_b ℓ_b / Σ_b w_b,  ℓ_b = −Σ_i p_bi log softmax(s_b)_i,
    p_bi = (2^{g_bi} − 1) / Σ_j (2^{g_bj} − 1)

    w_b = 1 for a group with a relevant document (groups without one contribute 0).

    With one positive and k ungraded negatives ℓ_b is −log softmax(s)_pos, the usual
    "1 positive + k negatives" loss; with several graded documents the better ones get
    more of the target mass.
    """
    s = tf.cast(scores, tf.float32)
    g = tf.cast(grades, tf.float32)  # (B, n)
    gain = tf.pow(2.0, g) - 1.0  # (B, n)
    total = tf.reduce_sum(gain, axis=-1, keepdims=True)  # (B, 1)
    p = gain / tf.maximum(total, 1e-9)
    per_group = -tf.reduce_sum(p * tf.nn.log_softmax(s, axis=-1), axis=-1)  # (B,)
    weight = tf.cast(total[:, 0] > 0, tf.float32)  # (B,)
    return tf.reduce_sum(per_group * weight) / tf.maximum(tf.reduce_sum(weight), 1e-9)

"""Packed inference: several short texts share one row of the batch instead of each padding its own.

A padded batch of B texts costs B·L positions, L the longest text's length; for short queries
of uneven length most of them are padding (32 QBQTC queries: 942 positions, 340 of them
tokens). Packing puts the texts into rows of width L (first-fit decreasing: the longest text
fits one row, shorter ones fill the gaps), gives each token its position within its own text
and lets a token attend only to tokens of its own text (a block-diagonal attention mask per
row), so every text gets the vectors it gets alone. The dense layers then run on about as many
positions as there are tokens, and attention costs rows·L² ≤ B·L² (one row of all T tokens
would cost T², more than padding for a large batch).

Same outputs as `Encoder.call` to float rounding; inference only (no dropout).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import ops

_BERT_PARTS = (
    "token_embedding",
    "position_embedding",
    "segment_embedding",
    "embeddings_add",
    "embeddings_layer_norm",
    "transformer_layers",
)
PACKED_KEYS = ("token_ids", "segment_ids", "positions", "slot_text")


def supports_packing(encoder) -> bool:
    """Packing needs the backbone's parts (a keras_hub BertBackbone); a TF Hub SavedModel has none."""
    return all(hasattr(encoder.backbone, part) for part in _BERT_PARTS)


def pack_rows(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """First-fit decreasing of texts into rows as wide as the longest text.

    Returns (row of each text, its first column in that row, number of rows). E.g. lengths
    [3, 5, 2, 4], width 5: the 5 opens row 0; the 4 opens row 1; the 3 fits neither, opens row
    2; the 2 joins it at column 3: rows [2, 0, 2, 1], columns [0, 0, 3, 0], 3 rows.
    """
    lengths = np.asarray(lengths, np.int64)
    width = int(lengths.max()) if lengths.size else 0
    row = np.zeros(len(lengths), np.int64)
    col = np.zeros(len(lengths), np.int64)
    used: list[int] = []  # filled columns per row
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = int(lengths[i])
        for r, filled in enumerate(used):
            if filled + n <= width:
                row[i], col[i], used[r] = r, filled, filled + n
                break
        else:
            row[i], col[i] = len(used), 0
            used.append(n)
    return row, col, len(used)


def pack_inputs(inputs: dict) -> dict[str, np.ndarray] | None:
    """Padded tokenizer output {"token_ids", "padding_mask", "segment_ids"} (B, L) → packed
    (rows, L) arrays: token_ids, segment_ids, positions (within each text) and slot_text (the
    text a slot holds, -1 for an empty slot). None when packing saves no row."""
    ids = np.asarray(inputs["token_ids"])
    mask = np.asarray(inputs["padding_mask"]).astype(bool)  # (B, L), prefixes: [1 1 1 0 0]
    segments = np.asarray(inputs["segment_ids"]) if "segment_ids" in inputs else np.zeros_like(ids)
    batch, width = ids.shape
    lengths = mask.sum(axis=1)
    row, col, rows = pack_rows(lengths)
    if rows >= batch:
        return None
    text, position = np.nonzero(mask)  # every token, text by text, in order
    slot = row[text] * width + col[text] + position  # its place in the packed (rows·L,) layout
    out = {
        "token_ids": np.zeros(rows * width, ids.dtype),
        "segment_ids": np.zeros(rows * width, segments.dtype),
        "positions": np.zeros(rows * width, np.int32),
        "slot_text": np.full(rows * width, -1, np.int32),
    }
    out["token_ids"][slot] = ids[mask]
    out["segment_ids"][slot] = segments[mask]
    out["positions"][slot] = position
    out["slot_text"][slot] = text
    return {k: v.reshape(rows, width) for k, v in out.items()}


def packed_encode(encoder, packed: dict, batch: tf.Tensor) -> tf.Tensor:
    """The encoder's (batch, dim) embeddings from `pack_inputs` arrays (rows, L). `encoder` is a
    `models.encoder.Encoder` whose backbone `supports_packing`."""
    backbone = encoder.backbone
    slot_text = packed["slot_text"]  # (rows, L)
    tokens = backbone.token_embedding(packed["token_ids"])  # (rows, L, hidden)
    x = backbone.embeddings_add(
        (
            tokens,
            backbone.position_embedding(tokens, positions=packed["positions"]),
            backbone.segment_embedding(packed["segment_ids"]),
        )
    )
    x = backbone.embeddings_layer_norm(x)
    # (rows, L, L): a token sees the tokens of its own text; an empty slot sees nothing
    same_text = (slot_text[:, :, None] == slot_text[:, None, :]) & (slot_text[:, None, :] >= 0)
    for layer in backbone.transformer_layers:
        x = layer(x, attention_mask=same_text, training=False)
    hidden = tf.shape(x)[-1]
    sequence = tf.reshape(x, [-1, hidden])  # (rows·L, hidden)
    owner = tf.reshape(slot_text, [-1])  # (rows·L,)
    owner = tf.where(owner >= 0, owner, batch)  # empty slots pool into an extra row, dropped below
    if encoder.pooling == "mean":
        pooled = tf.math.unsorted_segment_sum(sequence, owner, batch + 1)[:-1]  # (batch, hidden)
        if encoder.mean_divides:
            count = tf.math.unsorted_segment_sum(tf.ones_like(owner, sequence.dtype), owner, batch + 1)[:-1]
            pooled = pooled / ops.maximum(count[:, None], 1e-9)
    else:  # a text's first token is the slot with position 0
        first = tf.reshape(tf.equal(packed["positions"], 0), [-1]) & (owner < batch)
        pooled = tf.math.unsorted_segment_sum(tf.where(first[:, None], sequence, 0.0), owner, batch + 1)[:-1]
    return encoder.head(pooled)


def packed_signature() -> list:
    spec = {k: tf.TensorSpec([None, None], tf.int32) for k in PACKED_KEYS}
    return [spec, tf.TensorSpec([], tf.int32)]

"""Packed inference (models.packed): texts sharing rows give the vectors they get padded."""

import numpy as np
import pytest
import tensorflow as tf

from deepseek_tf.models.packed import pack_inputs, pack_rows, packed_encode, supports_packing


def test_pack_rows_first_fit_decreasing_by_hand():
    # width 5 (the longest): the 5 opens row 0, the 4 opens row 1, the 3 fits neither (5+3, 4+3 > 5)
    # and opens row 2, the 2 fits row 0? no (5+2); row 1? no (4+2); row 2 at column 3 (3+2 = 5)
    rows, cols, n = pack_rows(np.array([3, 5, 2, 4]))
    assert rows.tolist() == [2, 0, 2, 1] and cols.tolist() == [0, 0, 3, 0] and n == 3


def test_pack_inputs_by_hand():
    inputs = {
        "token_ids": np.array([[1, 2, 3, 0], [4, 0, 0, 0], [5, 6, 0, 0]], np.int32),
        "padding_mask": np.array([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0]], bool),
        "segment_ids": np.zeros((3, 4), np.int32),
    }
    # lengths 3, 1, 2 in rows of width 3: text 0 → row 0; text 2 → row 1; text 1 joins row 1 at column 2
    out = pack_inputs(inputs)
    assert out["token_ids"].tolist() == [[1, 2, 3, 0], [5, 6, 4, 0]]
    assert out["positions"].tolist() == [[0, 1, 2, 0], [0, 1, 0, 0]]
    assert out["slot_text"].tolist() == [[0, 0, 0, -1], [2, 2, 1, -1]]
    # two texts of length 2 cannot share a row of width 2: no row saved, nothing to pack
    assert pack_inputs({"token_ids": np.ones((2, 2), np.int32), "padding_mask": np.ones((2, 2), bool)}) is None


def _tiny_encoder(pooling: str, projection_dim, normalize: bool):
    import keras_hub

    from deepseek_tf.models.encoder import Encoder

    keras_seed = np.random.default_rng(3)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50,
        num_layers=2,
        num_heads=2,
        hidden_dim=8,
        intermediate_dim=16,
        dropout=0.0,
        max_sequence_length=16,
    )
    backbone.set_weights([keras_seed.normal(0, 0.5, w.shape).astype("float32") for w in backbone.get_weights()])
    encoder = Encoder(backbone, pooling=pooling, projection_dim=projection_dim, normalize=normalize)
    encoder.build()
    return encoder


@pytest.mark.parametrize(
    "pooling,projection_dim,normalize",
    [("mean", None, True), ("mean", 4, True), ("mean", None, False), ("cls", None, True)],
)
def test_packed_encode_equals_padded(pooling, projection_dim, normalize):
    encoder = _tiny_encoder(pooling, projection_dim, normalize)
    assert supports_packing(encoder)
    rng = np.random.default_rng(0)
    lengths = [7, 2, 3, 5, 2, 4]
    ids = np.zeros((6, 7), np.int32)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(5, 50, n)
    inputs = {"token_ids": ids, "padding_mask": ids > 0, "segment_ids": np.zeros_like(ids)}
    packed = pack_inputs(inputs)
    assert packed["token_ids"].shape[0] < 6  # rows were shared
    got = packed_encode(encoder, {k: tf.constant(v) for k, v in packed.items()}, tf.constant(6)).numpy()
    want = encoder({k: tf.constant(v) for k, v in inputs.items()}).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_keras_embedder_packs_a_batch_and_gives_the_padded_vectors():
    from deepseek_tf.config import config_from_dict
    from deepseek_tf.models import build_model
    from deepseek_tf.retrieval.embedders import KerasEmbedder
    from deepseek_tf.text.tokenizer import Tokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghij") + ["手", "机", "壳"]
    config = config_from_dict(
        {
            "model": {
                "num_layers": 1,
                "hidden_dim": 8,
                "intermediate_dim": 16,
                "num_heads": 2,
                "max_position": 32,
                "dropout": 0.0,
            }
        }
    )
    model = build_model(config, len(vocab))
    texts = ["a b c d e f g", "h", "手 机 壳", "i j", "a"]
    packed = KerasEmbedder(model, Tokenizer(vocab), 16, 16, "packed")
    padded = KerasEmbedder(model, Tokenizer(vocab), 16, 16, "padded", packing=False)
    assert packed._packed and not padded._packed
    for tower in ("query", "doc"):
        np.testing.assert_allclose(packed.encode(texts, tower), padded.encode(texts, tower), atol=1e-5)

import numpy as np
import pytest
import tensorflow as tf

from deepseek_tf import losses
from deepseek_tf.models.encoder import MeanPooling

I2 = tf.constant([[1.0, 0.0], [0.0, 1.0]])


def test_infonce_hand_computed():
    # logits = I/τ; each row: -log(e^(1/τ) / (e^(1/τ) + 1)) = log(1 + e^(-1/τ))
    assert losses.infonce(I2, I2, temperature=1.0).numpy() == pytest.approx(np.log1p(np.exp(-1)), abs=1e-6)
    assert losses.infonce(I2, I2, temperature=0.5).numpy() == pytest.approx(0.126928, abs=1e-6)
    # hard negatives [[0,1],[1,0]]: row 0 logits [1, 0, 0, 1] -> log(2 + 2/e) = 1.006409
    neg = tf.constant([[0.0, 1.0], [1.0, 0.0]])
    assert losses.infonce(I2, I2, neg, temperature=1.0).numpy() == pytest.approx(1.006409, abs=1e-6)


def test_contrastive_hand_computed():
    q = tf.zeros((2, 2))
    d = tf.constant([[3.0, 4.0], [0.0, 0.3]])  # distances 5 and 0.3
    # relevant: 5² = 25; irrelevant: (0.5 − 0.3)² = 0.04; mean = 12.52
    assert losses.contrastive(q, d, tf.constant([1.0, 0.0]), margin=0.5).numpy() == pytest.approx(12.52, abs=1e-5)


def test_triplet_hand_computed():
    q = tf.zeros((2, 2))
    pos = tf.constant([[1.0, 0.0], [3.0, 0.0]])
    neg = tf.constant([[0.0, 2.0], [0.0, 1.0]])
    # row 0: max(1 − 2 + 0.5, 0) = 0; row 1: 3 − 1 + 0.5 = 2.5; mean 1.25
    assert losses.triplet(q, pos, neg, margin=0.5).numpy() == pytest.approx(1.25)


def test_mean_pooling_ignores_padding():
    seq = tf.constant([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (1, 3, 2)
    mask = tf.constant([[True, True, False]])
    np.testing.assert_allclose(MeanPooling()(seq, mask).numpy(), [[2.0, 3.0]])  # mean of first two rows

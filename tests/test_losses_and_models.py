import numpy as np
import pytest
import tensorflow as tf

from deepseek_tf.models import losses
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


# ------------------------------------------------------------------ InfoNCE options
def test_infonce_masks_duplicate_positives():
    # q0 and q1 are the same query (two judged documents): each row's other column is masked,
    # so each row has a single valid candidate, its own positive, and loss = -log 1 = 0.
    q = tf.constant([[1.0, 0.0], [1.0, 0.0]])
    d = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    mask = losses.positive_mask(
        tf.constant([7, 7], tf.int64),
        tf.constant([1, 2], tf.int64),
        tf.constant([7, 7], tf.int64),
        tf.constant([1, 2], tf.int64),
    )
    np.testing.assert_array_equal(mask.numpy(), [[True, True], [True, True]])
    assert losses.infonce(q, d, temperature=1.0, mask=mask).numpy() == pytest.approx(0.0, abs=1e-6)
    # unmasked, row 0: logits [1, 0] -> log(1 + e^-1) = 0.313262; row 1: logits [1, 0], positive
    # is column 1 (logit 0) -> log(1 + e) = 1.313262; mean 0.813262
    assert losses.infonce(q, d, temperature=1.0).numpy() == pytest.approx(0.813262, abs=1e-6)


def test_positive_mask_same_document_and_hard_negative():
    # pairs (qa, d1), (qb, d1), (qc, d2); hard negatives [d2, d3]
    qk, dk = tf.constant([1, 2, 3], tf.int64), tf.constant([10, 10, 20], tf.int64)
    mask = losses.positive_mask(qk, dk, qk, dk, tf.constant([20, 30], tf.int64)).numpy()
    np.testing.assert_array_equal(
        mask, [[True, True, False, False, False], [True, True, False, False, False], [False, False, True, True, False]]
    )  # n0 = d2 is q_c's positive


def test_infonce_offset_scores_a_slice_against_all_documents():
    # A replica holding rows 2:4 of the batch, scored against all 4 documents, gives the
    # mean of those rows of the full-batch per-row losses.
    rng = np.random.default_rng(0)
    q = tf.constant(rng.normal(size=(4, 3)), tf.float32)
    d = tf.constant(rng.normal(size=(4, 3)), tf.float32)
    rows = [losses.infonce(q[i : i + 1], d, temperature=0.5, offset=i).numpy() for i in range(4)]
    assert np.mean(rows) == pytest.approx(losses.infonce(q, d, temperature=0.5).numpy(), abs=1e-6)
    assert losses.infonce(q[2:], d, temperature=0.5, offset=2).numpy() == pytest.approx(np.mean(rows[2:]), abs=1e-6)


def test_infonce_temperature_can_be_a_tensor_with_gradient():
    tau = tf.Variable(1.0)
    with tf.GradientTape() as tape:
        loss = losses.infonce(I2, I2, temperature=tau)
    # L = log(1 + e^(-1/τ)); dL/dτ = e^(-1/τ)/(1 + e^(-1/τ)) · (1/τ²) = σ(-1) = 0.268941 at τ=1
    assert tape.gradient(loss, tau).numpy() == pytest.approx(0.268941, abs=1e-6)


def _tiny_dual_encoder(**kwargs):
    from deepseek_tf.config import config_from_dict
    from deepseek_tf.models import build_model

    config = config_from_dict(
        {
            "model": {
                "num_layers": 1,
                "hidden_dim": 8,
                "intermediate_dim": 16,
                "num_heads": 2,
                "max_position": 32,
                "dropout": kwargs.pop("dropout", 0.0),
            },
            "train": kwargs,
        }
    )
    return build_model(config, 50)


def _batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    ids = lambda length: {
        "token_ids": tf.constant(rng.integers(5, 50, size=(n, length)), tf.int32),
        "padding_mask": tf.ones((n, length), tf.bool),
        "segment_ids": tf.zeros((n, length), tf.int32),
    }
    return {"query": ids(4), "doc": ids(6)}


@pytest.mark.parametrize("dropout", [0.0, 0.1])  # Keras: dot_product_attention / explicit softmax path
def test_additive_attention_masks_match_keras_and_drop_the_selects(dropout):
    from collections import Counter

    from deepseek_tf.models.encoder import additive_attention_masks

    model = _tiny_dual_encoder(dropout=dropout)
    batch = _batch()["doc"]
    batch["padding_mask"] = tf.constant([[True] * (6 - i % 3) + [False] * (i % 3) for i in range(8)])  # 0-2 pads

    def run():
        fn = tf.function(lambda ids: model.doc_tower(ids, training=False))
        ops = Counter(op.type for op in fn.get_concrete_function(batch).graph.get_operations())
        return fn(batch).numpy(), ops["SelectV2"]

    want, selects = run()
    assert additive_attention_masks(model) == 1  # one transformer layer
    got, left = run()
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert selects - left == (2 if dropout else 1)  # where() around the softmax / inside dot_product_attention
    # A padded text encodes as the same text without its padding.
    short = {k: v[2:3, :4] for k, v in batch.items()}  # row 2 has 2 pads: 4 real tokens
    np.testing.assert_allclose(model.doc_tower(short, training=False).numpy()[0], got[2], atol=1e-6)


def test_text_keys_ignore_padding_and_tell_texts_apart():
    from deepseek_tf.models.dual_encoder import text_keys

    a = {
        "token_ids": tf.constant([[2, 9, 3, 0], [2, 8, 3, 0]]),
        "padding_mask": tf.constant([[True, True, True, False]] * 2),
    }
    b = {"token_ids": tf.constant([[2, 9, 3]]), "padding_mask": tf.constant([[True, True, True]])}
    ka, kb = text_keys(a).numpy(), text_keys(b).numpy()
    assert ka[0] == kb[0] and ka[0] != ka[1]


def test_grad_cache_with_dropout_replays_the_first_pass_masks():
    """With dropout on, GradCache's second pass must draw the masks of its first: its SGD step
    equals the gradient of the whole batch's loss under those masks (micro-batches run in order
    from the same seed state, all under one tape). Without the replay the masks differ."""
    import keras

    x = _batch(8)
    model = _tiny_dual_encoder(temperature=0.5, dropout=0.3)
    model(x)
    model.accumulation_steps = 2
    seeds = model.seed_states()
    assert seeds, "the towers have dropout seed generators"
    start = [s.numpy() for s in seeds]
    init = [w.numpy() for w in model.trainable_weights]
    chunks = [tf.nest.map_structure(lambda t, i=i: t[4 * i : 4 * (i + 1)], x) for i in range(2)]
    with tf.GradientTape() as tape:
        outs = [model(c, training=True) for c in chunks]
        y_pred = {k: tf.concat([o[k] for o in outs], 0) for k in outs[0]}  # (8, dim)
        loss = model.compute_loss(x=x, y_pred=y_pred)
    grads = tape.gradient(loss, model.trainable_weights)
    for s, value in zip(seeds, start):
        s.assign(value)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0))
    model.train_on_batch(x)
    for w0, g, w in zip(init, grads, model.trainable_weights):
        step = 0.0 if g is None else tf.convert_to_tensor(g).numpy()
        np.testing.assert_allclose(w.numpy(), w0 - step, atol=2e-5)
    assert not all(np.allclose(w.numpy(), w0) for w0, w in zip(init, model.trainable_weights))


def test_a_model_saved_with_retired_options_still_loads():
    from deepseek_tf.models.dual_encoder import DualEncoder

    model = _tiny_dual_encoder(temperature=0.1)
    x = _batch()
    y = model(x)
    # model.keras files written while these options existed hold them at their off values
    saved = {**model.get_config(), "symmetric": False, "learn_temperature": False, "label_smoothing": 0.0}
    again = DualEncoder.from_config(saved)
    again(x)
    again.set_weights(model.get_weights())
    np.testing.assert_allclose(again(x)["query"], y["query"], atol=1e-6)


@pytest.mark.parametrize("extra", [{}, {"mask_duplicates": False}])
def test_grad_cache_accumulation_equals_the_big_batch(extra):
    """accumulation_steps=2 (GradCache) takes the same SGD step as the whole batch at once."""
    import keras

    x = _batch(8)
    big = _tiny_dual_encoder(temperature=0.5, **extra)
    small = _tiny_dual_encoder(temperature=0.5, **extra)
    big(x), small(x)
    small.set_weights(big.get_weights())
    small.accumulation_steps = 2
    init = [w.copy() for w in big.get_weights()]
    step_losses = []
    for m in (big, small):
        m.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0))
        step_losses.append(float(m.train_on_batch(x)))
    assert step_losses[0] == pytest.approx(step_losses[1], abs=1e-6)
    for a, b in zip(big.get_weights(), small.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert any(not np.allclose(a, w) for a, w in zip(big.get_weights(), init))  # a real step was taken

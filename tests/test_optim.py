"""Layer-wise learning-rate decay: per-layer factors and the step AdamW takes with them."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT
from deepseek_tf.config import load_config
from deepseek_tf.errors import ConfigError
from deepseek_tf.train.optim import LayerDecayAdamW, layer_scales, make_optimizer
from deepseek_tf.train.compute import check_layer_keys


def test_layer_scales_by_depth():
    paths = ["token_embedding/embeddings", "embeddings_layer_norm/gamma",
             "transformer_layer_0/self_attention_layer/query/kernel",
             "transformer_layer_2/feedforward_output_dense/bias", "transformer_layer_1/x/kernel",
             "pooled_dense/kernel", "dense/bias"]
    # 3 layers, d = 0.5: layer i -> 0.5^(2 − i) = 0.25, 1, 0.5; embeddings 0.5^3; the rest 1
    assert layer_scales(paths, 0.5) == [0.125, 0.125, 0.25, 1.0, 0.5, 1.0, 1.0]
    assert layer_scales(["dense/kernel"], 0.5) == [1.0]  # no transformer layers: all at the full rate


class Stack(keras.Model):
    """Variables named like keras_hub's BERT: an embedding, two layers, a head."""

    def __init__(self):
        super().__init__(name="stack")
        self.token_embedding = keras.layers.Dense(2, name="token_embedding")
        self.blocks = [keras.layers.Dense(2, name=f"transformer_layer_{i}") for i in range(2)]
        self.head = keras.layers.Dense(1, name="head")

    def call(self, x):
        x = self.token_embedding(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_one_fit_step_moves_each_layer_by_its_scaled_rate(strategy):
    # Adam's first step is lr·sign(g) (m = 0.1·g, v = 0.001·g², bias-corrected: m̂/√v̂ = ±1), so
    # every kernel entry moves by exactly lr·factor: layer 1 -> 0.01, layer 0 -> 0.005,
    # embedding -> 0.0025, head -> 0.01 (lr 0.01, d 0.5, no weight decay).
    scope = tf.distribute.MirroredStrategy() if strategy == "mirrored" else tf.distribute.get_strategy()
    with scope.scope():
        model = Stack()
        model(np.ones((1, 2), "float32"))
        optimizer = LayerDecayAdamW(layer_decay=0.5, learning_rate=0.01, weight_decay=0.0, epsilon=1e-12)
        model.compile(optimizer=optimizer, loss="mse")
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.fit(np.array([[1.0, -2.0]], "float32"), np.array([[5.0]], "float32"), batch_size=1, verbose=0)
    assert int(optimizer.iterations.numpy()) == 1
    for v, b in zip(model.trainable_variables, before):
        delta = np.abs(v.numpy() - b)
        nonzero = delta[delta > 0]  # an entry with a zero gradient does not move
        assert nonzero.size, v.path
        expect = {"token_embedding": 0.0025, "transformer_layer_0": 0.005,
                  "transformer_layer_1": 0.01, "head": 0.01}[v.path.split("/")[1]]
        np.testing.assert_allclose(nonzero, expect, rtol=1e-4, err_msg=v.path)


def test_config_selects_the_optimizer_and_it_round_trips():
    tiny = ROOT / "configs/tiny.yaml"
    assert type(make_optimizer(load_config(tiny), 10)) is keras.optimizers.AdamW
    optimizer = make_optimizer(load_config(tiny, ["train.layer_decay=0.8"]), 10)
    assert isinstance(optimizer, LayerDecayAdamW) and optimizer.layer_decay == 0.8
    again = LayerDecayAdamW.from_config(optimizer.get_config())
    assert again.layer_decay == 0.8 and again.weight_decay == optimizer.weight_decay


def test_layer_decay_refuses_a_hub_backbone():
    # a TF Hub SavedModel's variables carry no transformer_layer_N names: the decay would do nothing
    with pytest.raises(ConfigError, match="layer_decay needs a keras-hub BERT backbone"):
        check_layer_keys(load_config(ROOT / "configs/tiny.yaml", ["train.layer_decay=0.8",
                                                                  "model.backbone=hub:some/handle"]))
    check_layer_keys(load_config(ROOT / "configs/tiny.yaml", ["train.layer_decay=0.8"]))  # scratch BERT: fine

"""The optimizer both trainers build: AdamW on a warm-up + exponential-decay schedule, optionally
with layer-wise learning-rate decay (LLRD) for BERT-style backbones.

Layer-wise decay (Howard & Ruder 2018, "discriminative fine-tuning"; ELECTRA and BEiT call it
layer-wise learning-rate decay): the top transformer layer and everything above it (pooler,
scoring head) step at the schedule's rate; each layer below takes `decay` times the rate of the
one above, and the embeddings one more factor:

    lr(layer i of L) = lr · decay^(L − 1 − i),    lr(embeddings) = lr · decay^L

so the lower layers, which carry the most general features, move least on a small training set.
Scaling the gradients instead would do nothing: Adam's step is invariant to a gradient's scale.
"""
from __future__ import annotations

import re

import keras
import tensorflow as tf

from deepseek_tf.config import Config

_LAYER = re.compile(r"transformer_layer_(\d+)/")
_EMBEDDING = ("token_embedding/", "position_embedding/", "segment_embedding/", "embeddings_layer_norm/")


def layer_scales(paths: list[str], decay: float) -> list[float]:
    """The learning-rate factor of each variable path (keras_hub's BERT names); 1 for the rest."""
    layers = [int(m.group(1)) for m in map(_LAYER.search, paths) if m]
    depth = max(layers) + 1 if layers else 0
    scales = []
    for path in paths:
        m = _LAYER.search(path)
        if m:
            scales.append(decay ** (depth - 1 - int(m.group(1))))
        elif any(name in path for name in _EMBEDDING):
            scales.append(decay ** depth)
        else:
            scales.append(1.0)
    return scales


@keras.saving.register_keras_serializable(package="deepseek_tf")
class LayerDecayAdamW(keras.optimizers.AdamW):
    """keras.optimizers.AdamW whose per-variable step is scaled by `layer_scales` (see module doc).
    Weight decay keeps the unscaled rate."""

    def __init__(self, layer_decay: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.layer_decay = layer_decay

    def build(self, var_list):
        super().build(var_list)
        # indexed like the optimizer's slots, so update_step finds a variable's factor by its index
        self._lr_scales = layer_scales([v.path for v in var_list], self.layer_decay)

    def update_step(self, gradient, variable, learning_rate):
        scale = self._lr_scales[self._get_variable_index(variable)]
        return super().update_step(gradient, variable, learning_rate * scale)

    def get_config(self):
        return {**super().get_config(), "layer_decay": self.layer_decay}


@keras.saving.register_keras_serializable(package="deepseek_tf")
class WarmupExponentialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """lr(s) = peak·(s + 1)/W for s < W, then peak·rate^((s − W)/decay_steps)  (W = warmup_steps)."""

    def __init__(self, peak: float, warmup_steps: int, decay_steps: int, decay_rate: float):
        self.peak, self.warmup_steps = peak, warmup_steps
        self.decay_steps, self.decay_rate = decay_steps, decay_rate
        self.decay = keras.optimizers.schedules.ExponentialDecay(peak, decay_steps, decay_rate)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        warm = float(max(self.warmup_steps, 1))
        warmup_lr = self.peak * (step + 1.0) / warm
        return tf.where(step < self.warmup_steps, warmup_lr, self.decay(step - self.warmup_steps))

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate}


def make_optimizer(config: Config, total_steps: int) -> keras.optimizers.Optimizer:
    """train.*'s AdamW (LayerDecayAdamW with train.layer_decay) on a WarmupExponentialDecay schedule
    over total_steps."""
    t = config.train
    schedule = WarmupExponentialDecay(t.learning_rate, int(total_steps * t.warmup_ratio),
                                      t.decay_steps, t.decay_rate)
    ema = t.ema_momentum  # in (0, 1), checked when the config loads
    # With use_ema, Keras's fit ends by writing the average into the model's weights.
    kwargs = dict(learning_rate=schedule, weight_decay=t.weight_decay, clipnorm=t.clipnorm,
                  use_ema=ema is not None, ema_momentum=ema if ema is not None else 0.99)
    if t.layer_decay is not None:
        return LayerDecayAdamW(layer_decay=t.layer_decay, **kwargs)
    return keras.optimizers.AdamW(**kwargs)

"""The optimizer both trainers build: AdamW on a warm-up + exponential-decay schedule."""

from __future__ import annotations

import keras
import tensorflow as tf

from deepseek_tf.config import Config


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
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "decay_rate": self.decay_rate,
        }


def make_optimizer(config: Config, total_steps: int) -> keras.optimizers.Optimizer:
    """train.*'s AdamW on a WarmupExponentialDecay schedule over total_steps."""
    t = config.train
    schedule = WarmupExponentialDecay(t.learning_rate, int(total_steps * t.warmup_ratio), t.decay_steps, t.decay_rate)
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=t.weight_decay, clipnorm=t.clipnorm)

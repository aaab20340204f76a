"""Training: the Keras `fit` loop under tf.distribute, its callbacks, optimizer and compute choices,
cross-encoder training, distillation, model soups and cross-fitting."""

from deepseek_tf.train.artifacts import save_trained_model
from deepseek_tf.train.run import train

__all__ = ["save_trained_model", "train"]

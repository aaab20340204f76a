"""Training: the Keras `fit` loop under tf.distribute, its callbacks, optimizer and compute choices,
cross-encoder training, distillation, model soups and cross-fitting."""

from deepseek_tf import lazy_exports

__all__ = ["save_trained_model", "train"]
__getattr__ = lazy_exports(
    __name__, {"save_trained_model": "deepseek_tf.train.artifacts", "train": "deepseek_tf.train.run"}
)

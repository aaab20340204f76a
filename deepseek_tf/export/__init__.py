"""Export: raw-string SavedModels and verified (quantized) TFLite files, each checked against Keras."""

from deepseek_tf.export.saved_model import export_saved_model
from deepseek_tf.export.towers import export_tflite

__all__ = ["export_saved_model", "export_tflite"]

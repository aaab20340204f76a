"""Export: raw-string SavedModels and verified (quantized) TFLite files, each checked against Keras."""

from deepseek_tf import lazy_exports

__all__ = ["export_saved_model", "export_tflite"]
__getattr__ = lazy_exports(
    __name__, {"export_saved_model": "deepseek_tf.export.saved_model", "export_tflite": "deepseek_tf.export.towers"}
)

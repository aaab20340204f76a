"""deepseek_tf: dual-encoder retrievers and cross-encoder rerankers in TensorFlow/Keras 3."""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow turns its oneDNN kernels on by default only on some x86 CPUs (VNNI/bfloat16/AMX
# ones); on a 2-core AMD EPYC (Zen 2, AVX2) it left them off, and turning them on made a
# dual-encoder training step 1.57x and Keras encoding 1.59x faster, with the same losses and
# vectors (docs/results.md, Performance). Must be set before TensorFlow loads; TF_ENABLE_ONEDNN_OPTS=0 opts out.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def _import_tensorflow_quietly() -> None:
    """TF's C++ start-up lines (absl, oneDNN, CUDA stubs) ignore TF_CPP_MIN_LOG_LEVEL;
    hide them so a CLI's one-line error is the only thing on stderr."""
    if _os.environ.get("DEEPSEEK_TF_VERBOSE"):
        return
    saved = _os.dup(2)
    try:
        with open(_os.devnull, "w") as devnull:
            _os.dup2(devnull.fileno(), 2)
            import tensorflow

            # Probing the platforms here (cuInit on machines without a GPU prints an
            # error line) does not initialise the runtime, so logical devices can still
            # be configured afterwards.
            tensorflow.config.list_physical_devices("GPU")
    finally:
        _os.dup2(saved, 2)
        _os.close(saved)


_import_tensorflow_quietly()
__version__ = "0.1.0"

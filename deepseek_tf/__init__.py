"""deepseek_tf: dual-encoder retrievers and cross-encoder rerankers in TensorFlow/Keras 3."""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# TensorFlow turns its oneDNN kernels on by default only on some x86 CPUs (VNNI/bfloat16/AMX
# ones); on a 2-core AMD EPYC (Zen 2, AVX2) it left them off, and turning them on made a
# dual-encoder training step 1.57x and Keras encoding 1.59x faster, with the same losses and
# vectors (docs/results.md, Performance). Must be set before TensorFlow loads; TF_ENABLE_ONEDNN_OPTS=0 opts out.
_os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def _warn_if_onednn_off() -> None:
    """TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, when it loads: imported before deepseek_tf on a
    CPU where it leaves oneDNN off, it runs everything up to twice as slow. Said once, with the fix."""
    import sys as _sys

    if "tensorflow" not in _sys.modules or _os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0":
        return  # not loaded yet (the setting above applies), or turned off on purpose
    try:
        # TensorFlow has no public call that says whether its oneDNN kernels are on
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return
    if not _pywrap_util_port.IsMklEnabled():
        import warnings

        warnings.warn(
            "tensorflow was imported before deepseek_tf with its oneDNN kernels off: encoding and training "
            "run up to 2x slower. Import deepseek_tf first, or set TF_ENABLE_ONEDNN_OPTS=1 before tensorflow "
            "loads (TF_ENABLE_ONEDNN_OPTS=0 silences this).",
            RuntimeWarning,
            stacklevel=3,
        )


_warn_if_onednn_off()


def load_tensorflow() -> None:
    """Imports TensorFlow with its C++ start-up lines (absl, oneDNN, CUDA stubs) hidden: they
    ignore TF_CPP_MIN_LOG_LEVEL, and a CLI's one-line error must be the only thing on stderr.
    Every command calls it once its arguments are parsed (`console.command_parser`), so `--help`
    and usage errors answer without loading TensorFlow."""
    import sys as _sys

    if "tensorflow" in _sys.modules or _os.environ.get("DEEPSEEK_TF_VERBOSE"):
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


def lazy_exports(package: str, sources: dict[str, str]):
    """A package's `__getattr__` (PEP 562) that imports each exported name from its module on first
    use: `from deepseek_tf.train import train` works as before, while `deepseek_tf.train.cli`
    (whose parser needs no model) does not load TensorFlow through the package."""
    import importlib

    def __getattr__(name: str):
        if name not in sources:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(sources[name]), name)

    return __getattr__


__version__ = "0.1.0"

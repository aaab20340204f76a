"""The TFLite variants every ours-vs-peer section of `make bench` times beside the Keras graph."""

from __future__ import annotations

from collections.abc import Callable

from deepseek_tf.errors import UserError

TFLITE_VARIANTS = (  # (quantize, kind, system): kinds are what the report's targets look up
    ("none", "tflite_fp32", "deepseek_tf TFLite float32"),
    ("dynamic", "tflite_dynamic", "deepseek_tf TFLite dynamic int8"),
)


def tflite_systems(build: Callable[[str, str], Callable]) -> tuple[list[tuple[str, str, Callable]], list[dict]]:
    """(system, kind, fn) for each TFLite variant that `build(quantize, system)` returns a timed fn
    for, and a "not measured" row, with the reason, for each it could not build.

    A missing converter or runtime (ImportError) or a failed conversion (UserError) costs its
    row only: the rest of the section still runs.
    """
    systems, failed = [], []
    for quantize, kind, system in TFLITE_VARIANTS:
        try:
            fn = build(quantize, system)
        except (ImportError, UserError) as e:
            failed.append({"system": system, "kind": kind, "measured": False, "note": f"not measured: {e}"})
            continue
        systems.append((system, kind, fn))
    return systems, failed

"""How training computes on this machine: distribution strategy, mixed precision, XLA, dropout.

Shared by the dual-encoder (`train`) and cross-encoder (`rerank_train`) trainers. The choices
are measured ones (docs/results.md): bfloat16 only where the CPU has it natively, XLA only for
cross-encoders in float32 on a CPU; models are served and exported in float32.
"""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import tensorflow as tf

from deepseek_tf.config import Config
from deepseek_tf.models import build_model
from deepseek_tf.models.backbones import backbone_kind


def make_strategy(name: str) -> tf.distribute.Strategy:
    """mirrored: all local devices; multi_worker: the cluster in TF_CONFIG; one_device."""
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.OneDeviceStrategy("/cpu:0" if not tf.config.list_physical_devices("GPU") else "/gpu:0")


# CPU flags (Linux /proc/cpuinfo) of native bfloat16 matrix maths: Intel AMX or AVX512_BF16 (x86),
# BF16 (Arm v8.6+). Without them TensorFlow emulates bfloat16: measured on a 2-core AMD EPYC (Zen 2,
# AVX2 only), the Cranfield retriever recipe took 91 s per step in mixed_bfloat16 against 22 s in
# float32, where AMX made it 1.35x faster than float32.
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16", "bf16"})


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when the CPU's flags (/proc/cpuinfo text; read when None) include native bfloat16 maths.
    An unreadable /proc/cpuinfo (macOS, Windows) counts as no: float32 is never the slow choice."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features") and NATIVE_BF16_FLAGS & set(value.split()):
            return True
    return False


def precision_policy(name: str, cpuinfo: str | None = None) -> str | None:
    """The Keras dtype policy for `train.mixed_precision` (None: float32).

    auto: on GPUs mixed_bfloat16 from compute capability 8.0 (Ampere) on, else mixed_float16 (with
    loss scaling); on a CPU mixed_bfloat16 where it is native (`cpu_has_native_bf16`), else float32.
    An explicit mixed_bfloat16 on a CPU without it is kept, with a warning: it is many times slower.
    """
    gpus = tf.config.list_physical_devices("GPU")
    if name == "auto":
        if gpus:
            capabilities = [
                tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0)) for g in gpus
            ]
            return "mixed_bfloat16" if min(capabilities) >= (8, 0) else "mixed_float16"
        return "mixed_bfloat16" if cpu_has_native_bf16(cpuinfo) else None
    if name == "mixed_bfloat16" and not gpus and not cpu_has_native_bf16(cpuinfo):
        print(
            "warning: train.mixed_precision mixed_bfloat16 on a CPU without native bfloat16 (no AMX, "
            "AVX512_BF16 or BF16 flag): emulated, several times slower than float32; use auto or none",
            file=sys.stderr,
        )
    return None if name == "none" else name


# Under XLA, tokenized batches are padded to multiples of this width (Tokenizer.widen), so the
# step compiles for a few shapes instead of once per batch width.
XLA_PAD_MULTIPLE = 64


def jit_policy(name: str, policy: str | None, strategy: str, kind: str) -> bool | str:
    """Keras `jit_compile` for `train.jit_compile`, given the dtype policy, strategy and model kind.

    auto: XLA for a cross-encoder on a CPU in float32, where it measured faster (9-11 s a step
    against 11-15 s on a 2-core AMD EPYC, docs/results.md); a dual encoder there gained nothing (24 s
    against 25 s), so it stays off. On GPUs Keras's own "auto". Not with bfloat16 on CPUs (never
    measured) nor multi_worker (its CPU collectives fail to compile). Keras's "auto" alone never
    uses XLA on a CPU.
    """
    if name == "auto":
        if tf.config.list_physical_devices("GPU"):
            return "auto"
        return policy is None and strategy != "multi_worker" and kind == "cross_encoder"
    return name == "xla"


def pad_multiple(jit: bool | str) -> int:
    return 1 if jit is False else XLA_PAD_MULTIPLE


def build_in_policy(config: Config, vocab_size: int, policy: str | None) -> keras.Model:
    """`build_model` under a Keras dtype policy (None: the current one), then restores the global one.

    Layers take the policy when built; later code (evaluation, export, tests) keeps float32.
    A pretrained backbone comes with the dropout rates it was saved with: `model.dropout`
    replaces them here, so the dual-encoder and cross-encoder trainers apply it alike.
    """
    previous = keras.config.dtype_policy()
    try:
        if policy:
            keras.config.set_dtype_policy(policy)
        model = build_model(config, vocab_size)
    finally:
        keras.config.set_dtype_policy(previous)
    if backbone_kind(config.model.backbone) != "scratch":
        set_dropout(model, config.model.dropout)
    return model


def dropout_layers(model: keras.Model) -> list[keras.layers.Dropout]:
    # _flatten_layers: Keras has no public recursive walk (Model.layers lists direct children,
    # and our Encoder holds its backbone as an attribute)
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.Dropout)]


def set_dropout(model: keras.Model, rate: float) -> int:
    """Sets every Dropout layer's rate (pretrained backbones keep their own otherwise)."""
    layers = dropout_layers(model)
    for layer in layers:
        layer.rate = rate
    return len(layers)


def float32_copy(model: keras.Model, config: Config, vocab_size: int, sample: dict) -> keras.Model:
    """`model` rebuilt under the float32 policy, holding `model`'s weights.

    Mixed precision changes only the compute dtype (variables stay float32), so the copy has
    exactly the trained weights; `sample` (one batch of inputs) builds its variables.
    """
    copy = build_in_policy(config, vocab_size, "float32")
    for mine, theirs in zip(dropout_layers(copy), dropout_layers(model), strict=True):
        mine.rate = theirs.rate  # the rates it trained with (set_dropout or the checkpoint's own)
    copy(sample)
    copy.set_weights(model.get_weights())
    return copy

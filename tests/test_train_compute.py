"""How training computes: mixed precision (bfloat16 only where the CPU has it) and its float32
copy, model.dropout over a pretrained backbone's, XLA (train.jit_compile) and oneDNN."""

import os
import platform
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT
from test_train import tiny_config

from deepseek_tf.config import load_config

# /proc/cpuinfo excerpts: a 2-core AMD EPYC (Zen 2) VM, an Intel Sapphire Rapids VM, an Arm v8.6 core
ZEN2 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse4_2 avx avx2 fma bmi2 sha_ni\n"
SAPPHIRE_RAPIDS = "flags\t\t: fpu avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8\n"
ARM_V86 = "processor\t: 0\nFeatures\t: fp asimd aes sha2 i8mm bf16\nCPU implementer\t: 0x41\n"


def test_mixed_precision_auto_uses_bfloat16_only_where_the_cpu_has_it(capsys):
    from deepseek_tf.train.compute import cpu_has_native_bf16, precision_policy

    assert [cpu_has_native_bf16(x) for x in (ZEN2, SAPPHIRE_RAPIDS, ARM_V86, "")] == [False, True, True, False]
    # a flag name elsewhere on a line other than flags/Features does not count
    assert not cpu_has_native_bf16("model name\t: bf16 amx_bf16 lookalike\nflags\t\t: avx2\n")
    assert precision_policy("auto", SAPPHIRE_RAPIDS) == "mixed_bfloat16"
    assert precision_policy("auto", ZEN2) is None and precision_policy("none", SAPPHIRE_RAPIDS) is None
    assert capsys.readouterr().err == ""
    # asked for explicitly, bfloat16 is kept on any CPU, with a one-line warning where it is emulated
    assert precision_policy("mixed_bfloat16", SAPPHIRE_RAPIDS) == "mixed_bfloat16"
    assert capsys.readouterr().err == ""
    assert precision_policy("mixed_bfloat16", ZEN2) == "mixed_bfloat16"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: train.mixed_precision mixed_bfloat16 on a CPU without")


def test_float32_copy_keeps_mixed_precision_weights(tiny_beir):
    from deepseek_tf.text.tokenizer import Tokenizer
    from deepseek_tf.train.compute import build_in_policy, float32_copy, set_dropout

    config = tiny_config(tiny_beir)
    tokenizer = Tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "wing", "flow", "heat"])
    sample = {k: tokenizer(tf.constant(["wing flow", "heat"]), 8) for k in ("query", "doc")}
    mixed = build_in_policy(config, tokenizer.vocab_size, "mixed_bfloat16")
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    mixed(sample)
    assert set_dropout(mixed, 0.3) > 0
    copy = float32_copy(mixed, config, tokenizer.vocab_size, sample)
    assert {layer.dtype_policy.name for layer in copy._flatten_layers()} == {"float32"}
    # the dropout rates it trained with travel too (config.model.dropout is 0.0 here)
    assert {layer.rate for layer in copy._flatten_layers() if isinstance(layer, keras.layers.Dropout)} == {0.3}
    assert "mixed_bfloat16" in {layer.dtype_policy.name for layer in mixed._flatten_layers()}
    for a, b in zip(mixed.get_weights(), copy.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    want = mixed.query_encoder(sample["query"], training=False)
    got = copy.query_encoder(sample["query"], training=False)
    # bfloat16 keeps ~3 significant digits: the same unit vectors to about 1e-2, not exactly
    assert not np.array_equal(got.numpy(), want.numpy())
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=3e-2)


@pytest.mark.parametrize("yaml", ["tiny.yaml", "cross_encoder_tiny.yaml"])
def test_build_in_policy_gives_a_pretrained_backbone_model_dropout(tiny_run, tiny_beir, yaml):
    # the tiny run's tower was saved with dropout 0.1; both trainers build through here, so
    # model.dropout must replace the saved rates for a dual encoder and a cross-encoder alike
    from deepseek_tf.train.compute import build_in_policy, dropout_layers

    vocab_size = sum(1 for _ in open(tiny_run / "model" / "vocab.txt"))
    config = load_config(
        ROOT / "configs" / yaml,
        [f"data.dataset={tiny_beir}", f"model.backbone={tiny_run / 'model'}", "model.dropout=0.25"],
    )
    model = build_in_policy(config, vocab_size, None)
    assert {layer.rate for layer in dropout_layers(model)} == {0.25}


def test_jit_compile_auto_uses_xla_for_cross_encoders_on_cpus_in_float32_only(monkeypatch):
    from deepseek_tf.train.compute import XLA_PAD_MULTIPLE, jit_policy, pad_multiple

    ce, de = ("mirrored", "cross_encoder"), ("mirrored", "dual_encoder")
    assert jit_policy("auto", None, *ce) is True  # this test machine: CPU, float32
    assert jit_policy("auto", None, *de) is False  # measured: no gain for the dual encoder
    assert jit_policy("auto", "mixed_bfloat16", *ce) is False  # bfloat16 under XLA on a CPU: never measured
    assert jit_policy("auto", None, "multi_worker", "cross_encoder") is False  # collectives fail to compile
    assert jit_policy("xla", "mixed_bfloat16", *de) is True and jit_policy("none", None, *ce) is False
    assert pad_multiple(False) == 1 and pad_multiple(True) == pad_multiple("auto") == XLA_PAD_MULTIPLE
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["GPU:0"] if kind == "GPU" else [])
    assert jit_policy("auto", None, *de) == "auto"  # Keras decides on GPUs


@pytest.mark.parametrize("kind", ["dual_encoder", "cross_encoder"])
def test_xla_training_matches_the_plain_step(tiny_beir, tmp_path, kind, monkeypatch):
    """train.jit_compile: xla compiles the same step (losses to float rounding) on widened batches."""
    from deepseek_tf.train import train

    asked = []
    compile_ = keras.Model.compile
    monkeypatch.setattr(
        keras.Model, "compile", lambda self, *a, **k: (asked.append(k.get("jit_compile")), compile_(self, *a, **k))[1]
    )
    if kind == "dual_encoder":
        configs = lambda jit: tiny_config(
            tiny_beir, "train.epochs=1", "train.steps_per_epoch=3", f"train.jit_compile={jit}"
        )
    else:
        configs = lambda jit: load_config(
            ROOT / "configs/cross_encoder_tiny.yaml",
            [
                f"data.dataset={tiny_beir}",
                "model.dropout=0.0",
                "train.epochs=1",
                "train.steps_per_epoch=3",
                f"train.jit_compile={jit}",
            ],
        )
    xla = train(configs("xla"), tmp_path / "xla", verbose=0)
    plain = train(configs("none"), tmp_path / "plain", verbose=0)
    assert asked == [True, False]
    assert xla["loss"][0] != 0 and xla["loss"][0] == pytest.approx(plain["loss"][0], rel=1e-4)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN's switch is x86's")
def test_importing_deepseek_tf_turns_onednn_on_unless_the_user_said_otherwise():
    # TensorFlow leaves oneDNN off on CPUs without VNNI/bfloat16 (this 2-core Zen 2 EPYC), where it
    # made training 1.57x faster; an explicit TF_ENABLE_ONEDNN_OPTS=0 must still win.
    import subprocess

    probe = "import deepseek_tf; from tensorflow.python.util import _pywrap_util_port as p; print(p.IsMklEnabled())"
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    on = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    off = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**env, "TF_ENABLE_ONEDNN_OPTS": "0"},
        check=True,
    )
    assert (on.stdout.strip(), off.stdout.strip()) == ("True", "False")
